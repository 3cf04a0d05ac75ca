"""emotion/runtime/track_report.py: the per-track report of a video or webcam run (tracks.csv, emotion_timeline.png, one line
per track), on hand-made runs with known answers and end to end on ../shared/videos/Megamind.avi.

The end-to-end run uses conftest's spread model (its labels vary between faces, so shares and dominant labels
are not all one class); webcam, Ctrl-C, damaged files and --classify-every runs are checked by
test_inference.py, whose output checks call report_checks.check_report on every run.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json

import cv2
import numpy as np
import pytest
from report_checks import check_report
from support import CLASS_NAMES, VIDEOS, as_set_args, require

from emotion.common import colours
from emotion.common.colours import PALETTE
from emotion.runtime import track_report


def _face(track_id: int, label: str, probs: dict, classified=None) -> dict:
    full = {c: 0.0 for c in CLASS_NAMES} | probs
    face = {"id": track_id, "box": [10, 10, 50, 50], "label": label, "confidence": max(full.values()),
            "probabilities": full}
    if classified is not None:
        face["classified"] = classified
    return face


def _run(track_faces: dict[int, list[tuple[float, dict]]]) -> list[dict]:
    """predictions.json of a run from {id: [(time_s, face)]}: one entry per distinct time, in time order."""
    by_time: dict[float, list] = {}
    for faces in track_faces.values():
        for t, face in faces:
            by_time.setdefault(t, []).append(face)
    return [{"frame": i, "source_frame": i, "time_s": t, "faces": by_time[t]} for i, t in enumerate(sorted(by_time))]


HAPPY, NEUTRAL, SAD = {"happy": 0.7, "neutral": 0.3}, {"happy": 0.4, "neutral": 0.6}, {"happy": 0.2, "neutral": 0.3,
                                                                                         "sad": 0.5}


def _known_run() -> list[dict]:
    """Track 1: 264 frames over 0-11 s, 164 happy, 79 neutral, 21 sad. Track 2: 3 frames sad (sad 0.4) and 2 fear
    (fear 0.9): sad is its most frequent label, fear its highest mean probability. Track 3: 4 frames, 1
    uncertain, 1 held (not classified)."""
    labels = ["happy"] * 164 + ["neutral"] * 79 + ["sad"] * 21
    probs = {"happy": HAPPY, "neutral": NEUTRAL, "sad": SAD}
    one = [(round(i * 11 / 263, 4), _face(1, lab, probs[lab])) for i, lab in enumerate(labels)]
    sad = {"sad": 0.4, "fear": 0.35, "anger": 0.25}
    two = [(0.5 + 0.04 * i, _face(2, lab, sad if lab == "sad" else {"fear": 0.9, "sad": 0.1}))
           for i, lab in enumerate(["sad", "fear", "sad", "fear", "sad"])]
    three = [(2.0, _face(3, "happy", {"happy": 0.6, "surprise": 0.4}, True)),
             (2.04, _face(3, "happy", {"happy": 0.6, "surprise": 0.4}, False)),
             (2.08, _face(3, "uncertain", {"happy": 0.3, "surprise": 0.25, "neutral": 0.25, "sad": 0.2}, True)),
             (2.12, _face(3, "surprise", {"happy": 0.1, "surprise": 0.9}, True))]
    return _run({1: one, 2: two, 3: three})


def test_track_rows_have_the_known_answer():
    rows = track_report.track_rows(_known_run(), CLASS_NAMES)
    assert [r["id"] for r in rows] == [1, 2, 3]
    one, two, three = rows
    assert (one["first_s"], one["last_s"], one["frames"], one["faces_classified"]) == (0.0, 11.0, 264, 264)
    assert one["mean_happy"] == pytest.approx((164 * 0.7 + 79 * 0.4 + 21 * 0.2) / 264, abs=1e-4)
    assert one["mean_sad"] == pytest.approx(21 * 0.5 / 264, abs=1e-4) and one["dominant_label"] == "happy"
    assert (one["share_happy"], one["share_neutral"], one["share_sad"]) == (round(164 / 264, 4), round(79 / 264, 4),
                                                                           round(21 / 264, 4))
    assert two["share_sad"] == 0.6 and two["share_fear"] == 0.4
    assert two["dominant_label"] == "fear"  # by mean probability (0.5 vs 0.3), not by the most frequent label
    assert two["mean_fear"] == pytest.approx((3 * 0.35 + 2 * 0.9) / 5, abs=1e-4)
    assert three["frames"] == 4 and three["faces_classified"] == 3
    assert three["share_uncertain"] == 0.25 and three["share_happy"] == 0.5 and three["share_surprise"] == 0.25
    assert all("share_uncertain" in r for r in rows)  # a column of every row once any face is uncertain
    assert sum(r["frames"] for r in rows) == sum(len(p["faces"]) for p in _known_run())


def test_uncertain_column_only_when_asked_or_present():
    run = _run({1: [(0.0, _face(1, "happy", HAPPY)), (0.04, _face(1, "happy", HAPPY))]})
    assert "share_uncertain" not in track_report.track_rows(run, CLASS_NAMES)[0]
    row = track_report.track_rows(run, CLASS_NAMES, uncertain=True)[0]  # a model with min_confidence: the column is there
    assert row["share_uncertain"] == 0.0 and row["share_happy"] == 1.0


def test_terminal_lines():
    lines = track_report.track_lines(track_report.track_rows(_known_run(), CLASS_NAMES))
    assert lines[0] == "#1 0:00-0:11 (264 frames): happy 62%, neutral 30%, sad 8%"
    assert lines[1] == "#2 0:00-0:00 (5 frames): sad 60%, fear 40%"
    assert lines[2] == "#3 0:02-0:02 (4 frames): happy 50%, surprise 25%, uncertain 25%"
    four = track_report.track_rows(_run({7: [(3725.0 + i, _face(7, lab, {lab: 1.0}))
                                       for i, lab in enumerate(["anger", "fear", "sad", "happy", "happy"])]}),
                             CLASS_NAMES)
    assert track_report.track_lines(four) == ["#7 1:02:05-1:02:09 (5 frames): happy 40%, anger 20%, fear 20%, ..."]


def test_csv_and_timeline_agree_with_the_run(tmp_path):
    run = _known_run()
    rows = track_report.write_report(run, CLASS_NAMES, tmp_path / "tracks.csv", tmp_path / "emotion_timeline.png")
    read = check_report(tmp_path, run)  # recomputed independently of track_report.py
    assert [int(r["id"]) for r in read] == [r["id"] for r in rows]
    assert [float(r["share_uncertain"]) for r in read] == [0.0, 0.0, 0.25]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emotion_timeline.png", "tracks.csv"]  # no temp left


def _axes_columns(image: np.ndarray, color_bgr) -> np.ndarray:
    """x of every pixel column holding 20+ pixels of that colour."""
    mask = (np.abs(image.astype(int) - np.array(color_bgr)).sum(axis=2) < 12)
    return np.flatnonzero(mask.sum(axis=0) >= 20)


def test_timeline_draws_each_track_s_labels_where_they_happen(tmp_path):
    """Track 1 is happy for 5 s, then sad for 5 s: its panel is happy-coloured on the left, sad on the right.
    Track 2 lasts 0.5 s: no panel, summarised in the line."""
    fps = 24
    one = [(i / fps, _face(1, "happy" if i < 5 * fps else "sad", {"happy": 0.9, "neutral": 0.1} if i < 5 * fps
                           else {"sad": 0.8, "fear": 0.2})) for i in range(10 * fps)]
    two = [(2 + i / fps, _face(2, "neutral", {"neutral": 1.0})) for i in range(12)]
    info = track_report.plot_timeline(_run({1: one, 2: two}), CLASS_NAMES, tmp_path / "t.png")
    assert info == {"panels": [1], "summarised": [2]}
    image = cv2.imread(str(tmp_path / "t.png"))
    assert image.shape[:2] == (220, 1100)
    happy = _axes_columns(image, PALETTE[CLASS_NAMES.index("happy")])
    sad = _axes_columns(image, PALETTE[CLASS_NAMES.index("sad")])
    neutral = _axes_columns(image, PALETTE[CLASS_NAMES.index("neutral")])
    assert len(happy) > 300 and len(sad) > 300
    assert happy.max() < sad.min()        # happy first, then sad, split in the middle of the axes
    assert abs((happy.max() + sad.min()) / 2 - (66 + 1089) / 2) < 10
    assert len(neutral) == 0              # track 2 has no panel (its colour is in the legend only: < 20 rows)


def test_a_long_video_with_many_tracks_stays_readable(tmp_path):
    """10 minutes at 24 fps, 3 people all along and 20 short tracks: 12 panels at most, the rest in the line,
    each panel averaged into track_report.MAX_BINS time bins."""
    fps, minutes = 24, 10
    n = fps * 60 * minutes
    rng = np.random.default_rng(0)
    faces = {k: [(i / fps, _face(k, CLASS_NAMES[(i // 2000 + k) % 8], {CLASS_NAMES[(i // 2000 + k) % 8]: 1.0}))
                 for i in range(0, n, 1)] for k in (1, 2, 3)}
    for k in range(4, 24):
        start = rng.integers(0, n - 200)
        length = 12 if k < 14 else 48  # 0.5 s or 2 s
        faces[k] = [((start + i) / fps, _face(k, "neutral", {"neutral": 1.0})) for i in range(length)]
    run = _run(faces)
    info = track_report.plot_timeline(run, CLASS_NAMES, tmp_path / "t.png")
    assert len(info["panels"]) == 12 and {1, 2, 3} <= set(info["panels"])
    assert sorted(info["panels"] + info["summarised"]) == list(range(1, 24))
    assert cv2.imread(str(tmp_path / "t.png")).shape[:2] == (round(100 * (1 + 1.2 * 12)), 1100)
    means, mode = track_report.binned(*track_report.track_series(run, CLASS_NAMES)[1], 0.0, n / fps / track_report.MAX_BINS,
                                track_report.MAX_BINS, 8)
    assert means.shape == (track_report.MAX_BINS, 8) and (mode >= 0).all()


def test_a_run_without_faces_writes_an_empty_report(tmp_path):
    run = [{"frame": i, "source_frame": i, "time_s": i / 24, "faces": []} for i in range(10)]
    assert track_report.write_report(run, CLASS_NAMES, tmp_path / "tracks.csv", tmp_path / "emotion_timeline.png") == []
    check_report(tmp_path, run)


# ------------------------------------------------------------------------------------------------
# End to end: inference.py on the real clip


def test_megamind_run_writes_the_report_and_prints_a_line_per_track(spread_model_path, tmp_path):
    import inference
    require(VIDEOS / "Megamind.avi")
    _, overrides = spread_model_path
    results = tmp_path / "results"
    argv = ["-v", str(VIDEOS / "Megamind.avi"), "--no-display", *as_set_args([*overrides, f"results_dir={results}"])]
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert inference.main(argv) == 0
    printed = out.getvalue().strip().splitlines()
    summary = json.loads(printed[-1])
    predictions = json.loads((results / "predictions.json").read_text())
    rows = check_report(results, predictions, summary)
    assert summary["frames"] == 270 and len(rows) >= 3
    assert sum(int(r["frames"]) for r in rows) == summary["faces"] >= 250
    # the spread model's labels differ between faces: the report is not one class everywhere
    assert len({r["dominant_label"] for r in rows} | {c for r in rows for c in CLASS_NAMES
                                                       if 0 < float(r[f"share_{c}"]) < 1}) >= 2
    lines = printed[-1 - len(rows):-1]
    for row, line in zip(rows, lines):
        names = [*CLASS_NAMES, *(["uncertain"] if "share_uncertain" in row else [])]  # below min_confidence
        shares = sorted(((c, float(row[f"share_{c}"])) for c in names), key=lambda kv: -kv[1])
        head = f"#{row['id']} {track_report.clock(float(row['first_s']))}-{track_report.clock(float(row['last_s']))} " \
               f"({row['frames']} frames): {shares[0][0]} {shares[0][1]:.0%}"
        assert line.startswith(head), (line, head)
    with open(results / "tracks.csv", newline="") as f:
        assert len(list(csv.reader(f))) == len(rows) + 1


def test_the_page_s_timeline_colours_are_the_overlay_s():
    """web/timeline.js draws each class in the colour the Python overlay and emotion_timeline.png use."""
    import re

    from support import REPO
    text = (REPO / "web" / "timeline.js").read_text()
    listed = re.search(r"CLASS_COLORS = \[(.*?)\];", text, re.S).group(1)
    page = [tuple(int(h[i:i + 2], 16) for i in (0, 2, 4)) for h in re.findall(r"'#([0-9a-f]{6})'", listed)]
    assert page == [tuple(c[::-1]) for c in PALETTE]
    assert colours.class_colors(CLASS_NAMES) == [tuple(v / 255 for v in c) for c in page[:8]]
