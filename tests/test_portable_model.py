"""The model file is a plain Keras model: built-in layers only, so keras.models.load_model opens it without this
project; files saved with the older custom layers still load and are rewritten with the same outputs.
(A model trained by train.py: test_train.py; one rewritten by calibrate.py: test_calibration.py.)"""
from __future__ import annotations

import numpy as np
import pytest
from support import plain_keras_probs


def test_the_preprocessing_convolution_is_resnet50s_preprocess_input_bit_for_bit():
    import keras

    from emotion.model import preprocess
    inputs = keras.Input((8, 8, 3))
    layer_model = keras.Model(inputs, preprocess.apply(inputs))
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(0, 255, (3, 8, 8, 3)), rng.integers(0, 256, (3, 8, 8, 3)),
                        np.zeros((1, 8, 8, 3)), np.full((1, 8, 8, 3), 255.0)]).astype(np.float32)
    expected = keras.applications.resnet50.preprocess_input(x.copy())
    np.testing.assert_array_equal(np.asarray(layer_model(x)), expected)
    assert not layer_model.get_layer("resnet_preprocess").trainable_weights  # frozen: training never moves it


def _legacy_tiny_model(t: float):
    """A small model saved as the project saved them before: the custom ResNetPreprocess and Temperature."""
    import keras

    from emotion.model import legacy_layers
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3), name="image")
    x = legacy_layers.ResNetPreprocess(name="resnet_preprocess")(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, name="conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Rescaling(1 / 50)(x)
    x = keras.layers.Dense(8, dtype="float32", name="logits")(x)
    x = legacy_layers.Temperature(dtype="float32", name="temperature")(x)
    model = keras.Model(inputs, keras.layers.Activation("softmax", dtype="float32", name="probabilities")(x))
    model.get_layer("temperature").temperature.assign(t)
    return model


def test_an_old_file_with_custom_layers_loads_and_is_rewritten_with_built_ins_and_the_same_outputs(tmp_path):
    from emotion.model import legacy_layers
    from emotion.model import network as model_lib
    from emotion.model import temperature
    old = _legacy_tiny_model(t=2.5)
    model_lib.save_model_atomic(old, tmp_path / "old.h5")
    x = np.random.default_rng(1).uniform(0, 255, (6, 32, 32, 3)).astype(np.float32)
    expected = np.asarray(old(x, training=False))

    loaded = model_lib.load_model(tmp_path / "old.h5")  # the project's loader reads the custom layers
    assert temperature.temperature_of(loaded) == pytest.approx(2.5)
    rewritten = legacy_layers.portable(loaded)
    custom = [type(layer).__name__ for layer in rewritten.layers
              if not type(layer).__module__.startswith("keras.")]
    assert custom == []
    assert temperature.temperature_of(rewritten) == pytest.approx(2.5, rel=1e-6)
    np.testing.assert_allclose(np.asarray(rewritten(x, training=False)), expected, atol=1e-6)
    with pytest.raises(ValueError, match="Unknown layer"):  # what a colleague met with the old file
        _load_without_registry(tmp_path / "old.h5")

    model_lib.save_model_atomic(rewritten, tmp_path / "new.h5")
    np.testing.assert_allclose(plain_keras_probs(tmp_path / "new.h5", x, tmp_path / "plain"), expected, atol=1e-6)


def _load_without_registry(path):
    """keras.models.load_model as in a Python that never imported the project: the custom classes unknown."""
    import keras
    saved = dict(keras.saving.get_custom_objects())
    keras.saving.get_custom_objects().clear()
    try:
        return keras.models.load_model(path, safe_mode=True, compile=False)
    finally:
        keras.saving.get_custom_objects().update(saved)
