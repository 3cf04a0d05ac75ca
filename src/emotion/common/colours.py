"""One colour per class, the same in every picture: the video overlay, the timeline, the Grad-CAM grid.

    colours.PALETTE[i]                      # BGR 0..255 of class index i (OpenCV drawing)
    colours.class_colors(cfg.class_names)   # RGB 0..1 of every class (matplotlib)
"""
from __future__ import annotations

from typing import Sequence

# BGR, one per class index (class order of the model's output), distinct on faces and backgrounds.
PALETTE = [(60, 60, 230), (170, 90, 200), (60, 160, 60), (200, 120, 60), (40, 200, 240), (200, 200, 200),
           (220, 80, 40), (40, 150, 255), (150, 220, 120), (120, 120, 255)]


def class_colors(class_names: Sequence[str]) -> list[tuple[float, float, float]]:
    """RGB 0..1 of every class: PALETTE's colour of each class index, for matplotlib."""
    return [tuple(v / 255 for v in PALETTE[i % len(PALETTE)][::-1]) for i in range(len(class_names))]
