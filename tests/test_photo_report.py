"""predict.py --summary (results/summary.csv) and --explain (Grad-CAM figures per face) on real photos of
../shared/data/faces-grayscale-350, checked against the run's own predictions.json.

One random-init 96x96 ResNet50 with a spread head (its labels differ between faces) is saved once for the
module and served by the Keras backend (no TFLite conversion needed here).
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from support import CLASS_NAMES, FACES_GRAY, as_set_args, megamind_face_crops, require, spread_head, tiny_config

PHOTOS = 8


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from emotion.common import config
    from emotion.model import network as model_lib
    tmp = tmp_path_factory.mktemp("photo_report")
    # min_confidence 0: every face gets its class, which the counts below check ("uncertain" faces and their
    # count_uncertain column: test_report.py, test_calibration.py)
    overrides = tiny_config(tmp, "input_shape=[96, 96, 3]", "classifier_backend=keras", "face_detector=blazeface",
                            "min_confidence=0")
    cfg = config.load_config(None, overrides)
    model_lib.save_model_atomic(spread_head(model_lib.build_model(cfg), megamind_face_crops(16)), cfg.model_save_path)
    folder = tmp / "photos"
    folder.mkdir()
    for photo in sorted((require(FACES_GRAY) / "images").iterdir())[:PHOTOS]:
        shutil.copy(photo, folder / photo.name)
    shutil.copy(folder / sorted(p.name for p in folder.iterdir())[0], folder / "unreadable.jpg")
    (folder / "unreadable.jpg").write_bytes(b"not a picture")
    return {"overrides": overrides, "cfg": cfg, "folder": folder}


def _predict(env, *args) -> tuple[int, list[str]]:
    import predict
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()):
        code = predict.main([*args, *as_set_args(env["overrides"])])
    return code, out.getvalue().strip().splitlines()


def test_summary_csv_of_a_folder(env):
    code, printed = _predict(env, "--image_path", str(env["folder"]), "--json", "--summary")
    assert code == 1  # the unreadable file
    results = Path(env["cfg"].results_dir) / "photos"
    entries = json.loads((results / "predictions.json").read_text())
    with open(results / "summary.csv", newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows, columns = list(reader), reader.fieldnames
    assert columns == ["image", "faces", "labels", "error", *(f"count_{c}" for c in CLASS_NAMES)]
    assert len(rows) == len(entries) == PHOTOS + 1
    for row, entry in zip(rows, entries):
        labels = [face["label"] for face in entry["faces"]]
        assert row["image"] == entry["image"] and int(row["faces"]) == len(labels)
        assert row["labels"] == ";".join(labels) and row["error"] == (entry["error"] or "")
        assert [int(row[f"count_{c}"]) for c in CLASS_NAMES] == [labels.count(c) for c in CLASS_NAMES]
    bad = next(r for r in rows if r["image"].endswith("unreadable.jpg"))
    assert bad["error"] == "cannot read image" and bad["faces"] == "0"
    faces = sum(len(e["faces"]) for e in entries)
    assert faces >= PHOTOS - 1
    totals = {c: sum(int(r[f"count_{c}"]) for r in rows) for c in CLASS_NAMES}
    assert sum(totals.values()) == faces and sum(v > 0 for v in totals.values()) >= 2  # the spread model varies
    assert f"faces per label: {', '.join(f'{c} {n}' for c, n in totals.items())}" in printed
    summary = json.loads(printed[-1])
    assert summary["summary"] == str(results / "summary.csv") and summary["explanations"] is None


def test_explain_writes_one_grad_cam_figure_per_face(env):
    from emotion.model import gradcam
    from emotion.model import network as model_lib
    from emotion.runtime import recognizer
    code, printed = _predict(env, "--image_path", str(env["folder"]), "--json", "--explain")
    results = Path(env["cfg"].results_dir) / "photos"
    entries = json.loads((results / "predictions.json").read_text())
    folder = results / "explanations"
    expected = sorted(f"{Path(e['image']).stem}_face{k}.png" for e in entries for k in range(1, len(e["faces"]) + 1))
    assert len(expected) >= PHOTOS - 1
    assert sorted(p.name for p in folder.iterdir()) == sorted(expected + [".written-by-emotion-recognition"])
    assert json.loads(printed[-1])["explanations"] == str(folder)
    # one figure checked by content: its middle panel is the crop with the map of the predicted class over it
    entry = next(e for e in entries if e["faces"])
    figure = cv2.imread(str(folder / f"{Path(entry['image']).stem}_face1.png"))
    assert figure.shape[:2] == (280, 800)
    rgb = cv2.cvtColor(cv2.imread(entry["image"]), cv2.COLOR_BGR2RGB)
    rec = recognizer.EmotionRecognizer(env["cfg"])
    crops = rec.crops(rgb, [entry["faces"][0]["box"]]) if not entry["whole_image"] else rec.whole(rgb)[None]
    maps, probs = gradcam.heatmaps(model_lib.load_model(env["cfg"].model_save_path), crops)
    np.testing.assert_allclose(probs[0], [entry["faces"][0]["probabilities"][c] for c in CLASS_NAMES], atol=1e-4)
    left, middle = figure[40:250, 20:250].astype(int), figure[40:250, 270:520].astype(int)
    # the photos are grayscale: the crop panel has no colour, the map panel has JET's (as overlay() draws it)
    colourful = lambda a: (a.max(axis=2) - a.min(axis=2)).mean()  # noqa: E731
    expected_colour = colourful(gradcam.overlay(crops[0], maps[0]).astype(int))
    assert colourful(left) < 3 and colourful(middle) > 0.3 * expected_colour > 5
    # a second run replaces the folder whole: only the new run's figures stay
    code, _ = _predict(env, "--image_path", entry["image"], "--explain")
    assert code == 0
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"{Path(entry['image']).stem}_face{k}.png" for k in range(1, len(entry["faces"]) + 1)]
        + [".written-by-emotion-recognition"])


def test_the_summary_keeps_no_image_in_memory_and_adds_count_uncertain_when_the_last_face_is(tmp_path):
    """predict.py --summary on a large folder: each image's labels go to a spool file as they come (the object's
    memory does not grow with the images), and a face "uncertain" only in the last image still gives every row
    its count_uncertain column."""
    import sys

    from emotion.runtime.photo_summary import PhotoSummary
    summary = PhotoSummary(CLASS_NAMES, spool_dir=tmp_path)
    size = sys.getsizeof(summary.__dict__)
    n = 20_000
    for i in range(n):
        faces = [{"label": CLASS_NAMES[i % 8]}] * (i % 3)
        summary.add({"image": f"img{i}.jpg", "faces": faces, "error": None})
    summary.add({"image": "last.jpg", "faces": [{"label": "uncertain"}, {"label": "sad"}], "error": None})
    summary.add({"image": "bad.jpg", "faces": [], "error": "cannot read image"})
    assert sys.getsizeof(summary.__dict__) == size and summary.spool.tell() > 20 * n   # on disk, not in memory
    counts = summary.write(tmp_path / "summary.csv")
    summary.close()
    assert list(tmp_path.iterdir()) == [tmp_path / "summary.csv"]   # the spool was anonymous: nothing left
    with open(tmp_path / "summary.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == n + 2 and list(rows[0])[-1] == "count_uncertain"
    assert rows[7] == {"image": "img7.jpg", "faces": "1", "labels": "surprise", "error": "",
                       **{f"count_{c}": str(int(c == "surprise")) for c in CLASS_NAMES}, "count_uncertain": "0"}
    assert rows[-2]["labels"] == "uncertain;sad" and rows[-2]["count_uncertain"] == "1"
    assert rows[-1]["error"] == "cannot read image" and rows[-1]["faces"] == "0"
    expected = {c: sum(i % 3 for i in range(n) if i % 8 == k) for k, c in enumerate(CLASS_NAMES)}
    expected["sad"] += 1
    assert counts == {**expected, "uncertain": 1}
