"""inference.py's batch run: an archive of videos (several files, folders, globs) in one run, in parallel worker
processes, resumable, never stopped by one bad file, with one progress bar over the whole archive.

    code = batch.run_batch(["archive/", "more/*.mp4"], cfg, BatchOptions(workers=2))   # exit code: 0, 1, 130
    code = batch.run_batch(["archive/"], cfg, BatchOptions(shard=(0, 4)))   # job 0 of a 4-job array
    code = batch.merge(cfg)                                                 # the 4 shards' records in one

Outputs, in results_dir/videos/ (never results_dir/photos/, predict.py's, whatever the videos are called):
  <name>/            each video's outputs, the files of a single run (predictions.jsonl for predictions.json), in a
                     folder published whole when the video is done (outputs.Staged); <name> from archive.py
  manifest.csv       one row per video (manifest.py): path, size, frames, faces, tracks, seconds, status done /
                     failed / skipped, the error line; written atomically after each video
  tracks_all.csv     every done video's tracks.csv rows, with a `video` column (its path) first
With --shard I/N: manifest-I-of-N.csv and tracks_all-I-of-N.csv instead (merge() joins the N of them), the
per-video folders as without shards (names come from the whole list, so shards never collide).

A run again with the same inputs skips the videos done (same path, size and modification time, folder still
there) and those that failed (unless retry_failed), and analyses the rest; restart analyses all of the list
again, replacing only their own folders. The batch holds outputs.exclusive on its folder (a shard: on its
manifest), so two runs never write the same outputs. Workers: `workers` processes (default: one per 2 cores the
process may use, at most one per video), each with its own detector and classifier; a worker that dies fails
its video (the batch goes on with a new worker); Ctrl-C or SIGTERM stops the workers, keeps what is done and
leaves the rest skipped for the next run (exit code 130). Exit code 1 when a video of the list failed.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from emotion.common import atomic, console, outputs, paths
from emotion.common.errors import UserError
from emotion.runtime import archive, manifest
from emotion.runtime.batch_workers import Task, VideoJob
from emotion.runtime.workers import WorkerPool, conversion_cached
from emotion.runtime.progress import ArchiveProgress

VIDEOS_DIR = "videos"       # results_dir/videos/: the batch's outputs
CORES_PER_WORKER = 2        # a video run keeps about 2 cores busy (decode + detect, 2 classifier threads, encode)


@dataclass(frozen=True)
class BatchOptions:
    video_name: str | None = "test_out.avi"   # the annotated video in each folder; None: --no-video
    max_frames: int | None = None
    classify_every: int = 1
    workers: int | None = None                # None: default_workers
    shard: tuple[int, int] | None = None      # (I, N): every N-th video from the I-th
    restart: bool = False
    retry_failed: bool = False


def batch_folder(cfg) -> Path:
    return Path(cfg.results_dir) / VIDEOS_DIR


def default_workers() -> int:
    """One worker per CORES_PER_WORKER cores this process may use, at least one."""
    from emotion.runtime.classifier import available_cores
    return max(1, available_cores() // CORES_PER_WORKER)


def run_batch(inputs: Sequence[str], cfg, options: BatchOptions) -> int:
    """The whole batch (see the module docstring): prints the model's one-line card, the progress, one line per
    video and a JSON summary; returns the exit code."""
    folder = batch_folder(cfg)
    videos = archive.list_videos(inputs, exclude=folder)
    listed = len(videos)
    if options.shard is not None:
        videos = archive.shard(videos, *options.shard)
    paths.check_writable(folder, "results_dir")
    paths.require_model_file(cfg.model_save_path)  # before any worker starts
    manifest_name, tracks_name = manifest.file_names(options.shard)
    with outputs.exclusive(folder if options.shard is None else folder / manifest_name):
        folder.mkdir(parents=True, exist_ok=True)
        rows, todo = manifest.plan(videos, manifest.read(folder / manifest_name), folder, options.restart,
                                   options.retry_failed)
        manifest.write(folder / manifest_name, rows)
        run = BatchRun(cfg, options, rows, todo, len(videos), folder, folder / manifest_name)
        if todo:
            from emotion.evaluation import card
            print(card.summary_line(cfg.model_save_path), flush=True)
            run.run()
        track_rows = manifest.write_tracks_all(rows, folder, folder / tracks_name)
        with contextlib.suppress(OSError):
            run.journal_dir.rmdir()  # empty unless a publication was cut short (the next run finishes it)
    summary = run.summary(listed, track_rows, tracks_name)
    print(json.dumps(summary), flush=True)
    if run.interrupted:
        return 130
    if summary["failed"]:
        console.warn(f"{summary['failed']} of {len(videos)} videos failed: "
                     f"{folder / manifest_name} says why (column error)")
        return 1
    return 0


def merge(cfg) -> int:
    """--merge: the shards' manifests and tracks_all files in results_dir/videos joined into manifest.csv and
    tracks_all.csv (every shard must have run; a shard still running is refused by its lock)."""
    folder = batch_folder(cfg)
    found = manifest.shard_manifests(folder) if folder.is_dir() else {}
    locks = [p for shards in found.values() for p in shards.values()]
    with outputs.exclusive(folder, *locks):
        summary = manifest.merge_shards(folder)
    print(json.dumps(summary), flush=True)
    return 1 if summary["failed"] else 0


class BatchRun:
    """One batch run's scheduling: the videos to analyse (positions `todo` in the manifest's `rows`), the
    workers, their messages, the manifest after each video, the progress bar."""

    def __init__(self, cfg, options: BatchOptions, rows: list[dict], todo: list[int], videos: int, folder: Path,
                 manifest_path: Path):
        self.cfg, self.options, self.rows, self.todo, self.videos = cfg, options, rows, todo, videos
        self.folder, self.manifest_path = folder, manifest_path
        shard = options.shard
        self.journal_dir = folder / (".journal" if shard is None else f".journal-{shard[0]}-of-{shard[1]}")
        self.queue = deque(range(len(todo)))      # positions in todo not assigned yet
        self.analysed = self.frames = 0
        self.interrupted = False
        self.workers_used = self.restarts = 0
        self.started = time.perf_counter()
        self.progress = ArchiveProgress([int(rows[i]["size"]) for i in todo])

    def task(self, position: int) -> Task:
        row = self.rows[self.todo[position]]
        return Task(position, row["path"], str(self.folder / row["output"]), str(self.journal_dir),
                    self.options.video_name, bool(self.cfg.labeled_frame_stride), self.options.max_frames,
                    self.options.classify_every)

    def run(self) -> None:
        """Analyse every video of todo (a KeyboardInterrupt or SIGTERM stops it: self.interrupted)."""
        count = max(1, min(len(self.todo), self.options.workers or default_workers()))
        self.workers_used = count
        from emotion.runtime.classifier import available_cores
        threads = max(1, available_cores() // count) if count > 1 else None
        pool = WorkerPool(VideoJob(self.cfg, classifier_threads=threads), name="emotion-batch-worker",
                          quiet="TF_CPP_MIN_LOG_LEVEL" in os.environ and "TF_CPP_MIN_LOG_LEVEL" not in
                          console.child_env())
        previous = _stop_on_sigterm()
        try:
            self._start(pool, count)
            self._loop(pool, count)
        except KeyboardInterrupt:
            self.interrupted = True
        finally:
            busy = [(w.pid, w.task) for w in pool.workers if w.task is not None]
            pool.stop(kill=self.interrupted or bool(busy))
            for pid, task in busy:  # the videos in progress stay skipped; their temporary folders go
                _remove_temp(Path(task.folder), pid)
            _restore_sigterm(previous)
            manifest.write(self.manifest_path, self.rows)
            self.progress.close()

    def _start(self, pool: WorkerPool, count: int) -> None:
        """Start the workers: all at once when the model's TFLite conversion is cached, else one first (it
        converts and caches the model) and the others once it is ready."""
        pool.start(count, one_first=not conversion_cached(self.cfg))

    def _loop(self, pool: WorkerPool, count: int) -> None:
        while self.queue or any(w.task is not None for w in pool.workers):
            for worker in pool.workers:
                if worker.ready and worker.task is None:
                    if self.queue:
                        worker.assign(self.task(self.queue.popleft()))
            for worker, message in pool.wait(timeout=0.5):
                self._handle(pool, worker, message)
            self._replace_dead(pool, count)
            self.progress.draw()

    def _replace_dead(self, pool: WorkerPool, count: int) -> None:
        """A worker for each one that died, as long as videos wait for one (at most one per video overall)."""
        if pool.pending:
            return
        busy = sum(w.task is not None for w in pool.workers)
        while len(pool.workers) < min(count, busy + len(self.queue)) and self.restarts < len(self.todo):
            pool.start()
            self.restarts += 1

    def _handle(self, pool: WorkerPool, worker, message: tuple) -> None:
        kind = message[0]
        if kind == "progress":  # ("ready": the pool marks the worker and starts the pending ones)
            self.progress.frames(message[1], message[2], message[3])
        elif kind == "result":
            self._finished(message[1], message[2])
            worker.task = None
        elif kind == "fatal":
            raise UserError(f"a worker could not load the model: {message[1]}")
        elif kind == "died":
            self._died(worker, message[1])

    def _died(self, worker, exitcode) -> None:
        """A worker's process ended: before its model loaded, the batch cannot go on; with a video, the video
        failed (a crash, the kernel's out-of-memory killer), or stays skipped when the worker was stopped (SIGTERM,
        SIGINT, SIGHUP: the batch itself is being stopped) and is analysed by the next run."""
        if not worker.ready:
            raise UserError(f"a worker process died while loading the model (exit code {exitcode}); "
                            f"run a single video (inference.py -v FILE) to see why")
        task = worker.task
        if task is None:
            return
        worker.task = None
        _remove_temp(Path(task.folder), worker.pid)
        signum = -exitcode if exitcode is not None and exitcode < 0 else None
        if signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            self.progress.finished(task.position, manifest.SKIPPED,
                                   f"stopped {Path(task.path).name}: its worker was stopped (signal {signum})")
            return
        how = f"killed by signal {signum}" if signum else f"exit code {exitcode}"
        self._finished(task.position, {"status": manifest.FAILED,
                                       "error": f"the worker process analysing it died ({how})"})

    def _finished(self, position: int, result: dict) -> None:
        """A video's result: its row, the manifest (atomically), a line above the bar."""
        index = self.todo[position]
        row = self.rows[index] = manifest.result_row(self.rows[index], result)
        manifest.write(self.manifest_path, self.rows)
        self.analysed += 1
        frames = int(row["frames"] or 0)
        self.frames += frames
        name = Path(row["path"]).name
        if row["status"] == manifest.DONE:
            tracks = f"{row['tracks']} track{'' if row['tracks'] in (1, '1') else 's'}"
            line = f"done {name}: {frames} frames, {tracks}, {row['seconds']} s -> {row['output']}/"
        else:
            line = f"failed {name}: {row['error']}"
        self.progress.finished(position, row["status"], paths.printable(line), frames)

    def summary(self, listed: int, track_rows: int, tracks_name: str) -> dict:
        """The JSON summary line: this run's list (`listed` before sharding); rows of other videos not counted."""
        mine = self.rows[:self.videos]
        counts = {s: sum(r["status"] == s for r in mine) for s in (manifest.DONE, manifest.FAILED, manifest.SKIPPED)}
        elapsed = time.perf_counter() - self.started
        shard = self.options.shard
        return {"videos": len(mine), "listed": listed, **counts, "analysed": self.analysed,
                "kept": len(mine) - len(self.todo), "frames": self.frames,
                "fps": round(self.frames / elapsed, 2) if elapsed > 0 and self.frames else None,
                "elapsed_s": round(elapsed, 2), "workers": self.workers_used,
                "shard": f"{shard[0]}/{shard[1]}" if shard else None, "interrupted": self.interrupted,
                "manifest": str(self.manifest_path), "tracks_all": str(self.folder / tracks_name),
                "track_rows": track_rows, "folder": str(self.folder)}


def _remove_temp(final: Path, pid: int) -> None:
    """The temporary folder a (dead) worker was filling for `final`."""
    import shutil
    shutil.rmtree(atomic.temp_path(final, pid), ignore_errors=True)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _stop_on_sigterm():
    """SIGTERM (a scheduler's stop: scancel, kubectl delete) stops the batch as Ctrl-C does; the previous handler."""
    if threading.current_thread() is threading.main_thread():
        return signal.signal(signal.SIGTERM, _raise_interrupt)
    return None


def _restore_sigterm(previous) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)
