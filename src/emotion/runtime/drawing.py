"""Drawing recognition results on BGR frames, in place: a box per face in its label's colour, "label 87%" (or
"#id label 87%") above it, small probability bars beside it, an FPS counter.

    draw_results(frame_bgr, results, fps=41.0, ids=[3, 7])          # recognizer.FaceResult list; in place
    scale, thickness = style(frame_bgr.shape)                      # readable on 96x96 crops and 1080p frames
    label_box(frame_bgr, "no face found", 0, 0, (40, 40, 40), scale, thickness, above=False)

OpenCV only (no TensorFlow); used by predict.py (photos) and inference.py (video, webcam).
"""
from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Sequence

import cv2
import numpy as np

from emotion.common.colours import PALETTE
from emotion.runtime import confidence as confidence_rule

if TYPE_CHECKING:
    from emotion.runtime.recognizer import FaceResult

FONT = cv2.FONT_HERSHEY_SIMPLEX
BAR_LEN = 60  # probability bar length at scale 1, pixels


@lru_cache(maxsize=512)
def text_size(text: str, scale: float, thickness: int) -> tuple[int, int, int]:
    """(width, height, baseline) of `text` in FONT, cached (the same labels come back every frame)."""
    (w, h), base = cv2.getTextSize(text, FONT, scale, thickness)
    return w, h, base


def style(shape) -> tuple[float, int]:
    """Font scale and line thickness for an image: readable on 96x96 crops and on 1080p frames."""
    scale = min(1.2, max(0.3, min(shape[0], shape[1]) / 900))
    return round(scale, 2), 1 if scale < 0.8 else 2


def label_box(image, text: str, x: int, y: int, color, scale: float, thickness: int, above: bool = True) -> None:
    """Text on a filled box whose bottom-left is (x, y) (above=True) or whose top-left is (x, y), kept inside
    the image."""
    tw, th, base = text_size(text, scale, thickness)
    pad = max(2, int(3 * scale))
    top = y - th - base - 2 * pad if above else y
    top = max(0, min(top, image.shape[0] - th - base - 2 * pad))
    x = max(0, min(x, image.shape[1] - tw - 2 * pad))
    cv2.rectangle(image, (x, top), (x + tw + 2 * pad, top + th + base + 2 * pad), color, cv2.FILLED)
    ink = (0, 0, 0) if sum(color) > 380 else (255, 255, 255)
    cv2.putText(image, text, (x + pad, top + pad + th), FONT, scale, ink, thickness, cv2.LINE_AA)


def overlaps(a, b) -> bool:
    """Whether two (x, y, w, h) rectangles share any pixel."""
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def draw_bars(image, probabilities: dict[str, float], box: tuple[int, int, int, int], scale: float,
              taken: list[tuple[int, int, int, int]]) -> None:
    """Small bars of every class probability in the class colours: under the box, else right of it, else
    left of it, else inside its bottom-left corner: the first of those places that lies inside the image
    and covers no rectangle of `taken` but `box` (faces, earlier panels), or the first that fits when all
    do; none when the panel fits nowhere outside the box (e.g. a whole-image result). The panel's
    rectangle is appended to `taken`."""
    names = list(probabilities)
    small = max(0.3, round(scale * 0.6, 2))
    name_w = max(text_size(n, small, 1)[0] for n in names)
    _, th, base = text_size("Ag", small, 1)
    row = th + base + 1
    bar = int(BAR_LEN * max(scale, 0.5))
    pw, ph = name_w + 4 + bar, row * len(names)
    height, width = image.shape[:2]
    x, y, w, h = box
    places = []
    if y + h + 3 + ph <= height and pw <= width:
        places.append((max(0, min(x, width - pw)), y + h + 3))
    if ph <= height and x + w + 4 + pw <= width:
        places.append((x + w + 4, max(0, min(y, height - ph))))
    if ph <= height and x - 4 - pw >= 0:
        places.append((x - 4 - pw, max(0, min(y, height - ph))))
    if not places:
        return
    if pw + 4 <= w and 2 * ph <= h:  # last resort, when all of those cover another face: inside, bottom left
        places.append((x + 2, y + h - 2 - ph))
    free = (p for p in places if not any(t != box and overlaps((*p, pw, ph), t) for t in taken))
    px, py = next(free, places[0])
    taken.append((px, py, pw, ph))
    bx = px + name_w + 4
    cv2.rectangle(image, (px, py), (bx - 2, py + ph - 1), (30, 30, 30), cv2.FILLED)  # dark backing for the names
    for i, (name, p) in enumerate(zip(names, probabilities.values())):
        top = py + i * row
        cv2.putText(image, name, (px, top + th), FONT, small, (255, 255, 255), 1, cv2.LINE_AA)
        cv2.rectangle(image, (bx, top + 1), (bx + bar, top + th), (60, 60, 60), cv2.FILLED)
        if p > 0:
            cv2.rectangle(image, (bx, top + 1), (bx + max(1, int(round(p * bar))), top + th),
                          PALETTE[i % len(PALETTE)], cv2.FILLED)


def draw_results(image_bgr: np.ndarray, results: Sequence[FaceResult], fps: float | None = None,
                 ids: Sequence | None = None, bars: bool = True) -> np.ndarray:
    """Annotate a C-contiguous BGR uint8 frame in place and return it. Per face: its box in the label's
    colour, "label 87%" above it ("#id label 87%" with ids; an id of None draws no number), and small bars
    of every class probability under or beside it (bars=False: none). An FPS counter in the top-left
    corner when fps is given."""
    if ids is not None and len(ids) != len(results):
        raise ValueError(f"ids has {len(ids)} entries for {len(results)} results")
    scale, thickness = style(image_bgr.shape)
    boxes = [tuple(int(v) for v in r.box) for r in results]
    taken = list(boxes)
    for i, r in enumerate(results):
        x, y, w, h = boxes[i]
        names = list(r.probabilities)
        top = getattr(r, "top_label", r.label)  # the box keeps the class colour also when the answer is "uncertain"
        color = PALETTE[names.index(top) % len(PALETTE)] if top in r.probabilities else PALETTE[0]
        cv2.rectangle(image_bgr, (x, y), (x + w - 1, y + h - 1), color, thickness if r.whole_image else thickness + 1)
        text = confidence_rule.display_text(r.label, top, r.confidence)  # "uncertain (happy 42%)" below min_confidence
        if ids is not None and ids[i] is not None:
            text = f"#{ids[i]} {text}"
        label_box(image_bgr, text, x, y, color, scale, thickness, above=y > 0)
        if bars and r.probabilities:
            draw_bars(image_bgr, r.probabilities, boxes[i], scale, taken)
    if fps is not None:
        label_box(image_bgr, f"FPS {fps:.1f}", 0, 0, (0, 0, 0), scale, thickness, above=False)
    return image_bgr
