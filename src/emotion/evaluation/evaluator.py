"""Evaluating a trained model on a split of data_path: metrics, figures and per-image predictions.

    result = evaluate(cfg, split="test", max_images_per_class=None, tta=False, dry_run=False)
    result["accuracy"], result["macro_f1"]           # also written to cfg.performance_dir (OUTPUTS)
    evaluate(cfg, robustness=True, end_to_end=EndToEnd)   # + robustness.csv / .png and the card's section
    cfg = match_model(cfg, model, model_path)        # the config at the model's own input size

What evaluate.py runs; see its --help for the files written.
"""
from __future__ import annotations

import csv
import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from emotion.common import console, files, outputs, paths, plots
from emotion.common.atomic import atomic_path
from emotion.common.config import Config, check_model_classes

OUTPUTS = ["evaluation_metrics.txt", "evaluation_metrics.json", "confusion_matrix.png", "detailed_report.csv",
           "predictions.csv", "confident_mistakes.png", "confident_mistakes_gradcam.png",
           "reliability_diagram.png", "coverage_accuracy.png"]
METRIC_ORDER = ["accuracy", "balanced_accuracy", "macro_precision", "macro_recall", "macro_f1", "weighted_precision",
                "weighted_recall", "weighted_f1", "top2_accuracy", "loss", "num_images"]
HEADLINE = ["accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "top2_accuracy", "loss", "num_images"]


def evaluate(cfg: Config, split: str = "test", max_images_per_class: int | None = None, tta: bool = False,
             dry_run: bool = False, before_load: Callable[[], object] | None = None, robustness: bool = False,
             end_to_end: Callable | None = None) -> dict | None:
    """Evaluate cfg.model_save_path on data_path/<split>, print the summary and the JSON line, write OUTPUTS to
    performance_dir and the split's figures to the model card; returns the result (None for a dry run, which
    only checks the model and the data). before_load: called once the inputs are checked, just before the model
    is loaded (not in a dry run): evaluate.py --calibrate fits the temperature on val there.
    robustness: also run robustness.measure on the same images (without TTA: what predict.py answers) and
    publish robustness.OUTPUTS and the card's "robustness" section with the rest; end_to_end: called as
    end_to_end(cfg, model_path, model=model) for its end-to-end scenes (runtime.end_to_end.EndToEnd: evaluation
    does not import runtime), None: corruptions only."""
    split_dir = Path(cfg.data_path) / split
    perf_dir = Path(cfg.performance_dir)
    paths.check_writable(perf_dir, "performance_dir")  # before the work, not after it
    from emotion.data import datasets  # TensorFlow is imported here
    from emotion.model import network as model_lib

    files = datasets.read_split(split_dir, cfg, max_images_per_class)  # a bad folder fails before the load
    model_path = Path(cfg.model_save_path)
    if before_load is not None and not dry_run:
        paths.require_model_file(model_path)
        before_load()
    model = model_lib.load_model(model_path)
    cfg = match_model(cfg, model, model_path)
    ds, info = datasets.make_dataset(files, cfg, training=False, batch_size=cfg.test_batch_size,
                                     cache=False)  # one pass: no cache
    print(f"{'would evaluate' if dry_run else 'evaluating'} {model_path} on {info.num_images} images of "
          f"{split_dir} (skipped unreadable: {info.num_skipped}; batch {info.batch_size}; "
          f"TTA {'on' if tta else 'off'})", flush=True)
    if dry_run:
        print(f"dry run: would write {', '.join(output_names(robustness))} to {perf_dir}")
        print(json.dumps({"dry_run": True, "split": split, "num_images": info.num_images,
                          "model": str(model_path), "tta": tta, **({"robustness": True} if robustness else {}),
                          "performance_dir": str(perf_dir)}))
        return None
    result, image_paths, y, probs = _measure(model, ds, info, cfg, tta)
    result |= {"split": split, "data": str(split_dir)}  # keys already in place: the order of the files stays
    report = _robustness(model, files, cfg, result, end_to_end) if robustness else None
    staged = staged_outputs(perf_dir, model_path, robustness)
    staged.prepare()
    try:
        _write_all(staged.tmp, model, result, image_paths, y, probs, cfg, report)
        staged.publish()
    except BaseException:
        staged.discard()
        raise
    _print_summary(result, tta, perf_dir, report)
    return result


def _print_summary(result: dict, tta: bool, perf_dir: Path, report) -> None:
    """The terminal's lines: the metrics, the robustness line (with --robustness), then the JSON headline."""
    print(f"accuracy {result['accuracy']:.4f} | balanced {result['balanced_accuracy']:.4f} | macro-F1 "
          f"{result['macro_f1']:.4f} | top-2 {result['top2_accuracy']:.4f} | loss {result['loss']:.4f} | ECE "
          f"{result['ece_uncalibrated']:.4f} -> {result['ece']:.4f} | "
          f"{result['images_per_s']} img/s; wrote {len(output_names(report is not None))} files to {perf_dir}")
    headline = {k: (round(result[k], 6) if isinstance(result[k], float) else result[k]) for k in HEADLINE}
    extra = {}
    if report is not None:
        from emotion.evaluation import robustness
        print(robustness.summary_line(report))
        extra = {"robustness_at_chance": report.at_chance, "robustness_images_per_s": report.images_per_s,
                 "robustness_seconds": report.seconds, "end_to_end_scenes_per_s": report.scenes_per_s}
    print(json.dumps({"split": result["split"], **headline, "tta": tta, "images_per_s": result["images_per_s"],
                      **extra, "performance_dir": str(perf_dir)}), flush=True)


def _robustness(model, files, cfg: Config, result: dict, end_to_end: Callable | None):
    """robustness.measure on the evaluated files, stamped with the split and the model's sha256 (the card shows
    the section only while the model file is that one)."""
    from emotion.evaluation import robustness
    scenes = end_to_end(cfg, Path(cfg.model_save_path), model=model) if end_to_end is not None else None
    report = robustness.measure(model, files, cfg, end_to_end=scenes)
    report.info = {"split": result["split"], "model_sha256": result["model_sha256"],
                   "measured_at": result["evaluated_at"]}
    return report


def output_names(robustness: bool = False) -> list[str]:
    """The files evaluate.py writes to performance_dir: OUTPUTS, and robustness.OUTPUTS with --robustness."""
    from emotion.evaluation.robustness import OUTPUTS as ROBUSTNESS
    return OUTPUTS + (list(ROBUSTNESS) if robustness else [])


def staged_outputs(perf_dir: Path, model_path: Path, robustness: bool = False) -> outputs.Staged:
    """OUTPUTS in perf_dir (and robustness.OUTPUTS with robustness) and the model card beside the model: one set,
    written under temporary names and published together, so a run killed on the way leaves the previous run's
    files and card, all of one split. Without robustness an older run's robustness.csv / .png stay as they are
    (the card's section names the model file they measured)."""
    from emotion.evaluation import calibration_figures, card
    cards = dict(zip(calibration_figures.CARD, card.card_paths(model_path)))
    finals = {name: perf_dir / name for name in output_names(robustness)} | cards
    return outputs.Staged(finals, journal_dir=perf_dir)


def _write_all(dest: dict[str, Path], model, result: dict, image_paths, y, probs, cfg: Config,
               report=None) -> None:
    """Every file of staged_outputs, each to dest[name]; report: robustness.measure's (None: no robustness)."""
    from emotion.evaluation import calibration_figures, explanations, robustness
    write_outputs(dest, result, image_paths, y, probs, cfg.class_names)
    explanations.plot_mistake_maps(model, image_paths, y, probs, cfg.class_names,  # where the model looked
                                   dest["confident_mistakes_gradcam.png"])
    sections = {}
    if report is not None:
        robustness.write(dest, report)
        sections["robustness"] = robustness.card_section(report)  # in the same card update as the test figures
    calibration_figures.write(dest, y, probs, result, cfg, Path(cfg.model_save_path), sections)  # + the card


def _measure(model, ds, info, cfg: Config, tta: bool) -> tuple[dict, list[str], object, object]:
    """Run the model over ds (timed): (metrics and run facts, image paths, labels, probabilities)."""
    from emotion.evaluation import calibration_figures
    from emotion.evaluation.metrics import classification_metrics
    from emotion.model import network as model_lib

    forward = model_lib.make_forward(model, tta, ds.element_spec[0])
    forward.get_concrete_function()  # trace now, so that the timing below is the evaluation alone
    start = time.perf_counter()
    y, probs = model_lib.predict_probs(model, ds, forward=forward)
    seconds = time.perf_counter() - start
    image_paths = aligned_paths(info, y, cfg.input_shape)
    result = classification_metrics(y, probs, cfg.class_names)
    model_path = Path(cfg.model_save_path)
    facts = {k: result[k] for k in METRIC_ORDER} | calibration_figures.metrics(y, probs, model, cfg) | {
        "num_skipped": info.num_skipped, "split": None, "data": None, "tta": tta,
        "model": str(model_path), "model_sha256": files.sha256(model_path), "batch_size": info.batch_size,
        "images_per_s": round(len(y) / seconds, 2) if seconds > 0 else None, "seconds": round(seconds, 2),
        "evaluated_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    return facts, image_paths, y, probs


def match_model(cfg: Config, model, model_path: Path) -> Config:
    """Evaluate at the saved model's own input size; its class count must match class_names."""
    check_model_classes(int(model.output_shape[-1]), cfg.class_names, model_path,
                      "evaluate with the config it was trained with")
    shape = [int(d) for d in model.input_shape[1:]]
    if shape != list(cfg.input_shape):
        print(f"note: the model takes {shape}, config input_shape is {cfg.input_shape}; evaluating at {shape}")
        cfg = Config(cfg, input_shape=shape)
    return cfg


def aligned_paths(info, y, input_shape) -> list[str]:
    """info.paths in the order the dataset fed them. A file that passed the pre-scan but failed to decode is
    dropped by the pipeline: find such files (rare, so only then) so that every row names its own image."""
    import numpy as np
    paths, labels = list(info.paths), np.asarray(info.labels)
    if len(y) != len(paths):
        import tensorflow as tf

        from emotion.data import decoding
        keep = []
        for i, p in enumerate(paths):
            try:
                decoding.decode_uint8(tf.io.read_file(p), input_shape)
                keep.append(i)
            except (tf.errors.OpError, ValueError):
                console.warn(f"skipping {p}: cannot be decoded")
        paths, labels = [paths[i] for i in keep], labels[keep]
    if len(y) != len(paths) or not np.array_equal(y, labels):
        raise RuntimeError(f"the dataset fed {len(y)} images but lists {len(paths)}: cannot match predictions to files")
    return paths


# ------------------------------------------------------------------------------------------------
# Files


def write_outputs(dest: dict[str, Path], result: dict, paths: list[str], y, probs, class_names) -> None:
    """The metrics, the per-class report, the predictions and two figures, each to dest[name] (name in OUTPUTS)."""
    from emotion.evaluation.metrics import per_class_report
    pred = probs.argmax(axis=1)
    with atomic_path(dest["evaluation_metrics.json"]) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    with atomic_path(dest["evaluation_metrics.txt"]) as tmp:
        tmp.write_text("".join(f"{k}: {v:.6f}\n" if k in METRIC_ORDER and isinstance(v, float) else f"{k}: {v}\n"
                               for k, v in result.items()))
    with atomic_path(dest["detailed_report.csv"]) as tmp:
        per_class_report(y, pred, class_names).to_csv(tmp, index=False, float_format="%.6f")
    with atomic_path(dest["predictions.csv"]) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "true_class", "predicted_class", *(f"prob_{c}" for c in class_names)])
        for path, t, p, row in zip(paths, y, pred, probs):
            writer.writerow([path, class_names[t], class_names[p], *(f"{v:.9g}" for v in row)])  # float32 exact
    plot_confusion(y, pred, class_names, dest["confusion_matrix.png"], result)
    plot_mistakes(paths, y, probs, class_names, dest["confident_mistakes.png"])


def plot_confusion(y, pred, class_names, path: Path, result: dict) -> None:
    """Two seaborn heatmaps: counts, and each row divided by its class's image count (recall on the diagonal)."""
    import numpy as np
    import seaborn as sns
    from sklearn.metrics import confusion_matrix
    plt = plots.pyplot()
    counts = confusion_matrix(y, pred, labels=np.arange(len(class_names)))
    normalised = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, axes = plt.subplots(1, 2, figsize=(17, 7))
    sns.heatmap(counts, annot=True, fmt="d", cmap="Blues", xticklabels=class_names, yticklabels=class_names,
                ax=axes[0], cbar_kws={"label": "images"})
    sns.heatmap(normalised, annot=True, fmt=".2f", cmap="Blues", vmin=0, vmax=1, xticklabels=class_names,
                yticklabels=class_names, ax=axes[1], cbar_kws={"label": "fraction of the true class"})
    axes[0].set_title("Counts")
    axes[1].set_title("Row-normalised (diagonal = recall)")
    for ax in axes:
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.tick_params(axis="x", rotation=45)
        ax.tick_params(axis="y", rotation=0)
    fig.suptitle(f"Confusion matrix, {result['split']} split ({result['num_images']} images): accuracy "
                 f"{result['accuracy']:.3f}, macro-F1 {result['macro_f1']:.3f}{', TTA' if result['tta'] else ''}")
    fig.tight_layout()
    plots.save(fig, path)


def plot_mistakes(paths, y, probs, class_names, path: Path) -> None:
    """confident_mistakes.png: the most confident wrong predictions (explanations.mistakes_grid, the grid and the
    images of confident_mistakes_gradcam.png), each titled true / predicted (confidence)."""
    import cv2

    from emotion.evaluation import explanations

    def pictures(shown):
        images = (cv2.imread(paths[i], cv2.IMREAD_COLOR) for i in shown)  # BGR
        return [cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if image is not None else None for image in images]

    wrong = int((probs.argmax(axis=1) != y).sum())
    explanations.mistakes_grid(y, probs, class_names, path, pictures,
                               lambda shown: f"Most confident mistakes: {len(shown)} of {wrong} wrong "
                                             f"(of {len(y)} images)")
