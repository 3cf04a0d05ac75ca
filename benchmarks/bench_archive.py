"""Archive throughput: a folder of short clips analysed by today's one-at-a-time loop and by the batch with 1 and
2 workers, in one run, on the same model and clips.

    python benchmarks/bench_archive.py                       # 8 clips of 60 frames, random-init 96x96 ResNet50
    python benchmarks/bench_archive.py --clips 6 --frames 90 --model tiny

The clips are cut from ../shared/videos (Megamind.avi and Megamind_bugy.avi, 720x528, 24 and 30 fps) at
different places. Every run is a process of its own, timed from its start to its end (start-up included: that is
what an archive run costs):
  * loop: `for f in clips/*; do python src/inference.py -v "$f" --no-display; done`, each video into a
    results_dir of its own (the one-at-a-time loop an archive needed before the batch: a model load per video);
  * batch, 1 worker and 2 workers: `python src/inference.py -v clips/ --workers N` (one model load per worker);
  * batch, 1 worker, --no-video: the same without the annotated videos and labeled frames (the CSVs only).
Prints one JSON line: seconds, frames and frames/s (frames analysed / wall seconds) of each, and the ratios to the
loop (and --no-video's to the batch with video).
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

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parent.parent
SOURCES = [support.VIDEOS / "Megamind.avi", support.VIDEOS / "Megamind_bugy.avi"]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=8, help="clips in the archive")
    p.add_argument("--frames", type=int, default=60, help="frames per clip")
    p.add_argument("--model", choices=("resnet50", "tiny"), default="resnet50")
    return p.parse_args()


def make_archive(folder: Path, clips: int, frames: int) -> int:
    """`clips` clips of `frames` frames cut from SOURCES in turn, each from another place; the frames in all."""
    import cv2
    folder.mkdir(parents=True)
    total = 0
    for i in range(clips):
        source = SOURCES[i % len(SOURCES)]
        cap = cv2.VideoCapture(str(source))
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        cap.set(cv2.CAP_PROP_POS_FRAMES, (i * 37) % max(1, count - frames))
        fps, writer = cap.get(cv2.CAP_PROP_FPS), None
        for _ in range(frames):
            ok, frame = cap.read()
            if not ok:
                break
            if writer is None:
                writer = cv2.VideoWriter(str(folder / f"clip{i:02d}.avi"), cv2.VideoWriter_fourcc(*"MJPG"), fps,
                                         frame.shape[1::-1])
            writer.write(frame)
            total += 1
        writer.release()
        cap.release()
    return total


def machine(load_start: float) -> dict:
    """A result's machine fields: cores, and the load average when the benchmark started and ended (a loaded
    machine explains a slow figure; compare ratios measured in one run)."""
    return {"cpu_count": os.cpu_count(), "load_avg_start": round(load_start, 2),
            "load_avg_end": round(os.getloadavg()[0], 2)}


def make_model(tmp: Path, kind: str) -> list[str]:
    """The model file (its TFLite conversion cached beside it, as after a first run) and its --set overrides."""
    from emotion.common import config
    from emotion.model import network
    from emotion.runtime import classifier
    path = tmp / "model" / "model.h5"
    shape = [32, 32, 3] if kind == "tiny" else [96, 96, 3]
    overrides = ["weights=null", f"input_shape={shape}", f"model_save_path={path}", "face_detector=blazeface"]
    model = support.tiny_model(tuple(shape)) if kind == "tiny" else network.build_model(config.load_config(None, overrides))
    network.save_model_atomic(model, path)
    classifier.load_classifier(path, prefer="tflite", num_threads=1)
    return overrides


def script(*args: str, overrides: list[str], results: Path) -> tuple[float, str]:
    """src/inference.py args in a process of its own: (wall seconds, its stdout)."""
    command = [sys.executable, str(REPO / "src" / "inference.py"), *args,
               *[a for o in [*overrides, f"results_dir={results}"] for a in ("--set", o)]]
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} ... exited with {proc.returncode}: {proc.stderr[-2000:]}")
    return seconds, proc.stdout


def loop(archive: Path, overrides: list[str], tmp: Path) -> dict:
    """Today's loop: inference.py once per video."""
    seconds, frames = 0.0, 0
    for i, clip in enumerate(sorted(archive.iterdir())):
        s, out = script("-v", str(clip), "--no-display", overrides=overrides, results=tmp / "loop" / str(i))
        seconds += s
        frames += json.loads(out.strip().splitlines()[-1])["frames"]
    return {"seconds": round(seconds, 1), "frames": frames, "fps": round(frames / seconds, 2)}


def batch(archive: Path, overrides: list[str], results: Path, *extra: str) -> dict:
    seconds, out = script("-v", str(archive), *extra, overrides=overrides, results=results)
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["done"] == summary["videos"], summary
    return {"seconds": round(seconds, 1), "frames": summary["frames"], "fps": round(summary["frames"] / seconds, 2),
            "workers": summary["workers"]}


def main() -> int:
    args = parse_args()
    if not all(p.is_file() for p in SOURCES):
        print(json.dumps({"benchmark": "archive", "skipped": f"videos not found in {support.VIDEOS}"}))
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="bench_archive_"))
    try:
        load_start = os.getloadavg()[0]
        frames = make_archive(tmp / "clips", args.clips, args.frames)
        overrides = make_model(tmp, args.model)
        runs = {"loop": loop(tmp / "clips", overrides, tmp),
                "batch_1_worker": batch(tmp / "clips", overrides, tmp / "b1", "--workers", "1"),
                "batch_2_workers": batch(tmp / "clips", overrides, tmp / "b2", "--workers", "2"),
                "batch_1_worker_no_video": batch(tmp / "clips", overrides, tmp / "b1n", "--workers", "1", "--no-video")}
        base = runs["loop"]["seconds"]
        print(json.dumps({
            "benchmark": "archive", "model": args.model, "clips": args.clips, "frames": frames, **runs,
            "speedup_vs_loop": {k: round(base / v["seconds"], 2) for k, v in runs.items() if k != "loop"},
            "no_video_speedup": round(runs["batch_1_worker"]["seconds"] / runs["batch_1_worker_no_video"]["seconds"], 2),
            **machine(load_start)}), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
