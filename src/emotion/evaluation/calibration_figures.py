"""evaluate.py's calibration report: ECE / NLL / Brier before and after, the two figures, the model card.

Usage (in evaluate.py, after the probabilities of a split are known):
    extra = metrics(y, probs, model, cfg)            # ece, ece_uncalibrated, nll, brier, temperature, coverage ...
    result |= extra
    write(dest, y, probs, result, cfg, model_path)   # dest: FIGURES and CARD names -> the paths to write

"Before" is the model's probabilities with its temperature undone (calibration_metrics.undo_temperature): exact for
a plain pass, and for --tta the average of the two views re-sharpened by T. A model without a temperature
layer reports temperature null and the same figures before and after.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from emotion.common import plots
from emotion.evaluation import calibration_metrics, card

FIGURES = ("reliability_diagram.png", "coverage_accuracy.png")
CARD = ("card.md", "card.json")   # write()'s keys for the model card (<model stem>.card.md / .json)
CARD_KEYS = ("ece", "ece_uncalibrated", "nll", "brier", "temperature", "min_confidence", "coverage",
             "answered_accuracy")


def metrics(y, probs, model, cfg) -> dict:
    """The calibration keys evaluate.py adds to evaluation_metrics.json (see calibration_metrics.calibration_metrics)."""
    from emotion.model import temperature
    return calibration_metrics.calibration_metrics(probs, y, temperature.temperature_of(model), cfg.min_confidence)


def write(dest: dict[str, Path], y, probs, result: dict, cfg, model_path: Path, sections: dict | None = None) -> None:
    """The two FIGURES, and the model card with result's figures (under result['split'], and the split's images
    per class under data), each to dest[name]; the card to dest[CARD[0]] (.md) and dest[CARD[1]] (.json).
    sections: more card sections written in the same update (evaluate.py --robustness: "robustness")."""
    t = result.get("temperature")
    plot_reliability(y, probs, t, dest[FIGURES[0]], result)
    plot_coverage(y, probs, cfg.min_confidence, dest[FIGURES[1]], result)
    section = {**card.metrics_section(y, probs, cfg.class_names, base=result),
               **{k: result[k] for k in CARD_KEYS}, "tta": result.get("tta"), "evaluated_at": result.get("evaluated_at")}
    old = card.read_card(model_path) or {}
    data = old.get("data", {})
    counts = np.bincount(np.asarray(y, np.int64), minlength=len(cfg.class_names))
    data = {**data, "images_per_class": {**data.get("images_per_class", {}),
                                         result["split"]: dict(zip(cfg.class_names, map(int, counts)))}}
    card.update_card(model_path, metrics={result["split"]: section}, data=data, into=(dest[CARD[0]], dest[CARD[1]]),
                     calibration={**old.get("calibration", {}), "temperature": t}, **(sections or {}))


def _reliability_panel(ax, y, probs, title: str) -> None:
    r = calibration_metrics.reliability(probs, y)
    edges, width = r["edges"], r["edges"][1] - r["edges"][0]
    filled = r["count"] > 0
    centres = edges[:-1] + width / 2
    ax.bar(centres[filled], r["accuracy"][filled], width=width * 0.95, color="#4c72b0", edgecolor="black",
           label="accuracy in the bin")
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.plot(r["confidence"][filled], r["accuracy"][filled], "o", color="#dd8452", markersize=4,
            label="mean confidence")
    for x, acc, n in zip(centres[filled], r["accuracy"][filled], r["count"][filled]):
        ax.text(x, min(acc + 0.02, 0.97), str(int(n)), ha="center", fontsize=7)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top probability)", ylabel="accuracy",
           title=f"{title}: ECE {calibration_metrics.ece(probs, y):.3f}")
    ax.legend(loc="upper left", fontsize=8)


def plot_reliability(y, probs, temperature: float | None, path: Path, result: dict) -> None:
    """Accuracy per confidence bin (15 bins; the image count above each bar) against the diagonal, before and
    after temperature scaling, side by side."""
    plt = plots.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.5))
    _reliability_panel(axes[0], y, calibration_metrics.undo_temperature(probs, temperature), "uncalibrated")
    label = f"calibrated (T = {temperature:.2f})" if temperature is not None else "model as saved (no temperature)"
    _reliability_panel(axes[1], y, probs, label)
    fig.suptitle(f"Reliability diagram, {result['split']} split ({len(y)} images)")
    fig.tight_layout()
    plots.save(fig, path)


def plot_coverage(y, probs, min_confidence: float, path: Path, result: dict) -> None:
    """Accuracy on the faces answered against the share answered, as the threshold rises; min_confidence marked."""
    plt = plots.pyplot()
    curve = calibration_metrics.coverage_curve(probs, y)
    at = calibration_metrics.coverage_at(probs, y, min_confidence)
    fig, ax = plt.subplots(figsize=(7, 5))
    ax.plot(curve["coverage"], curve["accuracy"], "-", color="#4c72b0", label="answered faces")
    if at["answered_accuracy"] is not None:
        ax.plot([at["coverage"]], [at["answered_accuracy"]], "o", color="#c44e52",
                label=f"min_confidence {min_confidence:.2f}: {at['coverage']:.0%} answered, "
                      f"{at['answered_accuracy']:.0%} right")
    ax.axhline(float(np.mean(np.asarray(probs).argmax(axis=1) == np.asarray(y))) if len(y) else 0, color="gray",
               linestyle="--", label="accuracy on all faces")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="share of faces answered (coverage)",
           ylabel="accuracy on the answered faces",
           title=f"Coverage and accuracy, {result['split']} split ({len(y)} images)")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    plots.save(fig, path)
