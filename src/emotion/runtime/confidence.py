"""The one rule for "uncertain": a face whose top probability is below min_confidence gets no label.

Usage:
    label = decide("happy", 0.42, cfg.min_confidence)     # "uncertain" below the threshold, else "happy"
    text = display_text(label, "happy", 0.42)             # "uncertain (happy 42%)" | "happy 87%"

predict.py, inference.py (overlay and predictions.json) and evaluate.py's coverage use it; the web page applies
the same rule with the threshold web.py copies from the config into its config.json (minConfidence). The
probabilities are always kept: JSON outputs hold `label` (maybe "uncertain") and `top_label` (the argmax).
With a calibrated model (temperature.py) the top probability is about the share of such answers that are right.
"""
from __future__ import annotations

UNCERTAIN = "uncertain"


def decide(top_label: str, top_probability: float, min_confidence: float) -> str:
    """top_label when top_probability >= min_confidence, else UNCERTAIN."""
    return top_label if top_probability >= min_confidence else UNCERTAIN


def display_text(label: str, top_label: str, confidence: float) -> str:
    """What an overlay writes: "happy 87%", or "uncertain (happy 42%)" so the best guess stays visible."""
    if label == UNCERTAIN:
        return f"{UNCERTAIN} ({top_label} {confidence:.0%})"
    return f"{label} {confidence:.0%}"
