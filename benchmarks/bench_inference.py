"""Video inference end to end: src/inference.py against the seed's loop, on ../shared/videos/Megamind.avi.

    python benchmarks/bench_inference.py                  # random-init 96x96 ResNet50, 1 round
    python benchmarks/bench_inference.py --rounds 2       # alternated: seed, ours, ours/2, then reversed

Both in one process, with the same model file (random init, weights=null, 96x96), alternated over --rounds so
that both see the same load on a shared machine:
  * ours: inference.main(["-v", VIDEO, "--no-display"]): the script as a user runs it (TFLite classifier cached
    beforehand, as after a first run), outputs included (annotated MJPG video, predictions.json, the log,
    labeled frames). frames/s = frames / time from the first frame read to the last output written, as the
    script's own summary reports it; startup (model load) is reported apart.
  * ours without report: the same run with the per-track report (tracks.csv, emotion_timeline.png)
    switched off (emotion.runtime.track_report.write_report replaced by a no-op in this process): the report must keep ours
    within 5% of this (report_cost: frames/s and whole-run seconds of both, medians over the rounds).
  * ours/2: the same with --classify-every 2 (each face classified every other frame of its track, its last
    probabilities reused in between): the speed a user can trade for a 12 Hz classification at 24 fps.
  * seed: the seed's loop: read a frame, resize the whole frame to 96x96, model.predict on it, draw the label,
    write the frame to an MJPG video. No face detection: one "face" (the whole frame) per frame.
Prints one JSON line: frames/s of each, the ratios, median ms per stage of each. Targets: ours >= 40
frames/s and >= 4x the seed's loop on the same machine (checked on ours, classifying every face every frame).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tests_helpers import support

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parent.parent

import numpy as np

VIDEOS = support.VIDEOS

VIDEO = VIDEOS / "Megamind.avi"
TARGET_FPS, TARGET_RATIO = 40.0, 4.0


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--video", default=str(VIDEO), help="the video (default: ../shared/videos/Megamind.avi)")
    p.add_argument("--rounds", type=int, default=1, help="alternated rounds of both (seed, ours, ours, seed, ...)")
    return p.parse_args()


def seed_loop(model, video: Path, out: Path, class_names) -> dict:
    """The seed's inference: whole frame -> 96x96 -> model.predict, per frame; label drawn; frame written."""
    import cv2
    h, w = model.input_shape[1:3]
    cap = cv2.VideoCapture(str(video))
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    writer = None
    times = {"decode": [], "predict": [], "draw": [], "write": []}
    frames = 0
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        ok, frame = cap.read()
        if not ok:
            break
        t1 = time.perf_counter()
        x = cv2.resize(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), (w, h))[None].astype(np.float32)
        probs = model.predict(x, verbose=0)[0]
        t2 = time.perf_counter()
        k = int(np.argmax(probs))
        cv2.putText(frame, f"{class_names[k]} {probs[k]:.0%}", (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 1.0,
                    (0, 255, 0), 2)
        t3 = time.perf_counter()
        if writer is None:
            writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), fps, (frame.shape[1], frame.shape[0]))
        writer.write(frame)
        t4 = time.perf_counter()
        for name, a, b in (("decode", t0, t1), ("predict", t1, t2), ("draw", t2, t3), ("write", t3, t4)):
            times[name].append((b - a) * 1000)
        frames += 1
    if writer is not None:
        writer.release()
    cap.release()
    elapsed = time.perf_counter() - start
    return {"frames": frames, "fps": round(frames / elapsed, 2), "elapsed_s": round(elapsed, 2),
            "ms_median": {k: round(float(np.median(v)), 2) for k, v in times.items() if v}}


def ours(video: Path, overrides: list[str], *extra: str, report: bool = True) -> dict:
    """inference.main as the command line runs it; its summary (the log's last line) and run_s, the seconds
    main() took (startup, every frame, the report and the publication of the outputs included).
    report=False: without the per-track report (emotion.runtime.track_report.write_report a no-op for this call)."""
    import inference
    from emotion.runtime import track_report as report_lib
    args = ["-v", str(video), "--no-display", *extra] + [a for o in overrides for a in ("--set", o)]
    real = report_lib.write_report
    if not report:
        report_lib.write_report = lambda *a, **k: []
    try:
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()) as out:
            code = inference.main(args)
        run_s = time.perf_counter() - start
    finally:
        report_lib.write_report = real
    if code:
        raise SystemExit(f"inference.py exited with {code}")
    return json.loads(out.getvalue().strip().splitlines()[-1]) | {"run_s": run_s}


def report_cost(with_report: list[dict], without: list[dict]) -> dict:
    """Ours with the per-track report against ours without it: frames/s (the script's own figure: the report
    is written inside its timed span) and whole-run seconds, medians; target: within 5%."""
    fps, bare_fps = (float(np.median([s["fps"] for s in runs])) for runs in (with_report, without))
    run_s, bare_s = (float(np.median([s["run_s"] for s in runs])) for runs in (with_report, without))
    return {"fps_with": round(fps, 2), "fps_without": round(bare_fps, 2), "fps_ratio": round(fps / bare_fps, 3),
            "run_s_with": round(run_s, 2), "run_s_without": round(bare_s, 2), "run_s_ratio": round(run_s / bare_s, 3),
            "fps_with_each": [s["fps"] for s in with_report], "fps_without_each": [s["fps"] for s in without],
            "target": 0.95, "met": fps / bare_fps >= 0.95}


def main() -> int:
    args = parse_args()
    video = Path(args.video)
    if not video.is_file():
        print(json.dumps({"benchmark": "inference", "skipped": f"video not found: {video} (see ../shared/README.md)"}))
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="bench_inference_"))
    try:
        print(json.dumps(run(args, video, tmp)), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def run(args, video: Path, tmp: Path) -> dict:
    load_start = os.getloadavg()[0]
    from emotion.common import config
    from emotion.model import network as model_lib
    from emotion.runtime import classifier

    model_path = tmp / "models" / "model.h5"
    overrides = ["weights=null", "input_shape=[96, 96, 3]", f"model_save_path={model_path}",
                 f"results_dir={tmp / 'results'}"]
    cfg = config.load_config(None, overrides)
    model_lib.save_model_atomic(model_lib.build_model(cfg), model_path)
    classifier.load_classifier(model_path)  # the TFLite conversion, cached beside the model (a first run's cost)
    model = model_lib.load_model(model_path)
    model.predict(np.zeros((1, 96, 96, 3), np.float32), verbose=0)  # build predict()'s function once
    seed_runs, our_runs, every2_runs, bare_runs = [], [], [], []
    for r in range(max(1, args.rounds)):
        order = ("seed", "ours", "bare", "every2") if r % 2 == 0 else ("every2", "bare", "ours", "seed")
        for which in order:
            if which == "seed":
                seed_runs.append(seed_loop(model, video, tmp / "seed_out.avi", cfg.class_names))
            elif which == "ours":
                our_runs.append(ours(video, overrides))
            elif which == "bare":
                bare_runs.append(ours(video, overrides, report=False))
            else:
                every2_runs.append(ours(video, overrides, "--classify-every", "2"))
    seed_fps = float(np.median([s["fps"] for s in seed_runs]))
    our_fps = float(np.median([s["fps"] for s in our_runs]))
    every2_fps = float(np.median([s["fps"] for s in every2_runs]))
    last = our_runs[-1]
    ratio = our_fps / seed_fps if seed_fps else None
    return {
        "benchmark": "inference", "video": str(video), "frames": last["frames"], "faces": last["faces"],
        "rounds": len(our_runs),
        "ours_fps": round(our_fps, 2), "seed_fps": round(seed_fps, 2),
        "speedup": round(ratio, 2) if ratio else None,
        "ours_classify_every_2_fps": round(every2_fps, 2),
        "ours_classify_every_2_speedup": round(every2_fps / seed_fps, 2) if seed_fps else None,
        "ours_classify_every_2_faces_classified": every2_runs[-1]["faces_classified"],
        "ours_fps_each": [s["fps"] for s in our_runs], "seed_fps_each": [s["fps"] for s in seed_runs],
        "ours_classify_every_2_fps_each": [s["fps"] for s in every2_runs],
        "ours_ms_per_frame_median": last["ms_per_frame_median"],
        "ours_stage_ms_median": {k: last[f"{k}_ms_median"] for k in ("decode", "detect", "classify", "draw", "write")},
        "seed_stage_ms_median": seed_runs[-1]["ms_median"],
        "ours_startup_s": last["startup_s"], "backend": last["backend"], "skipped_frames": last["skipped_frames"],
        "tracks": last["tracks"], "dominant_track_frames": last["dominant_track_frames"],
        "targets": {"fps": TARGET_FPS, "speedup": TARGET_RATIO},
        "met": {"fps": our_fps >= TARGET_FPS, "speedup": bool(ratio and ratio >= TARGET_RATIO)},
        "report_cost": report_cost(our_runs, bare_runs),
        "cpu_count": os.cpu_count(), "load_avg_start": round(load_start, 2),
        "load_avg_end": round(os.getloadavg()[0], 2),
    }


if __name__ == "__main__":
    sys.exit(main())
