"""Calibrate a saved model on the val split, save it atomically and record it in its model card.

Usage:
    summary = calibrate_file(cfg)                        # cfg.model_save_path on <data_path>/val
    summary = calibrate_file(cfg, max_images_per_class=20, card_sections={"training": {...}})

Used by train.py (its last step, on the best model), by src/calibrate.py and by evaluate.py --calibrate.
A model saved in an older form (custom preprocessing and temperature layers, or a Dense softmax head without
temperature) is rewritten with built-in layers and the same weights first (legacy_layers.portable), so the file
calibrate saves opens with plain keras.models.load_model. T is fitted on val only: the test split stays
unseen, so evaluate.py's ECE on it measures the calibration honestly.
"""
from __future__ import annotations

from pathlib import Path

from emotion.common import outputs
from emotion.common.config import Config, check_model_classes
from emotion.evaluation import calibration_metrics, card


def calibrate_file(cfg, max_images_per_class: int | None = None, card_sections: dict | None = None,
                   log=print, val_files=None) -> dict:
    """Fit T for cfg.model_save_path on <data_path>/val, save the model, update its card (calibration, val
    metrics and card_sections). val_files: the val split as a run already read it (datasets.SplitFiles), else
    it is read here. Returns the calibration summary (temperature, val ECE/NLL before and after)."""
    from emotion.data import datasets  # TensorFlow from here on
    from emotion.model import legacy_layers
    from emotion.model import network as model_lib
    from emotion.model import temperature

    model_path = Path(cfg.model_save_path)
    model = legacy_layers.portable(model_lib.load_model(model_path))
    check_model_classes(int(model.output_shape[-1]), cfg.class_names, model_path,
                        "calibrate with the config it was trained with")
    cfg = Config(cfg, input_shape=[int(d) for d in model.input_shape[1:]])  # the model's own input size
    val_dir = Path(cfg.data_path) / "val"
    ds, info = datasets.make_dataset(val_files or val_dir, cfg, training=False, batch_size=cfg.val_batch_size,
                                     limit_per_class=max_images_per_class, cache=False)
    y, logits = model_lib.predict_probs(temperature.logits_model(model), ds)
    temperature.set_temperature(model, calibration_metrics.fit_temperature(logits, y))
    t = temperature.temperature_of(model)  # T as the model holds it, so the reports agree with the file
    summary = _summary(cfg, logits, y, t, f"val ({len(y)} images of {val_dir})")
    probs = calibration_metrics.softmax(logits / t)
    sections = dict(card_sections or {})
    metrics = {**sections.pop("metrics", {}), "val": card.metrics_section(y, probs, cfg.class_names)}
    if "test" not in metrics:
        metrics["test"] = None  # the probabilities changed: the last test report no longer describes them
    staged = outputs.Staged({"model": model_path, **dict(zip(("md", "json"), card.card_paths(model_path)))},
                            journal_dir=model_path.parent)
    staged.prepare()  # the model and its card are published together: a kill leaves both as they were
    try:
        model_lib.save_model_atomic(model, staged.tmp["model"])
        card.update_card(model_path, calibration=summary, metrics=metrics, into=(staged.tmp["md"], staged.tmp["json"]),
                         model_file=staged.tmp["model"], **sections)
        staged.publish()
    except BaseException:
        staged.discard()
        raise
    if t >= 0.999 * calibration_metrics.T_RANGE:
        log(f"note: T reached the search's upper bound {calibration_metrics.T_RANGE:g}: the model's probabilities "
            f"carry almost no information on val (it is at chance), so calibrated they are near uniform")
    log(f"calibrated {model_path}: T = {t:.3f} (fitted on {len(y)} val images); val ECE {summary['val_ece_before']:.4f}"
        f" -> {summary['val_ece_after']:.4f}, NLL {summary['val_nll_before']:.4f} -> {summary['val_nll_after']:.4f}; "
        f"model card {card.card_paths(model_path)[0]}")
    return summary


def _summary(cfg, logits, y, t: float, fitted_on: str) -> dict:
    """The card's calibration section: T, and val ECE/NLL before and after, coverage at min_confidence."""
    raw, probs = calibration_metrics.softmax(logits), calibration_metrics.softmax(logits / t)
    return {"temperature": t, "fitted_on": fitted_on,
            "val_ece_before": calibration_metrics.ece(raw, y), "val_ece_after": calibration_metrics.ece(probs, y),
            "val_nll_before": calibration_metrics.nll(raw, y), "val_nll_after": calibration_metrics.nll(probs, y),
            "min_confidence": float(cfg.min_confidence),
            "val_coverage": calibration_metrics.coverage_at(probs, y, cfg.min_confidence)["coverage"]}


def is_current(model_path: Path, state: dict) -> bool:
    """Whether model_path is the calibrated best model of the finished run `state` (checkpoints' state.json): its
    card was written by after_training for that run's epochs and best epoch, calibrated, and stamps the model
    file's sha256 (the file is the one calibrated, or re-calibrated by calibrate.py; not the raw checkpoint)."""
    from emotion.common import files
    c = card.read_card(model_path)
    if not c or not model_path.is_file() or c.get("model_sha256") != files.sha256(model_path):
        return False
    training = c.get("training") or {}
    return ((c.get("calibration") or {}).get("temperature") is not None and training.get("epochs") == state["epoch"]
            and training.get("best_epoch") == state["best_epoch"])


def after_training(run, summary: dict, log=print) -> dict:
    """trainer.train's last step (train.py): calibrate the best model on the val images the run read, and write
    its card (data, recipe, training time and hardware, calibration, val metrics) from what the run holds.
    run: the trainer's TrainingRun; summary: its final summary. Returns calibrate_file's."""
    cfg, versions = run.cfg, run.versions
    hardware = {k: versions.get(k) for k in ("platform", "machine", "cpu_count", "gpus")}
    training = {"epochs": summary.get("epochs"), "best_epoch": summary.get("best_epoch"),
                "monitor": summary.get("monitor"), "train_seconds": summary.get("train_seconds"),
                "train_seconds_note": "sum of the epochs' training times in training_log.csv (validation excluded)",
                "images_per_s": summary.get("images_per_s"), "hardware": hardware}
    counts = {"train": run.train_files.class_counts(), "val": run.val_files.class_counts()}
    sections = {"data": card.data_section(cfg.data_path, counts, run.max_images_per_class),
                "recipe": card.recipe_section(cfg, {k: v for k, v in versions.items() if k not in hardware}),
                "training": training}
    return calibrate_file(cfg, run.max_images_per_class, card_sections=sections, log=log, val_files=run.val_files)
