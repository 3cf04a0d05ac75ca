"""One tf.data input pipeline for training and evaluation, read from class folders.

The data layout (made by organize_data.py):

    <data_path>/{train,val,test}/<class>/*.jpg|*.png     class names = config class_names, label id = index
    <data_path>/<split>/unclassified/                    ignored

Usage:
    from . import data_preprocessing as dp
    cfg = config.load_config()
    train_ds, info = dp.make_dataset(Path(cfg.data_path) / "train", cfg, training=True, one_hot=True)
    val_ds, val_info = dp.make_dataset(Path(cfg.data_path) / "val", cfg, training=False)
    weights = dp.compute_class_weights(dp.class_counts(Path(cfg.data_path) / "train", cfg.class_names),
                                       cfg.class_names)                          # {label id: weight}
    model.fit(train_ds, validation_data=val_ds, class_weight=weights)

    image = dp.decode_image(open("face.png", "rb").read(), cfg.input_shape)   # float32 [H, W, 3], RGB 0..255

What the datasets yield: (images float32 [B, H, W, 3] RGB in 0..255, labels int32 [B] or one-hot float32
[B, n_classes]). There is no /255 scaling and no BGR here: the model applies ResNet50's preprocess_input
itself, so training, evaluation and inference all feed raw RGB.

How it reads:
  * a fast pre-scan (check_images) drops files that are not JPEG/PNG/GIF/BMP or are visibly truncated, then
    check_decoding decodes each file once per process (in parallel) and drops those that do not decode (a
    JPEG corrupt in the middle); each dropped file is named in one warning line on stderr and counted in
    info.num_skipped. `ignore_errors` after decoding stays as a safety net. A file name that is not valid
    UTF-8 is skipped with a warning naming it (TensorFlow cannot hold it),
  * decoding runs in parallel; decoded uint8 images are cached in memory when the split fits under
    cache_max_mb MiB. The cache is kept per process (all caches together stay under cache_max_mb, least
    recently used dropped first) and shared by every dataset made from the same files, so a training loop
    that calls make_dataset once per epoch (seed + epoch) decodes each file once; clear_cache() frees it,
  * training, cached: each epoch a fresh seeded permutation of the whole cache (the shuffle holds references
    to cached images, not copies; the first epoch decodes everything before its first batch). Not cached:
    the file list is permuted each epoch before decoding, then a window of shuffle_buffer decoded images
    mixes further. Then batching, augmentation (augment_batch: flip, rotation, shift and zoom as one affine
    resample per image, then contrast) on whole batches in a parallel map, prefetch.
    Evaluation: the order of `info.paths`, no augmentation.
  * the order and augmentation are deterministic for a given seed (augmentation draws statelessly from
    (seed, batch index), and the parallel map keeps batch order): a resumed run sees the same data as an
    uninterrupted one.
"""
from __future__ import annotations

import math
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import tensorflow as tf

from . import cli, paths
from .config import UserError
from .image_types import PIPELINE_EXTENSIONS


IGNORED_FOLDERS = ("unclassified",)
MAX_WARNINGS = 20  # per check_images call; the rest are counted in one summary line
_WARNED: set = set()  # what make_dataset has warned about in this process (one warning, not one per epoch)

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_GIF_MAGIC = (b"GIF87a", b"GIF89a")
_BMP_MAGIC = b"BM"
_TAIL_BYTES = 1024  # where the JPEG EOI / PNG IEND marker must appear (trailing padding is tolerated)


# ------------------------------------------------------------------------------------------------
# Listing the class folders


def _scan_split(split_dir: str | os.PathLike, class_names: Sequence[str]) -> dict[str, list[str]]:
    """{class name: sorted image paths} for each class of class_names; [] for a missing class folder.

    Raises UserError when split_dir is missing or holds folders that are not classes.
    """
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise UserError(f"data folder {split_dir} not found: run python src/organize_data.py first "
                        f"(or point config key data_path at the organized data)")
    with os.scandir(split_dir) as it:
        folders = sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))
    extra = [f for f in folders if f not in class_names and f not in IGNORED_FOLDERS]
    if extra:
        missing = [c for c in class_names if c not in folders]
        hint = f" (and it lacks {', '.join(missing)})" if missing else ""
        raise UserError(f"{split_dir} holds folder(s) {', '.join(extra)} that are not in config key class_names "
                        f"{list(class_names)}{hint}: rename or remove them, or fix class_names")
    found: dict[str, list[str]] = {}
    other_files: list[str] = []
    for name in class_names:
        folder = split_dir / name
        if not folder.is_dir():
            found[name] = []
            continue
        files = []
        with os.scandir(folder) as it:
            for e in it:
                if e.name.startswith(".") or not e.is_file():
                    continue
                if not _utf8_name(e.path):
                    continue
                if e.name.lower().endswith(PIPELINE_EXTENSIONS):
                    files.append(e.path)
                else:
                    other_files.append(e.path)
        found[name] = sorted(files)
    key = ("ignored", str(split_dir), len(other_files))
    if other_files and key not in _WARNED:
        _WARNED.add(key)
        cli.warn(f"ignoring {len(other_files)} file(s) in {split_dir} that are not "
                 f"{'/'.join(x[1:] for x in PIPELINE_EXTENSIONS)} by name, e.g. {sorted(other_files)[0]}")
    return found


def _utf8_name(path: str) -> bool:
    """False (after one warning naming it) for a file name that is not valid UTF-8: TensorFlow's string tensors
    cannot hold it, so the file is skipped; renaming it makes it usable."""
    try:
        path.encode("utf-8")
        return True
    except UnicodeEncodeError:
        if ("name", path) not in _WARNED:
            _WARNED.add(("name", path))
            cli.warn(f"skipping {paths.printable(path)}: its file name is not valid UTF-8 (rename it to use it)")
        return False


def list_split(split_dir: str | os.PathLike, class_names: Sequence[str],
               limit_per_class: int | None = None) -> tuple[list[str], np.ndarray]:
    """All image paths of one split and their int labels (index in class_names), paths in sorted order.

        paths, labels = list_split("data/train", cfg.class_names)        # labels: int32 array

    limit_per_class keeps the first N files (by name) of each class, for quick runs.
    Raises UserError (one line, naming the folder) when split_dir is missing, a class folder is missing or
    holds no images, or there are folders that are not in class_names (`unclassified/` is ignored).
    """
    split_dir = Path(split_dir)
    found = _scan_split(split_dir, class_names)
    missing = [c for c in class_names if not (split_dir / c).is_dir()]
    if missing:
        raise UserError(f"{split_dir} lacks class folder(s) {', '.join(missing)} listed in config key class_names: "
                        f"run python src/organize_data.py first, or fix class_names")
    empty = [c for c in class_names if not found[c]]
    if empty:
        raise UserError(f"class folder(s) {', '.join(str(split_dir / c) for c in empty)} hold no images "
                        f"({'/'.join(x[1:] for x in PIPELINE_EXTENSIONS)}); every class in config key "
                        f"class_names needs some")
    pairs = []
    for label, name in enumerate(class_names):
        files = found[name][:limit_per_class] if limit_per_class else found[name]
        pairs.extend((p, label) for p in files)
    pairs.sort()
    paths = [p for p, _ in pairs]
    labels = np.array([lab for _, lab in pairs], dtype=np.int32)
    return paths, labels


def class_counts(split_dir: str | os.PathLike, class_names: Sequence[str]) -> dict[str, int]:
    """{class name: number of image files} in class_names order (0 for an empty or missing class folder).

    Counts files by name, without opening them. Raises UserError when split_dir is missing or holds folders
    that are not classes.
    """
    found = _scan_split(split_dir, class_names)
    return {name: len(found[name]) for name in class_names}


def compute_class_weights(counts: Mapping[str, int], class_names: Sequence[str]) -> dict[int, float]:
    """Inverse-frequency class weights {label id: n_total / (n_classes * n_c)} for model.fit(class_weight=...).

    The mean weight over the training samples is 1, so the loss keeps its scale:
        compute_class_weights({"a": 30, "b": 10}, ["a", "b"])  ->  {0: 0.667, 1: 2.0}
    Raises UserError when a class has no images.
    """
    n = [int(counts.get(name, 0)) for name in class_names]
    empty = [name for name, c in zip(class_names, n) if c <= 0]
    if empty:
        raise UserError(f"class(es) {', '.join(empty)} have no training images, so class weights are undefined: "
                        f"add images, or set config key class_weighting: none")
    total = sum(n)
    return {i: total / (len(class_names) * c) for i, c in enumerate(n)}


# ------------------------------------------------------------------------------------------------
# Checking and decoding images


def image_problem(path: str | os.PathLike) -> str | None:
    """Why the file at path is not a readable image (one short phrase), or None if it looks fine.

    Checks only magic bytes and, for JPEG and PNG, the end marker (EOI / IEND), so it reads two small
    pieces of each file. A file that passes can still fail to decode; the pipeline drops those too.
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(16)
            f.seek(max(0, size - _TAIL_BYTES))
            tail = f.read()
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if size == 0:
        return "empty file"
    if head.startswith(_JPEG_MAGIC):
        return None if b"\xff\xd9" in tail else "truncated JPEG (no end-of-image marker)"
    if head.startswith(_PNG_MAGIC):
        return None if b"IEND" in tail else "truncated PNG (no IEND chunk)"
    if head.startswith(_GIF_MAGIC) or (head.startswith(_BMP_MAGIC) and size > 26):
        return None
    return "not a JPEG, PNG, GIF or BMP image"


def check_images(paths: Sequence[str], max_warnings: int = MAX_WARNINGS,
                 warn_once: bool = False) -> tuple[list[int], list[str]]:
    """Pre-scan files: (indices of the good ones, the bad paths). Logs one warning line per bad file.

        keep, bad = check_images(paths)         # "warning: skipping data/train/sad/x.jpg: truncated JPEG ..."
        paths = [paths[i] for i in keep]

    At most max_warnings lines are logged, then one line with the count of the rest. warn_once: stay quiet
    about files already reported by an earlier warn_once call in this process (make_dataset runs per epoch).
    """
    problems = {i: image_problem(p) for i, p in enumerate(paths)}
    return _report(paths, problems, max_warnings, warn_once)


def _report(paths: Sequence[str], problems: Mapping[int, str | None], max_warnings: int,
            warn_once: bool) -> tuple[list[int], list[str]]:
    """check_images' result and warnings for {index: problem or None}."""
    keep, bad, to_report = [], [], []
    for i, p in enumerate(paths):
        problem = problems.get(i)
        if problem is None:
            keep.append(i)
            continue
        bad.append(p)
        if not warn_once or ("bad", p) not in _WARNED:
            to_report.append((p, problem))
            if warn_once:
                _WARNED.add(("bad", p))
    for p, problem in to_report[:max_warnings]:
        cli.warn(f"skipping {p}: {problem}")
    if len(to_report) > max_warnings:
        cli.warn(f"skipped {len(to_report) - max_warnings} more unreadable image(s) ({len(bad)} in all)")
    return keep, bad


# {(path, size, mtime_ns, height, width): decodes} for files check_decoding has decoded in this process
_DECODES: dict[tuple, bool] = {}


def check_decoding(paths: Sequence[str], input_shape: Sequence[int], max_warnings: int = MAX_WARNINGS,
                   warn_once: bool = False) -> tuple[list[int], list[str]]:
    """Decode every file once (in parallel), like check_images: (indices of those that decode, the others),
    one warning naming each file that does not (a JPEG corrupt in the middle passes check_images' look at
    its ends, and libjpeg's own "Corrupt JPEG data" lines name no file). Results are remembered per file
    (path, size, mtime) in this process, so a training loop's make_dataset per epoch decodes nothing twice.

        keep, bad = check_decoding(paths, cfg.input_shape)
    """
    h, w = _hw(input_shape)
    keys = [(k, h, w) for k in _file_key(paths)]
    todo = [i for i, k in enumerate(keys) if k not in _DECODES]
    if todo:
        ds = tf.data.Dataset.from_tensor_slices((tf.constant(todo, tf.int64), tf.constant([paths[i] for i in todo])))
        # the output depends on the pixels, so the decode cannot be optimised away
        ds = ds.map(lambda i, p: (i, tf.reduce_max(decode_uint8(tf.io.read_file(p), input_shape))),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=False).ignore_errors()
        decoded = {int(i) for i, _ in ds.as_numpy_iterator()}
        for i in todo:
            _DECODES[keys[i]] = i in decoded
    problems = {i: None if _DECODES[k] else "cannot be decoded (corrupt image data)" for i, k in enumerate(keys)}
    return _report(paths, problems, max_warnings, warn_once)


def _hw(input_shape: Sequence[int]) -> tuple[int, int]:
    return int(input_shape[0]), int(input_shape[1])


def decode_uint8(image_bytes, input_shape: Sequence[int]) -> tf.Tensor:
    """decode_image as uint8 (what the cache holds): decode to RGB, resize to input_shape[:2] if needed."""
    h, w = _hw(input_shape)
    image_bytes = tf.convert_to_tensor(image_bytes, tf.string)
    # JPEG with the accurate integer IDCT (what PIL and OpenCV use; TF's default fast IDCT is off by up to
    # ~10 levels in dark areas, a train/inference skew); everything else by content, gray/RGBA -> RGB.
    image = tf.cond(
        tf.equal(tf.strings.substr(image_bytes, 0, 3), _JPEG_MAGIC),
        lambda: tf.io.decode_jpeg(image_bytes, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(image_bytes, channels=3, expand_animations=False))

    def resize():
        resized = tf.image.resize(image, (h, w), method="bilinear", antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)

    shape = tf.shape(image)
    same = tf.logical_and(tf.equal(shape[0], h), tf.equal(shape[1], w))
    image = tf.cond(same, lambda: image, resize)
    image.set_shape((h, w, 3))
    return image


def decode_image(image_bytes, input_shape: Sequence[int]) -> tf.Tensor:
    """Encoded JPEG/PNG/GIF/BMP bytes -> float32 [H, W, 3] RGB in 0..255, H, W = input_shape[:2].

    Grayscale and RGBA images become RGB (alpha dropped); other sizes are resized (bilinear, antialiased,
    rounded to whole values so that this equals what the cached pipeline feeds); images of the right size
    are not resampled. Works eagerly and inside tf.data / tf.function:
        decode_image(Path("face.jpg").read_bytes(), [96, 96, 3])
        ds.map(lambda b: decode_image(b, cfg.input_shape))
    """
    return tf.cast(decode_uint8(image_bytes, input_shape), tf.float32)


# ------------------------------------------------------------------------------------------------
# Augmentation


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


# ------------------------------------------------------------------------------------------------
# Datasets


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


def cached_datasets() -> int:
    """How many decoded datasets the in-memory cache holds now (each one split's files at one image size)."""
    return len(_CACHES)


def _file_key(paths: Sequence[str]) -> tuple:
    stats = []
    for p in paths:
        try:
            st = os.stat(p)
            stats.append((p, st.st_size, st.st_mtime_ns))
        except OSError:
            stats.append((p, -1, -1))
    return tuple(stats)


def _decoded(paths: list[str], labels: np.ndarray, input_shape: Sequence[int]) -> tf.data.Dataset:
    """(uint8 image, int32 label) in paths order, decoded in parallel; undecodable files dropped."""
    ds = tf.data.Dataset.from_tensor_slices((tf.constant(paths, tf.string), tf.constant(labels, tf.int32)))
    ds = ds.map(lambda p, y: (decode_uint8(tf.io.read_file(p), input_shape), y),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.ignore_errors()  # safety net for files that passed check_images but do not decode


def _base_dataset(paths: list[str], labels: np.ndarray, input_shape: Sequence[int],
                  cache_bytes: int) -> tuple[tf.data.Dataset, bool]:
    """The decoded dataset, cached in memory (and remembered for later calls) when it fits cache_bytes."""
    h, w = _hw(input_shape)
    size = len(paths) * h * w * 3
    if cache_bytes <= 0 or size > cache_bytes:
        return _decoded(paths, labels, input_shape), False
    key = (h, w, _file_key(paths), labels.tobytes())
    if key in _CACHES:
        _CACHES.move_to_end(key)
        return _CACHES[key][0], True
    while _CACHES and sum(s for _, s in _CACHES.values()) + size > cache_bytes:
        _CACHES.popitem(last=False)  # least recently used
    ds = _decoded(paths, labels, input_shape).cache()
    _CACHES[key] = (ds, size)
    return ds, True


def make_dataset(split_dir: str | os.PathLike, cfg: Mapping[str, Any], training: bool,
                 batch_size: int | None = None, limit_per_class: int | None = None,
                 one_hot: bool = False, *, cache: bool | None = None) -> tuple[tf.data.Dataset, DatasetInfo]:
    """The input pipeline for one split folder: (dataset, DatasetInfo).

        ds, info = make_dataset("data/train", cfg, training=True)      # shuffled + augmented, seeded by cfg.seed
        ds, info = make_dataset("data/val", cfg, training=False)       # order of info.paths, no augmentation
        for images, labels in ds: ...     # float32 [B, H, W, 3] RGB 0..255; int32 [B] (one_hot: float32 [B, C])

    batch_size: default cfg.train_batch_size when training, else cfg.val_batch_size; the last batch may be
    smaller. limit_per_class: the first N files of each class (quick runs). cache: None = cache decoded
    images when the split fits under cfg.cache_max_mb MiB, False = never.
    The dataset is one epoch long; iterate it again (or call make_dataset again with seed + epoch) for the
    next. Its cardinality is unknown to tf.data (ignore_errors); info.steps_per_epoch is the batch count.
    """
    class_names = list(cfg["class_names"])
    input_shape = list(cfg["input_shape"])
    h, w = _hw(input_shape)
    batch_size = int(batch_size or (cfg["train_batch_size"] if training else cfg["val_batch_size"]))
    seed = int(cfg["seed"])

    all_paths, all_labels = list_split(split_dir, class_names, limit_per_class)
    keep, skipped = check_images(all_paths, warn_once=True)
    paths = [all_paths[i] for i in keep]
    labels = all_labels[keep] if keep else np.zeros((0,), np.int32)
    decodes, undecodable = check_decoding(paths, input_shape, warn_once=True)
    paths, labels, skipped = [paths[i] for i in decodes], labels[decodes], skipped + undecodable
    if not paths:
        raise UserError(f"no readable images in {split_dir} ({len(skipped)} unreadable files skipped)")
    counts = {name: int(np.sum(labels == i)) for i, name in enumerate(class_names)}

    cache_bytes = 0 if cache is False else int(cfg["cache_max_mb"]) * 2 ** 20
    ds, cached = _base_dataset(paths, labels, input_shape, cache_bytes)
    n = len(paths)
    if training:
        if cached:
            # a full shuffle over the cache holds only references to the cached images, no copies
            ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
        else:
            # shuffle the file list each epoch, decode in parallel, then mix a window of decoded images
            order = tf.data.Dataset.from_tensor_slices((tf.constant(paths), tf.constant(labels, tf.int32)))
            order = order.shuffle(n, seed=seed, reshuffle_each_iteration=True)
            ds = order.map(lambda p, y: (decode_uint8(tf.io.read_file(p), input_shape), y),
                           num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).ignore_errors()
            ds = ds.shuffle(min(int(cfg["shuffle_buffer"]), n), seed=seed + 1, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=False)
    augment = training and augmentation_enabled(cfg)
    n_classes = len(class_names)

    def finish(index, batch):
        images, labels = batch
        images = tf.cast(images, tf.float32)
        if augment:
            # stateless draws keyed by (seed, batch index): the same batches for the same seed, whatever
            # order the parallel map runs them in
            images = augment_batch(images, cfg, tf.stack([tf.constant(seed, tf.int64), index]))
        images = tf.ensure_shape(images, (None, h, w, 3))
        return images, (tf.one_hot(labels, n_classes, dtype=tf.float32) if one_hot else labels)

    ds = ds.enumerate().map(finish, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = True
    ds = ds.with_options(options)

    info = DatasetInfo(paths=paths, labels=labels, num_images=n, num_skipped=len(skipped), skipped=skipped,
                       steps_per_epoch=math.ceil(n / batch_size), class_counts=counts, batch_size=batch_size,
                       training=training, cached=cached, split_dir=str(split_dir), class_names=class_names)
    return ds, info
