"""emotion/runtime/video_frames.py piece by piece, without threads or TensorFlow: which faces are classified on a
frame (--classify-every), the probabilities reused in between, one frame smoothed + drawn + listed (what the
main thread of a video run does), the stage timings and log line, and the run's recorded results. Frames are
real (the first frames of ../shared/videos/Megamind.avi); probabilities are fixed Dirichlet draws, so every
expected value is computed here independently.
"""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from support import CLASS_NAMES, VIDEOS, require

from emotion.common import colours
from emotion.data.faces import Face
from emotion.runtime.video_frames import (ClassifySchedule, FrameAnnotator, HeldProbabilities, RunRecorder, StageTimes,
                                          TrackMemory, log_line, median_ms)

C = len(CLASS_NAMES)


def megamind_frames(n: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(require(VIDEOS / "Megamind.avi")))
    frames = [cap.read()[1] for _ in range(n)]
    cap.release()
    assert all(f is not None for f in frames)
    return frames


# ------------------------------------------------------------------------------------------------
# TrackMemory: the one pruning rule of both threads


def test_track_memory_keeps_everything_up_to_four_times_live_plus_eight_then_only_the_live_tracks():
    memory = TrackMemory()
    for track_id in range(1, 41):           # 40 ids, 2 live: the bound is 4 * (2 + 8) = 40
        memory[track_id] = track_id * 10
    memory.prune(live_ids=[39, 40])
    assert len(memory) == 40 and memory.get(1) == 10  # not above the bound: nothing forgotten yet
    memory[41] = 410
    memory.prune(live_ids=[40, 41])
    assert sorted(memory.values) == [40, 41] and memory[41] == 410
    assert 1 not in memory and memory.get(1, "gone") == "gone"


# ------------------------------------------------------------------------------------------------
# ClassifySchedule (producer thread)


def test_classify_schedule_every_frame_by_default():
    schedule = ClassifySchedule(1)
    assert schedule.due(0, [1, 2, 3]) == [0, 1, 2] and schedule.due(1, []) == []
    assert len(schedule.classified_at) == 0  # nothing to remember


def test_classify_schedule_first_frame_of_a_track_then_every_nth():
    schedule = ClassifySchedule(3)
    plan = {0: [1], 1: [1, 2], 2: [1, 2], 3: [2, 1], 4: [1, 2], 5: [2], 6: [1, 2], 7: [3, 1, 2]}
    due = {i: [ids[k] for k in schedule.due(i, ids, live_ids=[1, 2, 3])] for i, ids in plan.items()}
    # track 1: frames 0, 3, 6; track 2 (new on frame 1): 1, 4, 7; track 3: its first frame, 7.
    assert due == {0: [1], 1: [2], 2: [], 3: [1], 4: [2], 5: [], 6: [1], 7: [3, 2]}


def test_classify_schedule_forgets_dropped_tracks_but_never_a_live_one():
    schedule = ClassifySchedule(2)
    for index in range(200):                 # a new face on every frame, each gone the next; face 1 stays
        assert schedule.due(index, [index + 2], live_ids=[1, index + 2]) == [0]
        if index == 0:
            assert schedule.due(0, [1], live_ids=[1, 2]) == [0]
    assert len(schedule.classified_at) <= 4 * (2 + 8) + 1  # bounded, however long the video
    assert 1 in schedule.classified_at and 100 not in schedule.classified_at
    assert schedule.due(200, [1, 201], live_ids=[1, 201]) == [0]   # 1: last classified on frame 0; 201: on 199
    assert schedule.due(201, [1, 201], live_ids=[1, 201]) == [1]   # 1: on 200; 201: 2 frames ago


# ------------------------------------------------------------------------------------------------
# HeldProbabilities (main thread)


def test_held_probabilities_reuse_the_last_classified_row_and_classify_a_track_with_none():
    rng = np.random.default_rng(1)
    held = HeldProbabilities()
    first = rng.dirichlet(np.ones(C), size=2).astype(np.float32)
    raw = first.copy()
    assert held.fill(raw, ids=[1, 2], due=[0, 1], classify=pytest.fail, live_ids=[]) == {0, 1}
    np.testing.assert_array_equal(raw, first)

    fresh_2 = rng.dirichlet(np.ones(C)).astype(np.float32)
    extra = rng.dirichlet(np.ones(C)).astype(np.float32)
    asked = []
    raw = np.full((3, C), np.nan, np.float32)
    raw[1] = fresh_2                          # only track 2 classified on this frame
    classified = held.fill(raw, ids=[1, 2, 9], due=[1], classify=lambda i: asked.append(i) or extra, live_ids=[1, 2])
    assert classified == {1, 2} and asked == [2]  # track 9 had nothing held: classified here
    np.testing.assert_array_equal(raw, [first[0], fresh_2, extra])


# ------------------------------------------------------------------------------------------------
# FrameAnnotator: one frame of the main thread


def _faces(boxes, scores=None):
    return [Face(box=tuple(b), score=s) for b, s in zip(boxes, scores or [0.9] * len(boxes))]


def test_frame_annotator_smooths_per_track_draws_and_lists_the_faces():
    frames = megamind_frames(3)
    rng = np.random.default_rng(2)
    raw = rng.dirichlet(np.ones(C) * 0.5, size=(3, 2)).astype(np.float32)
    boxes = [(300, 100, 120, 130), (40, 260, 90, 100)]
    annotator = FrameAnnotator(CLASS_NAMES, smoothing=0.6, classify_every=1, forget_after=5)
    expected = {}
    for t, frame in enumerate(frames):
        original = frame.copy()
        ids = [5, 8] if t != 1 else [8, 5]     # the detector lists the faces in either order
        order = [0, 1] if t != 1 else [1, 0]
        fresh = raw[t][order]
        faces = annotator.annotate(frame, _faces([boxes[k] for k in order]), ids, [0, 1], fresh, fps=24.0)
        assert [f["id"] for f in faces] == ids
        for face, row in zip(faces, fresh):
            mean = row if face["id"] not in expected else 0.6 * expected[face["id"]] + 0.4 * row
            expected[face["id"]] = mean
            probs = np.array([face["probabilities"][c] for c in CLASS_NAMES])
            np.testing.assert_allclose(probs, mean / mean.sum(), atol=2e-6)
            np.testing.assert_allclose([face["raw_probabilities"][c] for c in CLASS_NAMES], row, atol=1e-6)
            assert face["label"] == CLASS_NAMES[int(mean.argmax())] and "classified" not in face
            assert set(face) == {"id", "box", "label", "top_label", "confidence", "probabilities", "detector_score",
                                 "raw_probabilities"} and face["top_label"] == face["label"]  # min_confidence 0
            # drawn in place: the box's left edge in the label's colour
            x, y, w, h = face["box"]
            colour = colours.PALETTE[CLASS_NAMES.index(face["label"])]
            assert (frame[y + h // 2, x] == colour).all() and not (original[y + h // 2, x] == colour).all()
        assert (frame[:20, :60] != original[:20, :60]).any()  # the FPS counter


def test_frame_annotator_with_classify_every_reuses_rows_and_marks_what_was_classified():
    frame = megamind_frames(1)[0]
    rng = np.random.default_rng(3)
    rows = rng.dirichlet(np.ones(C), size=3).astype(np.float32)
    missing = rows[2]
    annotator = FrameAnnotator(CLASS_NAMES, smoothing=0.0, classify_every=3, forget_after=5,
                               classify_missing=lambda frame_bgr, face: missing)
    boxes = _faces([(300, 100, 120, 130), (40, 260, 90, 100)])
    first = annotator.annotate(frame.copy(), boxes, [1, 2], [0, 1], rows[:2])
    assert [f["classified"] for f in first] == [True, True] and "raw_probabilities" not in first[0]
    later = annotator.annotate(frame.copy(), boxes + _faces([(500, 300, 80, 80)]), [1, 2, 3], [1], rows[1:2])
    assert [f["classified"] for f in later] == [False, True, True]  # 3: new, with nothing held: classified
    for face, row in zip(later, [rows[0], rows[1], missing]):
        np.testing.assert_allclose([face["probabilities"][c] for c in CLASS_NAMES], row / row.sum(), atol=2e-6)


def test_frame_annotator_with_no_face_draws_only_the_fps_counter():
    frame = megamind_frames(1)[0]
    original = frame.copy()
    annotator = FrameAnnotator(CLASS_NAMES, smoothing=0.6)
    assert annotator.annotate(frame, [], [], [], np.zeros((0, C), np.float32), fps=None) == []
    np.testing.assert_array_equal(frame, original)
    annotator.annotate(frame, [], [], [], np.zeros((0, C), np.float32), fps=12.5)
    changed = np.argwhere((frame != original).any(axis=2))
    assert len(changed) and changed.max(axis=0)[0] < 40 and changed.max(axis=0)[1] < 160


# ------------------------------------------------------------------------------------------------
# StageTimes, the log line, RunRecorder


def test_stage_times_medians_and_the_fps_of_the_last_frames():
    times = StageTimes(window=2)
    assert times.fps() is None and times.median("wall") is None
    for wall in (100.0, 50.0, 25.0):
        times.add(decode=1.0, detect=2.0, classify=wall / 5, draw=0.5, wall=wall)
    assert times.fps() == pytest.approx(2 / 0.075)           # the last two frames only
    assert times.median("wall") == 50.0 and times.median("classify") == 10.0 and median_ms([1.004, 2]) == 1.5


def test_log_line_has_every_field_the_log_promises():
    line = log_line(3, 7, 2, 1, {"decode": 1.234, "detect": 2.0, "classify": 0.5, "draw": 3.0, "wall": 10.0})
    fields = dict(part.split("=") for part in line.split())
    assert fields == {"frame": "3", "source_frame": "7", "faces": "2", "classified": "1", "decode_ms": "1.23",
                      "detect_ms": "2.00", "classify_ms": "0.50", "draw_ms": "3.00", "wall_ms": "10.00"}


def test_run_recorder_counts_keeps_the_written_frames_and_saves_predictions(tmp_path):
    recorder = RunRecorder()
    face = {"id": 1, "label": "happy"}
    recorder.add(0, 0.0, [face, {**face, "id": 2}], source_frame=0)
    recorder.add(1, 0.04171, [], source_frame=2)
    recorder.add(2, 0.08342, [{**face, "classified": False}], source_frame=3)
    recorder.add(3, 0.12513, [face], source_frame=4)  # recorded, but not written when Ctrl-C came
    counts = recorder.finish(written=3)
    assert counts == {"frames": 3, "faces": 3, "frames_with_faces": 2, "tracks": 2, "dominant_track_frames": 2,
                      "faces_classified": 2}
    recorder.save(tmp_path / "predictions.json")
    saved = json.loads((tmp_path / "predictions.json").read_text())
    assert [(p["frame"], p["source_frame"], p["time_s"], len(p["faces"])) for p in saved] == [
        (0, 0, 0.0, 2), (1, 2, 0.0417, 0), (2, 3, 0.0834, 1)]
