"""Export the trained model (model_save_path) for serving: SavedModel, TFLite and TensorFlow.js, with a report.

    python src/export.py                                         # every format into models/export/
    python src/export.py --formats tflite_float32,tfjs_uint8     # some of them
    python src/export.py --max-images-per-class 25               # quick run: fewer val and calibration images
    python src/export.py --dry-run                               # check the model and the data, write nothing
    python src/export.py --formats saved_model,tflite_float32    # no TF.js converter needed

Formats (written under --output, default models/export/, each to a temp name and then renamed):
  saved_model      saved_model/             serving signature "serving_default" (also "serve"): float32
                                            "image" [B, H, W, 3] RGB 0..255 -> probabilities, inference mode
  tflite_float32   emotion_float32.tflite   the model as it is (within 1e-4 of Keras; measured 1e-6 to 2e-5)
  tflite_float16   emotion_float16.tflite   float16 weights: half the file
  tflite_int8      emotion_int8.tflite      full integer, calibrated on training images; float32 in and out
  tfjs_float32     tfjs_float32/            TensorFlow.js graph model (model.json + weight shards)
  tfjs_uint8       tfjs_uint8/              the same with uint8-quantized weights (a quarter of the download)
  tfjs_float16     tfjs_float16/            float16-quantized weights (half); not in the default set
All start from conversion.export_saved_model (the model called with training=False, so no BatchNorm
update ops). TF.js converts a second SavedModel made from conversion.fold_batch_norms(model): its converter
does not fold BatchNorm (it leaves a Mul and an AddV2 after each of the 53 convolutions), so every BatchNorm
is folded into its convolution first, giving 53 _FusedConv2D ops with rank-1 biases (BiasAdd or BiasAdd +
Relu), which TF.js's WASM backend runs. Any rank-4 [1, 1, 1, C] fused bias left is reshaped to [C] (same
bytes), since that backend rejects it.
The TF.js formats need the TF.js converter, an optional extra (pip install -r requirements-tfjs.txt; Linux,
macOS or WSL): without it they are skipped with one line saying so, and the other formats are exported and
reported as usual (asking for TF.js formats only is then an error).

Both folders are checked for writing before any work (a read-only one is one error line).
Writes <performance_dir>/export_report.csv, one row per format: format, path, size_mb, latency_ms_batch1
(median on this machine: SavedModel through its serving signature, TFLite through classifier.EmotionClassifier,
TF.js through the web page's classify() in headless Chromium), val_accuracy, accuracy_drop_points (Keras minus
the format, in points), max_abs_prob_diff_vs_keras, threshold (float32 formats: 1e-4 probability difference;
quantized: at most 0.5 points of accuracy lost), within_threshold, note. The TF.js rows are measured by
building the page around each model (emotion/serving/webpage.py) and classifying the val images in Debian's Chromium on the
backend the page picks (WASM without a GPU); with no Chromium, node or web/node_modules here, or with
--no-browser, their latency and accuracy are left empty and the note says why. A format outside
its threshold gives a warning line and is listed under "failed_checks" in the final JSON line (the exit code
stays 0: a quantized format on a small or untrained model can miss it by chance).
Accuracy uses the val split (--max-images-per-class N for a quick run); int8 calibration uses up to
--calibration-images training images, spread evenly over the classes.
"""
from __future__ import annotations

import json
from pathlib import Path

from emotion.common import cli, outputs
from emotion.serving import exporting


def parse_args(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--output", default=None, metavar="DIR",
                   help="folder for the exported models (default: models/export/ beside model_save_path)")
    p.add_argument("--formats", type=exporting.formats_argument, default=list(exporting.DEFAULT_FORMATS), metavar="LIST",
                   help=f"comma-separated formats (all = {','.join(exporting.DEFAULT_FORMATS)})")
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
    job = exporting.ExportJob(
        model_path=model_path, out_dir=Path(args.output) if args.output else model_path.parent / "export",
        perf_dir=Path(cfg.performance_dir), formats=args.formats, max_images_per_class=args.max_images_per_class,
        calibration_images=args.calibration_images, latency_runs=args.latency_runs, browser=not args.no_browser,
        dry_run=args.dry_run)
    job = exporting.prepare(job, cfg)  # one-line errors before minutes of work, not after them
    with outputs.exclusive(*([] if job.dry_run else [job.out_dir, job.perf_dir])):
        return _export(job, cfg, model_path)


def _export(job, cfg, model_path: Path) -> int:
    from emotion.evaluation.evaluator import match_model
    from emotion.model import network as model_lib  # TensorFlow from here on, after the arguments are parsed
    model = model_lib.load_model(model_path)
    cfg = match_model(cfg, model, model_path)
    print(json.dumps(exporting.export(job, cfg, model)), flush=True)
    return 0


if __name__ == "__main__":
    cli.run(main)
