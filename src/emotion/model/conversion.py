"""Model conversion: Keras -> TFLite, Keras -> SavedModel, BatchNorm folding for TF.js, and the cached conversion.

    data = to_tflite(model, "float16")                              # bytes of a .tflite file (export.py writes it)
    data = to_tflite(model, "int8", representative_images=images)   # full integer, float32 input and output
    export_saved_model(model, "out/saved_model")                    # the SavedModel export.py ships
    folded, n = fold_batch_norms(model)                             # what TF.js converts (n == 53 for ResNet50)
    cache = cache_path("models/emotion_detection_model.h5")         # where classifier.py keeps its conversion
    data = convert_model_file("models/emotion_detection_model.h5")  # the saved model file, converted to float32

The model takes raw RGB 0..255 (its "resnet_preprocess" layer does the rest), and so does every path here.
The conversion freezes the inference function (the one export_saved_model serves: the model called with
training=False, so no BatchNorm update ops; float32 even for a mixed-precision model) with its weights as
constants (frozen_function) and hands it to TFLiteConverter.from_concrete_functions. The float32 graph has
BatchNorm folded into the 53 convolutions, no variables, everything in one XNNPACK partition; the
preprocessing is one REVERSE_V2 (RGB -> BGR) and one ADD (-mean). It replaced a conversion from a SavedModel
written to disk for it (TFLiteConverter.from_saved_model), which gave the same operators and outputs when
compared, in 11.9 s against 7.6 s for a 96x96 ResNet50 on 2 cores: 94 MB of variables and a meta graph written
only to be read back. (from_keras_model saves a SavedModel itself and prints every variable.)

The cached conversion of a model file is named after the model and a hash of its bytes
(emotion_detection_model.<sha256[:16]>.float32.tflite): later runs start without TensorFlow's converter,
and a retrained model gets a fresh conversion (store_cached removes the stale file). Running a converted
model is classifier.py's job. TensorFlow is imported lazily (inside the functions): importing this is cheap.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np

from emotion.common import atomic, console, files
from emotion.model import preprocess

QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")
# quantizations a model file converts to alone (int8 needs calibration images)
CACHEABLE = ("float32", "float16", "dynamic")


# ------------------------------------------------------------------------------------------------
# SavedModel and float32


def export_saved_model(model, path: str | os.PathLike, batch_size: int | None = None,
                       channel_flip: str = "reverse") -> Path:
    """Write `model` as a SavedModel whose endpoint "serve" (also "serving_default") runs it for inference:
    float32 "image" [batch_size or None, H, W, 3] RGB 0..255 -> float32 probabilities [B, C].

    The endpoint calls the model with training=False (a plain model.export() traces the training call and
    can keep BatchNorm update ops that the TFLite converter rejects), on a float32 copy when the model was
    trained under mixed precision (float16/bfloat16 ops do not convert), with the model's RGB -> BGR mean
    preprocessing as one reverse + one add (the layer's 3 slices + stack cost ~0.15 ms a face in TFLite),
    checked equal to the layer. to_tflite freezes the same function (frozen_function); export.py ships this.
    """
    import keras
    import tensorflow as tf

    path = Path(path)
    trackable, fn = _inference_function(model, channel_flip)
    spec = tf.TensorSpec([batch_size, *model.input_shape[1:]], tf.float32, name="image")
    archive = keras.export.ExportArchive()
    archive.track(trackable)
    archive.add_endpoint("serve", fn, input_signature=[spec])
    archive.write_out(str(path), verbose=False)
    return path


def float32_model(model):
    """The model itself when it computes in float32, else a float32 copy with the same weights (a model
    trained under mixed_float16 / mixed_bfloat16 keeps that policy when loaded)."""
    import keras

    from emotion.model.network import all_layers
    if all(layer.dtype_policy.compute_dtype == "float32" for layer in all_layers(model)):
        return model

    def as_float32(layer):
        config = layer.get_config()
        config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=as_float32, recursive=True)
    copy.set_weights(model.get_weights())
    return copy


def _inference_function(model, channel_flip: str = "reverse"):
    """(what to track, fn): fn(x) = the model's probabilities for raw RGB x, in inference mode, float32.
    channel_flip: how RGB becomes BGR: "reverse" (one REVERSE_V2: the fastest in float TFLite) or "gather"
    (one GATHER: what the int8 graph needs, see to_tflite)."""
    import keras
    import tensorflow as tf

    model = float32_model(model)
    plain = (model, lambda x: model(x, training=False))
    first = [layer for layer in model.layers if layer.name == preprocess.NAME]  # older files' custom layer too
    if len(model.inputs) != 1 or len(first) != 1:
        return plain
    layer = first[0]
    channels = int(model.input_shape[-1])
    # the layer is x[..., ::-1] + offset (offset = -ImageNet mean, BGR): check it exactly before relying on it
    offset = np.asarray(layer(np.zeros((1, 1, 1, channels), np.float32)), np.float32)[0, 0, 0]
    probe = np.random.default_rng(0).uniform(0, 255, (2, 4, 4, channels)).astype(np.float32)
    if not np.array_equal(np.asarray(layer(probe)), probe[..., ::-1] + offset):
        return plain
    try:
        rest = keras.Model(layer.output, model.output)  # everything after the preprocessing, same weights
    except Exception:  # the input feeds more than the preprocessing layer
        return plain
    offset = tf.constant(offset)
    if channel_flip == "gather":
        order = list(range(channels))[::-1]
        return rest, lambda x: rest(tf.gather(x, order, axis=-1) + offset, training=False)
    return rest, lambda x: rest(tf.reverse(x, axis=[-1]) + offset, training=False)


# ------------------------------------------------------------------------------------------------
# BatchNorm folding (for TF.js)


def fold_batch_norms(model):
    """(copy, n): a float32 copy of `model` in which every BatchNormalization that only reads a Conv2D with a
    bias (and is that convolution's only reader) is folded into the convolution's kernel and bias and
    replaced by a pass-through layer; n is how many were folded. Inference output is unchanged up to float
    rounding (~1e-6). Graph converters that do not fold BatchNorm themselves (tensorflowjs keeps it as a
    Mul and an AddV2 after each of ResNet50's 53 convolutions) then get a plain conv + bias + relu.

        folded, n = fold_batch_norms(model)     # n == 53 for ResNet50
    """
    import keras

    source = float32_model(model)
    folds = _foldable(source)

    class FoldedBatchNorm(keras.layers.Layer):  # takes the call's training/mask arguments, passes x through
        def call(self, inputs, training=None, mask=None):
            return inputs

    def clone(layer):
        if id(layer) in folds:
            return FoldedBatchNorm(name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(source, clone_function=clone, recursive=True)
    _copy_folded_weights(source, copy, folds)
    return copy, len(folds)


def _foldable(model) -> dict:
    """{id(batch norm layer): its convolution} for every BatchNormalization fold_batch_norms can fold: called once,
    on the output of a Conv2D (with a bias, channels last) that is called once and read by nothing else."""
    import keras
    folds = {}
    for graph, calls, readers in _layer_graphs(model):
        for name, nodes in calls.items():
            layer = graph.get_layer(name)
            if not isinstance(layer, keras.layers.BatchNormalization) or len(nodes) != 1 or len(nodes[0]) != 1:
                continue
            conv = graph.get_layer(nodes[0][0])
            if (type(conv) is keras.layers.Conv2D and conv.use_bias and conv.data_format == "channels_last"
                    and layer.axis in (-1, 3) and len(calls.get(conv.name, [])) == 1 and readers[conv.name] == 1):
                folds[id(layer)] = conv
    return folds


def _layer_graphs(model):
    """(graph, calls, readers) for `model` and every model nested in it, from Keras's public view of the graph
    (no private node objects): calls {layer name: for each call of the layer, the names of the layers whose
    outputs it reads}; readers {layer name: how many reads of its outputs, the model's outputs counted}.

    A functional model's graph is its get_config(): each layer's "inbound_nodes" (the format Keras saves models
    in, so it is stable), their Keras tensors naming the layer that made them ("keras_history"). A Sequential's
    is its order of layers (its first layer reads the input: no name). Other models (subclassed) have none.
    """
    from collections import Counter

    import keras

    from emotion.model.network import all_layers
    for graph in [model, *(layer for layer in all_layers(model) if isinstance(layer, keras.Model))]:
        if isinstance(graph, keras.Sequential):
            names = [layer.name for layer in graph.layers]
            calls = {name: [[previous] if previous else []] for previous, name in zip([None, *names], names)}
            yield graph, calls, Counter(names)  # each output is read once: by the next layer or as the model's
            continue
        config = graph.get_config()
        entries = config.get("layers")
        if not entries or not all("inbound_nodes" in entry for entry in entries):
            continue
        calls = {entry["name"]: [list(_tensor_sources(node)) for node in entry["inbound_nodes"]] for entry in entries}
        readers = Counter(name for nodes in calls.values() for node in nodes for name in node)
        readers.update(_output_sources(config["output_layers"]))
        yield graph, calls, readers


def _tensor_sources(value):
    """The names of the layers that made the Keras tensors in a serialized call's arguments."""
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            yield value["config"]["keras_history"][0]
        else:
            for item in value.values():
                yield from _tensor_sources(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensor_sources(item)


def _output_sources(refs):
    """The layer names in a functional config's output_layers: [name, node index, tensor index] triples, nested."""
    if isinstance(refs, dict):
        refs = list(refs.values())
    if len(refs) == 3 and isinstance(refs[0], str):
        return [refs[0]]
    return [name for ref in refs for name in _output_sources(ref)]


def _copy_folded_weights(source, copy, folds: dict) -> None:
    """Give `copy` (source cloned, folded batch norms replaced) source's weights, each folded batch norm's
    scale and shift multiplied into its convolution's kernel and bias."""
    import keras

    from emotion.model.network import all_layers

    # Paired in order; input layers hold no weights, and the clone renames a nested model's input layer
    # ("input_layer" -> "keras_tensor_1") when the model was built in this process rather than loaded.
    old_layers, new_layers = ([layer for layer in all_layers(m) if not isinstance(layer, keras.layers.InputLayer)]
                              for m in (source, copy))
    if [l.name for l in old_layers] != [l.name for l in new_layers]:
        raise RuntimeError("fold_batch_norms: the clone's layers differ from the model's")
    scales = {id(folds[id(bn)]): _scale_shift(bn) for bn in old_layers if id(bn) in folds}
    for old, new in zip(old_layers, new_layers):
        if id(old) in scales:
            new.set_weights(_folded_conv(old, *scales[id(old)]))
        elif id(old) not in folds and not hasattr(old, "layers") and old.weights:
            new.set_weights(old.get_weights())


def _scale_shift(bn) -> tuple[np.ndarray, np.ndarray]:
    """A BatchNormalization's inference transform as y = x * scale + shift, per channel."""
    gamma = np.asarray(bn.gamma) if bn.scale else 1.0
    beta = np.asarray(bn.beta) if bn.center else 0.0
    mean, var = np.asarray(bn.moving_mean), np.asarray(bn.moving_variance)
    scale = gamma / np.sqrt(var + bn.epsilon)
    return scale, beta - mean * scale


def _folded_conv(conv, scale: np.ndarray, shift: np.ndarray) -> list[np.ndarray]:
    """[kernel, bias] of `conv` followed by x * scale + shift."""
    kernel, bias = (np.asarray(w, np.float64) for w in conv.get_weights())
    bias = (bias * scale + shift).astype(np.float32)
    if not bias.any():
        # An all-zero bias (an untrained model: zero conv bias, identity BatchNorm) is removed by the
        # converters' constant folding, and tensorflowjs then fuses the residual Add in as the
        # convolution's bias, a rank-4 tensor TF.js's WASM backend rejects. The smallest normal float
        # keeps the BiasAdd and changes no output.
        bias[:] = np.finfo(np.float32).tiny
    return [(kernel * scale).astype(np.float32), bias]


# ------------------------------------------------------------------------------------------------
# TFLite


def to_tflite(model, quantization: str = "float32", representative_images: np.ndarray | None = None,
              batch_size: int | None = None) -> bytes:
    """Convert a Keras emotion model to a .tflite flatbuffer (bytes); input float32 RGB 0..255, output float32.

    quantization (ms per 96x96 face on this 2-core CPU, 1 / 2 threads, benchmarks/bench_classifier.py):
      float32  within 1e-4 of the Keras model (measured 1e-6 to 2e-5); ~17 / ~9.6 ms.
      float16  float16 weights (half the file), expanded to float32 at load: float32's speed, ~5e-4 off.
      dynamic  int8 weights, float activations (a quarter of the file); ~5.4 / ~3.3 ms. On a weakly trained
               model: 97% top-1 agreement with Keras, no accuracy lost on the val split.
      int8     full integer, calibrated on representative_images (required: raw RGB 0..255 [K, H, W, 3], a
               few hundred real faces), float32 input and output; ~3 ms. On a weakly trained model (21.7%
               val accuracy) 54.5% top-1 agreement and -1.7 points: small class margins do not survive int8
               activations; measure it on your model (export_report.csv does) before using it.
    batch_size: None keeps the batch dimension resizable (the interpreter starts at 1).
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {' | '.join(QUANTIZATIONS)}, got {quantization!r}")
    if quantization == "int8":
        representative_images = _check_images(representative_images, tuple(model.input_shape[1:]),
                                              "representative_images")
    frozen = frozen_function(model, batch_size, channel_flip=channel_flip_for(quantization))
    return tflite_from_function(frozen, quantization, representative_images)


def frozen_function(model, batch_size: int | None = None, channel_flip: str = "reverse"):
    """export_saved_model's inference function (float32 "image" [batch_size or None, H, W, 3] RGB 0..255 ->
    probabilities) as a concrete function whose weights are constants: what tflite_from_function converts.
    One serves every quantization with the same channel flip (export.py: float32 and float16)."""
    import tensorflow as tf
    # TF's own freezing (the TFLite and TF.js converters use it), not in tf.* under a public name
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    _trackable, fn = _inference_function(model, channel_flip)
    spec = tf.TensorSpec([batch_size, *model.input_shape[1:]], tf.float32, name="image")
    concrete = tf.function(fn).get_concrete_function(spec)
    with console.quiet_unless_verbose():  # its grappler pass logs "Starting new session" past TF_CPP_MIN_LOG_LEVEL
        return convert_variables_to_constants_v2(concrete)


def tflite_from_function(frozen, quantization: str = "float32",
                         representative_images: np.ndarray | None = None) -> bytes:
    """to_tflite's conversion of a frozen_function (made with channel_flip_for(quantization))."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    _quantize(converter, quantization, representative_images)
    with console.quiet_unless_verbose():  # the converter's C++ logs past TF_CPP_MIN_LOG_LEVEL
        return bytes(converter.convert())


def channel_flip_for(quantization: str) -> str:
    """The channel flip export_saved_model needs for a TFLite conversion to `quantization`. int8: a GATHER.
    Quantized, REVERSE_V2 left the channels unflipped (the model saw RGB as BGR: tf.lite's QuantizationDebugger
    gave it a mean squared error of 5,794 against float; on a weakly trained model 6% top-1 agreement with Keras
    and -7.5 accuracy points, 54.5% and -1.7 with GATHER)."""
    return "gather" if quantization == "int8" else "reverse"


def _quantize(converter, quantization: str, images: np.ndarray | None) -> None:
    """Set a TFLiteConverter's options for `quantization` (float32: none)."""
    import tensorflow as tf
    if quantization == "float32":
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "int8":
        def representative_dataset():
            for image in images:
                yield [image[None]]

        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.float32
        converter.inference_output_type = tf.float32


def _check_images(images, shape: tuple, what: str) -> np.ndarray:
    if images is None:
        raise ValueError(f"{what} are required: int8 quantization is calibrated on real faces "
                         f"(float32 [K, {', '.join(map(str, shape))}] RGB 0..255)")
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(shape) or len(images) == 0:
        raise ValueError(f"{what} must be [K, {', '.join(map(str, shape))}] RGB 0..255 with K >= 1, "
                         f"got shape {images.shape}")
    return images


# ------------------------------------------------------------------------------------------------
# The conversion cache of a model file


def convert_model_file(model_path: str | os.PathLike, quantization: str = "float32") -> bytes:
    """The saved Keras model at model_path converted by to_tflite (what the cache holds)."""
    if quantization not in CACHEABLE:
        raise ValueError(f"a model file converts to {' | '.join(CACHEABLE)} (int8 needs calibration "
                         f"images: use to_tflite), got {quantization!r}")
    from emotion.model import network as model_lib
    return to_tflite(model_lib.load_model(model_path), quantization)


def cache_path(model_path: str | os.PathLike, quantization: str = "float32",
               cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the conversion of model_path is cached: <dir>/<stem>.<digest>.<quantization>.tflite
    (dir: cache_dir, default the model's folder)."""
    model_path = Path(model_path)
    folder = Path(cache_dir) if cache_dir is not None else model_path.parent
    return folder / f"{model_path.stem}.{files.sha256(model_path)[:16]}.{quantization}.tflite"


def store_cached(cache: Path, data: bytes) -> Path | None:
    """Write a conversion to its cache_path (atomically), then its digest beside it (<cache>.sha256), and remove
    the earlier versions' conversions. Returns the path, or None with a warning line when it cannot be written
    (it is converted again next time)."""
    try:
        atomic.write_bytes(cache, data)
        atomic.write_text(_digest_path(cache), hashlib.sha256(data).hexdigest() + "\n")
    except OSError as exc:
        console.warn(f"cannot cache the TFLite model at {cache} ({exc.strerror or exc}); "
                 f"it will be converted again next time")
        return None
    _remove_stale(cache)
    return cache


def cached(cache: Path) -> Path | None:
    """The cached conversion when it is there and whole: its bytes match the digest store_cached wrote beside
    it. A damaged file (cut short, bytes changed, no digest) gives None and one warning line, and is converted
    again: TFLite's interpreter does not check a flatbuffer and can crash the process on a damaged one."""
    if not cache.is_file():
        return None
    try:
        expected = _digest_path(cache).read_text(encoding="utf-8").strip()
    except OSError:
        expected = None
    if expected != files.sha256(cache):
        console.warn(f"ignoring the cached {cache}: it is damaged or has no digest beside it; converting again")
        return None
    return cache


def _digest_path(cache: Path) -> Path:
    return cache.with_name(cache.name + ".sha256")


def _remove_stale(cache: Path) -> None:
    """Remove the conversions of earlier versions of the same model (same stem and quantization)."""
    stem, _digest, quantization, _ext = cache.name.rsplit(".", 3)
    pattern = re.compile(re.escape(stem) + r"\.[0-9a-f]{16}\." + re.escape(quantization) + r"\.tflite(\.sha256)?")
    for other in cache.parent.iterdir():
        if other not in (cache, _digest_path(cache)) and pattern.fullmatch(other.name):
            try:
                other.unlink()
            except OSError:
                pass
