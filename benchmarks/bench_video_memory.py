"""Peak memory of a video run against the video's length: src/inference.py on a short clip and on the same clip
looped 40 times, each run in a process of its own, peak RSS from the kernel (wait4's ru_maxrss).

    python benchmarks/bench_video_memory.py                        # Megamind.avi (270 frames), then 10,800
    python benchmarks/bench_video_memory.py --frames 135 --no-naive   # 135 and 5,400 frames, ours only (quick)
    python benchmarks/bench_video_memory.py --model resnet50       # the 96x96 ResNet50 (slow: 10,800 frames)

  * ours: src/inference.py as it is (per-frame records streamed to predictions.json as the frames are written,
    the per-track report counted as they go, the stage timings kept as counts, the timeline drawn a panel at a
    time).
  * naive: the same script at commit NAIVE_COMMIT, the last one before issue 21 (every frame's record kept in
    memory until the end, then predictions.json and the per-track report made from them, the timeline drawn as
    one picture, a list of timings per frame): its src/ and config.yaml extracted with `git archive` and run from
    a temporary folder, when this checkout's git history has it (else left out, and the JSON says why).
Both with the same model file: the tiny 32x32 model the tests use (default: the classifier then costs nearly
nothing, so the runs are short and the model's own memory small, which makes the ratio stricter), or a random-init
96x96 ResNet50 (--model resnet50, as bench_inference.py). Each run writes everything it writes by default
(annotated video, labeled frames, predictions.json, log, tracks.csv, timeline).
Prints one JSON line: peak RSS (MB) of the short and the long run and their ratio, for each; target: ours'
long run within 5% of its short run.
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

from bench_archive import machine, make_model  # the same model file and overrides as the throughput benchmark
from tests_helpers import support

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parent.parent
VIDEO = support.VIDEOS / "Megamind.avi"
NAIVE_COMMIT = "9535a06"    # the last commit before issue 21: inference.py kept every frame's record in memory
TIMES = 40
TARGET_RATIO = 1.05


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=270, help="frames of the short clip (the long one: 40 times as many)")
    p.add_argument("--model", choices=("tiny", "resnet50"), default="tiny")
    p.add_argument("--no-naive", action="store_true", help="measure ours only")
    return p.parse_args()


def make_clips(tmp: Path, frames: int) -> tuple[Path, Path]:
    """The first `frames` frames of Megamind.avi, and the same looped TIMES times (MJPG AVIs, same rate)."""
    import cv2
    cap = cv2.VideoCapture(str(VIDEO))
    fps, clip = cap.get(cv2.CAP_PROP_FPS), []
    while len(clip) < frames:
        ok, frame = cap.read()
        if not ok:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            continue
        clip.append(frame)
    cap.release()
    paths = tmp / "short.avi", tmp / f"long_x{TIMES}.avi"
    for path, times in zip(paths, (1, TIMES)):
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, clip[0].shape[1::-1])
        for _ in range(times):
            for frame in clip:
                writer.write(frame)
        writer.release()
    return paths


def naive_source(tmp: Path) -> Path | str:
    """src/ (and config.yaml) at NAIVE_COMMIT in tmp/naive/, or why not."""
    dest = tmp / "naive"
    dest.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", NAIVE_COMMIT, "src", "config.yaml"],
                             capture_output=True)
    if archive.returncode != 0:
        return f"git archive {NAIVE_COMMIT} failed: {archive.stderr.decode(errors='replace').strip()[:200]}"
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest / "src"


def measure(src: Path, video: Path, overrides: list[str], results: Path) -> dict:
    """src/inference.py -v video in a process of its own (its own `emotion` package first on the path): its
    peak RSS (MB, from wait4), seconds, frames."""
    args = [sys.executable, str(src / "inference.py"), "-v", str(video), "--no-display",
            *[a for o in [*overrides, f"results_dir={results}"] for a in ("--set", o)]]
    out_path, err_path = results.with_suffix(".out"), results.with_suffix(".err")
    start = time.perf_counter()
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(args, cwd=REPO, stdout=out, stderr=err, env={**os.environ, "PYTHONPATH": str(src)})
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"inference.py exited with {proc.returncode}: {err_path.read_text()[-2000:]}")
    summary = json.loads(out_path.read_text().strip().splitlines()[-1])
    return {"peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "seconds": round(seconds, 1),
            "frames": summary["frames"], "fps": summary["fps"]}


def compare(src: Path, clips: tuple[Path, Path], overrides: list[str], tmp: Path, name: str) -> dict:
    short = measure(src, clips[0], overrides, tmp / f"{name}_short")
    long = measure(src, clips[1], overrides, tmp / f"{name}_long")
    ratio = long["peak_rss_mb"] / short["peak_rss_mb"]
    growth = (long["peak_rss_mb"] - short["peak_rss_mb"]) * 1024 / max(1, long["frames"] - short["frames"])
    return {"short": short, "long": long, "rss_ratio": round(ratio, 3), "kb_per_extra_frame": round(growth, 2)}


def main() -> int:
    args = parse_args()
    if not VIDEO.is_file():
        print(json.dumps({"benchmark": "video_memory", "skipped": f"video not found: {VIDEO}"}))
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="bench_video_memory_"))
    try:
        load_start = os.getloadavg()[0]
        clips = make_clips(tmp, args.frames)
        overrides = make_model(tmp, args.model)
        result = {"benchmark": "video_memory", "model": args.model, "short_frames": args.frames,
                  "long_frames": args.frames * TIMES, "ours": compare(REPO / "src", clips, overrides, tmp, "ours")}
        naive = "left out" if args.no_naive else naive_source(tmp)
        result["naive"] = compare(naive, clips, overrides, tmp, "naive") if isinstance(naive, Path) else naive
        result["naive_commit"] = NAIVE_COMMIT
        result.update({"target_ratio": TARGET_RATIO, "met": result["ours"]["rss_ratio"] <= TARGET_RATIO,
                       **machine(load_start)})
        print(json.dumps(result), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
