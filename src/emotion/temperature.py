"""Temperature scaling inside the Keras model: logits -> Temperature (T, non-trainable) -> softmax.

Usage:
    probs = head(features, num_classes)              # in build_model: Dense "logits" -> "temperature" -> "probabilities"
    model = with_temperature(model)                  # a model saved before (Dense softmax head): same weights, T = 1
    model, t = calibrate(model, val_dataset)         # fit T on (images, labels) batches and store it in the model
    temperature_of(model)                            # T, or None for a model without a Temperature layer
    logits_model(model)(images)                      # the logits, before T

Every consumer of the saved model (evaluate, predict, inference, the SavedModel / TFLite / TF.js exports, the
web page) then gets calibrated probabilities with no code of its own: T is a weight of the model, a constant
in the converted graphs. The argmax never changes (T only divides). Fitting: calibration.fit_temperature.
"""
from __future__ import annotations

import keras
import numpy as np

from . import calibration
from .config import UserError

LOGITS, TEMPERATURE, PROBABILITIES = "logits", "temperature", "probabilities"


@keras.saving.register_keras_serializable(package="emotion")
class Temperature(keras.layers.Layer):
    """logits / T, T a non-trainable scalar weight (1 until calibrate() fits it)."""

    def build(self, input_shape):
        self.temperature = self.add_weight(name="temperature", shape=(), initializer="ones", trainable=False)

    def call(self, inputs):
        return inputs / keras.ops.cast(self.temperature, inputs.dtype)


def softmax_tail(logits):
    """Temperature then softmax, both float32 (also under mixed precision): the model's last two layers."""
    scaled = Temperature(dtype="float32", name=TEMPERATURE)(logits)
    return keras.layers.Activation("softmax", dtype="float32", name=PROBABILITIES)(scaled)


def head(features, num_classes: int):
    """The classifier's output layers on pooled features: Dense logits (float32) -> Temperature -> softmax."""
    return softmax_tail(keras.layers.Dense(num_classes, dtype="float32", name=LOGITS)(features))


def temperature_layer(model) -> Temperature | None:
    found = [layer for layer in model.layers if isinstance(layer, Temperature)]
    return found[-1] if found else None


def temperature_of(model) -> float | None:
    """The model's T, or None when it has no Temperature layer (saved before calibration existed)."""
    layer = temperature_layer(model)
    return None if layer is None else float(keras.ops.convert_to_numpy(layer.temperature))


def set_temperature(model, t: float) -> None:
    if not (np.isfinite(t) and t > 0):
        raise ValueError(f"temperature must be a number > 0, got {t}")
    temperature_layer(model).temperature.assign(float(t))


def with_temperature(model):
    """The model itself when it has a Temperature layer; a model saved before (its last layer a Dense with a
    softmax) rebuilt as Dense logits -> Temperature (T = 1) -> softmax with the same weights and outputs."""
    if temperature_layer(model) is not None:
        return model
    last = model.layers[-1]
    if not (isinstance(last, keras.layers.Dense) and last.get_config().get("activation") == "softmax"):
        raise UserError(f"cannot calibrate the model {model.name}: its last layer is {type(last).__name__} "
                        f"{last.name!r}, not a Dense softmax head or a temperature layer")
    config = {**last.get_config(), "activation": "linear", "name": LOGITS}
    dense = keras.layers.Dense.from_config(config)
    logits = dense(last.input)
    dense.set_weights(last.get_weights())
    return keras.Model(model.inputs, softmax_tail(logits), name=model.name)


def logits_model(model):
    """A model sharing `model`'s layers that outputs the logits (the Temperature layer's input)."""
    return keras.Model(model.inputs, temperature_layer(model).input)


def calibrate(model, dataset) -> tuple[keras.Model, float, np.ndarray, np.ndarray]:
    """Fit T on (images, labels) batches (the val split) and store it: (model, T, labels, logits). The model
    is rebuilt with a Temperature layer first when it has none (with_temperature)."""
    from .model import predict_probs  # (here: model.py imports this module)

    model = with_temperature(model)
    y, logits = predict_probs(logits_model(model), dataset)
    set_temperature(model, calibration.fit_temperature(logits, y))
    return model, temperature_of(model), y, logits  # T as the model holds it (float32), so reports agree
