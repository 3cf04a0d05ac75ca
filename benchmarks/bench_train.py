"""Training throughput: the model fed by our file pipeline vs the same model on in-memory tensors.

    python benchmarks/bench_train.py                      # real train split from ../shared, 96x96, batch 32
    python benchmarks/bench_train.py --precision          # also float32 vs bfloat16 and XLA on this CPU

Prints one JSON line. Target: the pipeline reaches >= 90% of the in-memory step rate.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

from tests_helpers import support

REPO = Path(__file__).resolve().parent.parent


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=6, help="timed steps per measurement")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (the median is reported)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--precision", action="store_true", help="also time mixed_bfloat16 and XLA")
    return p.parse_args()


def time_training(run_epoch, dataset, steps: int, batch: int) -> float:
    """images/s over `steps` steps of the trainer's own loop."""
    start = time.perf_counter()
    run_epoch(dataset.take(steps), steps, "timed")
    return steps * batch / (time.perf_counter() - start)


def alternate(run_epoch, datasets: dict, steps: int, batch: int, rounds: int) -> dict:
    """Median images/s per dataset, measured in alternating rounds so both see the same machine load."""
    for ds in datasets.values():
        run_epoch(ds.take(3), 3, "warm-up")  # tracing, cache fill
    rates = {name: [] for name in datasets}
    for _ in range(rounds):
        for name, ds in datasets.items():
            rates[name].append(time_training(run_epoch, ds, steps, batch))
    return {name: sorted(r)[len(r) // 2] for name, r in rates.items()}


def main() -> None:
    args = parse_args()
    YOLO_SAMPLE, link_organized = support.YOLO_SAMPLE, support.link_organized
    if not YOLO_SAMPLE.exists():
        print(json.dumps({"skipped": f"real data not found at {YOLO_SAMPLE}"}))
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    from emotion.common import config
    from emotion.data import datasets, scanning
    from emotion.model import network as model_lib
    from emotion.training import trainer

    tmp = Path(tempfile.mkdtemp())
    link_organized(tmp / "data", per_class=None, splits=("train",))
    cfg = config.load_config(None, ["weights=null", f"data_path={tmp / 'data'}", f"train_batch_size={args.batch}"])
    ds, info = datasets.make_dataset(tmp / "data" / "train", cfg, training=True, one_hot=True)
    ds = ds.repeat()
    weights = scanning.compute_class_weights(scanning.class_counts(tmp / "data" / "train", cfg.class_names), cfg.class_names)

    def fresh_trainer(precision="float32", jit=False, class_weight=None):
        keras.mixed_precision.set_global_policy(precision)
        m = model_lib.build_model(cfg)
        trainer.compile_model(m, cfg, "head", steps_per_epoch=100)
        return trainer.TrainEpoch(m, tf.distribute.get_strategy(), cfg, class_weight, jit)

    images, labels = next(iter(ds))
    in_memory = tf.data.Dataset.from_tensors((images, labels)).repeat()
    results = {"batch": args.batch, "steps": args.steps, "rounds": args.rounds, "input": cfg.input_shape}
    epoch_runner = fresh_trainer(class_weight=weights)
    rates = alternate(epoch_runner, {"in_memory": in_memory, "pipeline": ds}, args.steps, args.batch, args.rounds)
    results["in_memory_images_per_s"] = round(rates["in_memory"], 2)
    results["pipeline_images_per_s"] = round(rates["pipeline"], 2)
    results["pipeline_vs_in_memory"] = round(results["pipeline_images_per_s"] / results["in_memory_images_per_s"], 3)
    if args.precision:
        for name, precision, jit in (("bfloat16", "mixed_bfloat16", False), ("xla_float32", "float32", True)):
            rate = alternate(fresh_trainer(precision, jit), {"x": in_memory}, args.steps, args.batch, 1)["x"]
            results[f"{name}_in_memory_images_per_s"] = round(rate, 2)
            results[f"{name}_vs_float32"] = round(
                results[f"{name}_in_memory_images_per_s"] / results["in_memory_images_per_s"], 3)
    results["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    results["train_images"] = info.num_images
    print(json.dumps(results))


if __name__ == "__main__":
    main()
