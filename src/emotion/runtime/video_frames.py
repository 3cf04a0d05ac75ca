"""The bookkeeping of a video run, apart from its threads (video_threads.py) so each piece is unit-testable:
which faces to classify on a frame, the probabilities a face reuses in between, smoothing and drawing one
frame, the per-stage timings, and the run's recorded results.

    schedule = ClassifySchedule(every=3)                    # producer thread: faces due for classification
    due = schedule.due(frame_index, ids, live_ids)          # positions in ids
    annotator = FrameAnnotator(class_names, smoothing=0.6, classify_every=3, forget_after=5)
    faces = annotator.annotate(frame_bgr, found, ids, due, fresh_probs, fps=30.0)   # JSON-ready, drawn in place
    recorder = RunRecorder()                                # in memory; or streamed to disk as frames are written:
    recorder = RunRecorder(stream=PredictionStream(path), report=track_report.TrackReport(class_names))
    recorder.add(frame_index, time_s, faces, source_frame=12)   # every frame, in order
    recorder.keep(written=frames_written_so_far)            # stream: frames up to there go to disk and the report
    counts = recorder.finish(written=frames_written)        # the summary's counts; recorder.save(path) in memory

Pure numpy and OpenCV drawing; no TensorFlow, no threads. Nothing here grows with the length of a run except
RunRecorder in memory (a stream keeps only the frames not yet written to the video: a few).
"""
from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from emotion.runtime import drawing, tracking
from emotion.runtime.prediction_stream import PredictionStream
from emotion.runtime.recognizer import results_from_probs

STAGES = ("decode", "detect", "classify", "draw", "wall")


class TrackMemory:
    """A value per face track that forgets dropped tracks: once it holds more than 4 * (live tracks + 8) ids,
    prune() keeps only the live ones (so it stays small on a long video, and is pruned rarely).

        memory = TrackMemory(); memory[7] = value; memory.get(7); memory.prune(live_ids={7, 9})
    """

    def __init__(self):
        self.values: dict[int, object] = {}

    def __setitem__(self, track_id: int, value) -> None:
        self.values[track_id] = value

    def __getitem__(self, track_id: int):
        return self.values[track_id]

    def __contains__(self, track_id: int) -> bool:
        return track_id in self.values

    def __len__(self) -> int:
        return len(self.values)

    def get(self, track_id: int, default=None):
        return self.values.get(track_id, default)

    def prune(self, live_ids: Iterable[int]) -> None:
        """Forget every track not in live_ids, once more than 4 * (len(live_ids) + 8) are held."""
        live = set(live_ids)
        if len(self.values) > 4 * (len(live) + 8):
            self.values = {k: v for k, v in self.values.items() if k in live}


class ClassifySchedule:
    """--classify-every N: a face is classified on its track's first frame and every Nth frame after its last
    classification; N = 1: every face of every frame."""

    def __init__(self, every: int = 1):
        self.every = int(every)
        self.classified_at = TrackMemory()  # track id -> frame index of its last classification

    def due(self, index: int, ids: Sequence[int], live_ids: Iterable[int] = ()) -> list[int]:
        """Positions (in ids) of the faces to classify in frame `index`; live_ids: the tracker's live tracks
        (the others are forgotten)."""
        if self.every <= 1:
            return list(range(len(ids)))
        due = []
        for i, face_id in enumerate(ids):
            last = self.classified_at.get(face_id)
            if last is None or index - last >= self.every:
                self.classified_at[face_id] = index
                due.append(i)
        self.classified_at.prune(live_ids)
        return due


class HeldProbabilities:
    """--classify-every N > 1: each track's last classified raw probabilities, reused on its other frames."""

    def __init__(self):
        self.memory = TrackMemory()

    def fill(self, raw: np.ndarray, ids: Sequence[int], due: Sequence[int],
             classify: Callable[[int], np.ndarray], live_ids: Iterable[int]) -> set[int]:
        """raw [N, C] holds fresh rows at positions `due`: remember those, fill the others with their track's
        held row (classify(i) for a track with none, not expected: the producer classifies new tracks).
        Returns the positions classified on this frame."""
        classified = set(due)
        for i, face_id in enumerate(ids):
            if i in classified:
                self.memory[face_id] = raw[i]
            elif face_id in self.memory:
                raw[i] = self.memory[face_id]
            else:
                raw[i] = self.memory[face_id] = classify(i)
                classified.add(i)
        self.memory.prune(set(live_ids) | set(ids))
        return classified


class FrameAnnotator:
    """One classified frame, in frame order: raw probabilities (held ones reused), smoothed per track, drawn
    on the frame, and the faces as predictions.json lists them. classify_missing(frame_bgr, face) -> [C] row:
    for a face that is due but has no held row (see HeldProbabilities.fill). min_confidence: below it (smoothed
    top probability) a face's label is "uncertain", its top_label the argmax."""

    def __init__(self, class_names: Sequence[str], smoothing: float = 0.0, classify_every: int = 1,
                 forget_after: int = 5, classify_missing: Callable | None = None, min_confidence: float = 0.0):
        self.class_names = list(class_names)
        self.min_confidence = float(min_confidence)  # below it a face's label is "uncertain" (confidence.py)
        self.smoothing = float(smoothing)
        self.classify_every = int(classify_every)
        self.smoother = tracking.ProbabilitySmoother(self.smoothing, forget_after=forget_after)
        self.held = HeldProbabilities() if self.classify_every > 1 else None
        self.classify_missing = classify_missing

    def annotate(self, frame_bgr: np.ndarray, found: Sequence, ids: Sequence[int], due: Sequence[int],
                 fresh: np.ndarray, fps: float | None = None) -> list[dict]:
        """found: faces.Face per id; fresh: [len(due), C] raw rows of the due faces. Draws on frame_bgr (boxes,
        labels with ids, bars, FPS counter) and returns one dict per face: id, box, label, confidence,
        probabilities, detector_score (+ raw_probabilities when smoothing, + classified when classify_every > 1)."""
        boxes = [f.box for f in found]
        raw = np.empty((len(found), len(self.class_names)), np.float32)
        for row, i in zip(fresh, due):
            raw[i] = row
        classified = None
        if self.held is not None:
            def classify(i):
                return self.classify_missing(frame_bgr, found[i])
            classified = self.held.fill(raw, ids, due, classify, live_ids=self.smoother.state)
        smoothed = self.smoother.update(ids, raw)
        results = (results_from_probs(boxes, smoothed, self.class_names, [f.score for f in found],
                                      min_confidence=self.min_confidence) if boxes else [])
        drawing.draw_results(frame_bgr, results, fps=fps, ids=ids)
        return [self._entry(face_id, result, raw_row, classified is None or i in classified)
                for i, (face_id, result, raw_row) in enumerate(zip(ids, results, raw))]

    def _entry(self, face_id: int, result, raw_row: np.ndarray, classified: bool) -> dict:
        entry = {"id": int(face_id), **result.to_dict()}
        entry.pop("whole_image", None)
        if self.smoothing > 0:
            entry["raw_probabilities"] = {k: round(float(v), 6) for k, v in zip(self.class_names, raw_row)}
        if self.classify_every > 1:
            entry["classified"] = classified
        return entry


class StageTimes:
    """Milliseconds per frame of each stage (STAGES), their medians, and the frame rate over the last
    `window` frames (the on-screen FPS counter). Memory: RunningMedian's, not a number per frame."""

    def __init__(self, window: int = 30):
        self.ms: dict[str, RunningMedian] = {name: RunningMedian() for name in STAGES}
        self.recent: collections.deque = collections.deque(maxlen=window)

    def fps(self) -> float | None:
        total = sum(self.recent)
        return len(self.recent) / total if self.recent and total > 0 else None

    def add(self, **ms: float) -> None:
        """One frame: a value in ms for every stage of STAGES (wall: since the previous frame was done)."""
        for name in STAGES:
            self.ms[name].add(ms[name])
        self.recent.append(ms["wall"] / 1000)

    def median(self, name: str) -> float | None:
        return self.ms[name].median()


class RunningMedian:
    """The median of many millisecond values, to 0.01 ms (what the summary reports), in memory that does not grow
    with their number: a count per distinct value rounded to 0.01 ms (a few thousand at most in practice).

        times = RunningMedian(); times.add(12.345); times.median()  -> 12.35 (None before any value)
    """

    def __init__(self):
        self.counts: collections.Counter = collections.Counter()
        self.total = 0

    def add(self, ms: float) -> None:
        self.counts[round(ms * 100)] += 1
        self.total += 1

    def median(self) -> float | None:
        """As median_ms() of the values rounded to 0.01: the middle one, or the mean of the two middle ones."""
        if not self.total:
            return None
        wanted, found, seen = ((self.total - 1) // 2, self.total // 2), [], 0
        for value in sorted(self.counts):
            seen += self.counts[value]
            while len(found) < 2 and wanted[len(found)] < seen:
                found.append(value)
            if len(found) == 2:
                break
        return round((found[0] + found[1]) / 200, 2)


def median_ms(values: Sequence[float]) -> float | None:
    """The median rounded to 0.01, None for no values."""
    return round(float(np.median(values)), 2) if len(values) else None


def log_line(index: int, source_index: int, faces: int, classified: int, ms: dict[str, float]) -> str:
    """A frame's line of inference_logs.txt (the writer appends write_ms)."""
    return (f"frame={index} source_frame={source_index} faces={faces} classified={classified} "
            f"decode_ms={ms['decode']:.2f} "
            f"detect_ms={ms['detect']:.2f} classify_ms={ms['classify']:.2f} draw_ms={ms['draw']:.2f} "
            f"wall_ms={ms['wall']:.2f}")


class RunRecorder:
    """The per-face results of a run, one entry per frame in order: where whatever a run reports about its faces
    (predictions.json, the summary's counts, the per-track report) is collected.

        recorder.add(frame_index, time_s, faces, source_frame=...)   # faces: FrameAnnotator.annotate's dicts
        recorder.keep(written=n)              # with a stream: the first n frames are final (see below)
        counts = recorder.finish(written=n)   # keeps the frames written to the video; the summary's counts
        recorder.save(path)                   # in memory: predictions.json

    In memory (no stream), every frame is held until finish(). With a stream (prediction_stream.PredictionStream)
    a frame is held only until the video writer has written it (keep(), called as frames go out): then it goes
    to the stream, to the counts and to `report` (track_report.TrackReport), so nothing per frame stays in memory
    and the outputs agree on the frames, as finish(written) makes them agree in memory."""

    def __init__(self, stream: PredictionStream | None = None, report=None):
        self.stream, self.report = stream, report
        self.predictions: list[dict] = []   # in memory: every frame; with a stream: frames not yet kept
        self.kept = 0
        self.frames = self.faces = self.frames_with_faces = self.faces_classified = 0
        self.track_frames: collections.Counter = collections.Counter()

    def add(self, frame_index: int, time_s: float, faces: list[dict], source_frame: int) -> None:
        self.predictions.append({"frame": frame_index, "source_frame": source_frame, "time_s": round(time_s, 4),
                                 "faces": faces})

    def keep(self, written: int) -> None:
        """With a stream: the frames before `written` (frames written to the video so far) go to the stream, the
        counts and the report, and leave memory. In memory: nothing (finish() does it)."""
        if self.stream is None or written <= self.kept:
            return
        done = self.predictions[:written - self.kept]
        del self.predictions[:written - self.kept]
        for record in done:
            self.stream.write(record)
            self._count(record)
        self.kept += len(done)

    def _count(self, record: dict) -> None:
        faces = record["faces"]
        self.frames += 1
        self.faces += len(faces)
        self.frames_with_faces += bool(faces)
        self.faces_classified += sum(1 for f in faces if f.get("classified", True))
        self.track_frames.update(face["id"] for face in faces)
        if self.report is not None:
            self.report.add(record["time_s"], faces)

    def finish(self, written: int | None = None) -> dict:
        """Keep the first `written` frames (a frame recorded but not written, after Ctrl-C, is dropped so the
        outputs agree; None: all) and return the summary's counts: frames, faces, frames_with_faces, tracks,
        dominant_track_frames, faces_classified. Closes the stream."""
        if written is None:
            written = self.kept + len(self.predictions)
        if self.stream is None:
            del self.predictions[written:]
            for record in self.predictions[self.frames:]:
                self._count(record)
        else:
            self.keep(written)
            self.predictions.clear()
            self.stream.close()
        return {"frames": self.frames, "faces": self.faces, "frames_with_faces": self.frames_with_faces,
                "tracks": len(self.track_frames),
                "dominant_track_frames": max(self.track_frames.values()) if self.track_frames else 0,
                "faces_classified": self.faces_classified}

    def close(self) -> None:
        """Close the stream (finish() does; this is for a run that ends before it)."""
        if self.stream is not None:
            self.stream.close()

    def save(self, path: Path) -> None:
        """predictions.json (compact) at `path`, from the frames in memory (no stream)."""
        Path(path).write_text(json.dumps(self.predictions, separators=(",", ":")) + "\n", encoding="utf-8")
