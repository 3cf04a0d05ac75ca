"""The threads of a video run: decode + detect + track ids + crop (Producer) -> classify (Classifiers, a pool
of single-threaded TFLite interpreters) -> [the main thread: smooth + draw + display, video.py] -> encode +
write + log (Writer). What they compute per frame is video_frames.py's.

    producer = Producer(source, rec, tracker, classify_every, max_frames, stop, pool); producer.start()
    item = producer.frames.get()                       # a Frame, or END after the last
    future = classifiers.submit(item.crops)            # -> (probabilities [len(due), C], classify_ms)
    writer.open((width, height)); writer.start(); writer.jobs.put((frame_bgr, index, log_line)); writer.jobs.put(END)

Frame buffers go round: the writer puts each written frame into `pool`, where the producer decodes the next.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from emotion.common.errors import UserError
from emotion.runtime.video_frames import ClassifySchedule, RunningMedian

QUEUE_FRAMES = 4            # decoded frames waiting for the detector (and annotated ones for the writer)


END = object()


class Producer(threading.Thread):
    """Decodes frames into recycled buffers, finds the faces, gives them track ids, and crops those due for
    classification (every face when classify_every is 1; else a track's first frame and every
    classify_every-th after its last classification); queues Frame items, then END."""

    def __init__(self, source, rec, tracker, classify_every: int, max_frames: int | None,
                 stop: threading.Event, pool: queue.Queue):
        super().__init__(name="decode-detect", daemon=True)
        self.source, self.rec, self.max_frames, self.stop, self.pool = source, rec, max_frames, stop, pool
        self.tracker, self.schedule = tracker, ClassifySchedule(classify_every)
        self.frames: queue.Queue = queue.Queue(maxsize=QUEUE_FRAMES if source.kind == "video" else 2)
        self.error: BaseException | None = None

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.frames.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run(self):
        import cv2
        import numpy as np
        index, rgb = 0, None
        try:
            while not self.stop.is_set():
                if self.max_frames is not None and index >= self.max_frames:
                    self.source.stop_reason = "max_frames"
                    break
                try:
                    buffer = self.pool.get_nowait()
                except queue.Empty:
                    buffer = None
                start = time.perf_counter()
                got = self.source.read(buffer)
                decoded = time.perf_counter()
                if got is None:
                    break
                frame, source_index = got
                if rgb is None or rgb.shape != frame.shape:
                    rgb = np.empty_like(frame)
                cv2.cvtColor(frame, cv2.COLOR_BGR2RGB, dst=rgb)  # the frame's one conversion: RGB from here on
                found = self.rec.detect_rgb(rgb)
                boxes = [f.box for f in found]
                ids = self.tracker.assign(boxes)
                due = self.schedule.due(index, ids, live_ids=[t.id for t in self.tracker.tracks])
                crops = (self.rec.crops_rgb(rgb, [boxes[i] for i in due], angles=self.rec.angles([found[i] for i in due]))
                         if due else None)
                done = time.perf_counter()
                item = Frame(index, source_index, frame, found, ids, due, crops, (decoded - start) * 1000,
                              (done - decoded) * 1000)
                if not self._put(item):
                    break
                index += 1
        except BaseException as exc:  # reported by the main thread
            self.error = exc
        finally:
            self._put(END)


@dataclass
class Frame:
    index: int              # frame number in this run
    source_index: int       # frame number in the file
    frame: object           # BGR uint8, annotated in place later
    found: list             # faces.Face
    ids: list               # track id per face
    due: list               # positions of the faces classified in this frame
    crops: object           # uint8 [len(due), H, W, 3] or None
    decode_ms: float
    detect_ms: float


class Classifiers:
    """Runs the classifier on the crops of one frame at a time on a small pool of threads, each with its own
    single-threaded TFLite interpreter, so that two frames are classified at once on two cores (a Keras
    classifier, which spreads one call over all cores itself, gets one thread)."""

    def __init__(self, clf, workers: int):
        from concurrent.futures import ThreadPoolExecutor
        self.free: queue.Queue = queue.Queue()
        self.free.put(clf)
        for _ in range(workers - 1):
            self.free.put(type(clf)(clf.path, num_threads=getattr(clf, "num_threads", 1) or 1))
        self.workers = workers
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="classify")

    def _predict(self, crops):
        clf = self.free.get()
        try:
            start = time.perf_counter()
            probs = clf.predict(crops)
            return probs, (time.perf_counter() - start) * 1000
        finally:
            self.free.put(clf)

    def submit(self, crops):
        return self.executor.submit(self._predict, crops)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


class Writer(threading.Thread):
    """Encodes annotated frames into the video (none when video_path is None: --no-video), saves every stride-th
    one as PNG and writes the log lines, then gives the frame buffer back to the producer's pool. `written`
    counts the frames done, in order (what the run's records keep: video_frames.RunRecorder.keep)."""

    def __init__(self, video_path: Path | None, fourcc: str, fps: float, labeled_dir: Path | None, stride: int,
                 log, pool: queue.Queue):
        super().__init__(name="frame-writer", daemon=True)
        self.video_path, self.fourcc, self.fps = video_path, fourcc, fps
        self.labeled_dir, self.stride, self.log, self.pool = labeled_dir, stride, log, pool
        self.jobs: queue.Queue = queue.Queue(maxsize=QUEUE_FRAMES)
        self.writer = None
        self.size = None
        self.written = 0
        self.labeled = 0
        self.write_ms = RunningMedian()
        self.error: BaseException | None = None

    def open(self, size: tuple[int, int]) -> None:
        import cv2
        self.size = size
        if self.video_path is None:
            return
        self.video_path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = cv2.VideoWriter(str(self.video_path), cv2.VideoWriter_fourcc(*self.fourcc), self.fps, size)
        if not self.writer.isOpened():
            raise UserError(f"cannot write the video {self.video_path} ({self.fourcc} at {self.fps:.2f} fps, "
                            f"{size[0]}x{size[1]})")

    def run(self):
        import cv2
        while True:
            job = self.jobs.get()
            if job is END:
                break
            frame, index, line = job
            if self.error is not None:
                continue  # keep draining, so that the main thread never blocks
            try:
                start = time.perf_counter()
                out = frame
                if self.writer is not None:  # None: --no-video, the log line only
                    if (frame.shape[1], frame.shape[0]) != self.size:  # a camera changing resolution
                        out = cv2.resize(frame, self.size)
                    self.writer.write(out)
                if self.labeled_dir is not None and self.stride and index % self.stride == 0:
                    cv2.imwrite(str(self.labeled_dir / f"frame_{index:03d}.png"), out)
                    self.labeled += 1
                write_ms = (time.perf_counter() - start) * 1000
                self.write_ms.add(write_ms)
                self.log.write(f"{line} write_ms={write_ms:.2f}\n")
                self.written += 1
            except BaseException as exc:
                self.error = exc
            finally:
                self.pool.put(frame)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()


def classifier_workers(clf) -> int:
    """Frames classified at once: 2 single-threaded TFLite interpreters side by side on a machine with 2 or
    more cores, else 1 (a Keras classifier spreads each call over the cores itself: 1). Measured on this
    project's shared 2-core machine, same runs alternated (Megamind.avi, 120-270 frames): 55 vs 35 frames/s
    with one other process busy; 13.6 vs 15.0 when two others kept both cores busy. EMOTION_CLASSIFIER_WORKERS
    overrides it (1 = classification in one thread, still overlapping decoding, detection and writing)."""
    if getattr(clf, "backend", None) != "tflite" or getattr(clf, "path", None) is None:
        return 1
    env = os.environ.get("EMOTION_CLASSIFIER_WORKERS", "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise UserError(f"EMOTION_CLASSIFIER_WORKERS must be a whole number >= 1, got {env!r}")
        return int(env)
    from emotion.runtime.classifier import available_cores
    return 2 if available_cores() >= 2 else 1
