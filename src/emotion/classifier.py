"""Fast face classification: the Keras model converted once to TFLite (XNNPACK) and cached beside it.

    clf = load_classifier("models/emotion_detection_model.h5")   # TFLite float32; Keras if conversion fails
    probs = clf.predict(faces)        # uint8/float32 [N, 96, 96, 3] (or one [96, 96, 3]) RGB 0..255 -> float32 [N, 8]
    clf.backend, clf.input_shape      # "tflite" | "keras", (96, 96, 3)

    data = to_tflite(model, "float16")                              # bytes of a .tflite file (export.py writes it)
    data = to_tflite(model, "int8", representative_images=images)   # full integer, float32 input and output
    export_saved_model(model, "out/saved_model")                    # the SavedModel the conversion starts from

The model takes raw RGB 0..255 (its ResNetPreprocess layer does the rest), and so does every path here.
The conversion goes Keras -> SavedModel (export_saved_model: a keras.export.ExportArchive endpoint calling
the model with training=False, so no BatchNorm update ops; float32 even for a mixed-precision model) ->
TFLiteConverter.from_saved_model. The float32 graph has BatchNorm folded into the 53 convolutions, no
variables, everything in one XNNPACK partition; the preprocessing is one REVERSE_V2 (RGB -> BGR) and one
ADD (-mean). (TFLiteConverter.from_keras_model also works with Keras 3 but prints every variable;
from_concrete_functions keeps the variables as resources unless frozen by hand.)

EmotionClassifier.from_model_file converts the saved Keras model once and writes the .tflite beside it,
named after the model and a hash of its bytes (emotion_detection_model.<sha256[:16]>.float32.tflite):
later runs start without TensorFlow's converter, and a retrained model gets a fresh conversion (the stale
file is removed). Measured numbers: benchmarks/bench_classifier.py.

TensorFlow is imported lazily (inside the functions), so importing this module is cheap.
"""
from __future__ import annotations

import hashlib
import os
import re
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from . import atomic, paths
from .config import UserError

QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")
# quantizations from_model_file can make from the model file alone (int8 needs calibration images)
CACHEABLE = ("float32", "float16", "dynamic")

conversions = 0  # how many times to_tflite ran in this process (tests check the cache with it)


# ------------------------------------------------------------------------------------------------
# Conversion


def export_saved_model(model, path: str | os.PathLike, batch_size: int | None = None,
                       channel_flip: str = "reverse") -> Path:
    """Write `model` as a SavedModel whose endpoint "serve" (also "serving_default") runs it for inference:
    float32 "image" [batch_size or None, H, W, 3] RGB 0..255 -> float32 probabilities [B, C].

    The endpoint calls the model with training=False (a plain model.export() traces the training call and
    can keep BatchNorm update ops that the TFLite converter rejects), on a float32 copy when the model was
    trained under mixed precision (float16/bfloat16 ops do not convert), with the model's RGB -> BGR mean
    preprocessing as one reverse + one add (the layer's 3 slices + stack cost ~0.15 ms a face in TFLite),
    checked equal to the layer. to_tflite starts from it; export.py can ship it.
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
    if all(layer.dtype_policy.compute_dtype == "float32" for layer in _all_layers(model)):
        return model

    def as_float32(layer):
        config = layer.get_config()
        config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=as_float32, recursive=True)
    copy.set_weights(model.get_weights())
    return copy


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
    folds = {}  # id(batch norm layer) -> its convolution
    for layer in _all_layers(source):
        if not isinstance(layer, keras.layers.BatchNormalization) or len(layer._inbound_nodes) != 1:
            continue
        inputs = layer._inbound_nodes[0].input_tensors
        conv = inputs[0]._keras_history.operation if len(inputs) == 1 else None
        if (type(conv) is keras.layers.Conv2D and conv.use_bias and conv.data_format == "channels_last"
                and layer.axis in (-1, 3) and len(conv._outbound_nodes) == 1):
            folds[id(layer)] = conv

    class FoldedBatchNorm(keras.layers.Layer):  # takes the call's training/mask arguments, passes x through
        def call(self, inputs, training=None, mask=None):
            return inputs

    def clone(layer):
        if id(layer) in folds:
            return FoldedBatchNorm(name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(source, clone_function=clone, recursive=True)
    # Paired in order; input layers hold no weights, and the clone renames a nested model's input layer
    # ("input_layer" -> "keras_tensor_1") when the model was built in this process rather than loaded.
    old_layers, new_layers = ([layer for layer in _all_layers(m) if not isinstance(layer, keras.layers.InputLayer)]
                              for m in (source, copy))
    if [l.name for l in old_layers] != [l.name for l in new_layers]:
        raise RuntimeError("fold_batch_norms: the clone's layers differ from the model's")
    new_by_old = {id(old): new for old, new in zip(old_layers, new_layers)}
    scales = {}  # id(conv) -> (scale, shift) per output channel
    for old in old_layers:
        if id(old) in folds:
            gamma = np.asarray(old.gamma) if old.scale else 1.0
            beta = np.asarray(old.beta) if old.center else 0.0
            mean, var = np.asarray(old.moving_mean), np.asarray(old.moving_variance)
            scale = gamma / np.sqrt(var + old.epsilon)
            scales[id(folds[id(old)])] = (scale, beta - mean * scale)
    for old in old_layers:
        new = new_by_old[id(old)]
        if id(old) in scales:
            scale, shift = scales[id(old)]
            kernel, bias = (np.asarray(w, np.float64) for w in old.get_weights())
            bias = (bias * scale + shift).astype(np.float32)
            if not bias.any():
                # An all-zero bias (an untrained model: zero conv bias, identity BatchNorm) is removed by the
                # converters' constant folding, and tensorflowjs then fuses the residual Add in as the
                # convolution's bias, a rank-4 tensor TF.js's WASM backend rejects. The smallest normal float
                # keeps the BiasAdd and changes no output.
                bias[:] = np.finfo(np.float32).tiny
            new.set_weights([(kernel * scale).astype(np.float32), bias])
        elif id(old) not in folds and not hasattr(old, "layers") and old.weights:
            new.set_weights(old.get_weights())
    return copy, len(folds)


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def _inference_function(model, channel_flip: str = "reverse"):
    """(what to track, fn): fn(x) = the model's probabilities for raw RGB x, in inference mode, float32.
    channel_flip: how RGB becomes BGR: "reverse" (one REVERSE_V2: the fastest in float TFLite) or "gather"
    (one GATHER: what the int8 graph needs, see to_tflite)."""
    import keras
    import tensorflow as tf

    model = float32_model(model)
    plain = (model, lambda x: model(x, training=False))
    first = [layer for layer in model.layers if type(layer).__name__ == "ResNetPreprocess"]
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
    global conversions
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {' | '.join(QUANTIZATIONS)}, got {quantization!r}")
    if quantization == "int8":
        representative_images = _check_images(representative_images, tuple(model.input_shape[1:]),
                                              "representative_images")
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="emotion_tflite_") as tmp:
        # int8: the channel flip as a GATHER. Quantized, REVERSE_V2 left the channels unflipped (the model saw
        # RGB as BGR: tf.lite's QuantizationDebugger gave it a mean squared error of 5,794 against float; on a
        # weakly trained model 6% top-1 agreement with Keras and -7.5 accuracy points, 54.5% and -1.7 with GATHER).
        export_saved_model(model, tmp, batch_size, channel_flip="gather" if quantization == "int8" else "reverse")
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=["serve"])
        if quantization == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif quantization == "dynamic":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        elif quantization == "int8":
            images = representative_images

            def representative_dataset():
                for image in images:
                    yield [image[None]]

            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = representative_dataset
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.float32
            converter.inference_output_type = tf.float32
        data = converter.convert()
    conversions += 1
    return bytes(data)


def _check_images(images, shape: tuple, what: str) -> np.ndarray:
    if images is None:
        raise ValueError(f"{what} are required: int8 quantization is calibrated on real faces "
                         f"(float32 [K, {', '.join(map(str, shape))}] RGB 0..255)")
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(shape) or len(images) == 0:
        raise ValueError(f"{what} must be [K, {', '.join(map(str, shape))}] RGB 0..255 with K >= 1, "
                         f"got shape {images.shape}")
    return images


def tflite_op_counts(tflite: bytes | str | os.PathLike) -> dict[str, int]:
    """{op name: count} of a .tflite model's main graph, most frequent first (to check what a conversion
    made); "DELEGATE" counts the XNNPACK partitions (1: the whole graph runs in XNNPACK)."""
    from collections import Counter
    interpreter = _interpreter(tflite, num_threads=1)
    return dict(Counter(op["op_name"] for op in interpreter._get_ops_details()).most_common())


# ------------------------------------------------------------------------------------------------
# Inference


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _threads_from_env() -> int | None:
    env = os.environ.get("EMOTION_TFLITE_THREADS")
    if not env:
        return None
    try:
        return max(1, int(env))
    except ValueError:
        raise UserError(f"EMOTION_TFLITE_THREADS must be a whole number, got {env!r}") from None


def _interpreter(tflite, num_threads: int, batch: int | None = None):
    """A TFLite interpreter (XNNPACK is its default CPU delegate) from bytes or a file path, tensors allocated
    for `batch` faces (default: the model's own batch size; ours is 1).
    ai_edge_litert's when installed (TensorFlow's is deprecated from 2.20), else tf.lite's."""
    kwargs = ({"model_content": bytes(tflite)} if isinstance(tflite, (bytes, bytearray, memoryview))
              else {"model_path": str(tflite)})
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf
        Interpreter = tf.lite.Interpreter
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "tf.lite.Interpreter is deprecated ... use ai_edge_litert"
        interpreter = Interpreter(num_threads=num_threads, **kwargs)
    if batch is not None:
        # Resize before the first allocate_tensors: a dynamic-range model allocated at batch 1 and then
        # resized crashes the process in invoke() (TF 2.19 with XNNPACK); resized first, it runs fine.
        inp = interpreter.get_input_details()[0]
        if int(inp["shape"][0]) != batch:
            interpreter.resize_tensor_input(inp["index"], [batch, *inp["shape"][1:]], strict=False)
    interpreter.allocate_tensors()
    return interpreter


def as_faces(faces, input_shape: Sequence[int]) -> np.ndarray:
    """uint8/float [N, H, W, 3] or one [H, W, 3] -> C-contiguous float32 [N, H, W, 3] (values unchanged)."""
    x = np.asarray(faces)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(input_shape):
        raise ValueError(f"faces must be [N, {', '.join(map(str, input_shape))}] RGB 0..255 (uint8 or float), "
                         f"got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise ValueError(f"faces must be uint8 or float pixels, got dtype {x.dtype}")
    return np.ascontiguousarray(x, dtype=np.float32)


class EmotionClassifier:
    """A TFLite emotion model: predict(faces) -> probabilities, fast at one face per call.

        clf = EmotionClassifier.from_model_file("models/emotion_detection_model.h5")   # converts once, cached
        clf = EmotionClassifier(tflite_bytes_or_path, num_threads=2)
        probs = clf.predict(faces)    # [N, H, W, 3] uint8/float32 RGB 0..255 -> float32 [N, C]

    num_threads: XNNPACK threads. None: EMOTION_TFLITE_THREADS if set, else 1 on a single core, else the
    faster of 1 and 2 timed on this model at construction (a fraction of a second; up to ~2 s on busy
    cores): two threads are faster on idle cores but many times slower when other processes keep the
    cores busy (XNNPACK's threads wait on each other). Results do not depend on the thread count.
    self.thread_timings holds the calibration's median ms per face ({} when none ran).
    batch_chunk: N >= batch_chunk faces run in batches of batch_chunk on a second interpreter (less time
    per face than one by one; made on first use), the rest one by one; 1 = always one by one. float32
    rows are the same either way (int8 ones within an output step of 1/256). predict() is thread-safe
    (one call at a time).
    """

    backend = "tflite"

    def __init__(self, tflite: bytes | str | os.PathLike, num_threads: int | None = None, batch_chunk: int = 8):
        if int(batch_chunk) < 1:
            raise ValueError(f"batch_chunk must be >= 1, got {batch_chunk}")
        self.batch_chunk = int(batch_chunk)
        self.path = None if isinstance(tflite, (bytes, bytearray, memoryview)) else Path(tflite)
        self._source = bytes(tflite) if self.path is None else self.path
        self.converted = False  # from_model_file: whether this instance ran the conversion
        self.thread_timings: dict[int, float] = {}
        num_threads = num_threads or _threads_from_env()
        self.num_threads = int(num_threads) if num_threads else 1
        self._interpreter = _interpreter(self._source, self.num_threads, batch=1)
        inp = self._interpreter.get_input_details()
        out = self._interpreter.get_output_details()
        if len(inp) != 1 or len(out) != 1:
            raise ValueError(f"expected a model with one input and one output, got {len(inp)} and {len(out)}")
        inp, out = inp[0], out[0]
        if inp["dtype"] != np.float32 or out["dtype"] != np.float32 or len(inp["shape"]) != 4:
            raise ValueError(f"expected float32 [B, H, W, 3] -> float32 [B, C], got {inp['dtype'].__name__} "
                             f"{list(inp['shape'])} -> {out['dtype'].__name__} {list(out['shape'])}")
        self._in, self._out = inp["index"], out["index"]
        self.input_shape = tuple(int(d) for d in inp["shape"][1:])
        self.num_classes = int(out["shape"][-1])
        self._chunked = None  # the batch_chunk interpreter, made on first use
        self._lock = threading.Lock()
        if not num_threads and available_cores() >= 2:
            self._calibrate_threads()

    def _calibrate_threads(self, pairs: int = 6) -> None:
        """Keep the faster of 1 and 2 threads: calls alternated on a blank face, medians compared. Two
        threads must win by 15%; once they lose (after 2 pairs) timing stops, since on busy cores each of
        their calls can take a second."""
        two = _interpreter(self._source, 2, batch=1)
        x = np.full((1, *self.input_shape), 128.0, np.float32)
        times: dict[int, list[float]] = {1: [], 2: []}
        self._invoke(self._interpreter, x)  # warm-up: the first call starts the thread pool
        self._invoke(two, x)
        for i in range(pairs):
            for n, it in ((1, self._interpreter), (2, two)):
                start = time.perf_counter()
                self._invoke(it, x)
                times[n].append(time.perf_counter() - start)
            if i >= 1 and np.median(times[2]) > np.median(times[1]):
                break
        self.thread_timings = {n: round(float(np.median(t)) * 1000, 2) for n, t in times.items()}
        if self.thread_timings[2] < 0.85 * self.thread_timings[1]:
            self.num_threads, self._interpreter = 2, two

    def _invoke(self, it, x: np.ndarray) -> np.ndarray:
        it.set_tensor(self._in, x)
        it.invoke()
        return it.get_tensor(self._out)

    @classmethod
    def from_model_file(cls, model_path: str | os.PathLike, num_threads: int | None = None,
                        cache_dir: str | os.PathLike | None = None, quantization: str = "float32",
                        **kwargs) -> "EmotionClassifier":
        """The saved Keras model at model_path as TFLite, converted once: the .tflite is cached in cache_dir
        (default: the model's folder) as <model stem>.<sha256 of the model file[:16]>.<quantization>.tflite.
        A cache that cannot be written (read-only folder) only costs the conversion again next time."""
        if quantization not in CACHEABLE:
            raise ValueError(f"from_model_file converts to {' | '.join(CACHEABLE)} (int8 needs calibration "
                             f"images: use to_tflite), got {quantization!r}")
        model_path = paths.require_model_file(model_path)
        cache = cache_path(model_path, quantization, cache_dir)
        if cache.is_file():
            try:
                return cls(cache, num_threads, **kwargs)
            except (ValueError, RuntimeError) as exc:  # a damaged cache file: convert again
                print(f"warning: ignoring the unreadable cached {cache}: {_first_line(exc)}", file=sys.stderr)
        from . import model as model_lib
        data = to_tflite(model_lib.load_model(model_path), quantization)
        try:
            atomic.write_bytes(cache, data)
            _remove_stale(cache)
            clf = cls(cache, num_threads, **kwargs)
        except OSError as exc:
            print(f"warning: cannot cache the TFLite model at {cache} ({exc.strerror or exc}); "
                  f"it will be converted again next time", file=sys.stderr)
            clf = cls(data, num_threads, **kwargs)
        clf.converted = True
        return clf

    def predict(self, faces) -> np.ndarray:
        """faces: uint8/float [N, H, W, 3] or one [H, W, 3], RGB 0..255 -> float32 [N, C] probabilities."""
        x = as_faces(faces, self.input_shape)
        n, chunk = len(x), self.batch_chunk
        out = np.empty((n, self.num_classes), np.float32)
        with self._lock:
            done = 0
            if chunk > 1 and n >= chunk:
                it = self._chunk_interpreter()
                while n - done >= chunk:
                    out[done:done + chunk] = self._invoke(it, x[done:done + chunk])
                    done += chunk
            for i in range(done, n):
                out[i] = self._invoke(self._interpreter, x[i:i + 1])[0]
        return out

    def _chunk_interpreter(self):
        if self._chunked is None:
            self._chunked = _interpreter(self._source, self.num_threads, batch=self.batch_chunk)
        return self._chunked

    def __repr__(self) -> str:
        source = self.path or f"<{len(self._source)} bytes>"
        return f"EmotionClassifier({source}, num_threads={self.num_threads}, batch_chunk={self.batch_chunk})"


class KerasClassifier:
    """The Keras model (float32) behind a compiled tf.function, with EmotionClassifier's predict(): the
    fallback when the TFLite conversion fails (1.1-2x slower per face than TFLite float32 on this CPU).

        clf = KerasClassifier.from_model_file("models/emotion_detection_model.h5")
        clf = KerasClassifier(keras_model)
    """

    backend = "keras"

    batch_size = 64

    def __init__(self, model, jit_compile: bool = False):
        import tensorflow as tf
        model = float32_model(model)  # a mixed-precision model would run float16/bfloat16 on the CPU
        self.model = model
        self.input_shape = tuple(int(d) for d in model.input_shape[1:])
        self.num_classes = int(model.output_shape[-1])
        spec = tf.TensorSpec([None, *self.input_shape], tf.float32, name="image")
        self._forward = tf.function(lambda x: model(x, training=False), input_signature=[spec],
                                    jit_compile=jit_compile, reduce_retracing=True)
        self._lock = threading.Lock()

    @classmethod
    def from_model_file(cls, model_path: str | os.PathLike, **kwargs) -> "KerasClassifier":
        from . import model as model_lib
        return cls(model_lib.load_model(model_path), **kwargs)

    def predict(self, faces) -> np.ndarray:
        """faces: uint8/float [N, H, W, 3] or one [H, W, 3], RGB 0..255 -> float32 [N, C] probabilities."""
        x = as_faces(faces, self.input_shape)
        out = np.empty((len(x), self.num_classes), np.float32)
        with self._lock:
            for i in range(0, len(x), self.batch_size):  # bounded memory for many faces
                out[i:i + self.batch_size] = self._forward(x[i:i + self.batch_size]).numpy()
        return out

    def __repr__(self) -> str:
        return f"KerasClassifier({self.model.name})"


def load_classifier(model_path: str | os.PathLike, prefer: str = "tflite", num_threads: int | None = None,
                    cache_dir: str | os.PathLike | None = None, quantization: str = "float32"):
    """The classifier for a saved model: TFLite (cached conversion) when prefer="tflite", falling back to
    the Keras model, with a warning, when the conversion or the interpreter fails; prefer="keras" skips it.
    A missing or unreadable model file raises UserError either way."""
    if prefer not in ("tflite", "keras"):
        raise ValueError(f"prefer must be tflite | keras, got {prefer!r}")
    if prefer == "tflite":
        try:
            return EmotionClassifier.from_model_file(model_path, num_threads=num_threads, cache_dir=cache_dir,
                                                     quantization=quantization)
        except UserError:
            raise
        except Exception as exc:  # the converter raises many kinds (ConverterError, RuntimeError, ...)
            print(f"warning: TFLite conversion of {model_path} failed ({type(exc).__name__}: {_first_line(exc)}); "
                  f"using the Keras model instead (slower)", file=sys.stderr)
    return KerasClassifier.from_model_file(model_path)


# ------------------------------------------------------------------------------------------------
# Files


def model_digest(model_path: str | os.PathLike) -> str:
    """sha256 of the model file's bytes, 16 hex digits (names its cached conversions)."""
    with open(model_path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()[:16]


def cache_path(model_path: str | os.PathLike, quantization: str = "float32",
               cache_dir: str | os.PathLike | None = None) -> Path:
    """Where from_model_file keeps the conversion of model_path: <dir>/<stem>.<digest>.<quantization>.tflite."""
    model_path = Path(model_path)
    folder = Path(cache_dir) if cache_dir is not None else model_path.parent
    return folder / f"{model_path.stem}.{model_digest(model_path)}.{quantization}.tflite"


def _remove_stale(cache: Path) -> None:
    """Remove the conversions of earlier versions of the same model (same stem and quantization)."""
    stem, _digest, quantization, _ext = cache.name.rsplit(".", 3)
    pattern = re.compile(re.escape(stem) + r"\.[0-9a-f]{16}\." + re.escape(quantization) + r"\.tflite")
    for other in cache.parent.iterdir():
        if other != cache and pattern.fullmatch(other.name):
            try:
                other.unlink()
            except OSError:
                pass


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
