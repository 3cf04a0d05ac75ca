"""The tf.data input pipeline of training and evaluation, over the readable images of one split folder.

    files = read_split("data/train", cfg)                                # listed and checked once per run
    ds, info = make_dataset(files, cfg, training=True, one_hot=True)     # shuffled + augmented, seeded by cfg.seed
    ds, info = make_dataset("data/val", cfg, training=False)             # a folder is read first; order of info.paths
    for images, labels in ds: ...     # float32 [B, H, W, 3] RGB 0..255; int32 [B] (one_hot: float32 [B, n_classes])

How it reads:
  * read_split lists the class folders (scanning.list_split), drops the files that are not images or are visibly
    truncated (scanning.check_images), then those that do not decode (decoding.check_decoding, a JPEG corrupt in
    the middle); each dropped file is named in one warning line and counted in info.num_skipped. A training loop
    reads its splits once and hands the SplitFiles to make_dataset every epoch.
  * face_alignment eyes: read_split finds each image's eye angle once (alignment.eye_angles) and decoding turns
    the image by it, so the eyes are level before caching, shuffling and augmentation.
  * decoding runs in parallel; decoded uint8 images are cached in memory when the split fits under
    cache_max_mb MiB. The cache is kept per process (all caches together stay under cache_max_mb, least
    recently used dropped first) and shared by every dataset made from the same files, so a training loop
    that calls make_dataset once per epoch (seed + epoch) decodes each file once; clear_cache() frees it.
  * training, cached: each epoch a fresh seeded permutation of the whole cache (the shuffle holds references
    to cached images, not copies). Not cached: the file list is permuted each epoch before decoding, then a
    window of shuffle_buffer decoded images mixes further. Then batching, augmentation (augmentation.py) on whole
    batches in a parallel map, prefetch. Evaluation: the order of `info.paths`, no augmentation.
  * the order and augmentation are deterministic for a given seed: a resumed run sees the same data as an
    uninterrupted one.
"""
from __future__ import annotations

import math
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import tensorflow as tf

from emotion.common.errors import UserError
from emotion.data import alignment, scanning
from emotion.data.augmentation import augment_batch, augmentation_enabled
from emotion.data.decoding import check_decoding, decode_uint8, file_stats


@dataclass(frozen=True)
class SplitFiles:
    """The readable images of one split folder, in sorted path order: what make_dataset feeds."""

    split_dir: str
    class_names: list[str]
    paths: list[str]
    labels: np.ndarray  # int32 label ids, index in class_names
    skipped: list[str]  # files dropped as unreadable, each named in a warning
    angles: np.ndarray | None = None  # face_alignment eyes: float32 degrees per image, each turned by it; None: off

    def class_counts(self) -> dict[str, int]:
        return {name: int(np.sum(self.labels == i)) for i, name in enumerate(self.class_names)}


@dataclass
class DatasetInfo:
    """What make_dataset read. paths/labels are the images it feeds (unreadable files removed), in the
    evaluation order; class_counts counts them per class name."""

    paths: list[str]
    labels: np.ndarray
    num_images: int
    num_skipped: int
    skipped: list[str]
    steps_per_epoch: int
    class_counts: dict[str, int]
    batch_size: int
    training: bool
    cached: bool
    split_dir: str = ""
    class_names: list[str] = field(default_factory=list)


# Decoded-image caches, shared by all datasets made from the same files in this process:
# key -> (cached tf.data.Dataset of (uint8 image, int32 label) in `paths` order, size in bytes).
_CACHES: OrderedDict[tuple, tuple[tf.data.Dataset, int]] = OrderedDict()


def clear_cache() -> None:
    """Forget the decoded images cached by earlier make_dataset calls (frees their memory)."""
    _CACHES.clear()


def read_split(split_dir: str | os.PathLike, cfg: Mapping[str, Any], limit_per_class: int | None = None) -> SplitFiles:
    """The readable images of split_dir: listed, pre-scanned and decoded once (see the module docstring).
    limit_per_class: the first N files of each class (quick runs). UserError when none is readable."""
    class_names = list(cfg["class_names"])
    all_paths, all_labels = scanning.list_split(split_dir, class_names, limit_per_class)
    keep, skipped = scanning.check_images(all_paths, warn_once=True)
    paths = [all_paths[i] for i in keep]
    labels = all_labels[keep] if keep else np.zeros((0,), np.int32)
    decodes, undecodable = check_decoding(paths, cfg["input_shape"], warn_once=True)
    paths, labels, skipped = [paths[i] for i in decodes], labels[decodes], skipped + undecodable
    if not paths:
        raise UserError(f"no readable images in {split_dir} ({len(skipped)} unreadable files skipped)")
    angles = alignment.eye_angles(paths, cfg) if alignment.aligning(cfg) else None
    return SplitFiles(str(split_dir), class_names, paths, labels, skipped, angles)


def _decoded(paths: list[str], labels: np.ndarray, input_shape: Sequence[int],
             angles: np.ndarray | None) -> tf.data.Dataset:
    """(uint8 image, int32 label) in paths order, decoded in parallel (and turned by its angle when angles are
    given: face_alignment eyes); undecodable files dropped."""
    return _decode(tf.data.Dataset.from_tensor_slices(_slices(paths, labels, angles)), input_shape)


def _slices(paths: list[str], labels: np.ndarray, angles: np.ndarray | None) -> tuple:
    """(path, label[, angle]) tensors, one row per image."""
    columns = (tf.constant(paths, tf.string), tf.constant(labels, tf.int32))
    return columns if angles is None else (*columns, tf.constant(angles, tf.float32))


def _decode(ds: tf.data.Dataset, input_shape: Sequence[int]) -> tf.data.Dataset:
    """(path, label[, angle]) rows -> (uint8 image, label), in parallel, in order; files that do not decode
    (past check_images) dropped."""
    def decode(path, label, angle=None):
        image = decode_uint8(tf.io.read_file(path), input_shape)
        return (image if angle is None else alignment.level_eyes(image, angle)), label
    return ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).ignore_errors()


def _base_dataset(paths: list[str], labels: np.ndarray, input_shape: Sequence[int],
                  cache_bytes: int, angles: np.ndarray | None = None) -> tuple[tf.data.Dataset, bool]:
    """The decoded dataset, cached in memory (and remembered for later calls) when it fits cache_bytes."""
    h, w = int(input_shape[0]), int(input_shape[1])
    size = len(paths) * h * w * 3
    if cache_bytes <= 0 or size > cache_bytes:
        return _decoded(paths, labels, input_shape, angles), False
    key = (h, w, file_stats(paths), labels.tobytes(), None if angles is None else angles.tobytes())
    if key in _CACHES:
        _CACHES.move_to_end(key)
        return _CACHES[key][0], True
    while _CACHES and sum(s for _, s in _CACHES.values()) + size > cache_bytes:
        _CACHES.popitem(last=False)  # least recently used
    ds = _decoded(paths, labels, input_shape, angles).cache()
    _CACHES[key] = (ds, size)
    return ds, True



def make_dataset(split: str | os.PathLike | SplitFiles, cfg: Mapping[str, Any], training: bool,
                 batch_size: int | None = None, limit_per_class: int | None = None,
                 one_hot: bool = False, *, cache: bool | None = None) -> tuple[tf.data.Dataset, DatasetInfo]:
    """The input pipeline for one split: (dataset, DatasetInfo). split: a SplitFiles (read_split), or a split
    folder, read here (limit_per_class then keeps the first N files of each class).

    batch_size: default cfg.train_batch_size when training, else cfg.val_batch_size; the last batch may be
    smaller. cache: None = cache decoded images when the split fits under cfg.cache_max_mb MiB, False = never.
    The dataset is one epoch long; iterate it again (or call make_dataset again with seed + epoch) for the
    next. Its cardinality is unknown to tf.data (ignore_errors); info.steps_per_epoch is the batch count.
    """
    files = split if isinstance(split, SplitFiles) else read_split(split, cfg, limit_per_class)
    batch_size = int(batch_size or (cfg["train_batch_size"] if training else cfg["val_batch_size"]))
    cache_bytes = 0 if cache is False else int(cfg["cache_max_mb"]) * 2 ** 20
    ds, cached = _base_dataset(files.paths, files.labels, cfg["input_shape"], cache_bytes, files.angles)
    if training:
        ds = _shuffled(ds, files, cfg, cached)
    ds = ds.batch(batch_size, drop_remainder=False)
    ds = ds.enumerate().map(_finisher(cfg, training, one_hot), num_parallel_calls=tf.data.AUTOTUNE,
                            deterministic=True)
    options = tf.data.Options()
    options.deterministic = True
    ds = ds.prefetch(tf.data.AUTOTUNE).with_options(options)
    n = len(files.paths)
    info = DatasetInfo(paths=files.paths, labels=files.labels, num_images=n, num_skipped=len(files.skipped),
                       skipped=files.skipped, steps_per_epoch=math.ceil(n / batch_size),
                       class_counts=files.class_counts(), batch_size=batch_size, training=training, cached=cached,
                       split_dir=files.split_dir, class_names=files.class_names)
    return ds, info


def _shuffled(ds: tf.data.Dataset, files: SplitFiles, cfg: Mapping[str, Any], cached: bool) -> tf.data.Dataset:
    """The training order of one epoch, seeded by cfg.seed."""
    n, seed = len(files.paths), int(cfg["seed"])
    if cached:
        # a full shuffle over the cache holds only references to the cached images, no copies
        return ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    # shuffle the file list each epoch, decode in parallel, then mix a window of decoded images
    order = tf.data.Dataset.from_tensor_slices(_slices(files.paths, files.labels, files.angles))
    ds = _decode(order.shuffle(n, seed=seed, reshuffle_each_iteration=True), cfg["input_shape"])
    return ds.shuffle(min(int(cfg["shuffle_buffer"]), n), seed=seed + 1, reshuffle_each_iteration=True)


def _finisher(cfg: Mapping[str, Any], training: bool, one_hot: bool):
    """The map over (batch index, (uint8 images, labels)): float images, augmented when training, labels
    one-hot when asked."""
    h, w = int(cfg["input_shape"][0]), int(cfg["input_shape"][1])
    augment, seed, n_classes = training and augmentation_enabled(cfg), int(cfg["seed"]), len(cfg["class_names"])

    def finish(index, batch):
        images, labels = batch
        images = tf.cast(images, tf.float32)
        if augment:
            # stateless draws keyed by (seed, batch index): the same batches for the same seed, whatever
            # order the parallel map runs them in
            images = augment_batch(images, cfg, tf.stack([tf.constant(seed, tf.int64), index]))
        images = tf.ensure_shape(images, (None, h, w, 3))
        return images, (tf.one_hot(labels, n_classes, dtype=tf.float32) if one_hot else labels)
    return finish
