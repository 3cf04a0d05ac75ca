"""Exporting a trained model for serving (what src/export.py runs): SavedModel, TFLite and TensorFlow.js files,
each measured against the Keras model on the val split, and the report of it.

    job = ExportJob(model_path, out_dir, perf_dir, formats=parse_formats("tflite_float32,tfjs_uint8"))
    job = prepare(job, cfg)                 # one-line errors before any work; drops TF.js formats (one line
                                            # saying why) when the TF.js converter is not installed
    summary = export(job, cfg, model)       # writes the files and export_report.csv, prints the table
    convert_tfjs(saved_model_dir, out, "uint8")   # SavedModel -> TF.js graph model, fused biases flattened

The TF.js converter (the tensorflowjs package) is an optional extra (requirements-tfjs.txt: Linux, macOS
or WSL); SavedModel and TFLite need only the core. Conversions are emotion/model/conversion.py; the TF.js rows
are measured by the web page's classify() in headless Chromium (emotion/serving/headless_browser.py).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import shutil
import time
from pathlib import Path

from emotion.common import atomic, console, outputs, paths
from emotion.common.errors import UserError
from emotion.model import tfjs_graph
from emotion.serving import headless_browser

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
TFJS_INSTALL = tfjs_graph.CONVERTER_INSTALL


@dataclasses.dataclass
class ExportJob:
    """What to export and how. browser: measure the TF.js formats in headless Chromium (when it is here)."""
    model_path: Path
    out_dir: Path
    perf_dir: Path
    formats: list[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_FORMATS))
    max_images_per_class: int | None = None
    calibration_images: int = 256
    latency_runs: int = 30
    browser: bool = True
    dry_run: bool = False


@dataclasses.dataclass
class ValData:
    """The val images (float32 RGB 0..255), their labels, and the Keras model's probabilities and accuracy."""
    x: object
    y: object
    keras_probs: object
    keras_acc: float


def parse_formats(text: str) -> list[str]:
    """"a,b" -> the formats in canonical order, no duplicates ("all" = DEFAULT_FORMATS); ValueError if unknown."""
    names = [f.strip() for f in text.split(",") if f.strip()]
    if names == ["all"]:
        return list(DEFAULT_FORMATS)
    unknown = [f for f in names if f not in ALL_FORMATS]
    if unknown or not names:
        raise ValueError(f"unknown format(s) {', '.join(unknown) or repr(text)}; "
                         f"choose from {', '.join(ALL_FORMATS)} (or all)")
    return [f for f in ALL_FORMATS if f in names]


def formats_argument(text: str) -> list[str]:
    """parse_formats as an argparse type (export.py's and pipeline.py's --formats): an unknown format is one
    usage line and exit code 2 before any work, never a failure at the end of a long pipeline."""
    import argparse
    try:
        return parse_formats(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def tfjs_converter_missing() -> str | None:
    """Why the TF.js formats cannot be converted here (None when they can). Imports TensorFlow."""
    try:
        import tensorflowjs.converters  # noqa: F401
    except ImportError as exc:
        if (exc.name or "tensorflowjs").split(".")[0] == "tensorflowjs":
            return "the TF.js converter is not installed"
        return f"the TF.js converter cannot be imported ({exc})"
    return None


# ------------------------------------------------------------------------------------------------
# The export


def prepare(job: ExportJob, cfg) -> ExportJob:
    """Check what export() needs, before minutes of work (each problem one UserError line), and return the
    job with the TF.js formats dropped when their converter is missing (one line printed saying why)."""
    paths.require_model_file(job.model_path)
    if not job.dry_run:
        paths.check_writable(job.out_dir, "--output folder", hint="--output DIR")
        paths.check_writable(job.perf_dir, "performance_dir")
    tfjs = [f for f in job.formats if f in TFJS_FORMATS]
    why = tfjs_converter_missing() if tfjs else None
    if why:
        if len(tfjs) == len(job.formats):
            raise UserError(f"cannot export {', '.join(tfjs)}: {why} ({TFJS_INSTALL})")
        print(f"skipped {', '.join(tfjs)}: {why} ({TFJS_INSTALL})", flush=True)
        job = dataclasses.replace(job, formats=[f for f in job.formats if f not in tfjs])
    from emotion.data import scanning
    data = Path(cfg.data_path)
    scanning.list_split(data / "val", cfg.class_names, job.max_images_per_class)  # a missing folder: one line
    if "tflite_int8" in job.formats:
        scanning.list_split(data / "train", cfg.class_names, _calibration_per_class(job, cfg))
    if not job.dry_run:
        staged_outputs(job).check([job.model_path])  # never a user's folder, never the model itself
    return job


def staged_outputs(job: ExportJob) -> outputs.Staged:
    """The export's files as one set (outputs.Staged): every format and the report are written under temporary
    names and published together at the end, so out_dir and the report always describe one model and one run."""
    finals = {fmt: job.out_dir / OUTPUT_NAMES[fmt] for fmt in job.formats}
    finals["report"] = job.perf_dir / REPORT_NAME
    return outputs.Staged(finals, journal_dir=job.out_dir, folders={f for f in job.formats if f not in TFLITE_FORMATS},
                          legacy=_written_by_an_older_export)


def _written_by_an_older_export(name: str) -> bool:
    """The entries of a format folder that exports wrote before folders were marked (SavedModel, TF.js)."""
    return (name in {"saved_model.pb", "fingerprint.pb", "variables", "assets", "model.json"}
            or (name.startswith("group") and name.endswith(".bin")))


def export(job: ExportJob, cfg, model) -> dict:
    """Write job.formats of `model` (the file job.model_path, loaded) to job.out_dir and the report to
    job.perf_dir (after prepare); print progress and the table. Returns the summary export.py prints as its
    JSON line."""
    print(f"{'would export' if job.dry_run else 'exporting'} {job.model_path} ({model.count_params():,} "
          f"parameters, input {list(cfg.input_shape)}) as {', '.join(job.formats)} to {job.out_dir}", flush=True)
    if job.dry_run:
        print(f"dry run: would write {', '.join(OUTPUT_NAMES[f] for f in job.formats)} to {job.out_dir} "
              f"and {REPORT_NAME} to {job.perf_dir}")
        return {"dry_run": True, "model": str(job.model_path), "formats": job.formats,
                "output": str(job.out_dir), "report": str(job.perf_dir / REPORT_NAME)}
    val = _val_data(job, cfg, model)
    calibration = _calibration(job, cfg) if "tflite_int8" in job.formats else None
    staged = staged_outputs(job)
    staged.prepare()
    scratch = job.out_dir / f".export-tmp-{os.getpid()}"
    try:
        rows = _export_saved_model(job, staged, model, val) if "saved_model" in job.formats else []
        rows += _export_tflite(job, staged, model, val, calibration, SharedFrozen(model))
        rows += _export_tfjs(job, staged, cfg, model, val, scratch)
        summary = _report(job, staged, rows, val)
        staged.publish()
    except BaseException:
        staged.discard()  # the previous export stays, whole
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return summary


def _calibration_per_class(job: ExportJob, cfg) -> int:
    return max(1, math.ceil(job.calibration_images / len(cfg.class_names)))


def _val_data(job: ExportJob, cfg, model) -> ValData:
    from emotion.runtime import classifier
    val_dir = Path(cfg.data_path) / "val"
    x, y = load_images(val_dir, cfg, job.max_images_per_class)
    print(f"val split: {len(x)} images from {val_dir}", flush=True)
    probs = classifier.KerasClassifier(model).predict(x)
    return ValData(x, y, probs, accuracy(probs, y))


def _calibration(job: ExportJob, cfg):
    """Up to job.calibration_images training images, spread evenly over the classes (int8's calibration)."""
    train_dir = Path(cfg.data_path) / "train"
    images, _ = load_images(train_dir, cfg, _calibration_per_class(job, cfg))
    images = images[:job.calibration_images]
    print(f"int8 calibration: {len(images)} images from {train_dir}", flush=True)
    return images


def _export_saved_model(job: ExportJob, staged: outputs.Staged, model, val: ValData) -> list[dict]:
    from emotion.model import conversion
    path = staged.tmp["saved_model"]
    start = time.perf_counter()
    conversion.export_saved_model(model, path)
    print(f"  saved_model written in {time.perf_counter() - start:.1f} s", flush=True)
    probs, latency = run_saved_model(path, val.x, job.latency_runs)
    return [make_row("saved_model", path, latency, probs, val, note="serving_default signature, TensorFlow",
                     final=staged.finals["saved_model"])]


class SharedFrozen:
    """The model's inference function with its weights as constants (conversion.frozen_function, the channel
    flip a REVERSE), made once on first use: the float TFLite formats are all converted from it."""

    def __init__(self, model):
        self.model, self.frozen = model, None

    def __call__(self):
        if self.frozen is None:
            from emotion.model import conversion
            self.frozen = conversion.frozen_function(self.model)
        return self.frozen


def _export_tflite(job: ExportJob, staged: outputs.Staged, model, val: ValData, calibration,
                   shared: SharedFrozen) -> list[dict]:
    from emotion.model import conversion
    from emotion.runtime import classifier
    rows = []
    for fmt, quantization in TFLITE_FORMATS.items():
        if fmt not in job.formats:
            continue
        start = time.perf_counter()
        source = ""
        if quantization == "float32":
            # What predict.py and inference.py run: the model file's cached conversion (the same to_tflite of
            # the same file) when they made one, else converted here and cached for them (a damaged cache is
            # converted again).
            cached = classifier.EmotionClassifier.from_model_file(
                job.model_path, num_threads=1, convert=lambda: conversion.tflite_from_function(shared()))
            data = cached.tflite_bytes()
            source = "" if cached.converted else f" (the cached conversion {cached.path.name})"
        elif conversion.channel_flip_for(quantization) == "reverse":
            data = conversion.tflite_from_function(shared(), quantization)
        else:
            data = conversion.to_tflite(model, quantization, representative_images=calibration)
        path = staged.tmp[fmt]
        path.write_bytes(data)
        print(f"  {fmt} written in {time.perf_counter() - start:.1f} s{source}", flush=True)
        clf = classifier.EmotionClassifier(path)
        probs = clf.predict(val.x)
        latency = median_call_ms(lambda: clf.predict(val.x[:1]), job.latency_runs)
        rows.append(make_row(fmt, path, latency, probs, val, note=f"TFLite XNNPACK, {clf.num_threads} thread(s)",
                             final=staged.finals[fmt]))
    return rows


def _export_tfjs(job: ExportJob, staged: outputs.Staged, cfg, model, val: ValData, scratch: Path) -> list[dict]:
    """The TF.js formats, converted from one BatchNorm-folded SavedModel, each measured in the browser."""
    from emotion.model import conversion
    rows, folded_dir, reference = [], None, None
    for fmt, quantization in TFJS_FORMATS.items():
        if fmt not in job.formats:
            continue
        start = time.perf_counter()
        if folded_dir is None:
            folded, count = conversion.fold_batch_norms(model)
            folded_dir = conversion.export_saved_model(folded, scratch / "saved_model_folded")
            print(f"  {count} BatchNorm layers folded into their convolutions for TF.js", flush=True)
        path = staged.tmp[fmt]
        flattened = convert_tfjs(folded_dir, path, quantization)
        print(f"  {fmt} written in {time.perf_counter() - start:.1f} s", flush=True)
        flat_note = f"; {flattened} rank-4 conv biases reshaped to rank 1" if flattened else ""
        missing = headless_browser.browser_missing() if job.browser else "skipped (--no-browser)"
        if missing:
            rows.append(make_row(fmt, path, None, None, val, note=f"{BROWSER_NOTE}: not run here, {missing}{flat_note}",
                                 final=staged.finals[fmt]))
            continue
        reference = reference or _browser_reference(model, val)
        rows.append(_browser_row(job, cfg, fmt, path, reference, scratch, flat_note) | {"path": str(staged.finals[fmt])})
    return rows


def _browser_reference(model, val: ValData) -> ValData:
    """val as the browser sees it: the images rounded to the lossless PNGs' pixels, Keras on exactly those."""
    import numpy as np

    from emotion.runtime import classifier
    pixels = np.clip(np.round(val.x), 0, 255)
    if np.array_equal(pixels, val.x):
        return val
    probs = classifier.KerasClassifier(model).predict(pixels)
    return ValData(pixels, val.y, probs, accuracy(probs, val.y))


def _browser_row(job: ExportJob, cfg, fmt: str, path: Path, reference: ValData, scratch: Path,
                 flat_note: str) -> dict:
    start = time.perf_counter()
    run = headless_browser.classify_in_browser(cfg, path, reference.x, scratch / fmt, latency_runs=job.latency_runs)
    print(f"  {fmt} classified {len(reference.x)} images in headless Chromium ({run['backend']}) "
          f"in {time.perf_counter() - start:.1f} s", flush=True)
    return make_row(fmt, path, run["latency_ms"], run["probs"], reference,
                    note=f"headless Chromium, TF.js {run['backend']}, page classify(){flat_note}")


def _report(job: ExportJob, staged: outputs.Staged, rows: list[dict], val: ValData) -> dict:
    """Write the report (staged with the formats), print the table and a warning per failed check; the summary
    for the JSON line."""
    report = staged.finals["report"]
    write_report(staged.tmp["report"], rows)
    print_table(rows, val.keras_acc, len(val.x))
    failed = [r for r in rows if r["within_threshold"] is False]
    for r in failed:
        console.warn(f"{r['format']} is outside its threshold ({r['threshold']}): accuracy drop "
                 f"{r['accuracy_drop_points']} points, max probability difference {r['max_abs_prob_diff_vs_keras']}")
    print(f"wrote {len(rows)} format(s) to {job.out_dir} and the report to {report}")
    return {"formats": [r["format"] for r in rows], "output": str(job.out_dir), "report": str(report),
            "num_val_images": len(val.x), "keras_val_accuracy": round(val.keras_acc, 6),
            "size_mb": {r["format"]: r["size_mb"] for r in rows},
            "failed_checks": [r["format"] for r in failed]}


# ------------------------------------------------------------------------------------------------
# TF.js conversion


def convert_tfjs(saved_model_dir: Path, output_dir: Path, quantization: str | None) -> int:
    """SavedModel -> TF.js graph model in output_dir (model.json + shards); quantization None | uint8 | float16.
    Returns how many rank-4 conv biases were reshaped to rank 1 (see flatten_fused_biases)."""
    import contextlib
    import io

    from tensorflowjs.converters import convert_tf_saved_model
    dtype_map = {quantization: "*"} if quantization else None
    # The converter prints its progress on stdout, and its C++ (grappler) logs past TF_CPP_MIN_LOG_LEVEL.
    with contextlib.redirect_stdout(io.StringIO()), console.quiet_unless_verbose():
        convert_tf_saved_model(str(saved_model_dir), str(output_dir), signature_def="serving_default",
                               saved_model_tags="serve", quantization_dtype_map=dtype_map)
    return flatten_fused_biases(Path(output_dir) / "model.json")


def flatten_fused_biases(model_json: Path) -> int:
    """tfjs_graph.flatten_fused_biases on a model.json file, rewritten in place when anything changed (export
    calls it inside atomic_dir's temp folder). Returns the number of weights reshaped."""
    spec = json.loads(model_json.read_text(encoding="utf-8"))
    changed = tfjs_graph.flatten_fused_biases(spec)
    if changed:
        model_json.write_text(json.dumps(spec), encoding="utf-8")
    return changed


# ------------------------------------------------------------------------------------------------
# Measurement


def run_saved_model(path: Path, x, runs: int):
    """(probabilities over x, median batch-1 latency in ms) through the SavedModel's serving signature."""
    import numpy as np
    import tensorflow as tf
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]

    def call(batch):
        out = serve(image=tf.constant(batch))
        return next(iter(out.values())).numpy()

    probs = np.concatenate([call(x[i:i + 64]) for i in range(0, len(x), 64)])
    one = x[:1]
    latency = median_call_ms(lambda: call(one), runs)
    return probs, latency


def median_call_ms(fn, runs: int) -> float:
    """Median milliseconds of `runs` calls of fn(), after 3 warm-up calls (thread pools, first allocations)."""
    import numpy as np
    for _ in range(3):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1000


def load_images(split_dir: Path, cfg, per_class: int | None):
    """(float32 [N, H, W, 3] RGB 0..255, int labels [N]) of one split, in make_dataset's order."""
    import numpy as np

    from emotion.data import datasets
    ds, _info = datasets.make_dataset(split_dir, cfg, training=False, limit_per_class=per_class, cache=False)
    xs, ys = [], []
    for x, y in ds:
        xs.append(x.numpy())
        ys.append(y.numpy())
    return np.concatenate(xs), np.concatenate(ys)


def accuracy(probs, y) -> float:
    return float((probs.argmax(axis=1) == y).mean())


def size_mb(path: Path) -> float:
    """A file's or a folder's size (all files under it), MiB to 3 places."""
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size
    return round(size / 2 ** 20, 3)


def make_row(fmt: str, path: Path, latency, probs, val: ValData, note: str = "", final: Path | None = None) -> dict:
    """One report row: the format's probabilities (None: not measured) against val's Keras ones. path: what was
    written (measured for its size); final: where it is published (the row's path), default path."""
    import numpy as np
    float32 = fmt in FLOAT32_FORMATS
    row = {"format": fmt, "path": str(final or path), "size_mb": size_mb(path),
           "latency_ms_batch1": None if latency is None else round(latency, 3),
           "val_accuracy": None, "accuracy_drop_points": None, "max_abs_prob_diff_vs_keras": None,
           "threshold": f"max_abs_prob_diff <= {MAX_PROB_DIFF:g}" if float32
           else f"accuracy_drop_points <= {MAX_DROP_POINTS:g}",
           "within_threshold": None, "note": note}
    if probs is not None:
        acc = accuracy(probs, val.y)
        drop = (val.keras_acc - acc) * 100
        diff = float(np.max(np.abs(probs - val.keras_probs)))
        row.update(val_accuracy=round(acc, 6), accuracy_drop_points=round(drop, 4),
                   max_abs_prob_diff_vs_keras=float(f"{diff:.3g}"),
                   within_threshold=bool(diff <= MAX_PROB_DIFF) if float32 else bool(drop <= MAX_DROP_POINTS))
    return row


# ------------------------------------------------------------------------------------------------
# Report


def write_report(path: Path, rows: list[dict]) -> None:
    """rows as a CSV with COLUMNS (None as an empty cell), written atomically."""
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
