"""The worker processes of a batch (batch.py): each loads its own detector and classifier once, then analyses one
video at a time, sent over its own pipe, into the video's own output folder (video.VideoFolder). The processes,
their pipes and messages are workers.py's (shared with predict.py --workers); this module is the video's job.

    pool = workers.WorkerPool(VideoJob(cfg, classifier_threads=1), name="emotion-batch-worker")
    worker = pool.start()                               # a process of its own ('spawn': TensorFlow is not fork-safe)
    worker.assign(Task(position=0, path="/a/clip.mp4", folder="results/videos/clip", ...))
    for worker, message in pool.wait(timeout=0.5):      # what the workers said, and which of them died
        ...  # ("ready", startup_s) ("progress", position, frames_done, frames_total) ("result", position, result)
             # ("fatal", line): it could not load the model; ("died", exit code): the process is gone
    pool.stop()                                         # ask them to end, then kill what is left

Each worker ignores Ctrl-C (the batch stops it and says what became of its video) and, on Linux, is killed by the
kernel when the batch's process dies (workers.py). A result is a dict of manifest columns: status done
(with frames, faces, tracks, video_s, seconds, skipped_frames, lost_frames, and error for an early stop) or
failed (error: the one-line reason). A video that cannot be opened, a damaged file, a write that fails: failed,
and the worker goes on with the next one; a failed video publishes nothing.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from emotion.runtime import workers

PROGRESS_EVERY_S = 0.5      # a worker reports a video's frames at most this often


@dataclass(frozen=True)
class Task:
    """One video for a worker: where to read it and where its outputs go (the final folder; written beside it
    under a temporary name and renamed into place when complete)."""

    position: int               # in the batch's list of videos to analyse
    path: str
    folder: str                 # results/videos/<name>
    journal_dir: str            # outputs.Staged's journal for the renames
    video_name: str | None      # the annotated video's file name; None: --no-video
    labeled: bool               # labeled_images/ (cfg.labeled_frame_stride) beside it
    max_frames: int | None
    classify_every: int


@dataclass(frozen=True)
class VideoJob:
    """A batch worker's job (workers.serve): load the recognizer once, then analyse one video per task."""

    cfg: object
    classifier_threads: int | None = None

    def load(self):
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # damaged frames are counted, not logged per macroblock
        if self.classifier_threads:
            os.environ.setdefault("EMOTION_CLASSIFIER_WORKERS", str(self.classifier_threads))
        from emotion.common import plots
        from emotion.runtime import video
        rec = video.load_recognizer(self.cfg)
        plots.pyplot()
        return rec

    def run(self, rec, task: Task, send) -> dict:
        return analyse(task, rec, self.cfg, send)


def analyse(task: Task, rec, cfg, send) -> dict:
    """Run one video into its folder; its manifest columns (see the module docstring). send: reports progress."""
    from emotion.common.errors import UserError
    from emotion.runtime import frame_sources, video
    started = time.perf_counter()
    try:
        source = frame_sources.open_video(Path(task.path))
    except UserError as exc:
        return {"status": "failed", "error": str(exc), "seconds": round(time.perf_counter() - started, 2)}
    total = source.frame_count
    if task.max_frames is not None and total is not None:
        total = min(total, task.max_frames)
    last = [started]

    def progress(done: int) -> None:
        now = time.perf_counter()
        if now - last[0] >= PROGRESS_EVERY_S:
            last[0] = now
            send(("progress", task.position, done, total))

    staged = video.VideoFolder(Path(task.folder), Path(task.journal_dir), task.video_name, task.labeled)
    try:
        summary = video.run(source, rec, cfg, staged.finals.get("video"), max_frames=task.max_frames,
                            classify_every=task.classify_every, staged=staged, progress=progress, keep_partial=False)
    except Exception as exc:  # noqa: BLE001 (one bad video never stops the batch)
        return {"status": "failed", "error": workers.one_line(exc),
                "seconds": round(time.perf_counter() - started, 2)}
    finally:
        source.release()
    return done_result(summary, time.perf_counter() - started)


def done_result(summary: dict, seconds: float) -> dict:
    """A finished run's manifest columns, from its summary."""
    length = summary["source_frames"] / summary["source_fps"] if summary.get("source_frames") else None
    stopped = summary.get("stopped")
    return {"status": "done", "frames": summary["frames"], "faces": summary["faces"], "tracks": summary["tracks"],
            "video_s": round(length, 3) if length else "", "seconds": round(seconds, 2),
            "skipped_frames": summary["skipped_frames"], "lost_frames": summary["frames_lost_at_end"],
            "error": "" if stopped in ("end", "max_frames") else stopped}
