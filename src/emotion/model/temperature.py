"""Temperature scaling inside the Keras model: logits -> Rescaling(1/T) named "temperature" -> softmax.

Usage:
    probs = head(features, num_classes)              # in build_model: Dense "logits" -> "temperature" -> "probabilities"
    set_temperature(model, t)                        # store T (calibration_step.py fits it on val)
    temperature_of(model)                            # T, or None for a model without a temperature layer
    logits_model(model)(images)                      # the logits, before T

Every consumer of the saved model (evaluate, predict, inference, the SavedModel / TFLite / TF.js exports, the
web page) then gets calibrated probabilities with no code of its own: T is a constant of the model (the
Rescaling layer's scale, 1/T, in its config), a multiplication in the converted graphs. A built-in layer keeps
the file loadable by plain keras.models.load_model. The argmax never changes (T only divides). Fitting:
calibration_metrics.fit_temperature. Model files saved with the older custom Temperature layer: legacy_layers.py.
"""
from __future__ import annotations

import keras
import numpy as np

LOGITS, TEMPERATURE, PROBABILITIES = "logits", "temperature", "probabilities"


def scaling_layer(t: float = 1.0, name: str = TEMPERATURE):
    """The temperature as a built-in layer: x * (1/T), float32 (also under mixed precision)."""
    return keras.layers.Rescaling(1.0 / _checked(t), dtype="float32", name=name)


def softmax_tail(logits):
    """Temperature (T = 1) then softmax, both float32 (also under mixed precision): the model's last two layers."""
    scaled = scaling_layer()(logits)
    return keras.layers.Activation("softmax", dtype="float32", name=PROBABILITIES)(scaled)


def head(features, num_classes: int):
    """The classifier's output layers on pooled features: Dense logits (float32) -> temperature -> softmax."""
    return softmax_tail(keras.layers.Dense(num_classes, dtype="float32", name=LOGITS)(features))


def temperature_layer(model):
    """The model's layer named "temperature" (a Rescaling, or the custom layer of older files), or None."""
    found = [layer for layer in model.layers if layer.name == TEMPERATURE]
    return found[-1] if found else None


def temperature_of_layer(layer) -> float:
    """T of a temperature layer: 1/scale of a Rescaling, the weight of an older file's custom layer."""
    if isinstance(layer, keras.layers.Rescaling):
        return 1.0 / float(layer.scale)
    return float(keras.ops.convert_to_numpy(layer.weights[0]))


def temperature_of(model) -> float | None:
    """The model's T, or None when it has no temperature layer (saved before calibration existed)."""
    layer = temperature_layer(model)
    return None if layer is None else temperature_of_layer(layer)


def set_temperature(model, t: float) -> None:
    """Store T in the model's Rescaling layer. Functions traced from the model before (a tf.function, a
    compiled predict) keep the old T: trace again after this."""
    layer = temperature_layer(model)
    if not isinstance(layer, keras.layers.Rescaling):
        raise ValueError("the model has no built-in temperature layer: rewrite it with legacy_layers.portable")
    layer.scale = 1.0 / _checked(t)


def _checked(t: float) -> float:
    t = float(t)
    if not (np.isfinite(t) and t > 0):
        raise ValueError(f"temperature must be a number > 0, got {t}")
    return t


def logits_model(model):
    """A model sharing `model`'s layers that outputs the logits (the temperature layer's input)."""
    return keras.Model(model.inputs, temperature_layer(model).input)
