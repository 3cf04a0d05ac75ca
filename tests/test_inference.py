"""emotion/runtime/tracking.py, emotion/runtime/frame_sources.py and src/inference.py: stable face ids, temporal smoothing, and video/webcam inference on real
clips with their outputs checked by content (predictions.json, the annotated video, the log, labeled frames),
damaged files, a missing file or camera, and Ctrl-C.

One random-init 96x96 ResNet50 (weights=null) is built, saved and converted to TFLite once for the module;
every run writes to its own tmp_path. The real clips come from ../shared/videos (skipped when absent). Speed is
benchmarks/bench_inference.py's job, not asserted here.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from report_checks import check_report
from support import REPO, VIDEOS, as_set_args, keras_probs, require, run_script, save_random_model

import inference
from emotion.common import colours, config
from emotion.common.errors import UserError
from emotion.data import faces
from emotion.runtime import display, frame_sources, tracking

MEGAMIND = VIDEOS / "Megamind.avi"
BUGY = VIDEOS / "Megamind_bugy.avi"
CLASSES = 8


# ------------------------------------------------------------------------------------------------
# tracking.py (pure numpy)


def _probs(*rows):
    return np.array(rows, dtype=np.float64)


def test_smoothed_probabilities_follow_the_exponential_average():
    tracker = tracking.FaceTracker(smoothing=0.6)
    rng = np.random.default_rng(0)
    raw = rng.dirichlet(np.ones(CLASSES), size=6)
    expected = raw[0]
    for t in range(6):
        ids, smoothed = tracker.update([(100 + 2 * t, 50, 80, 80)], raw[t:t + 1])
        if t > 0:
            expected = 0.6 * expected + 0.4 * raw[t]
        assert ids == [1]
        np.testing.assert_allclose(smoothed[0], expected, atol=1e-6)
        assert smoothed[0].sum() == pytest.approx(1.0, abs=1e-5)
    # A missed frame leaves the average as it was; the next match continues it.
    tracker.update([], np.zeros((0, CLASSES)))
    ids, smoothed = tracker.update([(112, 50, 80, 80)], raw[:1])
    assert ids == [1]
    np.testing.assert_allclose(smoothed[0], 0.6 * expected + 0.4 * raw[0], atol=1e-6)


def test_smoothing_zero_passes_raw_probabilities_through():
    tracker = tracking.FaceTracker(smoothing=0.0)
    a, b = _probs([0.9, 0.1] + [0] * 6), _probs([0.1, 0.9] + [0] * 6)
    tracker.update([(0, 0, 50, 50)], a)
    ids, smoothed = tracker.update([(2, 0, 50, 50)], b)
    assert ids == [1]
    np.testing.assert_allclose(smoothed, b, atol=1e-7)


def test_two_faces_keep_distinct_ids_whatever_the_order_of_the_boxes():
    tracker = tracking.FaceTracker(smoothing=0.5)
    left, right = np.array([40.0, 60, 100, 100]), np.array([400.0, 80, 90, 90])
    first, _ = tracker.update([left, right])
    assert len(set(first)) == 2
    for t in range(1, 12):
        step = np.array([3.0 * t, 1.0 * t, 0, 0])
        boxes = [left + step, right - step]
        if t % 2:  # the detector lists them in either order
            ids, _ = tracker.update(boxes[::-1])
            ids = ids[::-1]
        else:
            ids, _ = tracker.update(boxes)
        assert ids == first


def test_a_fast_face_with_little_overlap_is_matched_by_centre_distance():
    tracker = tracking.FaceTracker()
    (a,), _ = tracker.update([(100, 100, 100, 100)])
    (b,), _ = tracker.update([(140, 100, 100, 100)])    # IoU 0.43
    (c,), _ = tracker.update([(185, 100, 100, 100)])    # IoU 0.29 < 0.3, centres 0.45 sides apart
    (d,), _ = tracker.update([(400, 100, 100, 100)])    # 2.15 sides away: another face
    assert a == b == c != d


def test_a_track_survives_max_missed_frames_then_is_dropped_and_new_faces_get_new_ids():
    tracker = tracking.FaceTracker(max_missed=3)
    box = (200, 200, 120, 120)
    (first,), _ = tracker.update([box])
    for _ in range(3):
        tracker.update([])
    (again,), _ = tracker.update([box])
    assert again == first                       # back after 3 missed frames: same face
    for _ in range(4):
        tracker.update([])
    assert tracker.tracks == []                 # 4 > max_missed: dropped
    (later,), _ = tracker.update([box])
    assert later != first                       # a new track, a new id
    ids, _ = tracker.update([box, (600, 50, 100, 100)])
    assert ids[0] == later and ids[1] not in (first, later)
    assert len({first, later, ids[1]}) == 3     # ids are never reused


def test_tracker_rejects_mismatched_probabilities():
    with pytest.raises(ValueError):
        tracking.FaceTracker().update([(0, 0, 10, 10)], np.ones((2, CLASSES)) / CLASSES)
    with pytest.raises(ValueError):
        tracking.FaceTracker(smoothing=1.0)


# ------------------------------------------------------------------------------------------------
# Reading past damaged frames (no model needed)


class FakeCapture:
    """A video file whose frames `bad` cannot be decoded, and from `truncate` on cannot be reached at all."""

    def __init__(self, n=20, bad=(), truncate=None, camera=False):
        self.n, self.bad, self.truncate, self.camera = n, set(bad), truncate, camera
        self.pos = 0
        self.released = False

    def isOpened(self):
        return True

    def read(self, image=None):
        end = self.n if self.truncate is None else self.truncate
        if self.pos >= end:
            return False, None
        i = self.pos
        self.pos += 1
        if i in self.bad:
            return False, None
        frame = np.full((24, 32, 3), i % 256, np.uint8)
        return True, frame

    def get(self, prop):
        return {cv2.CAP_PROP_FPS: 25.0, cv2.CAP_PROP_FRAME_COUNT: 0 if self.camera else float(self.n),
                cv2.CAP_PROP_POS_FRAMES: float(self.pos)}.get(prop, 0.0)

    def set(self, prop, value):
        if prop == cv2.CAP_PROP_POS_FRAMES:
            end = self.n if self.truncate is None else self.truncate
            self.pos = min(int(value), end)  # a seek past the readable part stays at its end
            return True
        return False

    def release(self):
        self.released = True


def _read_all(source):
    out = []
    while (got := source.read()) is not None:
        out.append((int(got[0][0, 0, 0]), got[1]))
    return out


def test_frame_source_skips_damaged_frames_by_position_and_counts_them():
    source = frame_sources.FrameSource(FakeCapture(20, bad={5, 6, 7, 12}), "video", "fake")
    frames = _read_all(source)
    indices = [i for i, _ in frames]
    assert indices == [i for i in range(20) if i not in {5, 6, 7, 12}]
    assert all(pixel == i for pixel, i in frames)       # each frame carries its own source number
    assert source.skipped == 4 and source.lost_at_end == 0 and source.stop_reason == "end"
    assert len(frames) + source.skipped == 20


def test_frame_source_stops_on_a_truncated_file_and_counts_what_is_lost():
    source = frame_sources.FrameSource(FakeCapture(30, truncate=18), "video", "fake")
    frames = _read_all(source)
    assert [i for _, i in frames] == list(range(18))
    assert source.skipped == 0 and source.lost_at_end == 12
    assert "unreadable from frame 18" in source.stop_reason


def test_frame_source_retries_a_camera_then_reports_it_gone(monkeypatch):
    monkeypatch.setattr(frame_sources.time, "sleep", lambda s: None)
    source = frame_sources.FrameSource(FakeCapture(10, bad={3}, camera=True), "camera", "camera:0")
    frames = _read_all(source)
    assert [i for i, _ in frames] == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    assert source.skipped == 1 and source.stop_reason == "camera stopped delivering frames"


def test_a_damaged_copy_of_the_clip_is_read_past_its_bad_stretch(tmp_path):
    """Real decoder behaviour: 200 kB of the file overwritten. cap.read() fails mid-file (a loop stopping
    at the first failure loses the rest of the clip); seeking past the failure reads the rest."""
    data = bytearray(require(MEGAMIND).read_bytes())
    middle = len(data) // 2
    data[middle:middle + 200_000] = b"\xff" * 200_000
    damaged = tmp_path / "damaged.avi"
    damaged.write_bytes(bytes(data))
    cap = cv2.VideoCapture(str(damaged))
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    naive = 0
    while cap.read()[0]:
        naive += 1
    cap.release()
    assert naive < total, "this OpenCV build reads through the damage; the test needs a failing read"
    source = frame_sources.open_video(damaged)
    try:
        frames = _read_all_indices(source)
    finally:
        source.release()
    assert len(frames) > naive and source.skipped >= 1
    assert frames == sorted(set(frames))
    assert len(frames) + source.skipped + source.lost_at_end == total


def _read_all_indices(source):
    out = []
    while (got := source.read()) is not None:
        out.append(got[1])
    return out


def test_no_display_without_an_x_server(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    assert display.display_available() is False
    monkeypatch.setenv("DISPLAY", ":97")  # nothing listens there: must not reach Qt (which would abort)
    assert display.display_available() is False


# ------------------------------------------------------------------------------------------------
# Errors before any model is loaded (subprocesses: what a user sees)


def test_missing_video_and_missing_camera_give_one_error_line(tmp_path):
    for args, expected in ((["-v", str(tmp_path / "nope.mp4")], "error: video not found"),
                           (["-c", "--camera-index", "97"], "error: no camera at index 97")):
        proc = run_script("inference.py", *args, "--no-display", "--set", f"results_dir={tmp_path / 'r'}",
                          timeout=120)
        assert proc.returncode != 0
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith(expected), proc.stderr
    not_video = tmp_path / "notes.avi"
    not_video.write_text("not a video\n")
    proc = run_script("inference.py", "-v", str(not_video), "--no-display", timeout=120)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot read video {not_video}"), proc.stderr



def test_a_fifo_is_refused_at_once_not_waited_on(tmp_path):
    """Opening a FIFO for reading blocks until a writer comes: inference.py would hang with no output."""
    fifo = tmp_path / "clip.avi"
    os.mkfifo(fifo)
    proc = run_script("inference.py", "-v", str(fifo), "--no-display", "--set", f"results_dir={tmp_path / 'r'}",
                      timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (f"error: not a video file: {fifo} is a pipe, socket or device; give the path "
                                   f"of a video file")
    assert not (tmp_path / "r").exists()



def test_an_output_video_inside_the_folder_the_run_replaces_is_refused(tmp_path):
    """labeled_images/ is replaced whole at the end of a run: a video written into it would be gone."""
    results = tmp_path / "r"
    output = results / "labeled_images" / "out.avi"
    proc = run_script("inference.py", "-v", str(require(VIDEOS) / "Megamind.avi"), "--no-display", "--output",
                      str(output), "--set", f"results_dir={results}", timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (f"error: {output} lies in {results / 'labeled_images'}, which this run replaces "
                                   f"(it would be lost): choose another output place; nothing was written")
    assert not results.exists()

def test_a_camera_index_opencv_cannot_take_is_one_usage_line():
    proc = run_script("inference.py", "-c", "--camera-index", "99999999999", "--no-display", timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "inference.py: error: argument --camera-index: must be from 0 to 2147483647, got 99999999999")

def test_default_video_path_is_config_video_path(tmp_path):
    proc = run_script("inference.py", "-v", "--set", f"video_path={tmp_path / 'test.mp4'}", "--no-display",
                      timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (f"error: video not found: {tmp_path / 'test.mp4'} (config key video_path; "
                                   f"pass -v PATH for another file)")


# ------------------------------------------------------------------------------------------------
# End to end with a model


@pytest.fixture(scope="module")
def model_overrides(tmp_path_factory):
    """--set overrides for a saved random-init 96x96 ResNet50, converted to TFLite once (cached beside it)."""
    if faces.blazeface_model_path() is None:
        pytest.skip(f"BlazeFace model not installed ({faces.BLAZEFACE_INSTALL})")
    from emotion.runtime import classifier
    cfg, _, overrides = save_random_model(tmp_path_factory.mktemp("inference_model"), "face_detector=blazeface")
    classifier.load_classifier(cfg.model_save_path, prefer="tflite", num_threads=1)  # the conversion, once
    return overrides


def _run(overrides, tmp_path, *args, results: Path | None = None) -> tuple[int, dict, Path]:
    """inference.main in this process; (exit code, printed JSON summary, results_dir)."""
    results = results or tmp_path / "results"
    argv = [*args, "--no-display", *as_set_args([*overrides, f"results_dir={results}"])]
    with contextlib.redirect_stdout(io.StringIO()) as out:
        code = inference.main(argv)
    return code, json.loads(out.getvalue().strip().splitlines()[-1]), results


def _read_video(path: Path) -> tuple[int, tuple[int, int], float]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"{path} does not open"
    n, size = 0, None
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        n, size = n + 1, (frame.shape[1], frame.shape[0])
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    return n, size, fps


def _check_outputs(results: Path, summary: dict, video_name="test_out.avi", size=(720, 528), fps=23.976,
                   stride=30) -> list[dict]:
    """Everything the outputs must agree on; returns predictions.json."""
    predictions = json.loads((results / "predictions.json").read_text())
    frames = summary["frames"]
    assert len(predictions) == frames > 0
    assert [p["frame"] for p in predictions] == list(range(frames))
    sources = [p["source_frame"] for p in predictions]
    assert sources == sorted(set(sources))
    for p in predictions:
        for face in p["faces"]:
            assert set(face) >= {"id", "box", "label", "confidence", "probabilities", "detector_score"}
            assert len(face["probabilities"]) == CLASSES
            assert sum(face["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
            assert face["top_label"] == max(face["probabilities"], key=face["probabilities"].get)
            assert face["confidence"] == pytest.approx(face["probabilities"][face["top_label"]], abs=1e-6)
            x, y, w, h = face["box"]
            assert 0 <= x < x + w <= size[0] and 0 <= y < y + h <= size[1]
            if "raw_probabilities" in face:
                assert sum(face["raw_probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert summary["faces"] == sum(len(p["faces"]) for p in predictions)

    n, video_size, video_fps = _read_video(results / video_name)
    assert n == frames and video_size == size and video_fps == pytest.approx(fps, abs=0.01)

    lines = (results / "inference_logs.txt").read_text().splitlines()
    assert len(lines) == frames + 1
    logged = json.loads(lines[-1])
    assert logged == summary
    walls = []
    for i, line in enumerate(lines[:-1]):
        fields = dict(part.split("=") for part in line.split())
        assert int(fields["frame"]) == i and int(fields["faces"]) == len(predictions[i]["faces"])
        for key in ("decode_ms", "detect_ms", "classify_ms", "draw_ms", "write_ms", "wall_ms"):
            assert float(fields[key]) >= 0
        walls.append(float(fields["wall_ms"]))
    assert summary["ms_per_frame_median"] == pytest.approx(np.median(walls), abs=0.01)
    assert summary["fps"] > 0 and summary["frames_written"] == frames

    check_report(results, predictions, summary)  # tracks.csv and emotion_timeline.png
    labeled = sorted(p.name for p in (results / "labeled_images").glob("frame_*.png"))
    assert labeled == [f"frame_{i:03d}.png" for i in range(0, frames, stride)]
    image = cv2.imread(str(results / "labeled_images" / labeled[-1]))
    assert image is not None and (image.shape[1], image.shape[0]) == size
    return predictions


def _iou(a, b):
    return float(tracking.iou_matrix(np.array([a]), np.array([b]))[0, 0])


def test_megamind_full_run(model_overrides, tmp_path):
    """The whole clip: outputs consistent, ids stable while the face stays in the shot, smoothing as configured."""
    require(MEGAMIND)
    code, summary, results = _run(model_overrides, tmp_path, "-v", str(MEGAMIND))
    assert code == 0
    assert summary["frames"] == 270 and summary["skipped_frames"] == 0 and summary["stopped"] == "end"
    assert summary["source"] == str(MEGAMIND) and summary["backend"] == "tflite + blazeface"
    predictions = _check_outputs(results, summary)
    with_faces = [p for p in predictions if p["faces"]]
    assert len(with_faces) >= 0.9 * 270  # a face in most frames

    # Stable ids: a face overlapping one of the previous frame keeps that face's id. The clip has shot cuts,
    # so a few tracks cover it; the three longest cover nearly every frame with a face.
    changes = 0
    for prev, cur in zip(predictions, predictions[1:]):
        for face in cur["faces"]:
            matches = [f for f in prev["faces"] if _iou(f["box"], face["box"]) >= 0.5]
            if matches and all(f["id"] != face["id"] for f in matches):
                changes += 1
    assert changes == 0
    counts = {}
    for p in with_faces:
        best = max(p["faces"], key=lambda f: f["detector_score"])
        counts[best["id"]] = counts.get(best["id"], 0) + 1
    top = sorted(counts.values(), reverse=True)
    assert top[0] >= 90 and sum(top[:3]) >= 0.95 * len(with_faces), counts
    assert summary["dominant_track_frames"] >= top[0]

    # Smoothing 0.6: each track's probabilities are the exponential average of its raw probabilities.
    state, checked = {}, 0
    for p in predictions:
        for face in p["faces"]:
            raw = np.array(list(face["raw_probabilities"].values()))
            expected = raw if face["id"] not in state else 0.6 * state[face["id"]] + 0.4 * raw
            np.testing.assert_allclose(list(face["probabilities"].values()), expected, atol=2e-5)
            state[face["id"]] = expected
            checked += 1
    assert checked == summary["faces"]


def test_megamind_bugy_completes_with_skipped_frames_counted(model_overrides, tmp_path):
    """Megamind_bugy.avi's damage is in the pictures (white blocks over some frames): OpenCV decodes all 270
    frames, so every frame is processed and none is skipped. The skipping path on a file whose frames do not
    decode is covered by test_a_damaged_copy_of_the_clip_is_read_past_its_bad_stretch."""
    require(BUGY)
    code, summary, results = _run(model_overrides, tmp_path, "-v", str(BUGY), "--output", "bugy.avi")
    assert code == 0
    assert summary["frames"] == 270 and summary["skipped_frames"] == 0 and summary["frames_lost_at_end"] == 0
    assert summary["stopped"] == "end" and summary["source_frames"] == 270
    _check_outputs(results, summary, video_name="bugy.avi", fps=30.0)


def test_damaged_file_end_to_end_counts_skipped_frames(model_overrides, tmp_path, monkeypatch):
    """A file whose frames 4-6 do not decode: processed on, the three counted, outputs consistent."""
    require(MEGAMIND)
    real_capture = cv2.VideoCapture

    class Damaged:
        def __init__(self, path, *a):
            self.cap, self.pos = real_capture(path, *a), 0

        def read(self, image=None):
            ok, frame = self.cap.read() if image is None else self.cap.read(image)
            self.pos += 1
            return (False, None) if self.pos - 1 in (4, 5, 6) else (ok, frame)

        def set(self, prop, value):
            ok = self.cap.set(prop, value)
            self.pos = int(self.cap.get(cv2.CAP_PROP_POS_FRAMES))
            return ok

        def __getattr__(self, name):
            return getattr(self.cap, name)

    monkeypatch.setattr(cv2, "VideoCapture", Damaged)
    code, summary, results = _run(model_overrides, tmp_path, "-v", str(MEGAMIND), "--max-frames", "20")
    monkeypatch.undo()
    assert code == 0 and summary["frames"] == 20 and summary["skipped_frames"] == 3
    predictions = _check_outputs(results, summary)
    assert [p["source_frame"] for p in predictions[:6]] == [0, 1, 2, 3, 7, 8]


def test_webcam_from_a_fake_camera(model_overrides, tmp_path, monkeypatch):
    """-c with a capture device that plays the real clip (cv2.VideoCapture(index) patched in this process)."""
    require(MEGAMIND)
    real_capture = cv2.VideoCapture
    opened = []

    def fake_capture(source, *args):
        if isinstance(source, int):
            opened.append(source)
            return real_capture(str(MEGAMIND))
        return real_capture(source, *args)

    monkeypatch.setattr(cv2, "VideoCapture", fake_capture)
    code, summary, results = _run(model_overrides, tmp_path, "-c", "--camera-index", "2", "--max-frames", "40",
                                  "--output", "webcam.avi", "--set", "labeled_frame_stride=10")
    monkeypatch.undo()
    assert code == 0 and opened == [2]
    assert summary["source"] == "camera:2" and summary["source_kind"] == "camera"
    assert summary["frames"] == 40 and summary["stopped"] == "max_frames"
    predictions = _check_outputs(results, summary, video_name="webcam.avi", stride=10)
    times = [p["time_s"] for p in predictions]
    assert times == sorted(times)


def test_ctrl_c_leaves_a_playable_video_and_valid_json(model_overrides, tmp_path):
    """SIGINT mid-run (no --no-display and no DISPLAY: the headless path): exit 130, outputs complete."""
    require(MEGAMIND)
    results = tmp_path / "results"
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    # The clip ten times over (2,700 frames, about a minute at full speed): the signal must land mid-run even when
    # this test process, starved of CPU beside the other workers, sees the marker late (with the 270-frame clip,
    # and twice in full suites with 810 frames, the run had ended first and exited 0; it is interrupted at once,
    # so the length costs only the writing of the clip).
    clip = _tiled_clip(MEGAMIND, tmp_path / "megamind_x10.avi", times=10)
    proc = subprocess.Popen([sys.executable, str(REPO / "src" / "inference.py"), "-v", str(clip),
                             *as_set_args([*model_overrides, f"results_dir={results}", "labeled_frame_stride=10"])],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        marker = results / f".labeled_images.tmp-{proc.pid}" / "frame_020.png"  # written once 21 frames are out
        started = time.monotonic()
        deadline = started + 180
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, f"finished before the signal: {proc.communicate()}"
        seen = time.monotonic() - started
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, f"signal sent {seen:.1f} s after the start\nstdout: {out[-800:]}\nstderr: {err[-800:]}"
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["interrupted"] is True and summary["stopped"] == "interrupted"
    assert 21 <= summary["frames"] < 10 * 270
    _check_outputs(results, summary, stride=10)


def _tiled_clip(source: Path, dest: Path, times: int) -> Path:
    """source's frames `times` times over, as an MJPG AVI with its frame size and rate."""
    cap = cv2.VideoCapture(str(source))
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    writer = cv2.VideoWriter(str(dest), cv2.VideoWriter_fourcc(*"MJPG"), fps, (frames[0].shape[1], frames[0].shape[0]))
    for _ in range(times):
        for frame in frames:
            writer.write(frame)
    writer.release()
    return dest


def test_help_and_a_missing_source_need_no_tensorflow():
    """(test_config checks exactly that --help imports no TensorFlow, for every script.)"""
    proc = run_script("inference.py", "--help", timeout=60)
    assert proc.returncode == 0 and "--camera-index" in proc.stdout and "--max-frames" in proc.stdout
    proc = run_script("inference.py", timeout=60)
    assert proc.returncode == 2 and "one of the arguments -c/--camera -v/--video is required" in proc.stderr


def test_output_name_must_be_a_video_container(tmp_path):
    with pytest.raises(UserError, match="--output must end in .avi or .mp4"):
        inference.main(["-v", str(tmp_path / "x.avi"), "--output", "out.gif"])


def test_classify_every_n_frames_reuses_a_face_s_last_probabilities(model_overrides, tmp_path):
    """--classify-every 3: each track is classified on its first frame and every 3rd after; in between its
    raw probabilities are the last classified ones, and smoothing still runs every frame."""
    require(MEGAMIND)
    code, summary, results = _run(model_overrides, tmp_path, "-v", str(MEGAMIND), "--max-frames", "45",
                                  "--classify-every", "3")
    assert code == 0 and summary["classify_every"] == 3
    predictions = _check_outputs(results, summary)
    last_classified, held, state = {}, {}, {}
    for p in predictions:
        for face in p["faces"]:
            face_id, raw = face["id"], face["raw_probabilities"]
            if face_id not in last_classified:
                assert face["classified"], "a new face is classified at once"
            if face["classified"]:
                assert face_id not in last_classified or p["frame"] - last_classified[face_id] >= 3
                last_classified[face_id], held[face_id] = p["frame"], raw
            else:
                assert p["frame"] - last_classified[face_id] < 3 and raw == held[face_id]
            r = np.array(list(raw.values()))
            expected = r if face_id not in state else 0.6 * state[face_id] + 0.4 * r
            np.testing.assert_allclose(list(face["probabilities"].values()), expected, atol=2e-5)
            state[face_id] = expected
    classified = sum(face["classified"] for p in predictions for face in p["faces"])
    assert classified == summary["faces_classified"] and classified <= summary["faces"] / 2


def test_keras_backend_and_an_unwritable_results_dir(model_overrides, tmp_path):
    require(MEGAMIND)
    code, summary, results = _run(model_overrides, tmp_path, "-v", str(MEGAMIND), "--max-frames", "6",
                                  "--set", "classifier_backend=keras")
    assert code == 0 and summary["backend"].startswith("keras") and summary["classifier_workers"] == 1
    _check_outputs(results, summary)
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(UserError, match="results_dir .* cannot be created: .* is not a folder"):
        _run(model_overrides, tmp_path, "-v", str(MEGAMIND), "--max-frames", "2", results=blocked / "results")


# ------------------------------------------------------------------------------------------------
# Outputs: never the input, always one complete run's


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under folder (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_output_that_is_the_input_video_is_refused_before_the_model_loads(tmp_path):
    """By name, through a symlink, as a hard link, and as the default output in results_dir: one error line,
    the input byte-identical, nothing written. No model exists, so the refusal comes before loading one."""
    original = require(MEGAMIND).read_bytes()
    mine = tmp_path / "mine.avi"
    mine.write_bytes(original)
    (tmp_path / "link.avi").symlink_to(mine)
    os.link(mine, tmp_path / "hard.avi")
    results = tmp_path / "results"
    results.mkdir()
    default_out = results / "test_out.avi"
    default_out.write_bytes(original)
    cases = [(["-v", str(mine), "--output", str(mine)], mine),
             (["-v", str(mine), "--output", str(tmp_path / "link.avi")], mine),
             (["-v", str(tmp_path / "link.avi"), "--output", str(mine)], mine),
             (["-v", str(mine), "--output", str(tmp_path / "hard.avi")], mine),
             (["-v", str(default_out)], default_out)]
    before = _snapshot(tmp_path)
    for args, video in cases:
        proc = run_script("inference.py", *args, "--no-display", "--set", f"results_dir={results}",
                          "--set", f"model_save_path={tmp_path / 'no-model.h5'}", timeout=120)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 1 and len(lines) == 1, (args, proc.stderr)
        assert lines[0].startswith("error: --output ") and "is the input video" in lines[0], lines
        assert _snapshot(tmp_path) == before
    assert (tmp_path / "link.avi").is_symlink() and sorted(p.name for p in results.iterdir()) == ["test_out.avi"]


def test_a_read_only_results_dir_is_refused_before_the_model_loads(read_only_folder, tmp_path):
    require(MEGAMIND)
    for overrides in ([f"results_dir={read_only_folder / 'results'}"],
                      [f"results_dir={tmp_path / 'results'}", "--output", str(read_only_folder / "out.avi")]):
        setting, *more = overrides
        proc = run_script("inference.py", "-v", str(MEGAMIND), "--no-display", *more, "--set", setting,
                          "--set", f"model_save_path={tmp_path / 'no-model.h5'}", timeout=120)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 1 and len(lines) == 1 and "is not writable" in lines[0], proc.stderr
        assert list(read_only_folder.iterdir()) == [] and not (tmp_path / "results").exists()


def test_a_labeled_images_folder_the_project_did_not_write_is_refused(tmp_path):
    require(MEGAMIND)
    labeled = tmp_path / "results" / "labeled_images"
    labeled.mkdir(parents=True)
    (labeled / "holiday.jpg").write_bytes(b"mine")
    before = _snapshot(tmp_path)
    proc = run_script("inference.py", "-v", str(MEGAMIND), "--no-display", "--set", f"results_dir={labeled.parent}",
                      "--set", f"model_save_path={tmp_path / 'no-model.h5'}", timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: {labeled} was not written by this project"), lines
    assert _snapshot(tmp_path) == before and sorted(p.name for p in labeled.parent.iterdir()) == ["labeled_images"]


def test_a_killed_run_leaves_the_previous_run_s_outputs_whole_and_the_next_run_replaces_them(model_overrides,
                                                                                              tmp_path):
    """kill -9 while a second run writes: the first run's four outputs byte-identical and consistent; the
    next completed run cleans the dead run's temporary files and replaces all four together."""
    require(MEGAMIND)
    code, first, results = _run(model_overrides, tmp_path, "-v", str(MEGAMIND), "--max-frames", "30",
                                "--set", "labeled_frame_stride=10")
    assert code == 0
    _check_outputs(results, first, stride=10)
    before = _snapshot(results)
    assert sorted(before) == ["emotion_timeline.png", "inference_logs.txt",
                              "labeled_images/.written-by-emotion-recognition",
                              "labeled_images/frame_000.png", "labeled_images/frame_010.png",
                              "labeled_images/frame_020.png", "predictions.json", "test_out.avi", "tracks.csv"]

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen([sys.executable, str(REPO / "src" / "inference.py"), "-v", str(MEGAMIND), "--no-display",
                             *as_set_args([*model_overrides, f"results_dir={results}", "labeled_frame_stride=7"])],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    temp_video = results / f".test_out.tmp-{proc.pid}.avi"
    try:
        started = time.monotonic()
        deadline = started + 180
        while proc.poll() is None and time.monotonic() < deadline:
            if temp_video.exists() and temp_video.stat().st_size > 200_000:  # about 25 frames encoded
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"finished before the kill: {proc.communicate()}"
        proc.kill()
    finally:
        proc.kill()
        proc.wait(timeout=60)
    after = _snapshot(results)
    visible = {k: v for k, v in after.items() if f"tmp-{proc.pid}" not in k}
    assert visible == before  # byte-identical, nothing extra but the dead run's temporary files
    assert any(k.startswith(f".labeled_images.tmp-{proc.pid}/frame_") for k in after)

    code, last, _ = _run(model_overrides, tmp_path, "-v", str(MEGAMIND), "--max-frames", "12",
                         "--set", "labeled_frame_stride=5")
    assert code == 0 and last["frames"] == 12
    _check_outputs(results, last, stride=5)  # frame_020.png of the first run is gone with the rest
    assert sorted(p.name for p in results.iterdir()) == ["emotion_timeline.png", "inference_logs.txt", "labeled_images",
                                                          "predictions.json", "test_out.avi", "tracks.csv"]
    # labeled_frame_stride 0: the last run's labeled frames do not stay beside this run's outputs
    code, _, _ = _run(model_overrides, tmp_path, "-v", str(MEGAMIND), "--max-frames", "3",
                      "--set", "labeled_frame_stride=0")
    assert code == 0 and [p.name for p in (results / "labeled_images").iterdir()] == [".written-by-emotion-recognition"]


# ------------------------------------------------------------------------------------------------
# Outputs against the model: probabilities re-computed from the source frame and box, frames annotated


def _source_frames(path: Path, count: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = [cap.read()[1] for _ in range(count)]
    cap.release()
    assert all(f is not None for f in frames)
    return frames


def _perimeter(box) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the box's outline minus its top edge (the label sits on it)."""
    x, y, w, h = box
    ys = np.arange(y + 2, y + h)
    rows = np.concatenate([ys, ys, np.full(w, y + h - 1)])
    cols = np.concatenate([np.full(len(ys), x), np.full(len(ys), x + w - 1), np.arange(x, x + w)])
    return rows, cols


def test_raw_probabilities_are_the_model_on_the_crop_of_that_frame_and_the_frames_are_annotated(
        spread_model_path, tmp_path):
    """Each face's raw_probabilities equal the model (Keras) on recognizer's crop of the box in the SOURCE frame
    it names (read again here with OpenCV), within 1e-4; the model's outputs spread (tenths between faces), so
    an RGB/BGR swap or an off-by-one frame fails. Labeled frames carry each face's box in its label's colour."""
    from emotion.model import network as model_lib

    path, overrides = spread_model_path
    frames = 40
    code, summary, results = _run([*overrides, "labeled_frame_stride=10"], tmp_path, "-v", str(MEGAMIND),
                                  "--max-frames", str(frames))
    assert code == 0 and summary["frames"] == frames
    predictions = json.loads((results / "predictions.json").read_text())
    source = _source_frames(MEGAMIND, frames)
    model = model_lib.load_model(path)
    class_names = config.load_config().class_names

    raws, crops, swapped = [], [], []
    for p in predictions:
        rgb = cv2.cvtColor(source[p["source_frame"]], cv2.COLOR_BGR2RGB)
        for face in p["faces"]:
            raws.append([face["raw_probabilities"][c] for c in class_names])
            crops.append(faces.crop_face(rgb, face["box"], size=(96, 96)))
            swapped.append(crops[-1][..., ::-1])
    assert len(raws) >= 0.8 * frames
    raws = np.array(raws)
    expected = keras_probs(model, np.stack(crops))
    np.testing.assert_allclose(raws, expected, atol=1e-4)
    # The check has teeth: faces differ, and the wrong colour order or frame would be far off.
    assert np.abs(raws - raws.mean(axis=0)).max() > 0.2
    bgr = keras_probs(model, np.stack(swapped))
    assert np.abs(bgr - raws).max() > 0.2

    # Labeled frames (PNG, lossless): the box outline is drawn in the label's colour, the rest is the source.
    video = cv2.VideoCapture(str(results / "test_out.avi"))
    written = [video.read()[1] for _ in range(frames)]
    video.release()
    labeled = sorted((results / "labeled_images").glob("frame_*.png"))
    assert [f.name for f in labeled] == [f"frame_{i:03d}.png" for i in range(0, frames, 10)]
    checked = 0
    for png in labeled:
        p = predictions[int(png.stem.split("_")[1])]
        image, original = cv2.imread(str(png)), source[p["source_frame"]]
        assert image.shape == original.shape
        annotated = np.zeros(image.shape[:2], bool)
        for face in p["faces"]:
            colour = np.array(colours.PALETTE[class_names.index(face["top_label"])], np.uint8)
            rows, cols = _perimeter(face["box"])
            on_outline = (image[rows, cols] == colour).all(axis=1).mean()
            assert on_outline > 0.9, (png.name, face["box"], on_outline)
            assert (original[rows, cols] == colour).all(axis=1).mean() < 0.2
            # The written video frame (MJPG, lossy) carries the same outline.
            assert np.abs(written[p["frame"]][rows, cols].astype(int) - colour).mean() < 40
            x, y, w, h = face["box"]
            annotated[max(0, y - 60):y + h + 160, max(0, x - 160):x + w + 160] = True
            checked += 1
        annotated[:40, :160] = True  # the FPS counter
        assert (image[~annotated] == original[~annotated]).all(axis=1).mean() > 0.99
    assert checked >= 2
