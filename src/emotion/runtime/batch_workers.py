"""The worker processes of a batch (batch.py): each loads its own detector and classifier once, then analyses one
video at a time, sent over its own pipe, into the video's own output folder (video.VideoFolder).

    pool = WorkerPool(cfg, classifier_threads=1)
    worker = pool.start()                               # a process of its own ('spawn': TensorFlow is not fork-safe)
    worker.assign(Task(position=0, path="/a/clip.mp4", folder="results/videos/clip", ...))
    for worker, message in pool.wait(timeout=0.5):      # what the workers said, and which of them died
        ...  # ("ready", startup_s) ("progress", position, frames_done, frames_total) ("result", position, result)
             # ("fatal", line): it could not load the model; ("died", exit code): the process is gone
    pool.stop()                                         # ask them to end, then kill what is left

Each worker has a pipe of its own (no queue lock a dying process could keep), ignores Ctrl-C (the batch stops it
and says what became of its video) and, on Linux, is killed by the kernel when the batch's process dies, even by
kill -9 (prctl PR_SET_PDEATHSIG), so none is left behind. A result is a dict of manifest columns: status done
(with frames, faces, tracks, video_s, seconds, skipped_frames, lost_frames, and error for an early stop) or
failed (error: the one-line reason). A video that cannot be opened, a damaged file, a write that fails: failed,
and the worker goes on with the next one; a failed video publishes nothing.
"""
from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

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


def _die_with_parent(parent: int) -> None:
    """Linux: the kernel sends SIGKILL to this process when the batch's process dies (even by kill -9); if it is
    gone already, end now."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)


def _one_line(exc: BaseException) -> str:
    from emotion.common.errors import UserError, first_line
    return str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {first_line(exc)}"


def worker_main(conn, parent: int, cfg, classifier_threads: int | None, quiet: bool) -> None:
    """A worker process's life: load the recognizer, say ready, analyse the tasks that come until None."""
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # damaged frames are counted, not logged per macroblock
    if classifier_threads:
        os.environ.setdefault("EMOTION_CLASSIFIER_WORKERS", str(classifier_threads))
    from emotion.common import console, plots
    if quiet:  # as the batch's own process: TensorFlow's start-up lines hidden
        os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
        console.quiet_tensorflow()
    sys.stdout = open(os.devnull, "w")  # a run's own lines (tracks, model card) are the batch's to print
    started = time.perf_counter()
    try:
        from emotion.runtime import video
        rec = video.load_recognizer(cfg)
        plots.pyplot()
    except BaseException as exc:  # noqa: BLE001 (whatever it is, the batch says it in one line)
        conn.send(("fatal", _one_line(exc)))
        return
    conn.send(("ready", round(time.perf_counter() - started, 2)))
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        conn.send(("result", task.position, analyse(task, rec, cfg, conn.send)))


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
        return {"status": "failed", "error": _one_line(exc), "seconds": round(time.perf_counter() - started, 2)}
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


class Worker:
    """The batch's end of one worker process: its pipe, its process, the task it is on (None: free)."""

    def __init__(self, ctx, cfg, classifier_threads: int | None, quiet: bool):
        self.conn, child = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=worker_main, name="emotion-batch-worker", daemon=True,
                                   args=(child, os.getpid(), cfg, classifier_threads, quiet))
        self.process.start()
        child.close()
        self.task: Task | None = None
        self.ready = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def assign(self, task: Task) -> None:
        self.task = task
        self.conn.send(task)

    def stop(self) -> None:
        """Ask it to end once its task is done (it ends at once when free)."""
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass


class WorkerPool:
    """The batch's workers (see the module docstring)."""

    def __init__(self, cfg, classifier_threads: int | None = None, quiet: bool = True):
        self.ctx = multiprocessing.get_context("spawn")
        self.cfg, self.classifier_threads, self.quiet = cfg, classifier_threads, quiet
        self.workers: list[Worker] = []

    def start(self) -> Worker:
        worker = Worker(self.ctx, self.cfg, self.classifier_threads, self.quiet)
        self.workers.append(worker)
        return worker

    def wait(self, timeout: float) -> list[tuple[Worker, tuple]]:
        """The messages that came within `timeout` s, and ("died", exit code) for a worker whose process ended
        (it leaves the pool)."""
        by_object = {}
        for w in self.workers:
            by_object[w.conn] = w
            by_object[w.process.sentinel] = w
        events, dead = [], []
        for obj in multiprocessing.connection.wait(list(by_object), timeout):
            w = by_object[obj]
            if obj is w.conn:
                events += self._drain(w)
            elif w not in dead:
                dead.append(w)
        for w in dead:
            events += self._drain(w)
            w.process.join(timeout=5)
            events.append((w, ("died", w.process.exitcode)))
            self.workers.remove(w)
            w.conn.close()
        return events

    @staticmethod
    def _drain(worker: Worker) -> list[tuple[Worker, tuple]]:
        out = []
        try:
            while not worker.conn.closed and worker.conn.poll():
                out.append((worker, worker.conn.recv()))
        except (EOFError, OSError):
            pass
        return out

    def stop(self, kill: bool = False, timeout: float = 10.0) -> None:
        """End every worker: ask (or, kill=True, SIGKILL at once), wait up to `timeout` s, then kill the rest."""
        for w in self.workers:
            if kill:
                w.process.kill()
            else:
                w.stop()
        deadline = time.monotonic() + timeout
        for w in self.workers:
            w.process.join(timeout=max(0.0, deadline - time.monotonic()))
            if w.process.is_alive():
                w.process.kill()
                w.process.join(timeout=5)
            w.conn.close()
        self.workers.clear()
