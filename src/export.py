"""Export the trained model (model_save_path) for serving: SavedModel, TFLite and TensorFlow.js, with a report.

    python src/export.py                                         # every format into models/export/
    python src/export.py --formats tflite_float32,tfjs_uint8     # some of them
    python src/export.py --max-images-per-class 25               # quick run: fewer val and calibration images
    python src/export.py --dry-run                               # check the model and the data, write nothing

Formats (written under --output, default models/export/, each to a temp name and then renamed):
  saved_model      saved_model/             serving signature "serving_default" (also "serve"): float32
                                            "image" [B, H, W, 3] RGB 0..255 -> probabilities, inference mode
  tflite_float32   emotion_float32.tflite   the model as it is (within 1e-4 of Keras; measured 1e-6 to 2e-5)
  tflite_float16   emotion_float16.tflite   float16 weights: half the file
  tflite_int8      emotion_int8.tflite      full integer, calibrated on training images; float32 in and out
  tfjs_float32     tfjs_float32/            TensorFlow.js graph model (model.json + weight shards)
  tfjs_uint8       tfjs_uint8/              the same with uint8-quantized weights (a quarter of the download)
  tfjs_float16     tfjs_float16/            float16-quantized weights (half); not in the default set
All start from classifier.export_saved_model (the model called with training=False, so no BatchNorm
update ops). TF.js converts a second SavedModel made from classifier.fold_batch_norms(model): its converter
does not fold BatchNorm (it leaves a Mul and an AddV2 after each of the 53 convolutions), so every BatchNorm
is folded into its convolution first, giving 53 _FusedConv2D ops with rank-1 biases (BiasAdd or BiasAdd +
Relu), which TF.js's WASM backend runs. Any rank-4 [1, 1, 1, C] fused bias left is reshaped to [C] (same
bytes), since that backend rejects it.

Both folders are checked for writing before any work (a read-only one is one error line).
Writes <performance_dir>/export_report.csv, one row per format: format, path, size_mb, latency_ms_batch1
(median on this machine: SavedModel through its serving signature, TFLite through classifier.EmotionClassifier,
TF.js through the web page's classify() in headless Chromium), val_accuracy, accuracy_drop_points (Keras minus
the format, in points), max_abs_prob_diff_vs_keras, threshold (float32 formats: 1e-4 probability difference;
quantized: at most 0.5 points of accuracy lost), within_threshold, note. The TF.js rows are measured by
building the page around each model (src/web.py) and classifying the val images in Debian's Chromium on the
backend the page picks (WASM without a GPU); with no Chromium, node or web/node_modules here, or with
--no-browser, their latency and accuracy are left empty and the note says why. A format outside
its threshold gives a warning line and is listed under "failed_checks" in the final JSON line (the exit code
stays 0: a quantized format on a small or untrained model can miss it by chance).
Accuracy uses the val split (--max-images-per-class N for a quick run); int8 calibration uses up to
--calibration-images training images, spread evenly over the classes.
"""
from __future__ import annotations

import csv
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

from emotion import cli
from emotion import atomic
from emotion import paths
from emotion.config import UserError

TFLITE_FORMATS = {"tflite_float32": "float32", "tflite_float16": "float16", "tflite_int8": "int8"}
TFJS_FORMATS = {"tfjs_float32": None, "tfjs_uint8": "uint8", "tfjs_float16": "float16"}
ALL_FORMATS = ["saved_model", *TFLITE_FORMATS, *TFJS_FORMATS]
DEFAULT_FORMATS = ["saved_model", "tflite_float32", "tflite_float16", "tflite_int8", "tfjs_float32", "tfjs_uint8"]
OUTPUT_NAMES = {"saved_model": "saved_model", "tflite_float32": "emotion_float32.tflite",
                "tflite_float16": "emotion_float16.tflite", "tflite_int8": "emotion_int8.tflite",
                "tfjs_float32": "tfjs_float32", "tfjs_uint8": "tfjs_uint8", "tfjs_float16": "tfjs_float16"}
FLOAT32_FORMATS = {"saved_model", "tflite_float32", "tfjs_float32"}
COLUMNS = ["format", "path", "size_mb", "latency_ms_batch1", "val_accuracy", "accuracy_drop_points",
           "max_abs_prob_diff_vs_keras", "threshold", "within_threshold", "note"]
MAX_PROB_DIFF = 1e-4      # float32 formats: largest probability difference from Keras
MAX_DROP_POINTS = 0.5     # quantized formats: accuracy points they may lose
BROWSER_NOTE = "measured in the browser"
REPORT_NAME = "export_report.csv"


def _formats(text: str) -> list[str]:
    import argparse
    names = [f.strip() for f in text.split(",") if f.strip()]
    if names == ["all"]:
        return list(DEFAULT_FORMATS)
    unknown = [f for f in names if f not in ALL_FORMATS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown format(s) {', '.join(unknown) or repr(text)}; "
                                         f"choose from {', '.join(ALL_FORMATS)} (or all)")
    return [f for f in ALL_FORMATS if f in names]  # canonical order, no duplicates


def parse_args(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--output", default=None, metavar="DIR",
                   help="folder for the exported models (default: models/export/ beside model_save_path)")
    p.add_argument("--formats", type=_formats, default=list(DEFAULT_FORMATS), metavar="LIST",
                   help=f"comma-separated formats (all = {','.join(DEFAULT_FORMATS)})")
    p.add_argument("--max-images-per-class", type=cli.positive_int, default=None, metavar="N",
                   help="use at most N val images per class for the accuracy check (quick runs)")
    p.add_argument("--calibration-images", type=cli.positive_int, default=256, metavar="N",
                   help="training images that calibrate the int8 TFLite model")
    p.add_argument("--latency-runs", type=cli.positive_int, default=30, metavar="N",
                   help="timed batch-1 calls per format (the median is reported)")
    p.add_argument("--no-browser", action="store_true",
                   help="leave the TF.js rows' latency and accuracy empty instead of measuring them in headless Chromium")
    p.add_argument("--dry-run", action="store_true", help="check the model and the data, print the plan, write nothing")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = cli.load_config(args)
    model_path = Path(cfg.model_save_path)
    out_dir = Path(args.output) if args.output else model_path.parent / "export"
    perf_dir = Path(cfg.performance_dir)
    val_dir = Path(cfg.data_path) / "val"
    train_dir = Path(cfg.data_path) / "train"
    formats = args.formats

    paths.require_model_file(model_path)
    if not args.dry_run:  # before minutes of work, not after them
        paths.check_writable(out_dir, "--output folder", hint="--output DIR")
        paths.check_writable(perf_dir, "performance_dir")

    import numpy as np

    from emotion import classifier  # TensorFlow is imported from here on, after the arguments are parsed
    from emotion import data_preprocessing as dp
    from emotion import model as model_lib
    import web
    from emotion.evaluation import match_model

    dp.list_split(val_dir, cfg.class_names, args.max_images_per_class)  # a missing folder: one line, before the load
    per_class_calibration = max(1, math.ceil(args.calibration_images / len(cfg.class_names)))
    if "tflite_int8" in formats:
        dp.list_split(train_dir, cfg.class_names, per_class_calibration)
    model = model_lib.load_model(model_path)
    cfg = match_model(cfg, model, model_path)
    print(f"{'would export' if args.dry_run else 'exporting'} {model_path} ({model.count_params():,} parameters, "
          f"input {list(cfg.input_shape)}) as {', '.join(formats)} to {out_dir}", flush=True)
    if args.dry_run:
        print(f"dry run: would write {', '.join(OUTPUT_NAMES[f] for f in formats)} to {out_dir} "
              f"and {REPORT_NAME} to {perf_dir}")
        print(json.dumps({"dry_run": True, "model": str(model_path), "formats": formats, "output": str(out_dir),
                          "report": str(perf_dir / REPORT_NAME)}))
        return 0

    x_val, y_val = _load_images(dp, val_dir, cfg, args.max_images_per_class)
    print(f"val split: {len(x_val)} images from {val_dir}", flush=True)
    keras_probs = classifier.KerasClassifier(model).predict(x_val)
    keras_acc = _accuracy(keras_probs, y_val)
    calibration = None
    if "tflite_int8" in formats:
        calibration, _ = _load_images(dp, train_dir, cfg, per_class_calibration)
        calibration = calibration[:args.calibration_images]
        print(f"int8 calibration: {len(calibration)} images from {train_dir}", flush=True)

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    scratch = out_dir / f".export-tmp-{os.getpid()}"
    try:
        if "saved_model" in formats:
            saved_model_dir = out_dir / OUTPUT_NAMES["saved_model"]
            start = time.perf_counter()
            with atomic.atomic_dir(saved_model_dir) as tmp:
                classifier.export_saved_model(model, tmp)
            print(f"  saved_model written in {time.perf_counter() - start:.1f} s", flush=True)
            probs, latency = _run_saved_model(saved_model_dir, x_val, args.latency_runs)
            rows.append(_row("saved_model", saved_model_dir, latency, probs, y_val, keras_probs, keras_acc,
                             note="serving_default signature, TensorFlow"))
        for fmt, quantization in TFLITE_FORMATS.items():
            if fmt not in formats:
                continue
            start = time.perf_counter()
            data = classifier.to_tflite(model, quantization,
                                        representative_images=calibration if quantization == "int8" else None)
            path = out_dir / OUTPUT_NAMES[fmt]
            atomic.write_bytes(path, data)
            print(f"  {fmt} written in {time.perf_counter() - start:.1f} s", flush=True)
            clf = classifier.EmotionClassifier(path)
            probs = clf.predict(x_val)
            latency = _median_ms(lambda: clf.predict(x_val[:1]), args.latency_runs)
            rows.append(_row(fmt, path, latency, probs, y_val, keras_probs, keras_acc,
                             note=f"TFLite XNNPACK, {clf.num_threads} thread(s)"))
        folded_dir = None
        pixels = np.clip(np.round(x_val), 0, 255)  # the val images as the lossless PNGs the page reads
        reference = None  # Keras on exactly those pixels, computed once when a browser measures a TF.js format
        for fmt, quantization in TFJS_FORMATS.items():
            if fmt not in formats:
                continue
            start = time.perf_counter()
            if folded_dir is None:
                folded, count = classifier.fold_batch_norms(model)
                folded_dir = classifier.export_saved_model(folded, scratch / "saved_model_folded")
                print(f"  {count} BatchNorm layers folded into their convolutions for TF.js", flush=True)
            path = out_dir / OUTPUT_NAMES[fmt]
            with atomic.atomic_dir(path) as tmp:
                flattened = convert_tfjs(folded_dir, tmp, quantization)
            print(f"  {fmt} written in {time.perf_counter() - start:.1f} s", flush=True)
            flat_note = f"; {flattened} rank-4 conv biases reshaped to rank 1" if flattened else ""
            missing = "skipped (--no-browser)" if args.no_browser else web.browser_missing()
            if missing:
                rows.append(_row(fmt, path, None, None, y_val, keras_probs, keras_acc,
                                 note=f"{BROWSER_NOTE}: not run here, {missing}{flat_note}"))
                continue
            start = time.perf_counter()
            if reference is None:
                reference = (keras_probs if np.array_equal(pixels, x_val)
                             else classifier.KerasClassifier(model).predict(pixels))
            run = web.classify_in_browser(cfg, path, pixels, scratch / fmt, latency_runs=args.latency_runs)
            print(f"  {fmt} classified {len(x_val)} images in headless Chromium ({run['backend']}) "
                  f"in {time.perf_counter() - start:.1f} s", flush=True)
            rows.append(_row(fmt, path, run["latency_ms"], run["probs"], y_val, reference, _accuracy(reference, y_val),
                             note=f"headless Chromium, TF.js {run['backend']}, page classify(){flat_note}"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    report = perf_dir / REPORT_NAME
    write_report(report, rows)
    print_table(rows, keras_acc, len(x_val))
    failed = [r for r in rows if r["within_threshold"] is False]
    for r in failed:
        print(f"warning: {r['format']} is outside its threshold ({r['threshold']}): accuracy drop "
              f"{r['accuracy_drop_points']} points, max probability difference {r['max_abs_prob_diff_vs_keras']}",
              file=sys.stderr)
    print(f"wrote {len(rows)} format(s) to {out_dir} and the report to {report}")
    print(json.dumps({"formats": [r["format"] for r in rows], "output": str(out_dir), "report": str(report),
                      "num_val_images": len(x_val), "keras_val_accuracy": round(keras_acc, 6),
                      "size_mb": {r["format"]: r["size_mb"] for r in rows},
                      "failed_checks": [r["format"] for r in failed]}), flush=True)
    return 0


# ------------------------------------------------------------------------------------------------
# Conversion and measurement


def convert_tfjs(saved_model_dir: Path, output_dir: Path, quantization: str | None) -> int:
    """SavedModel -> TF.js graph model in output_dir (model.json + shards); quantization None | uint8 | float16.
    Returns how many rank-4 conv biases were reshaped to rank 1 (see flatten_fused_biases)."""
    import contextlib
    import io

    from tensorflowjs.converters import convert_tf_saved_model
    dtype_map = {quantization: "*"} if quantization else None
    with contextlib.redirect_stdout(io.StringIO()):  # the converter prints its progress
        convert_tf_saved_model(str(saved_model_dir), str(output_dir), signature_def="serving_default",
                               saved_model_tags="serve", quantization_dtype_map=dtype_map)
    return flatten_fused_biases(Path(output_dir) / "model.json")


def flatten_fused_biases(model_json: Path) -> int:
    """Reshape the [1, 1, 1, C] bias weights of _FusedConv2D / FusedDepthwiseConv2dNative nodes to [C].

    Keras 3's BatchNorm broadcasts its offset as [1, 1, 1, C]; folded into the convolution, that becomes a
    rank-4 BiasAdd argument, which TF.js's WASM backend rejects ("FusedConv2D only supports rank-1 bias").
    The weight bytes are the same for both shapes, so only model.json changes. Weights that any other node
    also reads keep their shape. Returns the number of weights reshaped."""
    spec = json.loads(model_json.read_text(encoding="utf-8"))
    nodes = spec["modelTopology"]["node"]
    readers: dict[str, int] = {}
    for node in nodes:
        for name in node.get("input", []):
            readers[name.split(":")[0]] = readers.get(name.split(":")[0], 0) + 1
    biases = set()
    for node in nodes:
        if node.get("op") in ("_FusedConv2D", "FusedDepthwiseConv2dNative") and len(node.get("input", [])) >= 3:
            name = node["input"][2].split(":")[0]
            if readers.get(name) == 1:
                biases.add(name)
    changed = 0
    for group in spec["weightsManifest"]:
        for weight in group["weights"]:
            shape = weight.get("shape", [])
            if weight["name"] in biases and len(shape) == 4 and shape[:3] == [1, 1, 1]:
                weight["shape"] = [shape[3]]
                changed += 1
    if changed:
        model_json.write_text(json.dumps(spec), encoding="utf-8")  # inside atomic_dir's temp folder
    return changed


def tfjs_fused_bias_ranks(model_json: Path) -> dict[int, int]:
    """{rank: count} of the bias argument of every fused convolution in a TF.js graph model (weights only;
    a bias computed by another node counts under its rank when known, else -1)."""
    spec = json.loads(Path(model_json).read_text(encoding="utf-8"))
    shapes = {w["name"]: w["shape"] for g in spec["weightsManifest"] for w in g["weights"]}
    ranks: dict[int, int] = {}
    for node in spec["modelTopology"]["node"]:
        if node.get("op") in ("_FusedConv2D", "FusedDepthwiseConv2dNative") and len(node.get("input", [])) >= 3:
            shape = shapes.get(node["input"][2].split(":")[0])
            rank = len(shape) if shape is not None else -1
            ranks[rank] = ranks.get(rank, 0) + 1
    return ranks


def _run_saved_model(path: Path, x, runs: int):
    """(probabilities over x, median batch-1 latency in ms) through the SavedModel's serving signature."""
    import numpy as np
    import tensorflow as tf
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]

    def call(batch):
        out = serve(image=tf.constant(batch))
        return next(iter(out.values())).numpy()

    probs = np.concatenate([call(x[i:i + 64]) for i in range(0, len(x), 64)])
    one = x[:1]
    latency = _median_ms(lambda: call(one), runs)
    return probs, latency


def _median_ms(fn, runs: int) -> float:
    import numpy as np
    for _ in range(3):  # warm-up (thread pools, first-call allocations)
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1000


def _load_images(dp, split_dir: Path, cfg, per_class: int | None):
    """(float32 [N, H, W, 3] RGB 0..255, int labels [N]) of one split, in make_dataset's order."""
    import numpy as np
    ds, _info = dp.make_dataset(split_dir, cfg, training=False, limit_per_class=per_class, cache=False)
    xs, ys = [], []
    for x, y in ds:
        xs.append(x.numpy())
        ys.append(y.numpy())
    return np.concatenate(xs), np.concatenate(ys)


def _accuracy(probs, y) -> float:
    return float((probs.argmax(axis=1) == y).mean())


def _size_mb(path: Path) -> float:
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size
    return round(size / 2 ** 20, 3)


def _row(fmt, path: Path, latency, probs, y, keras_probs, keras_acc, note="") -> dict:
    import numpy as np
    float32 = fmt in FLOAT32_FORMATS
    row = {"format": fmt, "path": str(path), "size_mb": _size_mb(path),
           "latency_ms_batch1": None if latency is None else round(latency, 3),
           "val_accuracy": None, "accuracy_drop_points": None, "max_abs_prob_diff_vs_keras": None,
           "threshold": f"max_abs_prob_diff <= {MAX_PROB_DIFF:g}" if float32
           else f"accuracy_drop_points <= {MAX_DROP_POINTS:g}",
           "within_threshold": None, "note": note}
    if probs is not None:
        acc = _accuracy(probs, y)
        drop = (keras_acc - acc) * 100
        diff = float(np.max(np.abs(probs - keras_probs)))
        row.update(val_accuracy=round(acc, 6), accuracy_drop_points=round(drop, 4),
                   max_abs_prob_diff_vs_keras=float(f"{diff:.3g}"),
                   within_threshold=bool(diff <= MAX_PROB_DIFF) if float32 else bool(drop <= MAX_DROP_POINTS))
    return row


# ------------------------------------------------------------------------------------------------
# Files and output


def write_report(path: Path, rows: list[dict]) -> None:
    with atomic.atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row[k] is None else row[k] for k in COLUMNS})


def print_table(rows: list[dict], keras_acc: float, n: int) -> None:
    def fmt(value, spec=""):
        return "-" if value is None else format(value, spec)

    print(f"\nKeras model: val accuracy {keras_acc:.4f} on {n} images")
    header = f"{'format':<16}{'size MB':>10}{'ms/img':>10}{'val acc':>10}{'drop pts':>10}{'max |dp|':>11}  ok"
    print(header)
    print("-" * len(header))
    for r in rows:
        ok = {True: "yes", False: "NO", None: "-"}[r["within_threshold"]]
        print(f"{r['format']:<16}{fmt(r['size_mb'], '.2f'):>10}{fmt(r['latency_ms_batch1'], '.2f'):>10}"
              f"{fmt(r['val_accuracy'], '.4f'):>10}{fmt(r['accuracy_drop_points'], '.2f'):>10}"
              f"{fmt(r['max_abs_prob_diff_vs_keras'], '.2e'):>11}  {ok}")
    if any(r["format"].startswith("tfjs") and r["latency_ms_batch1"] is None for r in rows):
        print(f"(TF.js: latency and accuracy {BROWSER_NOTE}: no browser here)")
    elif any(r["format"].startswith("tfjs") for r in rows):
        print("(TF.js: latency and accuracy measured in headless Chromium: the page's classify() of one face)")
    print()


if __name__ == "__main__":
    cli.run(main)
