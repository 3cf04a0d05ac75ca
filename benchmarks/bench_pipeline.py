"""Input-pipeline throughput: datasets.make_dataset (training, with augmentation) vs naive loaders.

    python benchmarks/bench_pipeline.py                       # the ../shared sample's train split, linked into a temp dir
    python benchmarks/bench_pipeline.py --data data           # an organized folder (reads data/train)
    python benchmarks/bench_pipeline.py --epochs 4 --set train_batch_size=64

Prints one JSON line. The pipeline runs as trainer.py uses it: make_dataset once per epoch with seed + epoch,
so epoch 1 decodes and fills the in-memory cache (cold) and later epochs read the cache (warm). In the same
run, two naive loaders read one epoch with the same augmentation: a Python loop (cv2.imread + per-image
cv2/numpy augmentation), and tf.data with no parallelism, cache or prefetch. Training on this CPU consumes
about 10.5 images/s; the target is a pipeline at least 10x faster than that. Prints {"skipped": reason}
(exit 0) when the data is absent.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tests_helpers import support

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from emotion.common import config, errors

TRAINING_IMAGES_PER_S = 10.5  # measured training throughput on this CPU (ResNet50, 96x96, batch 32)
TARGET_FACTOR = 10
DEFAULT_YOLO = Path(os.environ.get("SHARED_DATA_DIR", REPO.parent / "shared")) / "data" / "affectnet-yolo-sample" / "YOLO_format"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", metavar="PATH", help="organized data folder holding <split>/<class>/ "
                   "(default: link the YOLO sample's split into a temp dir)")
    p.add_argument("--yolo", default=str(DEFAULT_YOLO), metavar="PATH", help="Kaggle YOLO_format folder")
    p.add_argument("--split", default="train", help="split to read (YOLO 'valid' is used for 'val')")
    p.add_argument("--epochs", type=int, default=3, help="pipeline epochs (the first is cold)")
    p.add_argument("--config", default=str(config.DEFAULT_CONFIG_PATH), metavar="PATH")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    return p.parse_args(argv)


def link_yolo_split(yolo_split: Path, out_split: Path, class_names: list[str]) -> int:
    """Hard-link YOLO images into out_split/<class>/ (class id = first number of the label file)."""
    n = 0
    for image in sorted((yolo_split / "images").iterdir()):
        label = yolo_split / "labels" / (image.stem + ".txt")
        try:
            class_id = int(label.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        if not 0 <= class_id < len(class_names):
            continue
        folder = out_split / class_names[class_id]
        folder.mkdir(parents=True, exist_ok=True)
        try:
            os.link(image, folder / image.name)
        except OSError:
            shutil.copyfile(image, folder / image.name)
        n += 1
    return n


# ------------------------------------------------------------------------------------------------
# Naive loaders


def naive_cv2_epoch(paths, labels, cfg, batch_size: int, seed: int) -> int:
    """One epoch: Python loop, cv2.imread, per-image numpy/cv2 augmentation like support.keras_augmenter's."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    h, w = cfg.input_shape[:2]
    n = 0
    batch_x, batch_y = [], []
    for i in rng.permutation(len(paths)):
        bgr = cv2.imread(paths[i], cv2.IMREAD_COLOR)
        if bgr is None:
            continue
        image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if image.shape[:2] != (h, w):
            image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        if cfg.augment_flip and rng.random() < 0.5:
            image = image[:, ::-1]
        angle = rng.uniform(-1, 1) * cfg.augment_rotation * 360
        scale = 1 + rng.uniform(-1, 1) * cfg.augment_zoom
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
        m[:, 2] += rng.uniform(-1, 1, 2) * cfg.augment_shift * np.array([w, h])
        image = cv2.warpAffine(np.ascontiguousarray(image), m, (w, h), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT_101).astype(np.float32)
        if cfg.augment_contrast:
            factor = 1 + rng.uniform(-1, 1) * cfg.augment_contrast
            mean = image.mean(axis=(0, 1), keepdims=True)
            image = np.clip((image - mean) * factor + mean, 0, 255)
        batch_x.append(image)
        batch_y.append(labels[i])
        if len(batch_x) == batch_size:
            np.stack(batch_x), np.array(batch_y)
            n += len(batch_x)
            batch_x, batch_y = [], []
    if batch_x:
        np.stack(batch_x)
        n += len(batch_x)
    return n


def naive_tfdata(paths, labels, cfg, batch_size: int):
    """tf.data with the same decode and augmentation, but sequential: no parallel map, cache or prefetch."""
    import tensorflow as tf

    from emotion.data import decoding

    augmenter = support.keras_augmenter(cfg)
    ds = tf.data.Dataset.from_tensor_slices((paths, labels)).shuffle(len(paths), seed=cfg.seed)
    ds = ds.map(lambda p, y: (tf.cast(decoding.decode_uint8(tf.io.read_file(p), cfg.input_shape), tf.float32), y))
    ds = ds.batch(batch_size)
    if augmenter is not None:
        ds = ds.map(lambda x, y: (augmenter(x, training=True), y))
    options = tf.data.Options()
    options.autotune.enabled = False
    options.experimental_optimization.map_parallelization = False
    options.experimental_optimization.inject_prefetch = False
    return ds.with_options(options)


def count(ds) -> int:
    return sum(int(x.shape[0]) for x, _ in ds)


def rate(n: int, seconds: float) -> float:
    return round(n / seconds, 1) if seconds > 0 else math.inf


class Clock:
    """Wall and process-CPU seconds of a block. The machine may be shared: images per CPU-second of this
    process is the comparison that other processes' load disturbs least."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = config.load_config(args.config, args.overrides)
    except errors.UserError as exc:
        print(json.dumps({"skipped": f"config: {exc}"}))
        return 0
    tmp = None
    try:
        if args.data:
            split_dir = Path(args.data) / args.split
            if not split_dir.is_dir():
                print(json.dumps({"skipped": f"{split_dir} not found"}))
                return 0
        else:
            yolo_split = Path(args.yolo) / ("valid" if args.split == "val" else args.split)
            if not (yolo_split / "images").is_dir():
                print(json.dumps({"skipped": f"real data not found at {yolo_split} (see ../shared/README.md)"}))
                return 0
            tmp = Path(tempfile.mkdtemp(prefix="bench_pipeline_"))
            split_dir = tmp / args.split
            link_yolo_split(yolo_split, split_dir, list(cfg.class_names))

        import tensorflow as tf

        from emotion.data import datasets, scanning

        try:
            scanning.list_split(split_dir, cfg.class_names)
        except errors.UserError as exc:
            print(json.dumps({"skipped": str(exc)}))
            return 0
        batch_size = cfg.train_batch_size
        # the pipeline, as trainer.py drives it: a new make_dataset per epoch, seeded with seed + epoch
        epochs = []
        for epoch in range(max(1, args.epochs)):
            with Clock() as clock:
                ds, info = datasets.make_dataset(split_dir, config.Config(cfg, seed=cfg.seed + epoch), training=True)
                n = count(ds)
            epochs.append((n, clock.wall, clock.cpu))
        cold = rate(*epochs[0][:2])
        warm_n, warm_s, warm_cpu = (sum(e[i] for e in epochs[1:]) for i in range(3))
        warm = rate(warm_n, warm_s) if warm_n else None

        plain = config.Config(cfg, augment_flip=False, augment_rotation=0.0, augment_shift=0.0, augment_zoom=0.0,
                              augment_contrast=0.0)
        start = time.perf_counter()
        no_aug_rate = rate(count(datasets.make_dataset(split_dir, plain, training=True)[0]), time.perf_counter() - start)
        start = time.perf_counter()
        eval_ds, _ = datasets.make_dataset(split_dir, cfg, training=False)
        eval_rate = rate(count(eval_ds), time.perf_counter() - start)  # cache of the same files: warm

        paths, labels = info.paths, info.labels
        with Clock() as cv2_clock:
            n_cv2 = naive_cv2_epoch(paths, labels, cfg, batch_size, cfg.seed)
        naive_cv2 = rate(n_cv2, cv2_clock.wall)
        with Clock() as tf_clock:
            n_tf = count(naive_tfdata(paths, labels, cfg, batch_size))
        naive_tf = rate(n_tf, tf_clock.wall)

        best = warm or cold
        result = {
            "benchmark": "input_pipeline_training_with_augmentation",
            "split_dir": str(split_dir) if args.data else f"{args.yolo} ({args.split}, linked)",
            "images": info.num_images, "skipped": info.num_skipped, "batch_size": batch_size,
            "epochs": len(epochs), "cached": info.cached,
            "pipeline_cold_images_per_s": cold,
            "pipeline_warm_images_per_s": warm,
            "pipeline_epoch_seconds": [round(e[1], 2) for e in epochs],
            "pipeline_warm_images_per_cpu_s": rate(warm_n, warm_cpu) if warm_n else None,
            "pipeline_warm_no_augmentation_images_per_s": no_aug_rate,
            "eval_pipeline_warm_images_per_s": eval_rate,
            "naive_cv2_loop_images_per_s": naive_cv2,
            "naive_cv2_loop_images_per_cpu_s": rate(n_cv2, cv2_clock.cpu),
            "naive_tfdata_sequential_images_per_s": naive_tf,
            "naive_tfdata_sequential_images_per_cpu_s": rate(n_tf, tf_clock.cpu),
            "speedup_warm_vs_naive_cv2_loop": round(best / naive_cv2, 2),
            "speedup_warm_vs_naive_tfdata": round(best / naive_tf, 2),
            "training_images_per_s": TRAINING_IMAGES_PER_S,
            "factor_vs_training_cold": round(cold / TRAINING_IMAGES_PER_S, 1),
            "factor_vs_training_warm": round(best / TRAINING_IMAGES_PER_S, 1),
            "target_factor": TARGET_FACTOR,
            "meets_target": min(cold, best) >= TARGET_FACTOR * TRAINING_IMAGES_PER_S,
            "load_average_1min": round(os.getloadavg()[0], 2), "cpu_count": os.cpu_count(), "machine": platform.machine(), "tensorflow": tf.__version__,
        }
        print(json.dumps(result))
        return 0
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
