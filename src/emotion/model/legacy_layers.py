"""The two custom layers that model files saved before the portable head carried, and the rewrite to built-ins.

    model = model_lib.load_model(path)   # an old file loads: importing this module registers both classes
    model = portable(model)              # the same model with built-in layers only (calibrate.py saves this)

Old files hold `emotion>ResNetPreprocess` (RGB -> BGR and ImageNet mean subtraction) and `emotion>Temperature`
(logits / T), or, older still, a Dense softmax head without any temperature. A file that names a custom class
opens only where that class is importable; the rewritten model opens with plain `keras.models.load_model`.
"""
from __future__ import annotations

import keras

from emotion.common.errors import UserError
from emotion.model import preprocess, temperature


@keras.saving.register_keras_serializable(package="emotion")
class ResNetPreprocess(keras.layers.Layer):
    """keras.applications.resnet50.preprocess_input as a layer (model files saved before the portable form)."""

    def call(self, inputs):
        return keras.applications.resnet50.preprocess_input(keras.ops.cast(inputs, self.compute_dtype))


@keras.saving.register_keras_serializable(package="emotion")
class Temperature(keras.layers.Layer):
    """logits / T with T a non-trainable scalar weight (model files saved before the portable form)."""

    def build(self, input_shape):
        self.temperature = self.add_weight(name="temperature", shape=(), initializer="ones", trainable=False)

    def call(self, inputs):
        return inputs / keras.ops.cast(self.temperature, inputs.dtype)


def portable(model):
    """`model` with built-in Keras layers only, same weights and outputs: a Dense softmax head becomes logits ->
    temperature (T = 1) -> softmax, ResNetPreprocess the frozen 1x1 convolution, Temperature a Rescaling(1/T).
    Returns the model itself when it is portable already; else a copy that shares no layer with it (a shared
    layer would answer `.input` from the old graph)."""
    with_head = _with_temperature(model)
    if with_head is model and not any(isinstance(layer, (ResNetPreprocess, Temperature)) for layer in model.layers):
        return model

    def replace(layer):
        if isinstance(layer, ResNetPreprocess):
            return preprocess.layer(name=layer.name)
        if isinstance(layer, Temperature):
            return temperature.scaling_layer(temperature.temperature_of_layer(layer), name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    rebuilt = keras.models.clone_model(with_head, clone_function=replace)
    for old in with_head.layers:
        new = rebuilt.get_layer(old.name)
        if isinstance(old, ResNetPreprocess):
            preprocess.set_weights(new)
        elif old.weights and not isinstance(old, Temperature):
            new.set_weights(old.get_weights())
    return rebuilt


def _with_temperature(model):
    """The model itself when it has a temperature layer; a model whose last layer is a Dense with a softmax
    rebuilt as Dense logits -> temperature (T = 1) -> softmax with the same weights and outputs."""
    if temperature.temperature_layer(model) is not None:
        return model
    last = model.layers[-1]
    if not (isinstance(last, keras.layers.Dense) and last.get_config().get("activation") == "softmax"):
        raise UserError(f"cannot calibrate the model {model.name}: its last layer is {type(last).__name__} "
                        f"{last.name!r}, not a Dense softmax head or a temperature layer")
    config = {**last.get_config(), "activation": "linear", "name": temperature.LOGITS}
    dense = keras.layers.Dense.from_config(config)
    logits = dense(last.input)
    dense.set_weights(last.get_weights())
    return keras.Model(model.inputs, temperature.softmax_tail(logits), name=model.name)
