"""A real "group photo" for face-detection tests and benchmarks: 20 real face photos of
../shared/data/faces-grayscale-350, shrunk and tiled on one 1280x720 canvas, so every face is small and far
from the camera's point of view, at positions known exactly.

Usage:
    from group_photo import group_photo
    canvas, rects = group_photo()   # uint8 720x1280 gray; 20 (x, y, w, h) photo rectangles
"""
from __future__ import annotations

import cv2
import numpy as np
from support import FACES_GRAY, require

WIDTH, HEIGHT, COLUMNS, ROWS = 1280, 720, 5, 4


def group_photo_paths() -> list:
    """The 20 photos group_photo tiles, in its order: spread evenly over the 93, sorted by name."""
    paths = sorted((require(FACES_GRAY) / "images").iterdir())
    return [paths[i * len(paths) // (COLUMNS * ROWS)] for i in range(COLUMNS * ROWS)]


def group_photo(face_side: int = 160, background: int = 0) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """The 20 photos of group_photo_paths(), each scaled to a `face_side` longer side and
    centred in its cell of a 5x4 grid on a `background` gray canvas. Returns (canvas, rects)."""
    chosen = group_photo_paths()
    canvas = np.full((HEIGHT, WIDTH), background, np.uint8)
    cell_w, cell_h = WIDTH // COLUMNS, HEIGHT // ROWS
    rects = []
    for i, path in enumerate(chosen):
        photo = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        s = face_side / max(photo.shape)
        photo = cv2.resize(photo, (round(photo.shape[1] * s), round(photo.shape[0] * s)), interpolation=cv2.INTER_AREA)
        h, w = photo.shape
        x = (i % COLUMNS) * cell_w + (cell_w - w) // 2
        y = (i // COLUMNS) * cell_h + (cell_h - h) // 2
        canvas[y:y + h, x:x + w] = photo
        rects.append((x, y, w, h))
    return canvas, rects
