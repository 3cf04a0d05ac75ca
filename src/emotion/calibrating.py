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

from . import calibration
from . import card
from .config import Config


def calibrate_file(cfg, max_images_per_class: int | None = None, card_sections: dict | None = None,
                   log=print) -> dict:
    """Fit T for cfg.model_save_path on <data_path>/val, save the model, update its card (calibration, val
    metrics and card_sections). Returns the calibration summary (temperature, val ECE/NLL before and after)."""
    from . import data_preprocessing as dp  # TensorFlow from here on
    from . import legacy_layers, temperature
    from . import model as model_lib

    model_path = Path(cfg.model_save_path)
    model = legacy_layers.portable(model_lib.load_model(model_path))
    cfg = Config(cfg, input_shape=[int(d) for d in model.input_shape[1:]])  # the model's own input size
    val_dir = Path(cfg.data_path) / "val"
    ds, info = dp.make_dataset(val_dir, cfg, training=False, batch_size=cfg.val_batch_size,
                               limit_per_class=max_images_per_class, cache=False)
    y, logits = model_lib.predict_probs(temperature.logits_model(model), ds)
    temperature.set_temperature(model, calibration.fit_temperature(logits, y))
    t = temperature.temperature_of(model)  # T as the model holds it, so the reports agree with the file
    model_lib.save_model_atomic(model, model_path)
    raw, probs = calibration.softmax(logits), calibration.softmax(logits / t)
    summary = {"temperature": t, "fitted_on": f"val ({len(y)} images of {val_dir})",
               "val_ece_before": calibration.ece(raw, y), "val_ece_after": calibration.ece(probs, y),
               "val_nll_before": calibration.nll(raw, y), "val_nll_after": calibration.nll(probs, y),
               "min_confidence": float(cfg.min_confidence),
               "val_coverage": calibration.coverage_at(probs, y, cfg.min_confidence)["coverage"]}
    val = card.metrics_section(y, probs, cfg.class_names)
    sections = dict(card_sections or {})
    metrics = {**sections.pop("metrics", {}), "val": val}
    if "test" not in metrics:
        metrics["test"] = None  # the probabilities changed: the last test report no longer describes them
    card.update_card(model_path, calibration=summary, metrics=metrics, **sections)
    if t >= 0.999 * calibration.T_RANGE:
        log(f"note: T reached the search's upper bound {calibration.T_RANGE:g}: the model's probabilities carry "
            f"almost no information on val (it is at chance), so calibrated they are near uniform")
    log(f"calibrated {model_path}: T = {t:.3f} (fitted on {len(y)} val images); val ECE {summary['val_ece_before']:.4f}"
        f" -> {summary['val_ece_after']:.4f}, NLL {summary['val_nll_before']:.4f} -> {summary['val_nll_after']:.4f}; "
        f"model card {card.card_paths(model_path)[0]}")
    return summary


def after_training(cfg, summary: dict, max_images_per_class: int | None = None, log=print) -> dict:
    """train.py's last step: calibrate the best model and write its card (data, recipe, training time and
    hardware, calibration, val metrics). summary: what training.train returned. Returns calibrate_file's."""
    import csv

    from .training import library_versions

    versions = library_versions()
    log_path = Path(cfg.performance_dir) / "training_log.csv"
    try:
        with open(log_path, newline="", encoding="utf-8") as f:
            seconds = sum(float(row["seconds"]) for row in csv.DictReader(f))
    except (OSError, KeyError, ValueError):
        seconds = None
    hardware = {k: versions.get(k) for k in ("platform", "machine", "cpu_count", "gpus")}
    training = {"epochs": summary.get("epochs"), "best_epoch": summary.get("best_epoch"),
                "monitor": summary.get("monitor"), "train_seconds": seconds,
                "train_seconds_note": "sum of the epochs' training times in training_log.csv (validation excluded)",
                "images_per_s": summary.get("images_per_s"), "hardware": hardware}
    sections = {"data": card.data_section(cfg.data_path, cfg.class_names, ("train", "val"), max_images_per_class),
                "recipe": card.recipe_section(cfg, {k: v for k, v in versions.items() if k not in hardware}),
                "training": training}
    return calibrate_file(cfg, max_images_per_class, card_sections=sections, log=log)
