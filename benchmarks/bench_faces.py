"""Face detection: recall and speed of the backends of src/emotion/data/faces.py (BlazeFace short range, BlazeFace full
range, Haar), in the same run.

    python benchmarks/bench_faces.py                 # real data from ../shared
    python benchmarks/bench_faces.py --threads 2     # TFLite threads for BlazeFace (default 1)

  * photos: the 93 real photos of ../shared/data/faces-grayscale-350 (tight face crops of 46x35 to 536x355
    pixels), each scaled to a 350-pixel longer side and pasted at the centre of a black 640x480 frame; a
    face counts as found when a box's centre lies on the photo. Both backends run on each frame in turn
    (alternating which goes first), so both see the same load on a shared machine; ms per frame is the
    whole detect() call (gray -> RGB included). Also: the rate with the photos at their own size
    ("unscaled", small faces down to 46 pixels).
  * group: a "group photo" (tests/group_photo.py): 20 of those photos scaled to a 160-pixel side and tiled
    5x4 on a black 1280x720 canvas; found = faces with a box centre on them, extra = boxes on none; ms per
    canvas (median of 5 runs).
  * video: the first 100 frames of ../shared/videos/Megamind.avi (720x528), decoded beforehand: ms per frame
    and how many frames had a face.
Prints one JSON line. Targets: BlazeFace finds >= 95% of the photos at < 10 ms per 640x480 frame.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import tests_helpers  # the tests' helpers: support and group_photo
from tests_helpers import support

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parent.parent

import cv2
import numpy as np

from emotion.data import scenes
from emotion.data import faces

FACES_GRAY, VIDEOS = support.FACES_GRAY, support.VIDEOS
group_photo = tests_helpers.group_photo.group_photo

GROUP_FACE_SIDE = 160

FRAME_W, FRAME_H, PHOTO_SIDE = 640, 480, 350


def place(image: np.ndarray, side: int | None) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """image scaled to `side` (longer side; None: as is, shrunk only to fit) on a black 640x480 frame, centred:
    data/scenes.place, the placement evaluate.py --robustness uses for its end-to-end scenes too (tests/
    test_robustness.py checks that its detection rate on these photos is the one counted here)."""
    return scenes.place(image, side, frame=(FRAME_W, FRAME_H))


def on_photo(found: list[faces.Face], rect) -> bool:
    x, y, w, h = rect
    return any(x <= f.box[0] + f.box[2] / 2 <= x + w and y <= f.box[1] + f.box[3] / 2 <= y + h for f in found)


def timed(detector: faces.FaceDetector, frame: np.ndarray) -> tuple[list[faces.Face], float]:
    t = time.perf_counter()
    found = detector.detect(frame)
    return found, (time.perf_counter() - t) * 1000


def stats(ms: list[float]) -> dict:
    return {"median_ms": round(float(np.median(ms)), 2), "p90_ms": round(float(np.percentile(ms, 90)), 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None,
                   help="TFLite threads for BlazeFace (default: faces.py's, 1)")
    p.add_argument("--video-frames", type=int, default=100)
    args = p.parse_args()

    photo_paths = sorted((FACES_GRAY / "images").iterdir()) if FACES_GRAY.exists() else []
    if not photo_paths:
        raise SystemExit(f"real data not found at {FACES_GRAY} (see ../shared/README.md)")
    photos = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in photo_paths]

    detectors = {}
    t = time.perf_counter()
    detectors["haar"] = faces.FaceDetector("haar")
    init = {"haar_s": round(time.perf_counter() - t, 2)}
    for model in faces.BLAZEFACE_MODELS.values():
        if faces.blazeface_model_path(model) is not None:
            t = time.perf_counter()
            detectors[model.backend] = faces.FaceDetector(model.backend, num_threads=args.threads)
            init[f"{model.backend}_s"] = round(time.perf_counter() - t, 2)  # (TensorFlow import +) interpreter
    names = list(detectors)

    frames = [place(g, PHOTO_SIDE) for g in photos]
    for d in detectors.values():  # warm-up
        for frame, _ in frames[:3]:
            d.detect(frame)
    hits = {n: 0 for n in names}
    ms = {n: [] for n in names}
    for i, (frame, rect) in enumerate(frames):
        for n in (names if i % 2 == 0 else names[::-1]):
            found, dt = timed(detectors[n], frame)
            hits[n] += on_photo(found, rect)
            ms[n].append(dt)
    unscaled = [place(g, None) for g in photos]
    result = {"bench": "faces", "photos": len(photos), "frame": f"{FRAME_W}x{FRAME_H}", "photo_side": PHOTO_SIDE,
              "init": init}
    for n in names:
        found_unscaled = sum(on_photo(detectors[n].detect(f), r) for f, r in unscaled)
        result[n] = {"rate": round(hits[n] / len(photos), 3), **stats(ms[n]),
                     "rate_unscaled": round(found_unscaled / len(photos), 3)}
    for model in faces.BLAZEFACE_MODELS.values():
        if model.backend in detectors:
            result[model.backend]["num_threads"] = detectors[model.backend].num_threads
            ratio = np.median(ms["haar"]) / np.median(ms[model.backend])
            result[f"haar_over_{model.backend}_ms"] = round(float(ratio), 1)
        else:
            result[model.backend] = f"not installed ({faces.BLAZEFACE_INSTALL})"

    canvas, rects = group_photo(GROUP_FACE_SIDE)
    result["group"] = {"faces": len(rects), "canvas": f"{canvas.shape[1]}x{canvas.shape[0]}",
                       "face_side": GROUP_FACE_SIDE}
    for n in names:
        runs = [timed(detectors[n], canvas) for _ in range(5)]
        found = runs[0][0]
        on_face = sum(on_photo(found, r) for r in rects)
        extra = sum(not any(on_photo([f], r) for r in rects) for f in found)
        result["group"][n] = {"found": on_face, "extra": extra,
                              "median_ms": round(float(np.median([t for _, t in runs])), 2)}

    video = VIDEOS / "Megamind.avi"
    if video.exists():
        cap = cv2.VideoCapture(str(video))
        clip = []
        while len(clip) < args.video_frames:
            ok, frame = cap.read()
            if not ok:
                break
            clip.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        cap.release()
        result["video"] = {"file": video.name, "frames": len(clip), "size": f"{clip[0].shape[1]}x{clip[0].shape[0]}"}
        for n in names:
            vms, with_face = [], 0
            for frame in clip:
                found, dt = timed(detectors[n], frame)
                vms.append(dt)
                with_face += bool(found)
            result["video"][n] = {"with_face": with_face, **stats(vms)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
