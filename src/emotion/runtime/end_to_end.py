"""The end-to-end part of evaluate.py --robustness: each test image placed in a larger scene and run through
predict.py's own path (recognizer.EmotionRecognizer: detect, crop, classify), for every installed face detector.

    scenes = EndToEnd(cfg, model_path)                 # haar, and blazeface / blazeface_full when installed
    records = scenes(images, labels, first_index=0)    # what robustness.measure takes: one record per image,
                                                       # scene and detector (see evaluation/robustness.py)
    faces = scenes.run_scenes(placed, "haar")          # placed: [(frame, rect)]; per frame the face on rect, or None
    installed_detectors()                              # ["haar", "blazeface", "blazeface_full"] as installed

Scenes: every image is placed (data/scenes.place) on a 640x480 frame at each of SIDES (the placed crop's side;
its face is about two thirds of it), on plain black for even image numbers and on data/scenes'
cluttered_background for odd ones, centred on one of POSITIONS in turn (by image number, so backgrounds and
positions mix). A face counts as found when a detection's centre lies on the placed image (scenes.inside); of
several, the detector's best. Its answer is compared with the same classifier's on the original crop.

The classifier is predict.py's (classifier.load_classifier with config classifier_backend: TFLite, converted
once and cached beside the model, equal to the Keras model within 1e-4), or the one given.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from emotion.data import scenes
from emotion.data import faces
from emotion.runtime.recognizer import EmotionRecognizer, FaceResult

SIDES = (160, 96, 64)  # px: a face near the camera, at AffectNet's own size, and a far one (short-range BlazeFace's
# limit is about a tenth of the frame's longer side: 64 px, so a 64-px crop's 43-px face is beyond it)
POSITIONS = ((0.5, 0.5), (0.22, 0.28), (0.78, 0.72))  # centre, upper left, lower right (fractions of the frame)
BACKGROUNDS = ("plain", "cluttered")
CHUNK = 8  # images whose scenes are made and classified together


def installed_detectors() -> list[str]:
    """The face_detector backends that can run here: haar always, each BlazeFace model when its file is found."""
    return ["haar", *(m.backend for m in faces.BLAZEFACE_MODELS.values() if faces.blazeface_model_path(m))]


class EndToEnd:
    """Scenes, detection and classification for robustness.measure. detectors: default installed_detectors();
    classifier: default load_classifier(model_path, cfg.classifier_backend), or with classifier_backend keras
    the Keras `model` when given (the one evaluate.py loaded). `default`: the detector
    config face_detector runs (auto: BlazeFace short range when installed), whose figures the card quotes."""

    def __init__(self, cfg, model_path=None, detectors: Sequence[str] | None = None, classifier=None, model=None):
        model_path = Path(model_path if model_path is not None else cfg.model_save_path)
        if classifier is None:
            from emotion.runtime import classifier as classifier_lib  # imports TensorFlow
            if model is not None and cfg.classifier_backend == "keras":  # the model already loaded: not read again
                classifier = classifier_lib.KerasClassifier(model)
            else:
                classifier = classifier_lib.load_classifier(model_path, prefer=cfg.classifier_backend)
        self.classifier = classifier
        self.detectors = list(detectors) if detectors is not None else installed_detectors()
        self.recognizers = {d: EmotionRecognizer(cfg, model_path, detector=faces.FaceDetector(d, cfg.face_min_score),
                                                 classifier=classifier) for d in self.detectors}
        self.class_names = list(cfg.class_names)
        auto = "blazeface" if "blazeface" in self.detectors else "haar"  # what faces.FaceDetector("auto") runs
        self.default = auto if cfg.face_detector == "auto" else cfg.face_detector
        self.clutter = scenes.cluttered_background()
        self.sides = SIDES

    def scene(self, image: np.ndarray, index: int, side: int) -> tuple[np.ndarray, tuple[int, int, int, int], str]:
        """(frame, rect, background) of image number `index` placed at `side` px."""
        background = BACKGROUNDS[index % 2]
        at = POSITIONS[(index // 2) % len(POSITIONS)]
        frame, rect = scenes.place(image, side, at=at, background=self.clutter if background == "cluttered" else None)
        return frame, rect, background

    def run_scenes(self, placed: Sequence[tuple[np.ndarray, Sequence[int]]], detector: str) -> list[FaceResult | None]:
        """Per (frame, rect): the best face predict.py's path finds with its centre on rect, classified; None when
        there is none. The crops of all frames are classified together (analyze_batch)."""
        # a 640x480 frame is never a tight face crop, so predict.py's whole-image fallback could not apply anyway
        results = self.recognizers[detector].analyze_batch([frame for frame, _ in placed], allow_whole_image=False)
        return [next((r for r in found if scenes.inside(r.box, rect)), None)
                for found, (_, rect) in zip(results, placed)]

    def __call__(self, images: np.ndarray, labels: np.ndarray, first_index: int = 0) -> list[dict]:
        """Records for robustness.measure: images uint8 [N, H, W, 3] (the test crops), labels [N]; first_index:
        the number of the first image in the split (picks its background and position). Frames are made
        CHUNK images at a time (a 640x480 frame is 0.9 MB: a batch's would be hundreds)."""
        crop_probs = np.asarray(self.classifier.predict(images), np.float32)
        records = []
        for start in range(0, len(images), CHUNK):
            placed, keys = [], []
            for i in range(start, min(start + CHUNK, len(images))):
                for side in self.sides:
                    frame, rect, background = self.scene(images[i], first_index + i, side)
                    placed.append((frame, rect))
                    keys.append((i, side, background))
            for detector in self.detectors:
                for (i, side, background), face in zip(keys, self.run_scenes(placed, detector)):
                    probs = None if face is None else np.asarray([face.probabilities[c] for c in self.class_names])
                    records.append({"detector": detector, "background": background, "side": side,
                                    "label": int(labels[i]), "found": face is not None, "probs": probs,
                                    "crop_probs": crop_probs[i]})
        return records
