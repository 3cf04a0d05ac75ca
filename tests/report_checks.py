"""What a video run's per-track report (tracks.csv, emotion_timeline.png) must agree on, recomputed here from
predictions.json independently of emotion/runtime/track_report.py. Used by test_report.py and by test_inference.py's checks
of every run (video, damaged file, webcam, Ctrl-C, --classify-every).

Usage:
    from report_checks import check_report
    rows = check_report(results_dir, predictions, summary)   # asserts; returns tracks.csv's rows (dicts of str)
"""
from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
from support import CLASS_NAMES

PANEL_DPI, PANEL_HEIGHT_IN, BASE_HEIGHT_IN = 100, 1.2, 1.0   # emotion_timeline.png: 11 in wide, this tall


def expected_rows(predictions: list[dict], class_names=CLASS_NAMES) -> dict[int, dict]:
    """track id -> {first_s, last_s, frames, faces_classified, mean: [C], share: {label: fraction}}."""
    tracks: dict[int, dict] = {}
    for p in predictions:
        for face in p["faces"]:
            t = tracks.setdefault(face["id"], {"times": [], "probs": [], "labels": [], "classified": 0})
            t["times"].append(p["time_s"])
            t["probs"].append([face["probabilities"][c] for c in class_names])
            t["labels"].append(face["label"])
            t["classified"] += face.get("classified", True)
    out = {}
    for track_id, t in tracks.items():
        n = len(t["labels"])
        out[track_id] = {"first_s": min(t["times"]), "last_s": max(t["times"]), "frames": n,
                         "faces_classified": t["classified"], "mean": np.mean(t["probs"], axis=0),
                         "share": {label: t["labels"].count(label) / n for label in set(t["labels"])}}
    return out


def check_report(results: Path, predictions: list[dict], summary: dict | None = None,
                 class_names=CLASS_NAMES) -> list[dict]:
    """tracks.csv: one row per track id of predictions.json, every column right, frames adding up to the face
    entries; emotion_timeline.png: a PNG as tall as its panels (tracks of 1 s or more) need; the summary names
    both. Returns the CSV's rows."""
    with open(results / "tracks.csv", newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows, columns = list(reader), reader.fieldnames
    uncertain = any(face["label"] == "uncertain" for p in predictions for face in p["faces"])
    shares = [*class_names, "uncertain"] if uncertain or "share_uncertain" in columns else list(class_names)
    assert columns == ["id", "first_s", "last_s", "frames", "faces_classified", "dominant_label",
                       *(f"mean_{c}" for c in class_names), *(f"share_{c}" for c in shares)]
    expected = expected_rows(predictions, class_names)
    assert [int(r["id"]) for r in rows] == list(expected)  # every track once, in order of first appearance
    assert sum(int(r["frames"]) for r in rows) == sum(len(p["faces"]) for p in predictions)
    for row in rows:
        e = expected[int(row["id"])]
        assert float(row["first_s"]) == pytest.approx(e["first_s"], abs=1e-3)
        assert float(row["last_s"]) == pytest.approx(e["last_s"], abs=1e-3)
        assert int(row["frames"]) == e["frames"] and int(row["faces_classified"]) == e["faces_classified"]
        means = [float(row[f"mean_{c}"]) for c in class_names]
        np.testing.assert_allclose(means, e["mean"], atol=1e-4)
        assert row["dominant_label"] == class_names[int(np.argmax(e["mean"]))]
        for label in shares:
            assert float(row[f"share_{label}"]) == pytest.approx(e["share"].get(label, 0.0), abs=1e-4)
        assert sum(float(row[f"share_{label}"]) for label in shares) == pytest.approx(1.0, abs=1e-3)
    if summary is not None:
        assert summary["tracks"] == len(rows)
        assert summary["tracks_csv"] == str(results / "tracks.csv")
        assert summary["timeline"] == str(results / "emotion_timeline.png")
    image = cv2.imread(str(results / "emotion_timeline.png"))
    assert image is not None
    panels = min(12, sum(1 for e in expected.values() if e["last_s"] - e["first_s"] >= 1.0))
    height = round(PANEL_DPI * (BASE_HEIGHT_IN + PANEL_HEIGHT_IN * max(1, panels)))
    assert image.shape[:2] == (height, 11 * PANEL_DPI)
    return rows
