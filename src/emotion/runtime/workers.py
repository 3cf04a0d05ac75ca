"""Worker processes, each with its own model: the generic part of inference.py's batch (batch_workers.py, one video
per task) and of predict.py --workers (photos.py, one chunk of images per task).

    pool = WorkerPool(job, name="emotion-batch-worker")  # job: picklable; job.load() -> state (in the worker),
    pool.start(count, one_first=True)   # job.run(state, task, send) -> result; 'spawn' (TensorFlow is not fork-safe)
    worker = next(w for w in pool.workers if w.ready and w.task is None)
    worker.assign(task)                                 # task: picklable, with .position
    for worker, message in pool.wait(timeout=0.5):      # what the workers said, and which of them died
        ...  # ("ready", startup_s) ("result", position, result) and the job's own (send(...)); ("fatal", line): it
             # could not load the model, or job.run raised; ("died", exit code): the process is gone
    pool.stop()                                         # ask them to end, then kill what is left

    with InOrder(job, count, max_restarts=len(chunks)) as run:    # tasks in order, results in the same order
        for task, outcome in run.results(tasks):        # ("result", value) or ("died", exit code): only that task lost
            ...

Each worker has a pipe of its own (no queue lock a dying process could keep), ignores Ctrl-C (the parent stops it)
and, on Linux, is killed by the kernel when the parent process dies, even by kill -9 (prctl PR_SET_PDEATHSIG), so
none is left behind. Its stdout goes to /dev/null: what is printed is the parent's to print.
"""
from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
from typing import Iterable, Iterator

from emotion.common.errors import UserError


def die_with_parent(parent: int) -> None:
    """Linux: the kernel sends SIGKILL to this process when the parent process dies (even by kill -9); if it is
    gone already, end now."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)


def one_line(exc: BaseException) -> str:
    from emotion.common.errors import first_line
    return str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {first_line(exc)}"


def serve(conn, parent: int, job, quiet: bool) -> None:
    """A worker process's life: load the job's state, say ready, run the tasks that come until None."""
    die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from emotion.common import console
    if quiet:  # as the parent process: TensorFlow's start-up lines hidden
        os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
        console.quiet_tensorflow()
    sys.stdout = open(os.devnull, "w")  # a run's own lines (model card, ...) are the parent's to print
    started = time.perf_counter()
    try:
        state = job.load()
    except BaseException as exc:  # noqa: BLE001 (whatever it is, the parent says it in one line)
        conn.send(("fatal", one_line(exc)))
        return
    conn.send(("ready", round(time.perf_counter() - started, 2)))
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        try:
            result = job.run(state, task, conn.send)
        except Exception as exc:  # noqa: BLE001 (what would have ended a run in one process ends this one)
            conn.send(("fatal", one_line(exc)))
            return
        conn.send(("result", task.position, result))


class Worker:
    """The parent's end of one worker process: its pipe, its process, the task it is on (None: free)."""

    def __init__(self, ctx, job, quiet: bool, name: str):
        self.conn, child = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=serve, name=name, daemon=True, args=(child, os.getpid(), job, quiet))
        self.process.start()
        child.close()
        self.task = None
        self.ready = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def assign(self, task) -> None:
        self.task = task
        self.conn.send(task)

    def stop(self) -> None:
        """Ask it to end once its task is done (it ends at once when free)."""
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass


class WorkerPool:
    """The parent's workers (see the module docstring)."""

    def __init__(self, job, quiet: bool = True, name: str = "emotion-worker"):
        self.ctx = multiprocessing.get_context("spawn")
        self.job, self.quiet, self.name = job, quiet, name
        self.workers: list[Worker] = []
        self.pending = 0   # workers to start once the first is ready (start(one_first=True))

    def start(self, count: int = 1, one_first: bool = False) -> Worker:
        """Start `count` workers; one_first: one now and the others when it is ready (e.g. the first converts the
        model to TFLite and caches the conversion the others then load). Returns the first."""
        first = Worker(self.ctx, self.job, self.quiet, self.name)
        self.workers.append(first)
        self.pending += count - 1
        if not one_first:
            self._start_pending()
        return first

    def _start_pending(self) -> None:
        while self.pending:
            self.pending -= 1
            self.workers.append(Worker(self.ctx, self.job, self.quiet, self.name))

    def wait(self, timeout: float) -> list[tuple[Worker, tuple]]:
        """The messages that came within `timeout` s, and ("died", exit code) for a worker whose process ended
        (it leaves the pool). A worker that says "ready" is marked so, and the pending ones are started."""
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
        if any(message[0] == "ready" for _, message in events):
            for w, message in events:
                w.ready = w.ready or message[0] == "ready"
            self._start_pending()
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
        self.pending = 0
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


def conversion_cached(cfg) -> bool:
    """Whether workers loading cfg's model find its TFLite conversion cached (else the first converts it and the
    others start once it is ready: WorkerPool.start(one_first=True))."""
    if cfg.classifier_backend != "tflite":
        return True
    from emotion.model import conversion
    return conversion.cache_path(cfg.model_save_path).is_file()


_END = object()


class InOrder:
    """Tasks (task.position 0, 1, 2, ... in the order given) run on `count` workers, their outcomes handed back in
    that order: ("result", value), or ("died", exit code) when the worker's process ended on it (only that task is
    lost; a worker is started in its place, at most max_restarts times in all). A worker that cannot load the model
    (or whose job.run raised) ends the run: UserError with its one line. At most `window` tasks (default 2 per
    worker) are given out beyond the first whose outcome is not handed back yet, so memory stays bounded."""

    def __init__(self, job, count: int, max_restarts: int, one_first: bool = False, quiet: bool = True,
                 name: str = "emotion-worker", window: int | None = None):
        self.pool = WorkerPool(job, quiet, name)
        self.count, self.max_restarts, self.one_first = count, max_restarts, one_first
        self.window = window or 2 * count
        self.finished: dict[int, tuple] = {}
        self.issued = self.next = self.restarts = 0

    def __enter__(self) -> "InOrder":
        self.pool.start(self.count, self.one_first)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        for w in self.pool.workers:   # still loading the model (a late start, a replacement): nothing to wait for
            if not w.ready:
                w.process.kill()
        self.pool.stop(kill=exc_type is not None or any(w.task is not None for w in self.pool.workers))

    def results(self, tasks: Iterable) -> Iterator[tuple[object, tuple]]:
        tasks = iter(tasks)
        upcoming = next(tasks, _END)
        while True:
            while self.next in self.finished:
                yield self.finished.pop(self.next)
                self.next += 1
            upcoming = self._dispatch(upcoming, tasks)
            if upcoming is _END and self.next == self.issued:
                return
            for worker, message in self.pool.wait(timeout=0.5):
                self._handle(worker, message)
            self._replace_dead(upcoming is not _END)

    def _dispatch(self, upcoming, tasks: Iterator):
        """Give free workers tasks (within the window), `upcoming` first; the next task not given out (_END: none)."""
        for worker in self.pool.workers:
            if upcoming is _END or self.issued - self.next >= self.window:
                break
            if worker.ready and worker.task is None:
                if upcoming.position != self.issued:
                    raise ValueError(f"task positions must be 0, 1, 2, ...: got {upcoming.position}, not {self.issued}")
                worker.assign(upcoming)
                self.issued += 1
                upcoming = next(tasks, _END)
        return upcoming

    def _handle(self, worker: Worker, message: tuple) -> None:
        kind = message[0]
        if kind == "result":
            self.finished[message[1]] = (worker.task, ("result", message[2]))
            worker.task = None
        elif kind == "fatal":
            raise UserError(message[1])
        elif kind == "died":
            if not worker.ready:
                raise UserError(f"a worker process died while loading the model (exit code {message[1]})")
            if worker.task is not None:
                self.finished[worker.task.position] = (worker.task, ("died", message[1]))
                worker.task = None

    def _replace_dead(self, more: bool) -> None:
        """A worker for each one that died, while tasks wait for one (at most max_restarts in all)."""
        while more and len(self.pool.workers) + self.pool.pending < self.count and self.restarts < self.max_restarts:
            self.pool.start()
            self.restarts += 1
        if more and not self.pool.workers:
            raise UserError(f"every worker process died ({self.restarts} restarted): the run cannot go on")
