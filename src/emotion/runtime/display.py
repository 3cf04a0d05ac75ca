"""The window that shows annotated frames, and whether one can be opened at all.

    if display_available():                 # an X server that answers (Linux), or Windows / macOS
        window = Window()
        quit = window.show(frame_bgr)       # True once the user pressed q / Esc or closed the window
        window.close()
"""
from __future__ import annotations

import os
import socket
import sys

from emotion.common import console

WINDOW = "emotion recognition (q quits)"
QUIT_KEYS = (ord("q"), ord("Q"), 27)


def display_available() -> bool:
    """Whether a window can be shown: an X display that accepts connections (Linux), or another desktop OS.
    Checked before OpenCV's Qt backend is touched, because Qt aborts the process when it finds no display."""
    if sys.platform in ("win32", "darwin"):
        return True
    display = os.environ.get("DISPLAY", "")
    if not display or not x_display_reachable(display):
        return False
    import cv2
    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
    except cv2.error as exc:
        console.warn(f"cannot open a window ({str(exc).strip().splitlines()[-1]}); running without one")
        return False
    return True


def x_display_reachable(display: str) -> bool:
    """Whether the X server of a DISPLAY value (":0", "host:1.0", "/path/unix:0") accepts a connection."""
    host, _, rest = display.rpartition(":")
    try:
        number = int(rest.split(".")[0])
    except ValueError:
        return False
    try:
        if host in ("", "unix") or host.startswith("/"):
            path = host if host.startswith("/") else f"/tmp/.X11-unix/X{number}"
            for address in (path, "\0" + path):  # the socket file, or Linux's abstract socket
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(0.5)
                    try:
                        s.connect(address)
                        return True
                    except OSError:
                        continue
            return False
        with socket.create_connection((host, 6000 + number), timeout=0.5):
            return True
    except OSError:
        return False


class Window:
    """The OpenCV window of a run (named WINDOW, opened by display_available)."""

    def __init__(self):
        import cv2
        self._cv2 = cv2

    def show(self, frame_bgr) -> bool:
        """Show one frame; True when the user asks to stop (q, Q or Esc pressed, or the window closed)."""
        cv2 = self._cv2
        cv2.imshow(WINDOW, frame_bgr)
        key = cv2.waitKey(1) & 0xFF
        return key in QUIT_KEYS or cv2.getWindowProperty(WINDOW, cv2.WND_PROP_VISIBLE) < 1

    def close(self) -> None:
        try:
            self._cv2.destroyAllWindows()
        except self._cv2.error:
            pass
