"""Where video frames come from: a video file or a webcam, read on past damaged frames.

    source = open_video(Path("clip.mp4"))        # or open_camera(0); one UserError line when it cannot be read
    while (got := source.read()) is not None:
        frame_bgr, source_frame = got
    print(source.skipped, source.lost_at_end, source.stop_reason)
    source.release()

A damaged stretch of a file is sought past (FrameSource); a webcam frame that does not come is retried.
libav prints a line per damaged macroblock: a script sets OPENCV_FFMPEG_LOGLEVEL=-8 before OpenCV loads.
"""
from __future__ import annotations

import time
from pathlib import Path

from emotion.common import console, paths
from emotion.common.errors import UserError

SEEK_TRIES = 12             # a damaged stretch of a file: attempts to seek past it before giving up
CAMERA_RETRIES = 25         # a webcam frame that does not come: retries (20 ms apart) before stopping


class FrameSource:
    """A cv2.VideoCapture that reads on past damaged frames.

    read(buffer) -> (frame BGR, source frame number) or None at the end. A video file whose read() fails
    before the frame count its header announces is sought past the failing frame (CAP_PROP_POS_FRAMES),
    1, 2, 3, 4, then 8, 16, ... frames ahead, up to SEEK_TRIES times; the frames passed over count in
    `skipped`. When no seek helps (a truncated file), reading stops and the frames never reached count in
    `lost_at_end`. (OpenCV's FFmpeg decoder conceals most damage itself: a frame with broken macroblocks
    comes out patched and read() succeeds; only what it cannot decode at all fails.)
    A webcam is retried CAMERA_RETRIES times, 20 ms apart, before it counts as gone (stop_reason)."""

    def __init__(self, cap, kind: str, name: str, first_frame=None):
        import cv2
        self._cv2 = cv2
        self.cap, self.kind, self.name = cap, kind, name
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0 < fps <= 240 else None
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if kind == "video" else 0
        self.frame_count = count if count > 0 else None
        self.position = 0          # source frame number of the next read
        self.skipped = 0           # frames passed over mid-stream (video) or failed reads (camera)
        self.lost_at_end = 0       # frames the header announces that could not be reached
        self.read_failures = 0     # read() calls that returned False, end of file excluded
        self.stop_reason = "end"
        self._first = first_frame

    def read(self, buffer=None):
        if self._first is not None:
            frame, self._first = self._first, None
            self.position = 1
            return frame, 0
        cap = self.cap
        ok, frame = cap.read(buffer) if buffer is not None else cap.read()
        if ok:
            self.position += 1
            return frame, self.position - 1
        if self.kind == "camera":
            return self._retry_camera(buffer)
        return self._skip_damaged(buffer)

    def _retry_camera(self, buffer):
        for _ in range(CAMERA_RETRIES):
            self.read_failures += 1
            time.sleep(0.02)
            ok, frame = self.cap.read(buffer) if buffer is not None else self.cap.read()
            if ok:
                self.skipped += 1
                self.position += 1
                return frame, self.position - 1
        self.stop_reason = "camera stopped delivering frames"
        return None

    def _skip_damaged(self, buffer):
        cv2 = self._cv2
        if self.frame_count is None or self.position >= self.frame_count:
            return None  # the end of the file
        failed_at = self.position
        self.read_failures += 1
        step = 1
        for attempt in range(SEEK_TRIES):
            target = failed_at + step
            if target >= self.frame_count:
                break
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, target)
            landed = int(self.cap.get(cv2.CAP_PROP_POS_FRAMES))
            if landed > failed_at:
                ok, frame = self.cap.read(buffer) if buffer is not None else self.cap.read()
                if ok:
                    self.skipped += landed - failed_at
                    self.position = landed + 1
                    return frame, landed
            self.read_failures += 1
            step = step + 1 if attempt < 3 else step * 2
        self.lost_at_end = self.frame_count - failed_at
        self.stop_reason = f"unreadable from frame {failed_at} of {self.frame_count}"
        return None

    def release(self) -> None:
        self.cap.release()


def open_camera(index: int) -> FrameSource:
    """The webcam `index`, with its first frame read (one clear error otherwise)."""
    import cv2
    level = set_cv_log_level(0)  # OpenCV logs 2-3 lines for a missing camera: we say it in one
    try:
        cap = cv2.VideoCapture(index)
        opened = cap.isOpened()
        ok, frame = cap.read() if opened else (False, None)
    finally:
        set_cv_log_level(level)
    if not opened:
        cap.release()
        raise UserError(f"no camera at index {index} (is a webcam connected and free? try --camera-index N, "
                        f"or -v PATH for a video file)")
    if not ok:
        cap.release()
        raise UserError(f"camera {index} opened but delivered no frame (in use by another program?)")
    return FrameSource(cap, "camera", f"camera:{index}", frame)


def open_video(path: Path, hint: str = "") -> FrameSource:
    """The video file at `path`, with its first frame read (one clear error otherwise; `hint` follows the
    'video not found' message, e.g. which config key named the file)."""
    import cv2
    if not path.exists():
        raise UserError(f"video not found: {path}{hint}")
    if path.is_dir():
        raise UserError(f"not a video file: {path} is a folder")
    if not paths.is_regular_file(path):  # a FIFO would block the open below (and OpenCV) until a writer comes
        raise UserError(f"not a video file: {path} is a pipe, socket or device; give the path of a video file")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise UserError(f"cannot read video {path}: {exc.strerror}") from None
    # A damaged file makes OpenCV's parsers print lines of their own (its AVI reader, past its log level, with raw
    # bytes of the file in them): the one line below says it.
    level = set_cv_log_level(0)
    try:
        with console.quiet_stderr():
            cap = cv2.VideoCapture(str(path))
            opened = cap.isOpened()
            ok, frame = cap.read() if opened else (False, None)
    finally:
        set_cv_log_level(level)
    if not opened:
        cap.release()
        raise UserError(f"cannot read video {path}: not a video OpenCV can open (damaged, or an unknown format)")
    if not ok:
        cap.release()
        raise UserError(f"cannot read video {path}: no frame could be decoded (damaged or empty file)")
    return FrameSource(cap, "video", str(path), frame)


def set_cv_log_level(level: int) -> int:
    """Set OpenCV's log level (0: silent); the previous one (`level` itself where OpenCV has none)."""
    import cv2
    try:
        old = cv2.getLogLevel()
        cv2.setLogLevel(level)  # 0: silent
        return old
    except (AttributeError, cv2.error):
        return level
