"""Grad-CAM: which part of a face crop made the Keras model choose its class.

    model = network.load_model(cfg.model_save_path)
    maps, probs = gradcam.heatmaps(model, crops)            # crops: RGB 0..255 [N, H, W, 3], as the model takes
    # maps: float32 [N, H, W] in 0..1 (1 = the strongest evidence in that crop); probs: float32 [N, C]
    maps, _ = gradcam.heatmaps(model, crops, classes=[4, 4, 0])   # a class per crop instead of the predicted one
    picture = gradcam.overlay(crops[0], maps[0])            # RGB uint8: the crop with the map in colour over it

Grad-CAM (Selvaraju et al., ICCV 2017) on the activations A of the backbone's last convolutional block
(ResNet50's conv5_block3_out, the output of the nested "resnet50" model emotion/model/network.py builds): each channel
of A weighted by the mean gradient of the class's log-probability over it, summed over channels, ReLU,
divided by its maximum, resized to the crop (bilinear). Everything runs in inference mode (BatchNorm on its
statistics, no dropout) and the gradient is taken with respect to the input, so a frozen (pretrained)
backbone and a trainable (from scratch) one give their maps alike. `backbone` and `layer` name another
nested model and layer (small test models); a model without that nested model is searched for `layer` at its
top level. The model's top level must be a chain (each layer fed by the one before), as build_model makes it.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

BACKBONE = "resnet50"
LAST_CONV = "conv5_block3_out"   # ResNet50's last convolutional block (its output with include_top=False)


def _split(model, backbone: str, layer: str):
    """(layers before, a model giving [activations, output] of the backbone (or the layer itself), layers
    after): the chain cut at the Grad-CAM layer."""
    import keras
    chain = [lyr for lyr in model.layers if not isinstance(lyr, keras.layers.InputLayer)]
    names = [lyr.name for lyr in chain]
    if backbone in names:
        base = model.get_layer(backbone)
        cut = names.index(backbone)
        inner = keras.Model(base.inputs, [base.get_layer(layer).output, base.outputs[0]])
        return chain[:cut], inner, chain[cut + 1:]
    if layer in names:
        cut = names.index(layer)
        return chain[:cut], chain[cut], chain[cut + 1:]
    raise ValueError(f"the model has neither a nested model {backbone!r} nor a layer {layer!r}")


def _forward(pre, cut, post, x):
    """(activations at the cut, probabilities) in inference mode."""
    for lyr in pre:
        x = lyr(x, training=False)
    out = cut(x, training=False)
    acts, x = (out[0], out[1]) if isinstance(out, (list, tuple)) else (out, out)
    for lyr in post:
        x = lyr(x, training=False)
    return acts, x


def heatmaps(model, images, classes: Sequence[int] | None = None, backbone: str = BACKBONE,
             layer: str = LAST_CONV, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM maps of a batch of crops (see the module docstring): (maps float32 [N, H, W] in 0..1,
    probabilities float32 [N, C]). classes: one class index per crop (default: the model's top class)."""
    import tensorflow as tf
    images = np.asarray(images, np.float32)
    if images.ndim != 4:
        raise ValueError(f"images must be [N, H, W, 3], got shape {images.shape}")
    pre, cut, post = _split(model, backbone, layer)
    maps, probs = [], []
    for start in range(0, len(images), batch_size):
        x = tf.convert_to_tensor(images[start:start + batch_size])
        with tf.GradientTape() as tape:
            tape.watch(x)  # records every op, frozen layers included, so gradients reach the activations
            acts, p = _forward(pre, cut, post, x)
            p = tf.cast(p, tf.float32)
            k = (tf.argmax(p, axis=1, output_type=tf.int32) if classes is None
                 else tf.constant(classes[start:start + batch_size], tf.int32))
            score = tf.reduce_sum(tf.math.log(tf.gather(p, k, batch_dims=1) + 1e-12))
        grads = tf.cast(tape.gradient(score, acts), tf.float32)
        acts = tf.cast(acts, tf.float32)
        weights = tf.reduce_mean(grads, axis=(1, 2))                       # [B, K]: each channel's importance
        cam = tf.nn.relu(tf.einsum("bhwk,bk->bhw", acts, weights))
        cam = cam / tf.maximum(tf.reduce_max(cam, axis=(1, 2), keepdims=True), 1e-12)
        cam = tf.image.resize(cam[..., None], images.shape[1:3], method="bilinear")[..., 0]
        maps.append(np.clip(cam.numpy(), 0, 1))
        probs.append(p.numpy())
    if not maps:
        return np.zeros((0, *images.shape[1:3]), np.float32), np.zeros((0, int(model.output_shape[-1])), np.float32)
    return np.concatenate(maps).astype(np.float32), np.concatenate(probs).astype(np.float32)


def overlay(crop_rgb: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """RGB uint8: the crop with its map (0..1, the crop's height and width) drawn over it in the JET colour
    scale (blue: none, red: the strongest evidence)."""
    import cv2
    colored = cv2.applyColorMap(np.uint8(np.clip(heat, 0, 1) * 255), cv2.COLORMAP_JET)[..., ::-1]
    crop = np.asarray(crop_rgb, np.float32)
    if crop.ndim == 2:
        crop = np.repeat(crop[..., None], 3, axis=2)
    return np.uint8(np.clip((1 - alpha) * crop + alpha * colored, 0, 255))
