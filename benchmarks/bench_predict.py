"""predict.py on a folder of real photos: images/s with --workers 1 (one process) and --workers 2 (two worker
processes, each with its own detector and classifier), in one run, on the same model and photos.

    python benchmarks/bench_predict.py                      # faces-grayscale-350's 93 photos x 3, ResNet50
    python benchmarks/bench_predict.py --copies 1 --model tiny

The photos are ../shared/data/faces-grayscale-350/images (93 real 350x350 face photos), copied --copies times
into one folder. The model is a random-init 96x96 ResNet50 (weights null; --model tiny: the tests' tiny model),
its TFLite conversion cached beside it as after a first run. Each run is `python src/predict.py --image_path
FOLDER --json --workers N`, a process of its own, timed from its start to its end (start-up included: what a
run costs); "classify_images_per_s" is the run's own rate (its ms_per_image: from the first image to the last,
the workers' start-up included for N > 1). Prints one JSON line: both runs, the ratio of their images/s, and that
both wrote the same predictions.json.
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

from bench_archive import machine, make_model  # the same model file and machine fields as the video batch's
from tests_helpers import support

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parent.parent
PHOTOS = support.FACES_GRAY / "images"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--copies", type=int, default=3, help="times the 93 photos are copied into the folder")
    p.add_argument("--model", choices=("resnet50", "tiny"), default="resnet50")
    p.add_argument("--batch-size", type=int, default=32, help="predict.py --batch-size")
    return p.parse_args()


def make_folder(folder: Path, copies: int) -> int:
    folder.mkdir(parents=True)
    count = 0
    for c in range(copies):
        for photo in sorted(PHOTOS.glob("*.jpg")):
            shutil.copy(photo, folder / f"{photo.stem}_{c}.jpg")
            count += 1
    return count


def predict(folder: Path, overrides: list[str], results: Path, workers: int, batch_size: int) -> dict:
    command = [sys.executable, str(REPO / "src" / "predict.py"), "--image_path", str(folder), "--json",
               "--workers", str(workers), "--batch-size", str(batch_size),
               *[a for o in [*overrides, f"results_dir={results}"] for a in ("--set", o)]]
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"predict.py --workers {workers} exited with {proc.returncode}: {proc.stderr[-2000:]}")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"seconds": round(seconds, 1), "images": summary["images"], "faces": summary["faces"],
            "images_per_s": round(summary["images"] / seconds, 2),
            "classify_images_per_s": round(1000 / summary["ms_per_image"], 2)}


def main() -> int:
    args = parse_args()
    if not PHOTOS.is_dir():
        print(json.dumps({"benchmark": "predict", "skipped": f"photos not found in {PHOTOS}"}))
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="bench_predict_"))
    try:
        load_start = os.getloadavg()[0]
        images = make_folder(tmp / "photos", args.copies)
        overrides = make_model(tmp, args.model)
        runs = {f"workers_{n}": predict(tmp / "photos", overrides, tmp / f"r{n}", n, args.batch_size) for n in (1, 2)}
        same = ((tmp / "r1" / "photos" / "predictions.json").read_bytes()
                == (tmp / "r2" / "photos" / "predictions.json").read_bytes())
        print(json.dumps({
            "benchmark": "predict", "model": args.model, "images": images, "batch_size": args.batch_size, **runs,
            "ratio_2_vs_1": round(runs["workers_2"]["images_per_s"] / runs["workers_1"]["images_per_s"], 2),
            "classify_ratio_2_vs_1": round(runs["workers_2"]["classify_images_per_s"]
                                           / runs["workers_1"]["classify_images_per_s"], 2),
            "same_predictions_json": same, **machine(load_start)}), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
