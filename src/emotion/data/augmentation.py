"""Training augmentation of whole batches, inside the tf.data pipeline: one affine resample per image, then contrast.

    if augmentation_enabled(cfg):
        images = augment_batch(images, cfg, seed=tf.stack([cfg.seed, batch_index]))

Stateless: the draws depend on (seed, batch index) alone, so the parallel map may run batches in any order and a
resumed run sees the same data as an uninterrupted one.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import tensorflow as tf


def augmentation_enabled(cfg: Mapping[str, Any]) -> bool:
    """Whether any augment_* config key is on (augment_batch changes images)."""
    return bool(cfg["augment_flip"]) or any(float(cfg[k]) > 0 for k in
                                            ("augment_rotation", "augment_shift", "augment_zoom", "augment_contrast"))



def augment_batch(images, cfg: Mapping[str, Any], seed) -> tf.Tensor:
    """Random training augmentation of one float batch [B, H, W, 3] in 0..255 -> float32, clipped to 0..255.

        images = augment_batch(images, cfg, seed=tf.stack([cfg.seed, batch_index]))   # stateless: same seed, same output

    Per image: horizontal flip (augment_flip, p=0.5), rotation by up to augment_rotation of a full turn, shift
    by up to augment_shift of height/width, zoom in or out by up to augment_zoom (same factor on both axes),
    all composed into ONE affine matrix and resampled once (bilinear, reflected borders; the same op and
    conventions as keras' RandomFlip/RandomRotation/RandomTranslation/RandomZoom applied in that order); then
    contrast (x - channel mean) * f + mean with f in 1 +- augment_contrast, like keras' RandomContrast.
    A key at 0 (or false) disables that part. seed: a shape-[2] integer tensor; the random parameters are
    drawn with stateless ops from it alone, so the result does not depend on call order or parallelism.
    """
    images = tf.cast(images, tf.float32)
    flip = bool(cfg["augment_flip"])
    rotation, shift = float(cfg["augment_rotation"]), float(cfg["augment_shift"])
    zoom, contrast = float(cfg["augment_zoom"]), float(cfg["augment_contrast"])
    shape = tf.shape(images)
    b = shape[0]
    h, w = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    # one uniform [0, 1) draw per image and parameter: flip, angle, dy, dx, zoom, contrast
    u = tf.random.stateless_uniform((b, 6), seed=tf.cast(seed, tf.int64), dtype=tf.float32)
    sym = 2.0 * u - 1.0  # uniform [-1, 1)

    if flip or rotation > 0 or shift > 0 or zoom > 0:
        # The matrix maps output pixel coordinates p to the input point to sample. Keras applies flip, rotation,
        # translation, zoom in turn, so output -> input is  F(R(T(Z(p)))), with c the centre:
        #   Z: z (p - c) + c   (z > 1 zooms out)     T: p + d          R: rot(angle) (p - c) + c
        #   F: x -> (w-1) - x when flipped
        # composed in closed form: x_in = s (a x - b y + e),  y_in = b x + a y + f  (+ flip offset).
        cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
        angle = sym[:, 1] * (rotation * 2.0 * math.pi) if rotation > 0 else tf.zeros((b,), tf.float32)
        z = 1.0 + sym[:, 4] * zoom if zoom > 0 else tf.ones((b,), tf.float32)
        dy, dx = (sym[:, 2] * (shift * h), sym[:, 3] * (shift * w)) if shift > 0 else (0.0, 0.0)
        cos, sin = tf.cos(angle), tf.sin(angle)
        a_, b_ = z * cos, z * sin
        e = cos * dx - sin * dy + cx - (a_ * cx - b_ * cy)
        f = sin * dx + cos * dy + cy - (b_ * cx + a_ * cy)
        if flip:
            sx = tf.where(u[:, 0] < 0.5, -1.0, 1.0)
            row0 = [sx * a_, -sx * b_, sx * e + tf.where(u[:, 0] < 0.5, w - 1.0, 0.0)]
        else:
            row0 = [a_, -b_, e]
        zeros = tf.zeros((b,), tf.float32)
        transforms = tf.stack(row0 + [b_, a_, f, zeros, zeros], axis=1)
        images = tf.raw_ops.ImageProjectiveTransformV3(
            images=images, transforms=transforms, output_shape=shape[1:3], fill_value=0.0,
            interpolation="BILINEAR", fill_mode="REFLECT")
    if contrast > 0:
        factor = tf.reshape(1.0 + sym[:, 5] * contrast, (b, 1, 1, 1))
        # per-image channel means; (x - mean) * factor + mean, as one multiply-add
        mean = tf.reduce_mean(tf.reshape(images, (b, -1, shape[3])), axis=1)[:, None, None, :]
        images = images * factor + mean * (1.0 - factor)
    return tf.clip_by_value(images, 0.0, 255.0)

