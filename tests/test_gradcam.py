"""emotion/model/gradcam.py: Grad-CAM with a known answer, and on the project's ResNet50 (frozen as when pretrained,
trainable as from scratch, saved and loaded).

Known answer: a small model (a nested two-convolution backbone, as build_model nests ResNet50) trained in
seconds on synthetic 32x32 pictures whose label is decided by a bright patch somewhere in the top-left quarter
(class 1) or its absence (class 0); every picture also has a dark patch anywhere, which decides nothing. On new
class-1 pictures the map of class 1 must put most of its mass in the top-left quarter.
"""
from __future__ import annotations

import numpy as np
import pytest
from support import megamind_face_crops

SIZE, PATCH = 32, 6


def _pictures(n: int, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pictures float32 [n, 32, 32, 3] 0..255, labels, bright patch corners (y, x); -1 without a patch)."""
    x = rng.uniform(40, 140, (n, SIZE, SIZE, 3)).astype(np.float32)
    labels = rng.integers(0, 2, n)
    corners = np.full((n, 2), -1)
    for i in range(n):
        dy, dx = rng.integers(0, SIZE - PATCH, 2)
        x[i, dy:dy + PATCH, dx:dx + PATCH] = 0  # the distractor: anywhere, both classes
        if labels[i]:
            cy, cx = rng.integers(0, SIZE // 2 - PATCH, 2)
            x[i, cy:cy + PATCH, cx:cx + PATCH] = 255
            corners[i] = cy, cx
    return x, labels, corners


@pytest.fixture(scope="module")
def patch_model():
    import keras
    keras.utils.set_random_seed(0)
    inner_in = keras.Input((SIZE, SIZE, 3))
    y = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inner_in)
    y = keras.layers.MaxPooling2D(2)(y)
    y = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="last_conv")(y)
    backbone = keras.Model(inner_in, y, name="tiny_backbone")
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = backbone(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="probabilities")(x)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy", metrics=["accuracy"])
    x_train, y_train, _ = _pictures(1200, np.random.default_rng(1))
    model.fit(x_train, y_train, epochs=8, batch_size=32, verbose=0)
    return model


def test_the_map_of_a_patch_decided_class_lies_on_the_patch_s_region(patch_model):
    from emotion.model import gradcam
    x, labels, corners = _pictures(200, np.random.default_rng(2))
    accuracy = float(np.mean(patch_model.predict(x, verbose=0).argmax(axis=1) == labels))
    assert accuracy >= 0.95, f"the test model did not learn the patch ({accuracy:.2f})"
    ones = labels == 1
    maps, probs = gradcam.heatmaps(patch_model, x[ones], classes=[1] * int(ones.sum()), backbone="tiny_backbone",
                                   layer="last_conv")
    assert maps.shape == (ones.sum(), SIZE, SIZE) and maps.min() >= 0 and maps.max() <= 1
    np.testing.assert_allclose(probs, patch_model.predict(x[ones], verbose=0), atol=1e-5)
    quarter = maps[:, :SIZE // 2, :SIZE // 2].sum(axis=(1, 2)) / np.maximum(maps.sum(axis=(1, 2)), 1e-9)
    assert np.median(quarter) >= 0.7 and np.mean(quarter >= 0.5) >= 0.9, np.percentile(quarter, [10, 50, 90])
    # the strongest point of each map is on or next to its picture's bright patch
    peaks = np.array([np.unravel_index(m.argmax(), m.shape) for m in maps])
    centres = corners[ones] + PATCH / 2
    assert np.mean(np.abs(peaks - centres).max(axis=1) <= PATCH) >= 0.8
    # default class: the predicted one, here class 1 for (nearly) every picture with a patch
    default, _ = gradcam.heatmaps(patch_model, x[ones], backbone="tiny_backbone", layer="last_conv")
    same = probs.argmax(axis=1) == 1
    np.testing.assert_allclose(default[same], maps[same], atol=1e-5)


def test_a_layer_at_the_top_level_and_a_missing_name(patch_model):
    import keras

    from emotion.model import gradcam
    x, labels, _ = _pictures(16, np.random.default_rng(3))
    flat = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Conv2D(4, 3, name="conv"),
                             keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, activation="softmax")])
    maps, probs = gradcam.heatmaps(flat, x, layer="conv")
    assert maps.shape == (16, SIZE, SIZE) and probs.shape == (16, 2)
    with pytest.raises(ValueError, match="neither a nested model 'resnet50' nor a layer 'conv5_block3_out'"):
        gradcam.heatmaps(patch_model, x)


def test_resnet50_maps_alike_frozen_and_trainable_and_after_a_save(tmp_path):
    """The project's model on real face crops: a frozen backbone (pretrained, phase 'head') gives the same maps
    as a trainable one (from scratch), the probabilities are the model's, and a saved .h5 model gives them too."""
    from support import spread_head

    from emotion.common import config
    from emotion.model import gradcam
    from emotion.model import network as model_lib
    crops = megamind_face_crops(6).astype(np.float32)
    cfg = config.load_config(None, ["weights=null", "input_shape=[96, 96, 3]"])
    model = spread_head(model_lib.build_model(cfg), crops)
    maps, probs = gradcam.heatmaps(model, crops)
    assert maps.shape == (6, 96, 96)
    np.testing.assert_allclose(probs, model(crops, training=False).numpy(), atol=1e-5)
    peaks = maps.reshape(6, -1).max(axis=1)
    assert (peaks > 0.99).sum() >= 3, peaks  # maps normalised to 1 where the class has any positive evidence
    assert maps.reshape(6, -1).std(axis=1).max() > 0.05  # not flat
    model_lib.backbone(model).trainable = False
    frozen, _ = gradcam.heatmaps(model, crops)
    np.testing.assert_allclose(frozen, maps, atol=1e-4)
    model_lib.save_model_atomic(model, tmp_path / "model.h5")
    loaded, loaded_probs = gradcam.heatmaps(model_lib.load_model(tmp_path / "model.h5"), crops)
    np.testing.assert_allclose(loaded, maps, atol=1e-4)
    np.testing.assert_allclose(loaded_probs, probs, atol=1e-5)
    other = (probs.argmax(axis=1) + 1) % probs.shape[1]
    by_class, _ = gradcam.heatmaps(model, crops, classes=other.tolist())
    assert np.abs(by_class - maps).max() > 0.05  # another class, another map


def test_overlay_keeps_the_crop_where_the_map_is_cold():
    from emotion.model import gradcam
    crop = np.full((8, 8, 3), 100, np.uint8)
    heat = np.zeros((8, 8), np.float32)
    heat[:4] = 1.0
    out = gradcam.overlay(crop, heat)
    assert out.dtype == np.uint8 and out.shape == (8, 8, 3)
    assert out[:4, :, 0].mean() > out[4:, :, 0].mean()           # red where hot
    assert out[4:, :, 2].mean() > out[:4, :, 2].mean()           # blue (JET's cold end) where cold
