"""ResNet50's input preprocessing as a built-in Keras layer: raw RGB 0..255 in, BGR minus the ImageNet means out.

    x = preprocess.apply(inputs)      # in build_model: a frozen 1x1 Conv2D named "resnet_preprocess"

keras.applications.resnet50.preprocess_input ("caffe" mode) is a channel permutation and a per-channel shift:
exactly a 1x1 convolution whose kernel is the permutation (ones and zeros) and whose bias is minus the means.
In float32 the products by 1 and 0 and their sum are exact, so the layer equals preprocess_input bit for bit,
and a model file holding it opens with plain keras.models.load_model (no custom class to import).
"""
from __future__ import annotations

import numpy as np

NAME = "resnet_preprocess"
IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)  # keras.applications.imagenet_utils, mode "caffe"


def layer(name: str = NAME):
    """An unbuilt frozen 1x1 Conv2D; its weights are set by set_weights once it is built (apply does both).
    Zeros initializers: building it draws no random numbers, so the backbone's seeded init is unchanged."""
    import keras
    return keras.layers.Conv2D(3, 1, kernel_initializer="zeros", bias_initializer="zeros", trainable=False,
                               name=name)


def weights() -> list[np.ndarray]:
    """[kernel [1, 1, 3, 3], bias [3]]: output channel c is input channel 2 - c, minus the mean of BGR channel c."""
    kernel = np.zeros((1, 1, 3, 3), np.float32)
    for out in range(3):
        kernel[0, 0, 2 - out, out] = 1.0
    return [kernel, -np.asarray(IMAGENET_MEAN_BGR, np.float32)]


def set_weights(conv) -> None:
    conv.set_weights(weights())


def apply(inputs, name: str = NAME):
    """The preprocessing applied to a Keras tensor (building the layer and setting its weights)."""
    conv = layer(name)
    outputs = conv(inputs)
    set_weights(conv)
    return outputs

