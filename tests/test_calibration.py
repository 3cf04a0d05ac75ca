"""Calibration: temperature scaling inside the model, fitted on val, reported by evaluate.py on test,
carried by the exports; "uncertain" below min_confidence; a model saved before all this still loads and runs.

Real faces: the AffectNet sample's val split (fitting) and test split (measuring), 15 per class, at 32x32 on a
tiny random ResNet50 whose logits are spread (support.spread_head) and then multiplied by 10: a deliberately
over-confident model (top probabilities near 1, accuracy near chance)."""
from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from support import as_set_args, link_organized, plain_keras_probs, run_script, spread_model, tiny_config

PER_CLASS = 15


# ------------------------------------------------------------------------------------------------
# The numbers (numpy only)


def test_ece_brier_nll_and_coverage_on_known_cases():
    from emotion.evaluation import calibration_metrics
    probs = np.array([[0.9, 0.1]] * 10)
    right = np.zeros(10, int)                       # 10 of 10 right at confidence 0.9: gap 0.1
    half = np.array([0] * 5 + [1] * 5)              # 5 of 10 right at confidence 0.9: gap 0.4
    assert calibration_metrics.ece(probs, right) == pytest.approx(0.1)
    assert calibration_metrics.ece(probs, half) == pytest.approx(0.4)
    assert calibration_metrics.brier(np.eye(3), np.arange(3)) == 0 and calibration_metrics.brier(np.eye(3), [1, 2, 0]) == 2
    assert calibration_metrics.nll(probs, right) == pytest.approx(-np.log(0.9))
    mixed = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.55, 0.45]])
    at = calibration_metrics.coverage_at(mixed, np.array([0, 1, 1, 0]), 0.6)
    assert at == {"coverage": 0.75, "answered_accuracy": pytest.approx(2 / 3)}
    curve = calibration_metrics.coverage_curve(mixed, np.array([0, 1, 1, 0]))
    np.testing.assert_allclose(curve["coverage"], [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(curve["accuracy"], [1.0, 1.0, 2 / 3, 0.75])


def test_fit_temperature_finds_the_nll_minimum_and_undo_recovers_the_raw_softmax():
    from emotion.evaluation import calibration_metrics
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1, (400, 8))
    y = np.array([rng.choice(8, p=p) for p in calibration_metrics.softmax(logits)])  # calibrated at T = 1 by construction
    t = calibration_metrics.fit_temperature(10 * logits, y)
    assert 7 < t < 14  # x10 logits need about T = 10
    nll = lambda s: calibration_metrics.nll(calibration_metrics.softmax(10 * logits / s), y)  # noqa: E731
    assert nll(t) <= min(nll(t * 0.98), nll(t * 1.02))
    np.testing.assert_allclose(calibration_metrics.undo_temperature(calibration_metrics.softmax(logits / 2.5), 2.5),
                               calibration_metrics.softmax(logits), atol=1e-12)


def test_the_uncertain_rule():
    from emotion.runtime import confidence
    assert confidence.decide("happy", 0.49, 0.5) == "uncertain" and confidence.decide("happy", 0.5, 0.5) == "happy"
    assert confidence.display_text("uncertain", "happy", 0.42) == "uncertain (happy 42%)"
    assert confidence.display_text("happy", "happy", 0.87) == "happy 87%"


# ------------------------------------------------------------------------------------------------
# An over-confident model, calibrated by evaluate.py --calibrate


def _images(folder: Path, shape) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image
    from support import CLASS_NAMES
    files = sorted(folder.rglob("*.*"))
    x = np.stack([np.asarray(Image.open(f).convert("RGB").resize(tuple(shape[:2])), np.float32) for f in files])
    return x, np.array([CLASS_NAMES.index(f.parent.name) for f in files])


def _legacy_model(cfg):
    """build_model as it was before temperature scaling: the custom preprocessing layer, the head a Dense with a softmax."""
    import keras

    from emotion.model import legacy_layers
    keras.utils.set_random_seed(cfg.seed)
    inputs = keras.Input(shape=tuple(cfg.input_shape), name="image")
    x = legacy_layers.ResNetPreprocess(name="resnet_preprocess")(inputs)
    x = keras.applications.ResNet50(include_top=False, weights=None, input_shape=tuple(cfg.input_shape))(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = keras.layers.Dense(cfg.dense_units, activation="relu", name="head_dense")(x)
    x = keras.layers.Dropout(cfg.dropout, name="head_dropout")(x)
    outputs = keras.layers.Dense(8, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="emotion_resnet50")


@pytest.fixture(scope="module")
def overconfident(tmp_path_factory):
    """A saved over-confident model (logits x10), then `evaluate.py --calibrate` on test: a dict of what the
    tests read (the model before, the test images, the metrics JSON, the run's stdout)."""
    import evaluate
    from emotion.common.config import load_config
    from emotion.model import network as model_lib

    tmp = tmp_path_factory.mktemp("calibration")
    overrides = tiny_config(tmp)
    cfg = load_config(None, overrides)
    link_organized(tmp / "data", per_class=PER_CLASS, splits=("val", "test"))
    x_val, _ = _images(tmp / "data" / "val", cfg.input_shape)
    model = spread_model(cfg, x_val)
    logits = model.get_layer("logits")
    kernel, bias = logits.get_weights()
    logits.set_weights([10 * kernel, 10 * bias])
    model_lib.save_model_atomic(model, cfg.model_save_path)
    x_test, y_test = _images(tmp / "data" / "test", cfg.input_shape)
    before = np.asarray(model(x_test, training=False), np.float64)

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert evaluate.main([*as_set_args(overrides), "--calibrate"]) == 0
    metrics = json.loads((tmp / "performance" / "evaluation_metrics.json").read_text())
    return {"cfg": cfg, "overrides": overrides, "tmp": tmp, "x_test": x_test, "y_test": y_test,
            "before": before, "metrics": metrics, "stdout": out.getvalue()}


def test_an_over_confident_model_gets_t_above_1_lower_test_ece_and_the_same_argmax(overconfident):
    from emotion.evaluation import calibration_metrics
    from emotion.model import network as model_lib
    from emotion.model import temperature
    o = overconfident
    before, y = o["before"], o["y_test"]
    assert np.median(before.max(axis=1)) > 0.95  # over-confident indeed: a constant would not be
    model = model_lib.load_model(o["cfg"].model_save_path)
    t = temperature.temperature_of(model)
    assert t > 1 and t == pytest.approx(o["metrics"]["temperature"])
    after = np.asarray(model(o["x_test"], training=False), np.float64)
    np.testing.assert_array_equal(after.argmax(axis=1), before.argmax(axis=1))  # every test image
    assert calibration_metrics.ece(after, y) < calibration_metrics.ece(before, y) / 2  # the test split: not used for fitting
    logits = np.asarray(temperature.logits_model(model)(o["x_test"], training=False), np.float64)
    np.testing.assert_allclose(after, calibration_metrics.softmax(logits / t), atol=1e-5)  # the layer divides by T
    m = o["metrics"]
    assert m["ece"] < m["ece_uncalibrated"] and m["nll"] < m["nll_uncalibrated"]
    assert m["ece_uncalibrated"] == pytest.approx(calibration_metrics.ece(before, y), abs=0.05)  # same faces, own resize
    assert "calibrated" in o["stdout"] and f"T = {t:.3f}" in o["stdout"]


def test_evaluation_metrics_hold_the_calibration_keys_and_the_figures_are_drawn(overconfident):
    from PIL import Image
    o = overconfident
    m, perf = o["metrics"], o["tmp"] / "performance"
    for key in ("ece", "ece_uncalibrated", "nll", "brier", "temperature", "coverage", "answered_accuracy"):
        assert key in m
    assert m["min_confidence"] == 0.5 and m["num_images"] == 8 * PER_CLASS
    probs, y = _predictions(perf)
    assert m["coverage"] == pytest.approx(float((probs.max(axis=1) >= 0.5).mean()))
    text = (perf / "evaluation_metrics.txt").read_text()
    assert f"ece: {m['ece']}" in text and f"temperature: {m['temperature']}" in text
    for name, size in (("reliability_diagram.png", (1200, 550)), ("coverage_accuracy.png", (700, 500))):
        with Image.open(perf / name) as image:
            assert image.size == size and len(image.getcolors(1 << 20)) > 50  # drawn, not blank


def _predictions(perf: Path) -> tuple[np.ndarray, np.ndarray]:
    from support import CLASS_NAMES
    with open(perf / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    probs = np.array([[float(r[f"prob_{c}"]) for c in CLASS_NAMES] for r in rows])
    return probs, np.array([CLASS_NAMES.index(r["true_class"]) for r in rows])


def test_the_model_card_repeats_evaluation_metrics_exactly(overconfident):
    from support import CLASS_NAMES

    from emotion.evaluation import card
    o = overconfident
    m, model_path = o["metrics"], Path(o["cfg"].model_save_path)
    md_path, json_path = card.card_paths(model_path)
    assert (md_path.name, json_path.name) == ("model.card.md", "model.card.json")
    c = json.loads(json_path.read_text())
    test = c["metrics"]["test"]
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "ece", "ece_uncalibrated", "nll", "brier",
                "temperature", "coverage", "answered_accuracy", "min_confidence", "num_images"):
        assert test[key] == m[key], key
    assert c["calibration"]["temperature"] == m["temperature"] and c["model_sha256"] == m["model_sha256"]
    with open(o["tmp"] / "performance" / "detailed_report.csv", newline="") as f:
        f1 = {r["class"]: float(r["f1"]) for r in csv.DictReader(f)}
    assert test["per_class_f1"] == pytest.approx(f1, abs=1e-6)
    assert len(test["most_confused"]) == 3 and all(p["true"] != p["predicted"] for p in test["most_confused"])
    assert c["metrics"]["val"]["num_images"] == 8 * PER_CLASS  # the split T was fitted on
    assert c["data"]["images_per_class"]["test"] == {name: PER_CLASS for name in CLASS_NAMES}  # as evaluated
    assert card.summary_line(model_path) == (f"model: test accuracy {m['accuracy']:.2f}, macro-F1 "
                                             f"{m['macro_f1']:.2f}, calibrated (T={m['temperature']:.2f})")
    md = md_path.read_text()
    assert f"accuracy {m['accuracy']:.4f}" in md and f"temperature: {m['temperature']:.4f}" in md
    for words in ("research only", "not reliable evidence", "EU AI Act", "workplace and in education",
                  "Not for decisions about people"):
        assert words in md, words


def test_predict_json_says_uncertain_below_min_confidence(overconfident):
    """With min_confidence at the 90th percentile of the happy faces' top probabilities (evaluate.py's), most
    faces are "uncertain" (top_label still the argmax), any above it labelled; and the card's line is printed."""
    o = overconfident
    probs, y = _predictions(o["tmp"] / "performance")
    threshold = round(float(np.percentile(probs[y == 4].max(axis=1), 90)), 4)
    folder = o["tmp"] / "data" / "test" / "happy"
    proc = run_script("predict.py", "--image_path", str(folder), "--json",
                      *as_set_args([*o["overrides"], f"min_confidence={threshold}", "classifier_backend=keras"]))
    assert proc.returncode == 0, proc.stderr
    assert card_line(o) in proc.stdout.splitlines()
    entries = json.loads((o["tmp"] / "results" / "photos" / "predictions.json").read_text())
    faces = [f for e in entries for f in e["faces"]]
    assert len(entries) == PER_CLASS and all(e["faces"] for e in entries)
    for f in faces:
        assert f["top_label"] == max(f["probabilities"], key=f["probabilities"].get)
        assert f["label"] == (f["top_label"] if f["confidence"] >= threshold else "uncertain")
    assert any(f["label"] == "uncertain" for f in faces), [f["confidence"] for f in faces]
    assert any(line.strip().startswith("face 1 [") and "] uncertain: " in line for line in proc.stdout.splitlines())


def card_line(o) -> str:
    from emotion.evaluation import card
    return card.summary_line(o["cfg"].model_save_path)


# ------------------------------------------------------------------------------------------------
# A model saved before temperature scaling


def test_a_model_saved_before_loads_runs_and_is_calibrated_by_calibrate_py(tmp_path):
    from emotion.common.config import load_config
    from emotion.evaluation import calibration_metrics, card
    from emotion.model import network as model_lib
    from emotion.model import temperature
    overrides = tiny_config(tmp_path)
    cfg = load_config(None, overrides)
    link_organized(tmp_path / "data", per_class=4, splits=("val",))
    x, _ = _images(tmp_path / "data" / "val", cfg.input_shape)
    legacy = _legacy_model(cfg)
    model_lib.save_model_atomic(legacy, cfg.model_save_path)
    loaded = model_lib.load_model(cfg.model_save_path)
    assert temperature.temperature_of(loaded) is None
    raw = np.asarray(loaded(x, training=False), np.float64)
    np.testing.assert_allclose(raw, np.asarray(legacy(x, training=False)), atol=1e-6)
    assert card.summary_line(cfg.model_save_path) == "model: no model card"

    proc = run_script("calibrate.py", *as_set_args(overrides))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    model = model_lib.load_model(cfg.model_save_path)
    t = temperature.temperature_of(model)
    assert t == pytest.approx(summary["temperature"]) and summary["fitted_on"].startswith("val (32 images")
    assert [layer.name for layer in model.layers[-3:]] == ["logits", "temperature", "probabilities"]
    probs = np.asarray(model(x, training=False), np.float64)
    np.testing.assert_array_equal(probs.argmax(axis=1), raw.argmax(axis=1))
    np.testing.assert_allclose(probs, calibration_metrics.softmax(np.log(raw) / t), atol=1e-5)  # same weights, T applied
    assert card.summary_line(cfg.model_save_path) == f"model: not evaluated yet, calibrated (T={t:.2f})"
    # rewritten with built-in layers: a plain Keras file now, with the same answers as the project's loader
    assert not any(type(layer).__module__.startswith("emotion") for layer in model.layers)
    np.testing.assert_allclose(plain_keras_probs(cfg.model_save_path, x, tmp_path / "plain"), probs, atol=1e-6)


def test_calibrating_a_missing_model_is_one_line(tmp_path):
    proc = run_script("calibrate.py", *as_set_args(tiny_config(tmp_path)))
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
        f"error: no trained model at {tmp_path / 'models' / 'model.h5'}: run python src/train.py first "
        f"(or point --set model_save_path=PATH at one)"]
