"""Running a converted emotion model: TFLite (XNNPACK) with a cached conversion, or the Keras model.

    clf = load_classifier("models/emotion_detection_model.h5")   # TFLite float32; Keras if conversion fails
    probs = clf.predict(faces)        # uint8/float32 [N, 96, 96, 3] (or one [96, 96, 3]) RGB 0..255 -> float32 [N, 8]
    clf.backend, clf.input_shape      # "tflite" | "keras", (96, 96, 3)
    available_cores()                 # CPU cores this process may run on

EmotionClassifier.from_model_file converts the saved Keras model once (conversion.convert_model_file) and
caches the .tflite beside it (conversion.cache_path), so later runs start without TensorFlow's converter.
The conversion itself (SavedModel, TFLite, quantization, BatchNorm folding) is conversion.py's job.
Measured numbers: benchmarks/bench_classifier.py.

TensorFlow is imported lazily (inside the functions), so importing this module is cheap.
"""
from __future__ import annotations

import os
import threading
import time
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from emotion.common import console, paths
from emotion.common.errors import UserError, first_line
from emotion.model import conversion


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask on Linux, else all of them)."""
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
    # console.quiet_unless_verbose: "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." comes from C++.
    with warnings.catch_warnings(), console.quiet_unless_verbose():
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
                        convert=None, **kwargs) -> "EmotionClassifier":
        """The saved Keras model at model_path as TFLite, converted once: the .tflite is cached in cache_dir
        (default: the model's folder) as <model stem>.<sha256 of the model file[:16]>.<quantization>.tflite.
        A cache that cannot be written (read-only folder) only costs the conversion again next time.
        convert: what makes the bytes when they are not cached (default conversion.convert_model_file; export.py
        converts the SavedModel it wrote anyway)."""
        if quantization not in conversion.CACHEABLE:
            raise ValueError(f"from_model_file converts to {' | '.join(conversion.CACHEABLE)} (int8 needs "
                             f"calibration images: use conversion.to_tflite), got {quantization!r}")
        model_path = paths.require_model_file(model_path)
        cache = conversion.cache_path(model_path, quantization, cache_dir)
        if conversion.cached(cache):  # whole, by its digest: the interpreter never sees a damaged file
            try:
                return cls(cache, num_threads, **kwargs)
            except (ValueError, RuntimeError) as exc:  # a cache this TFLite cannot read: convert again
                console.warn(f"ignoring the unreadable cached {cache}: {first_line(exc)}")
        data = convert() if convert is not None else conversion.convert_model_file(model_path, quantization)
        clf = cls(conversion.store_cached(cache, data) or data, num_threads, **kwargs)
        clf.converted = True
        return clf

    def tflite_bytes(self) -> bytes:
        """The .tflite flatbuffer this classifier runs (export.py ships a model file's cached conversion)."""
        return self.path.read_bytes() if self.path is not None else self._source

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
        model = conversion.float32_model(model)  # a mixed-precision model would run float16/bfloat16 on the CPU
        self.model = model
        self.input_shape = tuple(int(d) for d in model.input_shape[1:])
        self.num_classes = int(model.output_shape[-1])
        spec = tf.TensorSpec([None, *self.input_shape], tf.float32, name="image")
        self._forward = tf.function(lambda x: model(x, training=False), input_signature=[spec],
                                    jit_compile=jit_compile, reduce_retracing=True)
        self._lock = threading.Lock()

    @classmethod
    def from_model_file(cls, model_path: str | os.PathLike, **kwargs) -> "KerasClassifier":
        from emotion.model import network as model_lib
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
            console.warn(f"TFLite conversion of {model_path} failed ({type(exc).__name__}: {first_line(exc)}); "
                     f"using the Keras model instead (slower)")
    return KerasClassifier.from_model_file(model_path)


