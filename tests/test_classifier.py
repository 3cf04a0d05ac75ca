"""emotion/model/conversion.py and emotion/runtime/classifier.py: the TFLite conversion (exact in float32), its cache, batching, quantized paths and the
Keras fallback. One random-init ResNet50 is converted once for the module; the cache and quantization tests
use a tiny model of the same shape of graph (preprocess layer, conv, BatchNorm, softmax), which converts in
a second or two. Timing is benchmarks/bench_classifier.py's job, not asserted here."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from support import YOLO_SAMPLE, keras_probs, save_random_model, spread_head, tflite_op_counts, tiny_model

from emotion.common.errors import UserError
from emotion.model import conversion
from emotion.runtime import classifier

TINY_SHAPE = (32, 32, 3)


class CountConversions:
    """with CountConversions() as count: ... count.n is how many times conversion.convert_model_file ran
    (the cache's only way to a new .tflite), the real function doing the work."""

    def __enter__(self):
        self.n = 0
        self._patch = pytest.MonkeyPatch()
        real = conversion.convert_model_file

        def counted(*args, **kwargs):
            self.n += 1
            return real(*args, **kwargs)

        self._patch.setattr(conversion, "convert_model_file", counted)
        return self

    def __exit__(self, *exc):
        self._patch.undo()


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    """(keras model, saved .h5 path): the project's 96x96 ResNet50, random init."""
    cfg, model, _ = save_random_model(tmp_path_factory.mktemp("resnet"))
    return model, Path(cfg.model_save_path)


@pytest.fixture(scope="module")
def resnet_clf(resnet):
    """The ResNet50 converted to float32 TFLite through the cache (the one ResNet50 conversion here)."""
    _, path = resnet
    with CountConversions() as count:
        clf = classifier.EmotionClassifier.from_model_file(path, num_threads=1)
    assert clf.converted and count.n == 1
    return clf


@pytest.fixture(scope="module")
def faces():
    """16 real AffectNet faces, uint8 [16, 96, 96, 3] RGB."""
    from PIL import Image
    folder = YOLO_SAMPLE / "valid" / "images"
    if not folder.is_dir():
        pytest.skip(f"real data not found at {folder} (see ../shared/README.md)")
    files = sorted(folder.iterdir())[:16]
    return np.stack([np.asarray(Image.open(f).convert("RGB").resize((96, 96))) for f in files])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from emotion.model import network as model_lib
    model = tiny_model(TINY_SHAPE)
    path = tmp_path_factory.mktemp("tiny") / "tiny.h5"
    model_lib.save_model_atomic(model, path)
    return model, path


def _random_faces(n: int, shape=(96, 96, 3), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, *shape)).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# float32: exact to Keras


def test_float32_equals_keras_on_real_faces(resnet, resnet_clf, faces):
    model, _ = resnet
    assert resnet_clf.backend == "tflite" and resnet_clf.input_shape == (96, 96, 3)
    probs = resnet_clf.predict(faces)  # uint8 in
    assert probs.dtype == np.float32 and probs.shape == (16, 8)
    np.testing.assert_allclose(probs, keras_probs(model, faces), rtol=0, atol=1e-4)
    np.testing.assert_array_equal(resnet_clf.predict(faces.astype(np.float32)), probs)


def test_float32_equals_keras_on_random_inputs(resnet, resnet_clf):
    model, _ = resnet
    x = _random_faces(6)
    np.testing.assert_allclose(resnet_clf.predict(x), keras_probs(model, x), rtol=0, atol=1e-4)
    np.testing.assert_allclose(resnet_clf.predict(x).sum(axis=1), 1.0, atol=1e-5)


def test_converted_graph_has_no_variables_and_folded_batchnorm(resnet, resnet_clf):
    import keras
    model, _ = resnet
    dense = sum(isinstance(layer, keras.layers.Dense) for layer in model.layers)  # the head: 1 or 2 (dense_units)
    ops = tflite_op_counts(resnet_clf.path)
    assert ops["CONV_2D"] == 53 and ops["FULLY_CONNECTED"] == dense and ops["SOFTMAX"] == 1
    # BatchNorm folded into the convolutions; variables frozen; nothing left to TensorFlow (Flex) ops
    for op in ("VAR_HANDLE", "READ_VARIABLE", "MUL", "RSQRT", "SUB", "TRANSPOSE", "BATCH_MATMUL"):
        assert op not in ops, ops
    assert not any(op.startswith("Flex") or op == "CUSTOM" for op in ops), ops
    # the preprocessing is one channel reverse and one add (not the layer's 3 slices + pack); all of the
    # graph runs in one XNNPACK partition
    assert ops["REVERSE_V2"] == 1 and "STRIDED_SLICE" not in ops and "PACK" not in ops, ops
    assert ops["DELEGATE"] == 1, ops


def test_batch_equals_single_calls(resnet_clf, faces):
    x = np.concatenate([faces, faces[:3]])  # 19 = two chunks of 8 + 3 one by one
    batch = resnet_clf.predict(x)
    single = np.concatenate([resnet_clf.predict(face) for face in x])  # [96, 96, 3] -> [1, 8]
    np.testing.assert_allclose(batch, single, rtol=0, atol=1e-6)
    np.testing.assert_allclose(batch[16:], batch[:3], rtol=0, atol=1e-6)
    one_by_one = classifier.EmotionClassifier(resnet_clf.path, num_threads=1, batch_chunk=1)
    np.testing.assert_allclose(one_by_one.predict(x), batch, rtol=0, atol=1e-6)


def test_predict_checks_its_input(resnet_clf):
    assert resnet_clf.predict(np.zeros((0, 96, 96, 3), np.uint8)).shape == (0, 8)
    with pytest.raises(ValueError, match=r"\[N, 96, 96, 3\]"):
        resnet_clf.predict(np.zeros((1, 48, 48, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\[N, 96, 96, 3\]"):
        resnet_clf.predict(np.zeros((96, 96), np.uint8))


def test_resnet_cache_is_reused(resnet, resnet_clf):
    _, path = resnet
    mtime = resnet_clf.path.stat().st_mtime_ns
    with CountConversions() as count:
        again = classifier.EmotionClassifier.from_model_file(path, num_threads=1)
    assert not again.converted and count.n == 0
    assert again.path == resnet_clf.path and again.path.stat().st_mtime_ns == mtime
    assert again.path.parent == path.parent and again.path.name.startswith("model.")


# ------------------------------------------------------------------------------------------------
# The cache


def test_cache_is_made_once_and_invalidated_by_a_new_model(tiny, tmp_path):
    from emotion.model import network as model_lib
    model, src = tiny
    path = tmp_path / "m.h5"
    path.write_bytes(src.read_bytes())
    cache_dir = tmp_path / "cache"

    with CountConversions() as count:
        first = classifier.EmotionClassifier.from_model_file(path, num_threads=1, cache_dir=cache_dir)
    assert first.converted and count.n == 1
    assert first.path == conversion.cache_path(path, "float32", cache_dir) and first.path.is_file()
    # the conversion and its digest, no temp file left behind
    assert sorted(p.name for p in cache_dir.iterdir()) == [first.path.name, first.path.name + ".sha256"]
    mtime = first.path.stat().st_mtime_ns

    with CountConversions() as count:
        second = classifier.EmotionClassifier.from_model_file(path, num_threads=1, cache_dir=cache_dir)
    assert not second.converted and count.n == 0
    assert second.path == first.path and second.path.stat().st_mtime_ns == mtime
    x = _random_faces(3, TINY_SHAPE)
    np.testing.assert_allclose(second.predict(x), keras_probs(model, x), rtol=0, atol=1e-5)

    retrained = tiny_model(TINY_SHAPE, seed=1)
    model_lib.save_model_atomic(retrained, path)
    with CountConversions() as count:
        third = classifier.EmotionClassifier.from_model_file(path, num_threads=1, cache_dir=cache_dir)
    assert third.converted and count.n == 1
    assert third.path != first.path and not first.path.exists()  # the stale conversion is removed
    assert sorted(p.name for p in cache_dir.iterdir()) == [third.path.name, third.path.name + ".sha256"]
    np.testing.assert_allclose(third.predict(x), keras_probs(retrained, x), rtol=0, atol=1e-5)


def test_cache_defaults_to_the_model_folder_and_survives_a_damaged_file(tiny, tmp_path):
    _, src = tiny
    path = tmp_path / "m.h5"
    path.write_bytes(src.read_bytes())
    cache = conversion.cache_path(path)
    assert cache.parent == tmp_path
    cache.write_bytes(b"not a flatbuffer")
    clf = classifier.EmotionClassifier.from_model_file(path, num_threads=1)
    assert clf.converted and clf.path == cache and cache.stat().st_size > 1000


@pytest.mark.parametrize("damage", ["cut in half", "1,000 bytes changed", "digest missing"])
def test_a_damaged_cache_is_converted_again_never_run(tiny, tmp_path, damage, capsys):
    """TFLite does not verify a flatbuffer: a cache cut short or with changed bytes could crash the process
    (a segfault, no message). Its digest, written beside it, is checked first."""
    model, src = tiny
    path = tmp_path / "m.h5"
    path.write_bytes(src.read_bytes())
    cache = classifier.EmotionClassifier.from_model_file(path, num_threads=1).path
    data = cache.read_bytes()
    if damage == "cut in half":
        cache.write_bytes(data[:len(data) // 2])
    elif damage == "1,000 bytes changed":
        middle = len(data) // 2
        cache.write_bytes(data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 1000]) + data[middle + 1000:])
    else:
        cache.with_name(cache.name + ".sha256").unlink()
    capsys.readouterr()
    with CountConversions() as count:
        clf = classifier.EmotionClassifier.from_model_file(path, num_threads=1)
    assert clf.converted and count.n == 1
    digest = cache.with_name(cache.name + ".sha256").read_text().strip()
    assert digest == hashlib.sha256(cache.read_bytes()).hexdigest()
    assert f"warning: ignoring the cached {cache}: it is damaged or has no digest beside it" in capsys.readouterr().err
    x = _random_faces(2, TINY_SHAPE)
    np.testing.assert_allclose(clf.predict(x), keras_probs(model, x), rtol=0, atol=1e-5)


def test_missing_model_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no trained model"):
        classifier.EmotionClassifier.from_model_file(tmp_path / "nope.h5")
    with pytest.raises(UserError, match="no trained model"):
        classifier.load_classifier(tmp_path / "nope.h5")


# ------------------------------------------------------------------------------------------------
# Quantized conversions (tiny model: the ResNet50's are measured by the benchmark)


def test_float16_is_close(tiny):
    model, _ = tiny
    data = conversion.to_tflite(model, "float16")
    x = _random_faces(8, TINY_SHAPE)
    np.testing.assert_allclose(classifier.EmotionClassifier(data, num_threads=1).predict(x), keras_probs(model, x),
                               rtol=0, atol=1e-2)
    assert "DEQUANTIZE" in tflite_op_counts(data)  # float16 weights, expanded at load


@pytest.mark.parametrize("quantization", ["int8", "dynamic"])
def test_integer_quantizations_return_probabilities(tiny, quantization):
    model, _ = tiny
    images = _random_faces(16, TINY_SHAPE, seed=3) if quantization == "int8" else None
    data = conversion.to_tflite(model, quantization, images)
    clf = classifier.EmotionClassifier(data, num_threads=1, batch_chunk=2)
    x = _random_faces(5, TINY_SHAPE)
    probs = clf.predict(x.astype(np.uint8))  # two batches of 2 + one face
    one_by_one = classifier.EmotionClassifier(data, num_threads=1, batch_chunk=1)
    np.testing.assert_allclose(probs, one_by_one.predict(x), rtol=0, atol=0.01)  # int8: a step or two of 1/256
    assert probs.shape == (5, 8) and probs.dtype == np.float32
    assert np.all(probs >= 0) and np.all(probs <= 1)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=0.02)  # int8 output steps are 1/256
    np.testing.assert_allclose(probs, keras_probs(model, x), rtol=0, atol=0.1)



@pytest.fixture(scope="module")
def spread_tiny(faces):
    """The tiny model with a spread head calibrated on real faces resized to 32x32, and those faces: its
    probabilities differ by tenths between faces, so a quantized file that returned a constant, or ignored
    its input, could not agree with it."""
    import cv2
    x = np.stack([cv2.resize(f, TINY_SHAPE[:2], interpolation=cv2.INTER_AREA) for f in faces]).astype(np.float32)
    model = spread_head(tiny_model(TINY_SHAPE, seed=2), x)
    expected = keras_probs(model, x)
    assert np.abs(expected - expected.mean(axis=0)).max() > 0.3 and len(set(expected.argmax(axis=1))) >= 4
    return model, x, expected


def test_float32_within_1e_4_on_a_spread_model(spread_tiny):
    model, x, expected = spread_tiny
    probs = classifier.EmotionClassifier(conversion.to_tflite(model, "float32"), num_threads=1).predict(x)
    np.testing.assert_allclose(probs, expected, rtol=0, atol=1e-4)  # README: within 1e-4 of Keras


@pytest.mark.parametrize("quantization, agreement, mean_diff", [("float16", 1.0, 0.01), ("dynamic", 0.75, 0.05),
                                                                ("int8", 0.75, 0.05)])
def test_quantized_formats_pick_the_keras_winner_on_a_spread_model(spread_tiny, quantization, agreement,
                                                                    mean_diff):
    model, x, expected = spread_tiny
    data = conversion.to_tflite(model, quantization, x if quantization == "int8" else None)
    probs = classifier.EmotionClassifier(data, num_threads=1).predict(x)
    assert (probs.argmax(axis=1) == expected.argmax(axis=1)).mean() >= agreement
    assert np.abs(probs - expected).mean() < mean_diff
    assert np.abs(probs - probs.mean(axis=0)).max() > 0.2  # not a constant

def test_mixed_precision_model_converts_as_float32(tmp_path):
    import keras

    from emotion.model import network as model_lib
    keras.mixed_precision.set_global_policy("mixed_bfloat16")  # what train.py sets with mixed_precision on
    try:
        mixed = tiny_model(TINY_SHAPE)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    model_lib.save_model_atomic(mixed, tmp_path / "mixed.h5")
    loaded = model_lib.load_model(tmp_path / "mixed.h5")
    assert loaded.get_layer("conv").dtype_policy.compute_dtype == "bfloat16"
    copy = conversion.float32_model(loaded)
    assert all(layer.dtype_policy.compute_dtype == "float32" for layer in copy.layers)
    clf = classifier.EmotionClassifier(conversion.to_tflite(loaded), num_threads=1)
    x = _random_faces(4, TINY_SHAPE)
    np.testing.assert_allclose(clf.predict(x), keras_probs(copy, x), rtol=0, atol=1e-5)
    np.testing.assert_allclose(clf.predict(x), keras_probs(loaded, x).astype(np.float32), rtol=0, atol=0.05)


def test_int8_requires_representative_images(tiny):
    model, _ = tiny
    with pytest.raises(ValueError, match="representative_images"):
        conversion.to_tflite(model, "int8")
    with pytest.raises(ValueError, match="representative_images"):
        conversion.to_tflite(model, "int8", np.zeros((4, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="quantization"):
        conversion.to_tflite(model, "int4")


# ------------------------------------------------------------------------------------------------
# Threads, the Keras fallback, load_classifier


def test_threads_auto_env_and_explicit(tiny, monkeypatch):
    model, _ = tiny
    data = conversion.to_tflite(model)
    monkeypatch.delenv("EMOTION_TFLITE_THREADS", raising=False)
    auto = classifier.EmotionClassifier(data)
    assert auto.num_threads in (1, 2)
    if classifier.available_cores() >= 2:
        assert set(auto.thread_timings) == {1, 2}
    assert classifier.EmotionClassifier(data, num_threads=2).num_threads == 2
    monkeypatch.setenv("EMOTION_TFLITE_THREADS", "1")
    from_env = classifier.EmotionClassifier(data)
    assert from_env.num_threads == 1 and from_env.thread_timings == {}
    x = _random_faces(2, TINY_SHAPE)
    np.testing.assert_array_equal(auto.predict(x), from_env.predict(x))


def test_keras_classifier_matches_the_model(tiny):
    model, path = tiny
    clf = classifier.KerasClassifier.from_model_file(path)
    assert clf.backend == "keras" and clf.input_shape == TINY_SHAPE
    x = _random_faces(3, TINY_SHAPE)
    np.testing.assert_allclose(clf.predict(x), keras_probs(model, x), rtol=0, atol=1e-6)
    np.testing.assert_allclose(clf.predict(x[0].astype(np.uint8)), keras_probs(model, x[:1].astype(np.uint8)), atol=1e-6)
    assert clf.predict(np.zeros((0, *TINY_SHAPE))).shape == (0, 8)


def test_load_classifier_prefers_tflite_and_falls_back_to_keras(tiny, tmp_path, monkeypatch, capsys):
    model, src = tiny
    path = tmp_path / "m.h5"
    path.write_bytes(src.read_bytes())
    x = _random_faces(2, TINY_SHAPE)
    assert classifier.load_classifier(path, prefer="keras").backend == "keras"

    def broken(*args, **kwargs):
        raise RuntimeError("converter exploded\nsecond line")

    monkeypatch.setattr(conversion, "to_tflite", broken)
    fallback = classifier.load_classifier(path, num_threads=1)
    assert fallback.backend == "keras" and "converter exploded" in capsys.readouterr().err
    np.testing.assert_allclose(fallback.predict(x), keras_probs(model, x), rtol=0, atol=1e-6)
    assert not conversion.cache_path(path).exists()

    monkeypatch.undo()
    clf = classifier.load_classifier(path, num_threads=1)
    assert clf.backend == "tflite" and clf.converted
    np.testing.assert_allclose(clf.predict(x), keras_probs(model, x), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="prefer"):
        classifier.load_classifier(path, prefer="onnx")
