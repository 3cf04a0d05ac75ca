"""Test images placed in larger frames, as a face far from the camera or off-centre would be: the placement of
the end-to-end report (evaluate.py --robustness) and of benchmarks/bench_faces.py, one function for both.

    frame, rect = place(photo, 350)                                  # bench_faces: 350 px, centred, black 640x480
    frame, rect = place(crop, 64, at=(0.25, 0.3), background=clutter)  # 64 px, its centre at 25% / 30% of the frame
    clutter = cluttered_background()                                 # 480x640x3, the same pixels for every run
    inside(face_box, rect)                                           # the box's centre lies on the placed image

rect is (x, y, w, h) of the placed image in the frame. A face counts as found when a detected box's centre lies
on it: the detector's box (brows to chin) is smaller than the placed crop, so its centre is on the crop whenever
it is the crop's face, and never when it is a false detection in the background. Nothing here imports TensorFlow.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

FRAME = (640, 480)  # width, height: a VGA webcam frame, bench_faces' frame
CLUTTER_SEED = 0


def place(image: np.ndarray, side: int | None, frame: tuple[int, int] = FRAME,
          at: tuple[float, float] | None = None, background: np.ndarray | None = None
          ) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """image (uint8 HxW gray or HxWx3) scaled to a `side`-pixel longer side (None: as it is, shrunk only to fit)
    and pasted on a frame (width, height): black, or a copy of `background` (HxW or HxWx3 of the frame's size;
    a gray image on a colour background is made 3-channel). at: where the image's centre goes, as fractions of
    the frame's width and height (kept inside the frame); None: centred. Returns (frame, (x, y, w, h))."""
    fw, fh = frame
    h, w = image.shape[:2]
    s = side / max(h, w) if side else min(1.0, fw / w, fh / h)
    if s != 1:
        interpolation = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
        image = cv2.resize(image, (round(w * s), round(h * s)), interpolation=interpolation)
        h, w = image.shape[:2]
    if w > fw or h > fh:
        raise ValueError(f"a {w}x{h} image does not fit a {fw}x{fh} frame")
    if at is None:
        x, y = (fw - w) // 2, (fh - h) // 2
    else:
        x = min(max(int(round(at[0] * fw - w / 2)), 0), fw - w)
        y = min(max(int(round(at[1] * fh - h / 2)), 0), fh - h)
    if background is None:
        out = np.zeros((fh, fw) + image.shape[2:], np.uint8)
    else:
        if background.shape[:2] != (fh, fw):
            raise ValueError(f"background is {background.shape[1]}x{background.shape[0]}, the frame {fw}x{fh}")
        out = background.copy()
        if out.ndim == 3 and image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    out[y:y + h, x:x + w] = image
    return out, (x, y, w, h)


def cluttered_background(frame: tuple[int, int] = FRAME, seed: int = CLUTTER_SEED) -> np.ndarray:
    """A busy but face-free uint8 RGB frame (height, width, 3), the same for a given seed: smooth colour noise
    (blurred, so it has edges at many scales but not the i.i.d. pixel noise on which BlazeFace scores 0.5-0.7,
    see faces.FaceDetector) under 60 random rectangles, circles and lines."""
    fw, fh = frame
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.uniform(0, 255, (fh, fw, 3)).astype(np.float32), (0, 0), 12)
    noise = (noise - noise.min()) / max(float(noise.max() - noise.min()), 1e-6) * 255
    out = np.ascontiguousarray(noise.astype(np.uint8))
    for _ in range(60):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = int(rng.integers(0, fw)), int(rng.integers(0, fh))
        size = int(rng.integers(10, 120))
        kind = int(rng.integers(0, 3))
        if kind == 0:
            cv2.rectangle(out, (x, y), (x + size, y + int(rng.integers(10, 120))), colour, -1)
        elif kind == 1:
            cv2.circle(out, (x, y), size // 2, colour, -1)
        else:
            cv2.line(out, (x, y), (int(rng.integers(0, fw)), int(rng.integers(0, fh))), colour,
                     int(rng.integers(1, 6)))
    return out


def inside(box: Sequence[float], rect: Sequence[int]) -> bool:
    """Whether the centre of box (x, y, w, h) lies on rect (x, y, w, h), edges included."""
    x, y, w, h = rect
    cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
    return x <= cx <= x + w and y <= cy <= y + h
