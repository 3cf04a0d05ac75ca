"""Image corruptions at graded severities, for the robustness report (evaluate.py --robustness): pure functions
on uint8 RGB batches, numpy and OpenCV only, the same pixels on every run.

    corrupt(images, "downscale", 3)      # uint8 [N, H, W, 3] -> uint8 [N, H, W, 3]: faces of 32 px (at 96x96)
    corrupt(images, "blur", 0)           # severity 0 is the images themselves, for every corruption
    levels("jpeg")                       # (50, 20, 10): the parameter of severities 1, 2, 3
    level_label("downscale", 3, 96)      # "32 px"
    for name in CORRUPTIONS: ...         # in the report's order

What each one stands for (severity 1 -> last):
  blur        Gaussian blur, sigma 1, 2, 3, 4 px at 96 px (scaled with the image): focus, motion
  downscale   down to a 64, 48, 32, 24 px side (at 96 px; scaled with the image) and back up: a far face
  brightness  pixel values x 0.6, 0.4, 0.25: a darker picture (under-exposure, a dim room)
  contrast    distances from the image's mean gray x 0.6, 0.4, 0.2: haze, a flat, washed-out picture
  jpeg        JPEG quality 50, 20, 10: compression on the way (a chat app, a webcam stream)
  grayscale   luma Y = 0.299 R + 0.587 G + 0.114 B (ITU-R BT.601) in all three channels: a black-and-white photo
  rotation    in-plane rotation by 10, 20, 30 degrees counter-clockwise, borders reflected: a tilted head
  eyes        a black band over the eyes (sunglasses)
  mouth       a black band over the mouth (a mask, a hand)
  flip        the horizontal mirror image: a face and its mirror show the same expression, so nothing should change

The bands: BlazeFace's keypoints on the 320 AffectNet test crops of ../shared (each upscaled 3x on a black
640x480 frame; all found) put the eyes' centre at a median 0.449 of the crop's height (10th-90th percentile
0.416-0.489) and the mouth at 0.748 (0.710-0.791), so the eye band covers 0.36-0.54 of the height and the mouth
band 0.66-0.84, each the full width: both hold 80% of the faces' features with a margin, and they do not overlap.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

REFERENCE_SIDE = 96  # the levels in pixels are given at this input size and scaled with the image
EYE_BAND = (0.36, 0.54)    # fractions of the height (see the module docstring)
MOUTH_BAND = (0.66, 0.84)
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, what OpenCV's RGB2GRAY uses


def _per_image(images: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    return np.stack([fn(np.ascontiguousarray(image)) for image in images]) if len(images) else images.copy()


def _blur(images, sigma):
    sigma = sigma * images.shape[1] / REFERENCE_SIDE
    return _per_image(images, lambda im: cv2.GaussianBlur(im, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101))


def _downscale(images, side):
    h, w = images.shape[1:3]
    small = (max(1, round(w * side / REFERENCE_SIDE)), max(1, round(h * side / REFERENCE_SIDE)))
    if small[0] >= w and small[1] >= h:
        return images.copy()

    def down_up(im):
        return cv2.resize(cv2.resize(im, small, interpolation=cv2.INTER_AREA), (w, h), interpolation=cv2.INTER_LINEAR)
    return _per_image(images, down_up)


def _brightness(images, factor):
    return np.clip(np.rint(images.astype(np.float32) * factor), 0, 255).astype(np.uint8)


def _contrast(images, factor):
    x = images.astype(np.float32)
    gray = (x * np.asarray(LUMA, np.float32)).sum(axis=3, keepdims=True).mean(axis=(1, 2), keepdims=True)
    return np.clip(np.rint(gray + (x - gray) * factor), 0, 255).astype(np.uint8)


def _jpeg(images, quality):
    def round_trip(im):
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(im, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        if not ok:
            raise RuntimeError("OpenCV could not encode a JPEG")
        return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return _per_image(images, round_trip)


def _grayscale(images, _):
    return _per_image(images, lambda im: cv2.cvtColor(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB))


def _rotation(images, degrees):
    h, w = images.shape[1:3]
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), degrees, 1.0)
    return _per_image(images, lambda im: cv2.warpAffine(im, matrix, (w, h), flags=cv2.INTER_LINEAR,
                                                        borderMode=cv2.BORDER_REFLECT_101))


def band_rows(height: int, band: tuple[float, float]) -> tuple[int, int]:
    """The rows [start, stop) a band of fractions (top, bottom) covers in an image of `height` rows."""
    return int(np.floor(band[0] * height)), int(np.ceil(band[1] * height))


def _band(images, band):
    out = images.copy()
    top, bottom = band_rows(images.shape[1], band)
    out[:, top:bottom] = 0
    return out


def _flip(images, _):
    return np.ascontiguousarray(images[:, :, ::-1])


@dataclass(frozen=True)
class Corruption:
    """One corruption: fn(images, level) for each level of `levels` (severity s uses levels[s - 1]); label
    formats a level for people ({} is the level, {px} the pixels at the image's size)."""

    fn: Callable[[np.ndarray, object], np.ndarray]
    levels: tuple
    label: str


CORRUPTIONS: dict[str, Corruption] = {
    "blur": Corruption(_blur, (1, 2, 3, 4), "sigma {}"),
    "downscale": Corruption(_downscale, (64, 48, 32, 24), "{px} px"),
    "brightness": Corruption(_brightness, (0.6, 0.4, 0.25), "x {}"),
    "contrast": Corruption(_contrast, (0.6, 0.4, 0.2), "contrast x {}"),
    "jpeg": Corruption(_jpeg, (50, 20, 10), "quality {}"),
    "grayscale": Corruption(_grayscale, (None,), "gray"),
    "rotation": Corruption(_rotation, (10, 20, 30), "{} deg"),
    "eyes": Corruption(_band, (EYE_BAND,), "eyes covered"),
    "mouth": Corruption(_band, (MOUTH_BAND,), "mouth covered"),
    "flip": Corruption(_flip, (None,), "mirrored"),
}


def levels(name: str) -> tuple:
    """The parameters of severities 1..len(levels(name))."""
    return _get(name).levels


def severities(name: str) -> range:
    """1..n, the severities of a corruption (0, the images themselves, is the clean figure)."""
    return range(1, len(_get(name).levels) + 1)


def level_label(name: str, severity: int, side: int = REFERENCE_SIDE) -> str:
    """How a person reads a level: "32 px", "quality 10", ...; "clean" for severity 0. side: the image's height."""
    if severity == 0:
        return "clean"
    level = _get(name).levels[severity - 1]
    px = round(level * side / REFERENCE_SIDE) if isinstance(level, (int, float)) else None
    return _get(name).label.format(level, px=px)


def corrupt(images: np.ndarray, name: str, severity: int) -> np.ndarray:
    """images (uint8 [N, H, W, 3] RGB) under corruption `name` at `severity` (0: the images themselves, not
    copied; 1..len(levels(name))). Deterministic: the same pixels on every run."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 [N, H, W, 3] images, got {images.dtype} {images.shape}")
    spec = _get(name)
    if not 0 <= severity <= len(spec.levels):
        raise ValueError(f"{name} has severities 0..{len(spec.levels)}, got {severity}")
    if severity == 0:
        return images
    return spec.fn(images, spec.levels[severity - 1])


def _get(name: str) -> Corruption:
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}: one of {', '.join(CORRUPTIONS)}")
    return CORRUPTIONS[name]
