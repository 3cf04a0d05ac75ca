"""Test and benchmark support for the web page in headless Chromium (tests/test_web.py, benchmarks/bench_web.py).

    from browser import require_browser, scenario, write_y4m
    require_browser()                                  # pytest.skip with the reason when Chromium cannot run
    result = scenario("classify", url, images=[...])  # one scenario of web/tools/browser.mjs, errors asserted
    write_y4m(Path("Megamind.avi"), Path("clip.y4m"), max_frames=48)   # a clip Chromium's fake camera plays

Running the page itself (browser_missing, run_browser, classify_in_browser) is emotion/serving/headless_browser.py, since
export.py measures its TF.js formats with it.
"""
from __future__ import annotations

from pathlib import Path

from emotion.common import atomic
from emotion.common.errors import UserError
from emotion.serving import headless_browser


def require_browser() -> None:
    """Skip the calling test (pytest) with the reason when headless Chromium cannot run the page here."""
    import pytest
    missing = headless_browser.browser_missing()
    if missing:
        pytest.skip(f"no browser tests: {missing} (make test installs Chromium and runs npm ci --prefix web)")


def scenario(name: str, url: str, **options) -> dict:
    """Run one scenario of web/tools/browser.mjs (see there) and return what it printed; an error it
    reports fails the test."""
    result = headless_browser.run_browser(name, url, timeout=240, **options)
    assert "error" not in result, result["error"]
    return result


def write_y4m(video_path: Path, out_path: Path, max_frames: int | None = None) -> int:
    """Convert a video to a .y4m file (4:2:0, the clip's size and frame rate): Chromium plays it as a fake
    camera (--use-fake-device-for-media-stream --use-file-for-fake-video-capture=FILE.y4m), which is how the
    tests and benchmarks/bench_web.py show the page a real clip. Returns the number of frames written."""
    import cv2
    capture = cv2.VideoCapture(str(video_path))
    if not capture.isOpened():
        raise UserError(f"cannot open video {video_path}")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    frames = 0
    try:
        with atomic.atomic_path(out_path) as tmp, open(tmp, "wb") as f:
            while max_frames is None or frames < max_frames:
                ok, frame = capture.read()
                if not ok:
                    break
                h, w = frame.shape[:2]
                if frames == 0:
                    f.write(f"YUV4MPEG2 W{w - w % 2} H{h - h % 2} F{round(fps * 1000)}:1000 Ip A1:1 C420jpeg\n".encode())
                frame = frame[:h - h % 2, :w - w % 2]  # 4:2:0 needs even sides
                f.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())
                frames += 1
            if frames == 0:
                raise UserError(f"no frame could be read from {video_path}")
    finally:
        capture.release()
    return frames
