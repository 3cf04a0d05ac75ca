"""Per-frame emotion recognition: find faces, crop them like AffectNet, classify all crops in one call, draw.

Shared by predict.py (photos) and inference.py (video, webcam); drawing the results is drawing.py's job:

    rec = EmotionRecognizer(cfg)                      # cfg.model_save_path, cfg.face_detector, cfg.classifier_backend
    per_image = rec.analyze_batch([rgb1, rgb2, ...])  # [[FaceResult], ...]: one list per image, best detection
                                                      # first, [] when no face; crops of all images classified together
    faces = rec.detect(rgb)                           # the steps apart: detect, crop (eyes levelled when
    probs = rec.classifier.predict(rec.crops(rgb, [f.box for f in faces], angles=rec.angles(faces)))  # aligning)

A tight face crop in which no face is found (small and near square, faces.is_tight_face_crop: e.g. the 96x96
AffectNet images) is classified whole, resized to the classifier's input: FaceResult.whole_image is True and
detector_score None. Other images without a detected face give no result.

Everything here takes RGB uint8 images (grayscale and RGBA are accepted: faces.to_rgb). analyze_batch converts
each image once and hands the RGB array to the helpers that do not convert again (detect_rgb, crops_rgb);
callers that hold an RGB array already (a video frame just converted from BGR) call those directly.
Importing this module does not import TensorFlow (the classifier does, when it is loaded).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from emotion.common import console
from emotion.common.config import check_model_classes, trained_setting
from emotion.runtime import confidence as confidence_rule
from emotion.data.faces import (Face, FaceDetector, crop_face_rgb, face_angle, is_tight_face_crop, tight_crop_angle,
                                to_rgb, turn)

MAX_BATCH = 256  # analyze_batch: most crops per classifier call (bounds memory on folders of group photos)


@dataclass
class FaceResult:
    """One classified face. box: (x, y, w, h) in image pixels (the whole image when whole_image);
    label: the most probable class, or "uncertain" when its probability is below min_confidence (confidence.py);
    top_label: the most probable class always; confidence its probability; probabilities: every class, in
    class_names order, summing to 1; detector_score: the face detector's score, None when the image was
    classified whole."""

    box: tuple[int, int, int, int]
    label: str
    confidence: float
    probabilities: dict[str, float]
    detector_score: float | None
    whole_image: bool = False
    top_label: str | None = None  # None: the label (results made without a threshold)
    angle: float = 0.0  # degrees the crop was turned by to level the eyes (face_alignment: eyes); not in to_dict

    def __post_init__(self):
        if self.top_label is None:
            self.top_label = self.label

    def to_dict(self) -> dict:
        """JSON-ready: box as a list, floats rounded to 6 decimals."""
        return {"box": [int(v) for v in self.box], "label": self.label, "top_label": self.top_label,
                "confidence": round(self.confidence, 6),
                "probabilities": {k: round(v, 6) for k, v in self.probabilities.items()},
                "detector_score": None if self.detector_score is None else round(self.detector_score, 6),
                "whole_image": self.whole_image}


def results_from_probs(boxes: Sequence[Sequence[int]], probs: np.ndarray, class_names: Sequence[str],
                       detector_scores: Sequence[float | None] | None, whole_image: bool = False,
                       min_confidence: float = 0.0, angles: Sequence[float] | None = None) -> list[FaceResult]:
    """FaceResults from classifier rows: probs [N, C] (renormalised to sum 1), one box and detector score per
    row (detector_scores None: all None). A row whose top probability is below min_confidence is labelled
    "uncertain" (confidence.decide); its top_label is still the argmax. angles: each crop's turn (default 0)."""
    if len(boxes) == 0:
        return []
    probs = np.asarray(probs, dtype=np.float64).reshape(len(boxes), -1)
    if probs.shape[1] != len(class_names):
        raise ValueError(f"probabilities have {probs.shape[1]} columns, class_names {len(class_names)}")
    sums = probs.sum(axis=1, keepdims=True)
    probs = np.divide(probs, sums, out=probs, where=sums > 0)
    best = probs.argmax(axis=1) if len(probs) else np.zeros(0, int)
    scores = [None] * len(boxes) if detector_scores is None else list(detector_scores)
    angles = [0.0] * len(boxes) if angles is None else list(angles)
    results = []
    for box, row, k, score, angle in zip(boxes, probs.tolist(), best.tolist(), scores, angles):
        label = confidence_rule.decide(class_names[k], row[k], min_confidence)
        results.append(FaceResult(box=tuple(int(v) for v in box), label=label, top_label=class_names[k],
                                  confidence=row[k],
                                  probabilities=dict(zip(class_names, row)),
                                  detector_score=None if score is None else float(score), whole_image=whole_image,
                                  angle=float(angle)))
    return results


@functools.lru_cache(maxsize=None)
def _warn_alignment(model_path: str, trained: str, configured: str) -> None:
    """One warning per process and model (evaluate.py's scenes build a recognizer per face detector)."""
    console.warn(f"the model {model_path} was trained with face_alignment {trained} but config key face_alignment "
                 f"is {configured}: its answers may be worse; use --set face_alignment={trained}")


class EmotionRecognizer:
    """Face detector + emotion classifier. model_path: default cfg.model_save_path; detector: default
    FaceDetector(cfg.face_detector, cfg.face_min_score); classifier: anything with predict(faces) ->
    [N, C] and input_shape (H, W, 3), default classifier.load_classifier(model_path, cfg.classifier_backend).

    class_names: cfg.class_names (must match the classifier's output count); input_size: the classifier's
    input as (width, height), the order crop_face and cv2.resize take; alignment: cfg.face_alignment, "eyes"
    turns each crop so the eyes are level (faces.face_angle; a Haar face has no keypoints and stays upright). One recognizer per thread (the
    detector holds one TFLite interpreter)."""

    def __init__(self, cfg, model_path=None, detector: FaceDetector | None = None, classifier=None):
        self.model_path = Path(model_path if model_path is not None else cfg.model_save_path)
        if classifier is None:
            from emotion.runtime import classifier as classifier_lib  # imports TensorFlow
            classifier = classifier_lib.load_classifier(self.model_path, prefer=cfg.classifier_backend)
        self.classifier = classifier
        self.detector = detector if detector is not None else FaceDetector(cfg.face_detector, cfg.face_min_score)
        self.class_names = list(cfg.class_names)
        self.min_confidence = float(cfg.get("min_confidence", 0.0))  # below it a face is "uncertain"
        self.alignment = str(cfg.get("face_alignment", "none"))
        trained = trained_setting(self.model_path, "face_alignment")
        if trained is not None and trained != self.alignment:
            _warn_alignment(str(self.model_path), str(trained), self.alignment)
        n_out = getattr(classifier, "num_classes", None)
        if n_out is not None:
            check_model_classes(n_out, self.class_names, self.model_path)
        h, w = (int(d) for d in classifier.input_shape[:2])
        self.input_size = (w, h)

    @property
    def backend(self) -> str:
        """e.g. 'tflite + blazeface': the classifier's and the detector's backends."""
        return f"{getattr(self.classifier, 'backend', type(self.classifier).__name__)} + {self.detector.backend}"

    def detect(self, image_rgb: np.ndarray) -> list[Face]:
        """The detector's faces in image_rgb (RGB, gray or RGBA), best first."""
        return self.detector.detect(image_rgb)

    def detect_rgb(self, rgb: np.ndarray) -> list[Face]:
        """detect() of an image already converted by faces.to_rgb (contiguous uint8 HxWx3 RGB): not converted again."""
        return self.detector.detect_rgb(rgb)

    def angles(self, found: Sequence[Face]) -> list[float]:
        """The turn of each face's crop under this recognizer's alignment (all 0.0 for "none")."""
        return [face_angle(f, self.alignment) for f in found]

    def crops(self, image_rgb: np.ndarray, boxes: Sequence[Sequence[int]], out: np.ndarray | None = None,
              angles: Sequence[float] | None = None) -> np.ndarray:
        """uint8 [N, H, W, 3]: crop_face of every box at the classifier's input size (into `out` when given),
        each turned by its angle when given (angles(found), for face_alignment: eyes)."""
        return self.crops_rgb(to_rgb(image_rgb), boxes, out, angles)

    def crops_rgb(self, rgb: np.ndarray, boxes: Sequence[Sequence[int]], out: np.ndarray | None = None,
                  angles: Sequence[float] | None = None) -> np.ndarray:
        """crops() of an image already converted by faces.to_rgb (uint8 HxWx3 RGB): not converted again."""
        w, h = self.input_size
        if out is None:
            out = np.empty((len(boxes), h, w, 3), np.uint8)
        for i, box in enumerate(boxes):
            out[i] = crop_face_rgb(rgb, box, size=self.input_size, angle=angles[i] if angles is not None else 0.0)
        return out

    def whole(self, image_rgb: np.ndarray) -> np.ndarray:
        """uint8 [H, W, 3]: the whole image resized to the classifier's input (as it is when it already fits);
        with face_alignment eyes, then turned to level its eyes as a dataset image is (alignment.py)."""
        return self._whole_rgb(to_rgb(image_rgb))

    def _whole_rgb(self, rgb: np.ndarray) -> np.ndarray:
        w, h = self.input_size
        if rgb.shape[:2] != (h, w):
            shrink = rgb.shape[0] > h and rgb.shape[1] > w
            rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        if self.alignment == "eyes":
            angle = tight_crop_angle(self.detector, rgb)
            if angle:
                rgb = turn(rgb, angle)
        return rgb

    def _predict(self, faces: np.ndarray, max_batch: int | None = None) -> np.ndarray:
        if len(faces) == 0:
            return np.zeros((0, len(self.class_names)), np.float32)
        if not max_batch or len(faces) <= max_batch:
            return np.asarray(self.classifier.predict(faces), np.float32)
        return np.concatenate([np.asarray(self.classifier.predict(faces[i:i + max_batch]), np.float32)
                               for i in range(0, len(faces), max_batch)])

    def _prepare(self, image_rgb: np.ndarray, allow_whole_image: bool):
        """(boxes, detector scores or None, crops uint8 [N, H, W, 3], whole_image, angles) for one image,
        converted to RGB once here and not again by the detector or the crops."""
        rgb = to_rgb(image_rgb)
        found = self.detector.detect_rgb(rgb)
        if found:
            boxes, angles = [f.box for f in found], self.angles(found)
            return boxes, [f.score for f in found], self.crops_rgb(rgb, boxes, angles=angles), False, angles
        if allow_whole_image and is_tight_face_crop(rgb):
            h, w = rgb.shape[:2]
            return [(0, 0, w, h)], None, self._whole_rgb(rgb)[None], True, None
        return [], None, None, False, None

    def analyze_batch(self, images_rgb: Sequence[np.ndarray], allow_whole_image: bool = True,
                      max_batch: int | None = MAX_BATCH) -> list[list[FaceResult]]:
        """Detect and classify every face of many images (RGB, gray or RGBA): each is searched for faces, then
        the crops of ALL images are classified together, in one classifier call per max_batch crops (None: one
        call; no call when no image has a face). One list per image, in order, best detection first. No face
        found: a tight face crop (faces.is_tight_face_crop) is classified whole when allow_whole_image, else []."""
        prepared = [self._prepare(image, allow_whole_image) for image in images_rgb]
        stacks = [p[2] for p in prepared if p[0]]
        if not stacks:
            return [[] for _ in prepared]
        probs = self._predict(stacks[0] if len(stacks) == 1 else np.concatenate(stacks), max_batch)
        out, start = [], 0
        for boxes, scores, _, whole, angles in prepared:
            out.append(results_from_probs(boxes, probs[start:start + len(boxes)], self.class_names, scores,
                                          whole_image=whole, min_confidence=self.min_confidence, angles=angles))
            start += len(boxes)
        return out

    def __repr__(self) -> str:
        return f"EmotionRecognizer({self.model_path}, classifier={self.classifier!r}, detector={self.detector!r})"
