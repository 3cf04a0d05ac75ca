"""One progress bar over a whole archive (batch.py): videos done of all, frames analysed, frames per second and the
time left, on stderr.

    bar = ArchiveProgress(sizes=[video.size for video in todo])   # bytes of each video to analyse, by position
    bar.frames(0, done=120, total=270)        # a worker's report on the video at position 0
    bar.finished(0, "done", "done clip.avi: 270 frames, 2 tracks, 6.1 s")   # a line above the bar
    bar.close()

On a terminal the bar is one line redrawn at most 5 times a second:
    [#######.............] 3/10 videos (1 failed) | 1,234 frames | 41.2 frames/s | 0:42 left
elsewhere (a log file, a CI job) it is printed as a line of its own every 30 s at most, after the per-video lines.
The time left comes from the bytes analysed so far (a video's bytes count in proportion to its frames done), so
it needs no frame count of the videos not started yet, and videos of different lengths weigh what they weigh.
"""
from __future__ import annotations

import sys
import time
from typing import Sequence, TextIO

from emotion.runtime.track_report import clock


class ArchiveProgress:
    """See the module docstring. Positions index the `sizes` given (the videos this run analyses)."""

    def __init__(self, sizes: Sequence[int], stream: TextIO | None = None, width: int = 20):
        self.sizes = [max(0, int(s)) for s in sizes]
        self.total_bytes = sum(self.sizes) or 1
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = 0.2 if self.tty else 30.0
        self.width = width
        self.started = time.perf_counter()
        self.last_drawn = self.started
        self.partial: dict[int, tuple[int, int | None]] = {}   # position -> (frames done, frames in the video)
        self.frames_done = 0                                   # frames of finished videos
        self.bytes_done = 0
        self.videos_done = 0
        self.failed = 0
        self.drawn = False

    def frames(self, position: int, done: int, total: int | None) -> None:
        """A video in progress: `done` of `total` frames (total None: unknown)."""
        self.partial[position] = (done, total)
        self.draw()

    def finished(self, position: int, status: str, line: str = "", frames: int = 0) -> None:
        """A video is over (status done, failed or skipped): its line is printed above the bar."""
        self.partial.pop(position, None)
        self.videos_done += 1
        self.failed += status == "failed"
        self.frames_done += frames
        self.bytes_done += self.sizes[position] if position < len(self.sizes) else 0
        if line:
            self._clear()
            print(line, file=self.stream, flush=True)
        self.draw(force=True)

    def _fraction_bytes(self) -> float:
        partial = 0.0
        for position, (done, total) in self.partial.items():
            if total and position < len(self.sizes):
                partial += self.sizes[position] * min(1.0, done / total)
        return self.bytes_done + partial

    def text(self) -> str:
        """The bar as one line."""
        elapsed = max(1e-9, time.perf_counter() - self.started)
        frames = self.frames_done + sum(done for done, _ in self.partial.values())
        done_bytes = self._fraction_bytes()
        fraction = min(1.0, done_bytes / self.total_bytes)
        filled = int(round(fraction * self.width))
        left = clock((self.total_bytes - done_bytes) * elapsed / done_bytes) + " left" if done_bytes > 0 else "? left"
        failed = f" ({self.failed} failed)" if self.failed else ""
        return (f"[{'#' * filled}{'.' * (self.width - filled)}] {self.videos_done}/{len(self.sizes)} videos{failed} | "
                f"{frames:,} frames | {frames / elapsed:.1f} frames/s | {left}")

    def draw(self, force: bool = False) -> None:
        """Redraw the bar (a terminal: when `interval` has passed, or force; elsewhere: a line every `interval`)."""
        now = time.perf_counter()
        if now - self.last_drawn < self.interval and not (force and self.tty):
            return
        self.last_drawn = now
        if self.tty:
            self.stream.write("\r\x1b[2K" + self.text())
            self.drawn = True
        else:
            self.stream.write(self.text() + "\n")
        self.stream.flush()

    def _clear(self) -> None:
        if self.tty and self.drawn:
            self.stream.write("\r\x1b[2K")
            self.drawn = False

    def close(self) -> None:
        """The final state, on a line of its own."""
        self._clear()
        print(self.text(), file=self.stream, flush=True)
