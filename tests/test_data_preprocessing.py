"""emotion.data: the class-folder listing (scanning), decoding, the tf.data pipeline (datasets), bad files, class weights.

Real images come from ../shared (hard-linked into tmp_path as organize_data.py would lay them out); the tests
that need them skip with the reason when ../shared is absent.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf = pytest.importorskip("tensorflow")

from support import YOLO_SAMPLE, keras_augmenter, require  # noqa: E402

from emotion.common.config import Config, UserError, load_config  # noqa: E402
from emotion.data import augmentation, datasets, decoding, scanning  # noqa: E402

CFG = load_config()
CLASSES = list(CFG.class_names)
SHAPE = list(CFG.input_shape)
PER_CLASS = 6


def organize(yolo_split: Path, out_split: Path, per_class: int | None = None) -> dict[str, list[Path]]:
    """Hard-link YOLO_format/<split>/images into out_split/<class>/ (class = first number of the label file).

    With per_class, each class gets about half .png and half .jpg files (the first ones by name).
    """
    by_class: dict[str, list[Path]] = {c: [] for c in CLASSES}
    for image in sorted((yolo_split / "images").iterdir()):
        label = yolo_split / "labels" / (image.stem + ".txt")
        by_class[CLASSES[int(label.read_text().split()[0])]].append(image)
    for name, images in by_class.items():
        if per_class is not None:
            png = [p for p in images if p.suffix == ".png"][: per_class // 2]
            images = png + [p for p in images if p.suffix != ".png"][: per_class - len(png)]
            by_class[name] = images
        folder = out_split / name
        folder.mkdir(parents=True, exist_ok=True)
        for image in images:
            try:
                os.link(image, folder / image.name)
            except OSError:  # another file system
                shutil.copyfile(image, folder / image.name)
    return by_class


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory) -> Path:
    """<tmp>/train/<class>/ with PER_CLASS real images per class (jpg and png), plus an unclassified/ folder."""
    yolo = require(YOLO_SAMPLE) / "train"
    out = tmp_path_factory.mktemp("organized") / "train"
    organize(yolo, out, PER_CLASS)
    (out / "unclassified").mkdir()
    shutil.copyfile(next((yolo / "images").iterdir()), out / "unclassified" / "stray.jpg")
    return out


def cfg_with(**changes) -> Config:
    return Config(CFG, **changes)


def no_augment() -> Config:
    return cfg_with(augment_flip=False, augment_rotation=0.0, augment_shift=0.0, augment_zoom=0.0,
                    augment_contrast=0.0)


def decode_file(path) -> np.ndarray:
    """The file as the pipeline feeds it: decoded, then float32 0..255."""
    return decoding.decode_uint8(Path(path).read_bytes(), SHAPE).numpy().astype(np.float32)


def collect(ds) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


# ------------------------------------------------------------------------------------------------
# decode_uint8


def _save(image: Image.Image, path: Path, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


@pytest.mark.parametrize("mode, ext, size", [
    ("RGB", "jpg", (96, 96)), ("RGB", "png", (96, 96)), ("RGBA", "png", (96, 96)),
    ("RGB", "png", (50, 70)), ("RGB", "gif", (96, 96)), ("RGB", "bmp", (96, 96)), ("RGB", "jpg", (350, 350)),
])
def test_decode_red_is_red(tmp_path, mode, ext, size):
    color = (255, 0, 0, 128) if mode == "RGBA" else (255, 0, 0)
    path = _save(Image.new(mode, size, color), tmp_path / f"red.{ext}", **({"quality": 95} if ext == "jpg" else {}))
    image = decoding.decode_uint8(path.read_bytes(), SHAPE)
    assert image.dtype == tf.uint8 and tuple(image.shape) == (96, 96, 3)
    pixel = image.numpy().reshape(-1, 3).mean(axis=0)
    tolerance = 3 if ext == "jpg" else 0
    np.testing.assert_allclose(pixel, [255, 0, 0], atol=tolerance)  # RGB order, 0..255, alpha dropped


@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_decode_grayscale_becomes_rgb(tmp_path, ext):
    gray = np.tile(np.arange(0, 250, 250 / 96, dtype=np.float64).astype(np.uint8), (96, 1))
    path = _save(Image.fromarray(gray, "L"), tmp_path / f"gray.{ext}", **({"quality": 100} if ext == "jpg" else {}))
    image = decoding.decode_uint8(path.read_bytes(), SHAPE).numpy()
    assert image.shape == (96, 96, 3) and image.dtype == np.uint8
    assert np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2])
    np.testing.assert_allclose(image[..., 0], gray, atol=0 if ext == "png" else 2)


def test_decode_real_files_match_pil_and_opencv(yolo_sample):
    """Same pixels as PIL and cv2 (BGR flipped to RGB) give, for both formats: no BGR, no scaling, and JPEG
    decoded with the accurate IDCT as inference code using PIL or OpenCV would."""
    cv2 = pytest.importorskip("cv2")
    images = sorted((yolo_sample / "train" / "images").iterdir())
    for path in [p for p in images if p.suffix == ".png"][:3] + [p for p in images if p.suffix == ".jpg"][:3]:
        ours = decode_file(path)
        assert ours.shape == (96, 96, 3) and 0 <= ours.min() and ours.max() <= 255
        assert np.array_equal(ours, np.asarray(Image.open(path).convert("RGB")))
        assert np.array_equal(ours, cv2.imread(str(path))[..., ::-1])


def test_eager_and_tf_data_agree(tmp_path, yolo_sample):
    """The same bytes through decode_uint8 eagerly, in a tf.data map and in make_dataset give equal tensors."""
    images = sorted((yolo_sample / "train" / "images").iterdir())
    paths = [next(p for p in images if p.suffix == ".png"), next(p for p in images if p.suffix == ".jpg")]
    big = np.random.default_rng(0).integers(0, 256, (150, 120, 3), dtype=np.uint8)
    paths.append(_save(Image.fromarray(big), tmp_path / "big.png"))
    paths.append(_save(Image.fromarray(big[..., 0], "L"), tmp_path / "gray.jpg"))
    paths.append(_save(Image.fromarray(np.dstack([big, big[..., :1]]), "RGBA"), tmp_path / "rgba.png"))
    eager = np.stack([decode_file(p) for p in paths])
    ds = tf.data.Dataset.from_tensor_slices([str(p) for p in paths])
    graph = np.stack(list(ds.map(lambda p: decoding.decode_uint8(tf.io.read_file(p), SHAPE)).as_numpy_iterator()))
    assert np.array_equal(eager, graph)

    split = tmp_path / "split"
    for i, name in enumerate(CLASSES):
        (split / name).mkdir(parents=True)
        src = paths[i % len(paths)]
        shutil.copyfile(src, split / name / f"{i}{src.suffix}")
    ds, info = datasets.make_dataset(split, CFG, training=False, batch_size=3)
    piped, _ = collect(ds)
    assert np.array_equal(piped, np.stack([decode_file(p) for p in info.paths]))


# ------------------------------------------------------------------------------------------------
# Listing, errors, class weights


def test_list_split_labels_follow_folders(train_dir):
    paths, labels = scanning.list_split(train_dir, CLASSES)
    assert len(paths) == len(labels) == PER_CLASS * len(CLASSES)
    assert paths == sorted(paths) and labels.dtype == np.int32
    assert all(Path(p).parent.name == CLASSES[y] for p, y in zip(paths, labels))
    assert not any("unclassified" in p for p in paths)
    assert {Path(p).suffix for p in paths} == {".jpg", ".png"}
    limited, limited_labels = scanning.list_split(train_dir, CLASSES, limit_per_class=2)
    assert np.bincount(limited_labels).tolist() == [2] * len(CLASSES)


def test_split_errors_name_the_folder(tmp_path, train_dir):
    with pytest.raises(UserError, match=r"not found: run python src/organize_data.py first"):
        scanning.list_split(tmp_path / "nowhere", CLASSES)

    split = tmp_path / "split"
    shutil.copytree(train_dir, split)
    shutil.rmtree(split / "fear")
    with pytest.raises(UserError, match=r"lacks class folder\(s\) fear .*class_names"):
        scanning.list_split(split, CLASSES)

    (split / "fear").mkdir()
    (split / "fear" / "notes.txt").write_text("no images here")
    with pytest.raises(UserError, match=r"fear hold no images.*class_names"):
        scanning.list_split(split, CLASSES)
    with pytest.raises(UserError, match=r"fear"):
        datasets.make_dataset(split, CFG, training=True)

    shutil.copyfile(next((split / "sad").iterdir()), split / "fear" / "x.jpg")
    (split / "Happy").mkdir()
    (split / "misc").mkdir()
    with pytest.raises(UserError, match=r"Happy, misc that are not in config key class_names") as err:
        scanning.list_split(split, CLASSES)
    assert "\n" not in str(err.value)


def test_class_counts_and_weights(train_dir):
    assert scanning.class_counts(train_dir, CLASSES) == {c: PER_CLASS for c in CLASSES}
    counts = {"a": 30, "b": 10, "c": 20}
    weights = scanning.compute_class_weights(counts, ["a", "b", "c"])
    assert weights == pytest.approx({0: 60 / 90, 1: 2.0, 2: 1.0})
    mean_over_samples = sum(weights[i] * n for i, n in enumerate(counts.values())) / sum(counts.values())
    assert mean_over_samples == pytest.approx(1.0)
    with pytest.raises(UserError, match=r"class\(es\) b have no training images.*class_weighting"):
        scanning.compute_class_weights({"a": 3, "b": 0}, ["a", "b"])


# ------------------------------------------------------------------------------------------------
# make_dataset


def test_eval_dataset_is_the_files_in_order(train_dir):
    ds, info = datasets.make_dataset(train_dir, CFG, training=False, batch_size=5)
    paths, labels = scanning.list_split(train_dir, CLASSES)
    assert info.paths == paths and np.array_equal(info.labels, labels)
    assert info.num_images == 48 and info.num_skipped == 0 and info.steps_per_epoch == 10
    assert info.class_counts == {c: PER_CLASS for c in CLASSES} and info.cached
    x, y = collect(ds)
    assert x.dtype == np.float32 and x.shape == (48, 96, 96, 3) and y.dtype == np.int32
    assert np.array_equal(y, labels)
    assert np.array_equal(x, np.stack([decode_file(p) for p in paths]))  # no augmentation, no scaling
    again, _ = collect(datasets.make_dataset(train_dir, CFG, training=False, batch_size=5, cache=False)[0])
    assert np.array_equal(again, x)
    assert np.array_equal(collect(ds)[0], x)  # second pass, from the cache
    assert datasets.make_dataset(train_dir, CFG, training=False)[1].batch_size == CFG.val_batch_size


@pytest.mark.parametrize("cache", [None, False])
def test_training_dataset(train_dir, cache):
    originals = {decode_file(p).tobytes(): y for p, y in zip(*scanning.list_split(train_dir, CLASSES))}

    ds, info = datasets.make_dataset(train_dir, no_augment(), training=True, batch_size=16, cache=cache)
    assert info.cached == (cache is None) and info.batch_size == 16 and info.steps_per_epoch == 3
    batches = list(ds)
    assert [tuple(x.shape) for x, _ in batches] == [(16, 96, 96, 3)] * 3
    x, y = collect(batches)
    assert [originals[img.tobytes()] for img in x] == y.tolist()  # a permutation, labels still right
    assert y.tolist() != sorted(y.tolist())                          # shuffled
    assert collect(ds)[1].tolist() != y.tolist()                     # reshuffled next epoch

    ds, _ = datasets.make_dataset(train_dir, CFG, training=True, batch_size=16, cache=cache, one_hot=True)
    x, y = collect(ds)
    assert x.dtype == np.float32 and x.shape == (48, 96, 96, 3)
    assert 0.0 <= x.min() and x.max() <= 255.0 and x.max() > 200
    assert y.dtype == np.float32 and y.shape == (48, len(CLASSES)) and np.all(y.sum(axis=1) == 1)
    unchanged = sum(img.tobytes() in originals for img in x)
    assert unchanged <= 2, f"{unchanged} of 48 training images came out unaugmented"
    x2, y2 = collect(ds)
    assert not np.array_equal(x, x2)

    # seeded: the same seed repeats the epoch exactly; another seed does not
    same, same_y = collect(datasets.make_dataset(train_dir, CFG, training=True, batch_size=16, cache=cache, one_hot=True)[0])
    assert np.array_equal(same, x) and np.array_equal(same_y, y)
    other, _ = collect(datasets.make_dataset(train_dir, cfg_with(seed=CFG.seed + 1), training=True, batch_size=16,
                                       cache=cache)[0])
    assert not np.array_equal(other, x)


def test_augmenter_config_and_range():
    assert keras_augmenter(no_augment()) is None
    aug = keras_augmenter(CFG)
    assert [layer.name for layer in aug.layers] == ["flip", "rotation", "shift", "zoom", "contrast"]
    assert [layer.name for layer in keras_augmenter(cfg_with(augment_rotation=0.0, augment_zoom=0.0)).layers] \
        == ["flip", "shift", "contrast"]
    extremes = tf.constant(np.stack([np.zeros((96, 96, 3)), np.full((96, 96, 3), 255.0),
                                     np.random.default_rng(1).integers(0, 2, (96, 96, 3)) * 255.0]), tf.float32)
    strong = keras_augmenter(cfg_with(augment_contrast=1.0, augment_zoom=0.9, augment_rotation=0.5))
    for _ in range(3):
        out = strong(extremes, training=True).numpy()
        assert out.min() >= -1e-3 and out.max() <= 255.0 + 1e-3  # the pipeline clips exactly to 0..255

    # augment_batch, what make_dataset uses: float32, exactly 0..255, stateless (same seed -> same output)
    assert not augmentation.augmentation_enabled(no_augment()) and augmentation.augmentation_enabled(CFG)
    strong_cfg = cfg_with(augment_contrast=1.0, augment_zoom=0.9, augment_rotation=0.5, augment_shift=0.5)
    for i in range(3):
        out = augmentation.augment_batch(extremes, strong_cfg, tf.constant([CFG.seed, i], tf.int64))
        assert out.dtype == tf.float32 and out.shape == extremes.shape
        out = out.numpy()
        assert out.min() >= 0.0 and out.max() <= 255.0
        assert np.allclose(out[0], 0.0) and np.allclose(out[1], 255.0)  # reflected borders: no black fill
    seed = tf.constant([CFG.seed, 5], tf.int64)
    a = augmentation.augment_batch(extremes, CFG, seed).numpy()
    assert np.array_equal(a, augmentation.augment_batch(extremes, CFG, seed).numpy())
    assert not np.array_equal(a, augmentation.augment_batch(extremes, CFG, tf.constant([CFG.seed, 6], tf.int64)).numpy())


def test_augment_batch_flip_is_horizontal_and_parts_switch_off():
    rng = np.random.default_rng(2)
    images = tf.constant(rng.uniform(0, 255, (16, 96, 96, 3)), tf.float32)
    x = images.numpy()
    flip_only = cfg_with(augment_rotation=0.0, augment_shift=0.0, augment_zoom=0.0, augment_contrast=0.0)
    out = augmentation.augment_batch(images, flip_only, tf.constant([1, 2], tf.int64)).numpy()
    mirrored = [np.allclose(o, i[:, ::-1], atol=1e-3) for o, i in zip(out, x)]
    kept = [np.allclose(o, i, atol=1e-3) for o, i in zip(out, x)]
    assert all(m or k for m, k in zip(mirrored, kept))   # left-right mirror or untouched: never upside down
    assert 0 < sum(mirrored) < 16
    contrast_only = cfg_with(augment_flip=False, augment_rotation=0.0, augment_shift=0.0, augment_zoom=0.0)
    out = augmentation.augment_batch(images, contrast_only, tf.constant([1, 2], tf.int64)).numpy()
    mean = x.mean(axis=(1, 2), keepdims=True)
    factor = np.median(((out - mean) / (x - mean)).reshape(16, -1), axis=1).reshape(16, 1, 1, 1)
    assert np.allclose(out, np.clip((x - mean) * factor + mean, 0, 255), atol=1e-2)  # one factor per image
    assert np.all(np.abs(factor - 1.0) <= CFG.augment_contrast + 1e-3) and len(np.unique(factor.round(4))) > 8


def test_bad_files_are_skipped_with_a_warning(tmp_path, train_dir, capsys):
    split = tmp_path / "split"
    shutil.copytree(train_dir, split)
    good_jpg = next(p for p in sorted((split / "happy").iterdir()) if p.suffix == ".jpg").read_bytes()
    bad = {
        split / "sad" / "corrupt.png": b"\x89PNG\r\n\x1a\n" + os.urandom(2000),
        split / "sad" / "truncated.jpg": good_jpg[: len(good_jpg) // 2],
        split / "anger" / "notes.jpg": b"this is a text file, not a JPEG\n" * 20,
        split / "fear" / "empty.png": b"",
        # passes the pre-scan (JPEG magic, ends with EOI) but does not decode: check_decoding drops it
        split / "fear" / "garbage.jpg": b"\xff\xd8\xff\xe0" + b"\x00" * 500 + b"\xff\xd9",
    }
    for path, data in bad.items():
        path.write_bytes(data)

    ds, info = datasets.make_dataset(split, CFG, training=False, batch_size=7)
    assert info.num_skipped == 5 and sorted(info.skipped) == sorted(map(str, bad))
    warned = capsys.readouterr().err.splitlines()
    for path in bad:
        assert sum(str(path) in line for line in warned) == 1
    assert info.num_images == 48 and info.class_counts["fear"] == PER_CLASS
    x, y = collect(ds)
    assert len(x) == 48  # the count reported is the count fed

    capsys.readouterr()
    ds, info = datasets.make_dataset(split, CFG, training=True, batch_size=7)  # the next epoch
    assert len(collect(ds)[0]) == 48 and info.num_skipped == 5
    assert not capsys.readouterr().err  # each bad file is named once per process, not once per epoch

    capsys.readouterr()
    keep, skipped = scanning.check_images([str(p) for p in bad if p.name != "garbage.jpg"] * 3, max_warnings=5)
    assert keep == [] and len(skipped) == 12
    warned = capsys.readouterr().err.splitlines()
    assert len(warned) == 6 and "7 more" in warned[-1]


def test_decoded_images_cached_across_calls(train_dir):
    datasets.clear_cache()
    datasets.make_dataset(train_dir, CFG, training=True)
    datasets.make_dataset(train_dir, cfg_with(seed=CFG.seed + 1), training=True)   # next epoch: same files
    assert len(datasets._CACHES) == 1
    datasets.make_dataset(train_dir, CFG, training=True, limit_per_class=2)
    assert len(datasets._CACHES) == 2
    _, info = datasets.make_dataset(train_dir, cfg_with(cache_max_mb=0), training=True)
    assert not info.cached and len(datasets._CACHES) == 2
    datasets.clear_cache()
    assert len(datasets._CACHES) == 0


def test_float32_under_mixed_precision(train_dir):
    """train.py may set a mixed global policy before building datasets; the pipeline still feeds float32."""
    keras = pytest.importorskip("keras")
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        ds, _ = datasets.make_dataset(train_dir, CFG, training=True, batch_size=8, limit_per_class=1)
        images, _ = next(iter(ds))
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert images.dtype == tf.float32


def test_jpeg_corrupt_in_the_middle_is_named_and_counted(tmp_path, train_dir, capsys):
    """A real JPEG whose middle bytes are overwritten keeps its start and end markers, so only decoding it finds
    it out: it is named in a warning and counted as skipped, and the images reported are the images fed."""
    split = tmp_path / "split"
    shutil.copytree(train_dir, split)
    jpg = next(p for p in sorted((split / "sad").iterdir()) if p.suffix == ".jpg")
    data = jpg.read_bytes()
    jpg.unlink()  # a hard link to ../shared: write a new file, never into the shared one
    middle = len(data) // 2
    jpg.write_bytes(data[:middle] + b"\xff" * 50 + data[middle + 50:])
    assert scanning.image_problem(jpg) is None  # the pre-scan cannot see it
    ds, info = datasets.make_dataset(split, CFG, training=False, batch_size=7)
    assert info.skipped == [str(jpg)] and info.num_skipped == 1
    assert capsys.readouterr().err.splitlines() == [f"warning: skipping {jpg}: cannot be decoded (corrupt image data)"]
    assert info.num_images == 47 == len(collect(ds)[0]) and str(jpg) not in info.paths


def test_file_name_not_utf8_is_skipped_with_a_warning(tmp_path, train_dir, capsys):
    split = tmp_path / "split"
    shutil.copytree(train_dir, split)
    image = next(iter(sorted((split / "happy").iterdir())))
    odd = os.fsdecode(bytes(split / "happy") + b"/z_\xff" + image.suffix.encode())
    shutil.copyfile(image, odd)
    paths, _ = scanning.list_split(split, CLASSES)
    ds, info = datasets.make_dataset(split, CFG, training=True, batch_size=16)
    assert odd not in paths and info.num_images == 48 == len(collect(ds)[0])
    warned = capsys.readouterr().err.splitlines()
    assert warned == [f"warning: skipping {split}/happy/z_\\xff{image.suffix}: its file name is not valid UTF-8 "
                      f"(rename it to use it)"]
    assert Path(odd).read_bytes() == image.read_bytes()  # left as it was
