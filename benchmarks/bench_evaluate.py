"""Evaluation throughput and memory: evaluate.py (files -> pipeline -> model) vs the bare forward pass.

    python benchmarks/bench_evaluate.py                   # real test split from ../shared (320 images), 96x96, batch 32
    python benchmarks/bench_evaluate.py --data PATH       # an organized split folder of your own (class folders)
    python benchmarks/bench_evaluate.py --tta             # with flip test-time augmentation
    python benchmarks/bench_evaluate.py --robustness-per-class 0   # without the robustness run

With a random-init ResNet50 (weights null), saved to a temp file:
  * throughput: evaluate's timed part (make_dataset without cache -> model_lib.predict_probs, as evaluate.py
    runs it) against the same tf.function forward (model_lib.make_forward) on one real batch held in memory,
    same batch size, alternated over --rounds so both see the same load on a shared machine;
  * memory: src/evaluate.py in a fresh process on N images and on 2N (every file linked twice), its peak
    RSS sampled every 5 ms; its own images/s are reported too.
  * robustness: src/evaluate.py --robustness --max-images-per-class K (default 10) in a fresh process: its
    corrupted images per second (every corruption level through the model, corrupting included; a level equal
    to the clean image costs nothing), its end-to-end scenes per second (a 640x480 frame through every installed
    face detector, crop, classify), the whole robustness run's seconds and its peak RSS.
Prints one JSON line. Targets: evaluate_vs_forward >= 0.85; peak RSS for 2N about that for N.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests_helpers import support

REPO = Path(__file__).resolve().parent.parent


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", metavar="PATH",
                   help="an organized split folder (<class>/*.jpg); default: the real test split")
    p.add_argument("--batch", type=int, default=32, help="batch size (test_batch_size)")
    p.add_argument("--rounds", type=int, default=3, help="alternated forward / pipeline timings")
    p.add_argument("--tta", action="store_true", help="evaluate with flip TTA (the forward then runs it too)")
    p.add_argument("--robustness-per-class", type=int, default=10, metavar="K",
                   help="images per class for the evaluate.py --robustness run (0: skip it)")
    return p.parse_args()


def run_evaluate(argv: list[str]) -> tuple[dict, float]:
    """python src/evaluate.py ARGV in a fresh process: (its final JSON line, its peak RSS in MiB, sampled
    every 5 ms), so that each count is measured from the same clean start."""
    import psutil
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen([sys.executable, str(REPO / "src" / "evaluate.py"), *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    watched, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.Error:
            break
        time.sleep(0.005)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"evaluate.py failed ({proc.returncode}): {err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1]), round(peak / 2**20, 1)


def link_copies(src: Path, dest: Path, prefixes=("",)) -> None:
    """dest/<class>/<prefix><name> for every image of src and prefix, as hard links: ("a_", "b_") makes a
    2N split of distinct files."""
    for folder in sorted(p for p in src.iterdir() if p.is_dir()):
        (dest / folder.name).mkdir(parents=True)
        for image in sorted(folder.iterdir()):
            for prefix in prefixes:
                try:
                    os.link(image, dest / folder.name / f"{prefix}{image.name}")
                except OSError:
                    shutil.copy2(image, dest / folder.name / f"{prefix}{image.name}")


def main() -> None:
    args = parse_args()
    YOLO_SAMPLE, link_organized = support.YOLO_SAMPLE, support.link_organized
    tmp = Path(tempfile.mkdtemp(prefix="bench_evaluate_"))
    try:
        if args.data:
            link_copies(Path(args.data).resolve(), tmp / "n" / "test")
        elif YOLO_SAMPLE.exists():
            link_organized(tmp / "n", per_class=None, splits=("test",))
        else:
            print(json.dumps({"skipped": f"real data not found at {YOLO_SAMPLE}"}))
            return
        link_copies(tmp / "n" / "test", tmp / "n2" / "test", ("a_", "b_"))
        run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args, tmp: Path) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    from emotion.common import config
    from emotion.data import datasets
    from emotion.model import network as model_lib

    model_path = tmp / "model.h5"
    overrides = ["weights=null", f"model_save_path={model_path}", f"test_batch_size={args.batch}",
                 f"performance_dir={tmp / 'performance'}"]
    cfg = config.load_config(None, overrides)
    model_lib.save_model_atomic(model_lib.build_model(cfg), model_path)

    def evaluate_on(data_dir: Path) -> tuple[dict, float]:
        sets = overrides + [f"data_path={data_dir}"]
        return run_evaluate([a for o in sets for a in ("--set", o)] + (["--tta"] if args.tta else []))

    # Throughput, in this process: evaluate's timed part (make_dataset without cache + predict_probs with
    # make_forward, exactly as evaluate.py runs them) against the same forward on one real batch held in
    # memory, alternated in rounds so that both see the same load on a shared machine.
    model = model_lib.load_model(model_path)
    ds, info = datasets.make_dataset(tmp / "n" / "test", cfg, training=False, batch_size=args.batch, cache=False)
    forward = model_lib.make_forward(model, args.tta, ds.element_spec[0])
    images = next(iter(ds))[0]
    forward(images).numpy()  # trace + warm-up
    steps = max(3, info.num_images // args.batch)

    def time_forward() -> float:
        start = time.perf_counter()
        for _ in range(steps):
            forward(images).numpy()
        return steps * args.batch / (time.perf_counter() - start)

    def time_pipeline() -> float:
        start = time.perf_counter()
        y, _ = model_lib.predict_probs(model, ds, forward=forward)
        return len(y) / (time.perf_counter() - start)

    rounds = [(time_forward(), time_pipeline()) for _ in range(args.rounds)]
    ratios = [p / f for f, p in rounds]
    forward_ips = float(np.median([f for f, _ in rounds]))

    # Memory, and evaluate.py end to end: a fresh process each for N and 2N images.
    n_summary, n_peak = evaluate_on(tmp / "n")
    n2_summary, n2_peak = evaluate_on(tmp / "n2")
    robust = {}
    if args.robustness_per_class > 0:  # K per class: its rates are those of a whole split, in a fraction of the time
        summary, peak = run_evaluate([a for o in overrides + [f"data_path={tmp / 'n'}"] for a in ("--set", o)]
                                     + ["--robustness", "--max-images-per-class", str(args.robustness_per_class)])
        robust = {"robustness_images": summary["num_images"],
                  "robustness_images_per_s": summary["robustness_images_per_s"],
                  "robustness_vs_forward": round(summary["robustness_images_per_s"] / forward_ips, 3),
                  "end_to_end_scenes_per_s": summary["end_to_end_scenes_per_s"],
                  "robustness_seconds": summary["robustness_seconds"], "robustness_peak_rss_mb": peak}
    print(json.dumps({
        "model": "ResNet50 random init", "input": cfg.input_shape, "batch": args.batch, "tta": args.tta,
        "images_n": n_summary["num_images"], "images_2n": n2_summary["num_images"],
        "forward_images_per_s": round(forward_ips, 2),
        "pipeline_images_per_s": round(float(np.median([p for _, p in rounds])), 2),
        "evaluate_vs_forward": round(float(np.median(ratios)), 3),
        "evaluate_vs_forward_rounds": [round(r, 3) for r in ratios],
        "evaluate_py_images_per_s_n": n_summary["images_per_s"],
        "evaluate_py_images_per_s_2n": n2_summary["images_per_s"],
        "peak_rss_mb_n": n_peak, "peak_rss_mb_2n": n2_peak, "peak_rss_growth_mb": round(n2_peak - n_peak, 1),
        **robust,
        "tensorflow": tf.__version__, "cpu_count": os.cpu_count()}))


if __name__ == "__main__":
    main()
