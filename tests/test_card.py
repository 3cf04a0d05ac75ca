"""The model card: train.py calibrates its best model and writes <stem>.card.md / .card.json beside it
(data counts per class per split, recipe, time and hardware, val metrics, calibration, intended use and limits);
summary_line is the one line predict.py, inference.py and the web page show."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from support import CLASS_NAMES, as_set_args, link_organized, tiny_config


def test_train_calibrates_the_best_model_and_writes_its_card(tmp_path, capsys, monkeypatch):
    """Also: the run lists train and val once and opens each image once (its epochs and its calibration step
    reuse what it read), where a make_dataset per epoch would list and open them again."""
    import train
    from emotion.data import scanning
    from emotion.evaluation import card
    from emotion.model import network as model_lib
    from emotion.model import temperature

    link_organized(tmp_path / "data", per_class=3, splits=("train", "val"))
    listed, opened = [], []
    list_split, image_problem = scanning.list_split, scanning.image_problem
    monkeypatch.setattr(scanning, "list_split", lambda split_dir, *a, **k: listed.append(split_dir) or list_split(split_dir, *a, **k))
    monkeypatch.setattr(scanning, "image_problem", lambda path: opened.append(path) or image_problem(path))
    overrides = tiny_config(tmp_path, "num_epochs=1", "fine_tune_epochs=0", "optimizer=sgd")  # SGD: traces faster
    assert train.main(as_set_args(overrides)) == 0
    assert sorted(Path(p).name for p in listed) == ["train", "val"]
    assert len(opened) == len(set(opened)) == 2 * 3 * len(CLASS_NAMES)  # each of the 48 images once
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    model_path = tmp_path / "models" / "model.h5"
    model = model_lib.load_model(model_path)
    t = temperature.temperature_of(model)
    assert t == pytest.approx(summary["temperature"]) and t != 1.0 and f"calibrated {model_path}: T = {t:.3f}" in out

    c = json.loads((tmp_path / "models" / "model.card.json").read_text())
    assert c["model"] == "model.h5" and c["model_sha256"] == hashlib.sha256(model_path.read_bytes()).hexdigest()
    counts = c["data"]["images_per_class"]
    assert set(counts) == {"train", "val"} and counts["train"] == {name: 3 for name in CLASS_NAMES}
    assert c["recipe"]["phases"][0] == {"phase": "head", "epochs": 1, "learning_rate": 1.0e-3}
    assert c["recipe"]["optimizer"] == "sgd"  # the run's own settings, not config.yaml's
    assert c["recipe"]["weights"] is None and c["recipe"]["seed"] == 42 and c["recipe"]["augmentation"]["flip"] is True
    assert c["recipe"]["versions"]["tensorflow"].startswith("2.")
    assert c["training"]["train_seconds"] > 0 and c["training"]["hardware"]["cpu_count"] >= 1
    # T minimises the NLL on val (T = 1 is among the candidates): the NLL never rises. (ECE on 24 images of a model
    # at chance can rise a little when T reaches its bound; test_calibration checks that ECE falls where it means
    # something, on an over-confident model.)
    assert c["calibration"]["temperature"] == t and c["calibration"]["val_nll_after"] <= c["calibration"]["val_nll_before"]
    val = c["metrics"]["val"]
    assert val["num_images"] == 24 and set(val["per_class_f1"]) == set(CLASS_NAMES) and c["metrics"]["test"] is None
    assert val["accuracy"] == pytest.approx(summary["best_val_accuracy"], abs=1e-5)  # the best epoch's val figure
    md = (tmp_path / "models" / "model.card.md").read_text()
    assert "- train: 24 images (anger 3," in md and "head: 1 epochs at learning rate 0.001" in md
    assert "research only" in md and "EU AI Act" in md
    assert card.summary_line(model_path) == f"model: not evaluated yet, calibrated (T={t:.2f})"


def _write(model_path, card_json: dict | None):
    from emotion.evaluation import card
    model_path.write_bytes(b"model bytes")
    if card_json is not None:
        card_json = {"model_sha256": hashlib.sha256(model_path.read_bytes()).hexdigest(), **card_json}
        card.card_paths(model_path)[1].write_text(json.dumps(card_json))


def test_summary_line_for_each_kind_of_card(tmp_path):
    from emotion.evaluation import card
    model = tmp_path / "m.h5"
    _write(model, None)
    assert card.summary_line(model) == "model: no model card"
    _write(model, {"calibration": {"temperature": 1.8}, "metrics": {"val": {"accuracy": 0.3}, "test": None}})
    assert card.summary_line(model) == "model: not evaluated yet, calibrated (T=1.80)"
    _write(model, {"calibration": {}, "metrics": {"test": {"accuracy": 0.2412, "macro_f1": 0.2201}}})
    assert card.summary_line(model) == "model: test accuracy 0.24, macro-F1 0.22, not calibrated"
    model.write_bytes(b"another model")  # retrained, card not rewritten
    assert card.summary_line(model).startswith("model: its model card describes another model file")
    card.card_paths(model)[1].write_text("{not json")
    assert card.summary_line(model) == "model: no model card"


def test_update_card_merges_sections_and_renders_both_files(tmp_path):
    from emotion.evaluation import card
    model = tmp_path / "m.h5"
    _write(model, None)
    card.update_card(model, calibration={"temperature": 2.0}, metrics={"val": {"accuracy": 0.5, "num_images": 10}})
    c = card.update_card(model, metrics={"test": {"accuracy": 0.25, "macro_f1": 0.2, "num_images": 4}})
    assert c["metrics"]["val"]["accuracy"] == 0.5 and c["metrics"]["test"]["accuracy"] == 0.25
    assert c["calibration"] == {"temperature": 2.0} and json.loads(card.card_paths(model)[1].read_text()) == c
    md = card.card_paths(model)[0].read_text()
    assert "**test** (4 images): accuracy 0.2500" in md and "temperature: 2.0000" in md
    assert not list(tmp_path.glob(".*tmp*")), "temp files left behind"


def test_inference_prints_the_card_line_and_says_uncertain_below_min_confidence(spread_model_path, tmp_path, capsys):
    """inference.py on 4 frames of the real clip with a model without a card: it runs, says so, and every face
    in predictions.json follows the rule (label "uncertain" below min_confidence, top_label the argmax)."""
    from support import VIDEOS, require

    import inference
    model_path, overrides = spread_model_path
    threshold = 0.6
    argv = ["-v", str(require(VIDEOS / "Megamind.avi")), "--max-frames", "4", "--no-display",
            *as_set_args([*overrides, f"results_dir={tmp_path}", f"min_confidence={threshold}"])]
    assert inference.main(argv) == 0
    assert "model: no model card" in capsys.readouterr().out.splitlines()
    frames = json.loads((tmp_path / "predictions.json").read_text())
    faces = [f for frame in frames for f in frame["faces"]]
    assert faces, "no face found in 4 frames of Megamind.avi"
    for f in faces:
        assert f["top_label"] == max(f["probabilities"], key=f["probabilities"].get)
        assert f["label"] == (f["top_label"] if f["confidence"] >= threshold else "uncertain")
