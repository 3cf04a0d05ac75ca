"""face_alignment: eyes for the dataset's crops: each image turned about its centre so its eyes are level.

    angles = eye_angles(files.paths, cfg)              # degrees per image, BlazeFace on each crop (0 = none found)
    image = level_eyes(decoded_uint8, angle)           # inside tf.data (or eagerly): the same turn as faces.turn

predict.py and inference.py level the eyes while cropping a face out of a photo or a frame
(faces.crop_face(..., angle=eye_angle(face.keypoints))); a dataset image is already a crop, so its angle comes from
BlazeFace run on the crop itself (faces.tight_crop_angle) and the crop is turned about its centre. The angles
are found once per process per file list (about 3 ms an image on 2 cores) and kept in memory.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import tensorflow as tf

from emotion.data import faces
from emotion.data.decoding import decode_uint8, file_stats

# {(file stats, detector backend, min score): angles} found in this process
_ANGLES: dict[tuple, np.ndarray] = {}


def aligning(cfg: Mapping[str, Any]) -> bool:
    """Whether cfg asks for level eyes (face_alignment: eyes)."""
    return cfg.get("face_alignment", "none") == "eyes"


def eye_angles(paths: Sequence[str], cfg: Mapping[str, Any]) -> np.ndarray:
    """float32 [N]: the eye line's angle in each image (faces.tight_crop_angle with cfg's detector), decoded as
    training decodes it (decode_uint8 at cfg.input_shape); 0 where no face is found (the image stays as it is)."""
    detector = faces.FaceDetector(cfg["face_detector"], float(cfg["face_min_score"]))
    key = (file_stats(paths), detector.backend, detector.min_score, tuple(cfg["input_shape"][:2]))
    if key in _ANGLES:
        return _ANGLES[key]
    ds = tf.data.Dataset.from_tensor_slices(tf.constant(list(paths), tf.string))
    ds = ds.map(lambda p: decode_uint8(tf.io.read_file(p), cfg["input_shape"]),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(256)
    angles = [faces.tight_crop_angle(detector, image) for batch in ds for image in batch.numpy()]
    angles = np.asarray(angles, np.float32)
    found = int(np.count_nonzero(angles))
    print(f"face_alignment eyes: eye angles of {len(angles)} images ({found} with a face found by "
                 f"{detector.backend}; the others stay as they are)", flush=True)
    _ANGLES[key] = angles
    return angles


def level_eyes(image: tf.Tensor, angle: tf.Tensor) -> tf.Tensor:
    """uint8 [H, W, 3] turned by `angle` degrees about its centre (bilinear, edges repeated): output pixel p
    samples the input at c + R(angle) (p - c), as faces.turn does with OpenCV. Eager or inside tf.data alike."""
    image = tf.convert_to_tensor(image)
    a = tf.cast(angle, tf.float32) * (math.pi / 180.0)
    cos, sin = tf.cos(a), tf.sin(a)
    shape = tf.shape(image)
    cx, cy = (tf.cast(shape[1], tf.float32) - 1) / 2, (tf.cast(shape[0], tf.float32) - 1) / 2
    transform = tf.stack([cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy, 0.0, 0.0])
    turned = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(image[None], tf.float32), transforms=transform[None], output_shape=shape[:2],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="NEAREST")[0]
    turned = tf.cast(tf.clip_by_value(tf.round(turned), 0.0, 255.0), tf.uint8)
    return tf.ensure_shape(turned, image.shape)
