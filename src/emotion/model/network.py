"""The emotion classifier: Keras ResNet50 backbone + a small softmax head, fed raw RGB pixels.

Usage:
    cfg = config.load_config()
    model = build_model(cfg)                  # weights from cfg.weights: imagenet | None | local file
    set_phase(model, "head", cfg)             # phase 1: frozen backbone (pretrained weights only)
    set_phase(model, "fine_tune", cfg)        # phase 2: top cfg.fine_tune_blocks stages trainable
    probs = model(images_rgb_0_255)           # float32 [B, 8], rows sum to 1
    model = load_model(cfg.model_save_path)   # a saved model, ready for predict()
    y, probs = predict_probs(model, dataset)  # labels [N], probabilities [N, 8] over (images, labels) batches

ResNet50's own preprocess_input (RGB -> BGR, ImageNet mean subtraction) is a layer inside the model,
so every consumer (evaluate, predict, inference, the exports, the browser) feeds raw RGB 0..255 and
cannot get the scaling or the channel order wrong. Every layer is a built-in Keras layer (preprocess.py,
temperature.py), so the saved file opens with plain keras.models.load_model, without this project.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from emotion.common import paths
from emotion.common.atomic import atomic_path
from emotion.common.errors import EXIT_WEIGHTS_DOWNLOAD, UserError, first_line
# legacy_layers registers the custom layers of older model files, so that load_model reads them
from emotion.model import legacy_layers  # noqa: F401
from emotion.model import preprocess, temperature

BACKBONE_NAME = "resnet50"
# ResNet50's stages, top first: fine_tune_blocks=1 unfreezes conv5, 2 adds conv4, ...
STAGE_PREFIXES = ("conv5_", "conv4_", "conv3_", "conv2_", "conv1_")
WEIGHTS_HELP = ("put a local copy of resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 somewhere and pass "
                "--set weights=PATH, or train from scratch with --set weights=null")


class WeightsDownloadError(UserError):
    """The ImageNet weights could not be fetched (offline machine, firewall). Its own exit code, so that
    pipeline.py can tell it from other errors of train.py and fall back to random init."""

    code = EXIT_WEIGHTS_DOWNLOAD


def is_pretrained(cfg) -> bool:
    return cfg.weights is not None


def _backbone(cfg) -> keras.Model:
    weights = cfg.weights
    if weights not in (None, "imagenet") and not Path(weights).is_file():
        raise UserError(f"config key 'weights': file not found: {weights} ({WEIGHTS_HELP})")
    try:
        return keras.applications.ResNet50(include_top=False, weights=weights, input_shape=tuple(cfg.input_shape))
    except Exception as exc:  # Keras wraps every download failure in a plain Exception
        if weights == "imagenet" and ("fetch failure" in str(exc) or isinstance(exc, OSError)):
            raise WeightsDownloadError(f"could not download the ImageNet weights for ResNet50 ({first_line(exc)}): "
                            f"{WEIGHTS_HELP}") from None
        if weights not in (None, "imagenet"):
            raise UserError(f"config key 'weights': {weights} is not a ResNet50 (include_top=False) weights "
                            f"file: {first_line(exc)}") from None
        raise


def build_model(cfg) -> keras.Model:
    """ResNet50 (include_top=False) + global average pooling + [dense] + dropout + logits -> temperature ->
    softmax (temperature.head: T = 1 until train.py calibrates the best model)."""
    keras.utils.set_random_seed(cfg.seed)
    inputs = keras.Input(shape=tuple(cfg.input_shape), name="image")
    x = preprocess.apply(inputs)
    base = _backbone(cfg)
    # A pretrained backbone always runs its BatchNorm in inference mode (keras-io transfer learning):
    # fine-tuning on small batches would otherwise wreck the ImageNet statistics. From scratch there
    # are no statistics to keep, so BatchNorm trains normally.
    x = base(x, training=False if is_pretrained(cfg) else None)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if cfg.dense_units:
        try:
            x = keras.layers.Dense(cfg.dense_units, activation="relu", name="head_dense")(x)
        except (tf.errors.ResourceExhaustedError, MemoryError):
            raise UserError(f"not enough memory for the head's {cfg.dense_units} dense units (config key "
                            f"dense_units): lower it (0 puts the softmax on the pooled features)") from None
    x = keras.layers.Dropout(cfg.dropout, name="head_dropout")(x)
    outputs = temperature.head(x, len(cfg.class_names))
    return keras.Model(inputs, outputs, name="emotion_resnet50")


def backbone(model: keras.Model) -> keras.Model:
    return model.get_layer(BACKBONE_NAME)


def all_layers(model: keras.Model):
    """Every layer of `model`, nested models' layers included (depth first, in order; the model itself not)."""
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from all_layers(layer)


def set_phase(model: keras.Model, phase: str, cfg) -> None:
    """Set which layers train. Compile afterwards (trainer.compile_model does both): the phase's optimizer is
    built over the trainable variables.

    head: the backbone is frozen (pretrained) or fully trainable (from scratch: nothing to keep).
    fine_tune: the top cfg.fine_tune_blocks stages train; BatchNorm layers stay frozen.
    """
    base = backbone(model)
    if phase == "head":
        base.trainable = not is_pretrained(cfg)
        return
    if phase != "fine_tune":
        raise ValueError(f"unknown phase {phase!r}")
    if not is_pretrained(cfg):
        base.trainable = True
        return
    base.trainable = True
    prefixes = STAGE_PREFIXES[:cfg.fine_tune_blocks]
    for layer in base.layers:
        unfreeze = layer.name.startswith(prefixes) if prefixes else False
        layer.trainable = unfreeze and not isinstance(layer, keras.layers.BatchNormalization)


def count_params(model: keras.Model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(int(tf.size(w)) for w in model.trainable_weights)
    return trainable, int(model.count_params())


def save_model_atomic(model: keras.Model, path: str | os.PathLike) -> None:
    """Write the model to a temp file beside `path`, then rename: a crash never leaves a broken model.

    .keras files (training checkpoints) keep the optimizer state; .h5 models (for use) leave it out,
    which makes them a third of the size.
    """
    path = Path(path)
    with atomic_path(path) as tmp, _quiet_absl():  # Keras logs a "legacy format" warning for each .h5 save
        if path.suffix in (".h5", ".hdf5"):
            model.save(tmp, include_optimizer=False)
        else:
            model.save(tmp)


@contextlib.contextmanager
def _quiet_absl():
    from absl import logging as absl_logging
    level = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        yield
    finally:
        absl_logging.set_verbosity(level)


def load_model(path: str | os.PathLike, compile: bool = False) -> keras.Model:
    """Load a saved emotion model; one clear line when it is missing or unreadable. Files saved before the
    portable form (custom preprocessing and temperature layers) load as they are: legacy_layers.portable
    rewrites them."""
    path = paths.require_model_file(path)
    try:
        return keras.models.load_model(path, compile=compile, safe_mode=True)
    except Exception as exc:
        raise UserError(f"cannot load the model {path}: {first_line(exc)}") from None


def make_forward(model: keras.Model, tta: bool = False, input_spec: tf.TensorSpec | None = None):
    """The model in inference mode as a tf.function: images [B, H, W, 3] -> probabilities [B, C].

    tta: average the probabilities of each image and its horizontal flip (one forward over both).
    input_spec: the images' TensorSpec; with it the function is traced once for every batch size
    (the last, smaller batch does not retrace); without it, reduce_retracing generalises after a retrace.
    Build it once and pass it to predict_probs to time or reuse it without tracing again.
    """
    def forward(x):
        if not tta:
            return model(x, training=False)
        n = tf.shape(x)[0]
        probs = model(tf.concat([x, tf.reverse(x, axis=[2])], axis=0), training=False)
        return (probs[:n] + probs[n:]) / 2

    if input_spec is None:
        return tf.function(forward, reduce_retracing=True)
    spec = tf.TensorSpec([None, *input_spec.shape[1:]], input_spec.dtype)
    return tf.function(forward, input_signature=[spec])


def predict_probs(model: keras.Model, dataset: tf.data.Dataset, tta: bool = False,
                  forward=None) -> tuple[np.ndarray, np.ndarray]:
    """Run the model in inference mode over (images, labels) batches; returns (labels, probabilities).

    Streams: only the labels and the probabilities [N, C] are kept, never the images.
    tta: see make_forward. forward: a prebuilt make_forward(model, tta) (then tta is ignored).
    """
    if forward is None:
        spec = dataset.element_spec[0]
        forward = make_forward(model, tta, spec if isinstance(spec, tf.TensorSpec) else None)
    labels, probs = [], []
    for x, y in dataset:
        probs.append(forward(x).numpy())
        labels.append(y.numpy())
    y = np.concatenate(labels) if labels else np.zeros((0,), np.int64)
    if y.ndim == 2:
        y = y.argmax(axis=1)
    return y, (np.concatenate(probs) if probs else np.zeros((0, 0), np.float32))
