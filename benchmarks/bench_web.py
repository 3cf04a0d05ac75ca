"""The web page's live speed in headless Chromium (no GPU): frames classified per second from a fake camera.

    python benchmarks/bench_web.py                                   # models/emotion_detection_model.h5 if
                                                                     # trained, else a random-init 96x96 ResNet50
                                                                     # with random BatchNorm statistics
    python benchmarks/bench_web.py --model PATH --seconds 20 --rounds 3

The page is built twice around the same weights (emotion/serving/webpage.py), both TF.js graph models with uint8 weights, and
run three ways on TF.js's WASM backend:
  * ours: BatchNorm folded into the convolutions before conversion (export.py's path), the model in one Web
    Worker per core (TF.js 4.22's WASM backend uses one thread whatever it is told: tensorflow/tfjs#8513);
  * one_thread: the same model on the page's own thread (?workers=0);
  * naive: the SavedModel converted as it is (tensorflowjs leaves a Mul and an AddV2 after each convolution),
    on the page's own thread.
Chromium's fake camera plays ../shared/videos/Megamind.avi (a .y4m made from it; 640x480 as the page asks),
the page runs its live loop (BlazeFace -> crop -> classify -> draw) on the WASM backend, and each run counts
the frames classified in --seconds after the first second. The three alternate over --rounds (medians).
One extra run of ours on TF.js's plain JavaScript CPU backend shows what the WASM backend is worth.
Targets: >= 10 classified frames/s with one face on WASM, first result <= 3 s after the page is
ready, model download <= 25 MB. Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from tests_helpers import support

REPO = Path(__file__).resolve().parent.parent


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", metavar="PATH", help="a trained .h5 model (default: models/emotion_detection_model.h5 "
                                                   "when it exists, else random init)")
    p.add_argument("--video", default=str(REPO.parent / "shared" / "videos" / "Megamind.avi"), metavar="PATH")
    p.add_argument("--seconds", type=float, default=10, help="measured seconds per run")
    p.add_argument("--rounds", type=int, default=2, help="alternated runs of each variant")
    return p.parse_args()


def main() -> int:
    args = parse_args()
    from emotion.serving import headless_browser
    if headless_browser.browser_missing():
        print(json.dumps({"skipped": headless_browser.browser_missing()}))
        return 0
    if not Path(args.video).is_file():
        print(json.dumps({"skipped": f"no video at {args.video}"}))
        return 0

    from tests_helpers import browser
    write_y4m = browser.write_y4m

    from emotion.common.config import load_config
    from emotion.model import conversion
    from emotion.model import network as model_lib
    from emotion.serving import exporting, webpage
    random_batchnorm_model = support.random_batchnorm_model

    cfg = load_config(None, ["weights=null"])
    model_path = Path(args.model) if args.model else Path(cfg.model_save_path)
    trained = model_path.is_file()
    # Untrained: random BatchNorm statistics, as a trained model has. A fresh model's biases are all zero, and
    # the plain conversion (naive) of that graph fuses residual Adds in as conv biases, which WASM rejects.
    model = model_lib.load_model(model_path) if trained else random_batchnorm_model(cfg)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folded, n_folded = conversion.fold_batch_norms(model)
        pages = {}
        for name, source in (("ours", folded), ("naive", model)):
            saved = conversion.export_saved_model(source, tmp / f"saved_{name}")
            exporting.convert_tfjs(saved, tmp / f"tfjs_{name}", "uint8")
            webpage.build(cfg, tmp / f"tfjs_{name}", tmp / f"dist_{name}", webpage.NODE_MODULES)
            pages[name] = tmp / f"dist_{name}"
        y4m = tmp / "camera.y4m"
        frames_in_clip = write_y4m(Path(args.video), y4m)

        with webpage.serving(pages["ours"]) as ours_url, webpage.serving(pages["naive"]) as naive_url:
            urls = {"ours": ours_url, "naive": naive_url}

            def run(name: str, backend: str = "wasm", seconds: float = args.seconds) -> dict:
                result = headless_browser.run_browser("bench", f"{urls[name]}?backend={backend}", y4m=str(y4m), seconds=seconds,
                                         timeoutSeconds=300)
                if "error" in result:
                    raise RuntimeError(result["error"])
                return result

            variants = {"ours": ("ours", "wasm"), "one_thread": ("ours", "wasm&workers=0"),
                        "naive": ("naive", "wasm&workers=0")}
            runs = {name: [] for name in variants}
            for _ in range(args.rounds):
                for name, (page, backend) in variants.items():
                    runs[name].append(run(page, backend))
            cpu = run("ours", backend="cpu&workers=0", seconds=max(5.0, args.seconds / 2))

    def med(name, key):
        values = [r[key] for r in runs[name] if r[key] is not None]
        return round(statistics.median(values), 2) if values else None

    ours_fps, naive_fps = med("ours", "fps"), med("naive", "fps")
    one_face = med("ours", "fpsOneFace")
    first_result = med("ours", "firstResultAfterReadyMs")
    model_mb = round(runs["ours"][0]["modelBytes"] / 2 ** 20, 2)
    print(json.dumps({
        "model": str(model_path) if trained else "random init (96x96, random BatchNorm statistics)",
        "backend": runs["ours"][0]["ready"]["backend"],
        "clip_frames": frames_in_clip, "seconds_per_run": args.seconds, "rounds": args.rounds,
        "batchnorm_folded": n_folded,
        "ours_fps": ours_fps, "ours_fps_one_face": one_face,
        "ours_median_frame_ms": med("ours", "medianFrameMs"),
        "ours_detect_ms": med("ours", "medianDetectMs"), "ours_classify_ms": med("ours", "medianClassifyMs"),
        "frames_with_one_face": f"{sum(r['framesWithOneFace'] for r in runs['ours'])}/"
                                f"{sum(r['framesMeasured'] for r in runs['ours'])}",
        "one_thread_fps": med("one_thread", "fps"), "one_thread_classify_ms": med("one_thread", "medianClassifyMs"),
        "naive_fps": naive_fps, "naive_classify_ms": med("naive", "medianClassifyMs"),
        "speedup_vs_naive": round(ours_fps / naive_fps, 2) if naive_fps else None,
        "speedup_folding_alone": round(med("one_thread", "fps") / naive_fps, 2) if naive_fps else None,
        "cpu_backend_fps": round(cpu["fps"], 2), "cpu_backend_classify_ms": round(cpu["medianClassifyMs"] or 0, 1),
        "speedup_vs_cpu_backend": round(ours_fps / cpu["fps"], 1) if cpu["fps"] else None,
        "page_ready_ms": med("ours", "readyMs"), "first_result_after_ready_ms": first_result,
        "model_download_mb": model_mb,
        "targets_met": {"fps_one_face_ge_10": bool(one_face and one_face >= 10),
                        "first_result_le_3s": bool(first_result is not None and first_result <= 3000),
                        "model_le_25mb": model_mb <= 25},
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
