"""How far to trust a probability: temperature fitting and calibration metrics, in numpy alone.

Usage:
    t = fit_temperature(val_logits, val_labels)        # one scalar > 0 minimising the NLL of softmax(logits / t)
    probs = softmax(test_logits / t)
    ece(probs, y), nll(probs, y), brier(probs, y)      # 15 equal-width confidence bins for ECE
    uncalibrated = undo_temperature(probs, t)          # softmax(t * log probs) == softmax(logits)
    bins = reliability(probs, y)                       # per bin: count, mean confidence, accuracy
    curve = coverage_curve(probs, y)                   # share answered and accuracy on it, per threshold
    coverage_at(probs, y, 0.5)                         # {"coverage": ..., "answered_accuracy": ...}

Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks", ICML) divides the logits
by one scalar T: the argmax, so every label, stays as it is; T > 1 softens an over-confident model. The NLL
of logits / T is convex in 1 / T, so a grid on log T refined by golden-section search finds the minimum
without an optimiser library. Nothing here imports TensorFlow.
"""
from __future__ import annotations

import math

import numpy as np

ECE_BINS = 15
# fit_temperature searches T in [1 / T_RANGE, T_RANGE]: a model that needs more is broken, not miscalibrated.
T_RANGE = 100.0
PROB_FLOOR = 1e-7  # the floor of metrics.cross_entropy, so nll() equals evaluate.py's "loss"


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (stable for any logit size)."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _nll_of_logits(logits: np.ndarray, y: np.ndarray, t: float) -> float:
    z = np.asarray(logits, np.float64) / t
    z = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    return float((log_norm - z[np.arange(len(y)), y]).mean())


def fit_temperature(logits, y, grid: int = 81, iterations: int = 60) -> float:
    """The T > 0 minimising the mean negative log-likelihood of softmax(logits / T) on labels y.

        fit_temperature(10 * logits, y)   # > 1 for an over-confident model
    """
    logits, y = np.asarray(logits, np.float64), np.asarray(y, np.int64)
    if len(y) == 0:
        raise ValueError("fit_temperature needs at least one labelled image")
    log_ts = np.linspace(-math.log(T_RANGE), math.log(T_RANGE), grid)
    losses = [_nll_of_logits(logits, y, math.exp(v)) for v in log_ts]
    best = int(np.argmin(losses))
    lo, hi = log_ts[max(best - 1, 0)], log_ts[min(best + 1, grid - 1)]
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(iterations):  # golden-section search in the bracket around the grid's best point
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if _nll_of_logits(logits, y, math.exp(a)) <= _nll_of_logits(logits, y, math.exp(b)):
            hi = b
        else:
            lo = a
    return float(math.exp((lo + hi) / 2))


def undo_temperature(probs, temperature: float | None) -> np.ndarray:
    """The probabilities before temperature scaling: softmax(T * log p) (exact up to float rounding, since
    log p = logits / T - constant). temperature None: probs unchanged (a model without a temperature)."""
    probs = np.asarray(probs, np.float64)
    if temperature is None:
        return probs
    with np.errstate(divide="ignore"):
        return softmax(temperature * np.log(probs))


def nll(probs, y) -> float:
    """Mean negative log-likelihood of the true class (probabilities floored at PROB_FLOOR)."""
    probs, y = np.asarray(probs, np.float64), np.asarray(y, np.int64)
    return float(-np.log(np.clip(probs[np.arange(len(y)), y], PROB_FLOOR, 1.0)).mean())


def brier(probs, y) -> float:
    """Multi-class Brier score: mean over images of sum over classes of (p - one-hot)^2 (0 best, 2 worst)."""
    probs, y = np.asarray(probs, np.float64), np.asarray(y, np.int64)
    onehot = np.zeros_like(probs)
    onehot[np.arange(len(y)), y] = 1.0
    return float(((probs - onehot) ** 2).sum(axis=1).mean())


def reliability(probs, y, bins: int = ECE_BINS) -> dict[str, np.ndarray]:
    """Top-class confidence in `bins` equal-width bins (0, 1/bins], ...: per bin its edges, image count, mean
    confidence and accuracy (NaN for an empty bin)."""
    probs, y = np.asarray(probs, np.float64), np.asarray(y, np.int64)
    conf, correct = probs.max(axis=1), (probs.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    count = np.bincount(index, minlength=bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, conf, minlength=bins) / count
        accuracy = np.bincount(index, correct, minlength=bins) / count
    return {"edges": edges, "count": count, "confidence": mean_conf, "accuracy": accuracy}


def ece(probs, y, bins: int = ECE_BINS) -> float:
    """Expected calibration error: sum over bins of (share of images) x |accuracy - mean confidence|."""
    r = reliability(probs, y, bins)
    filled = r["count"] > 0
    if not filled.any():
        return 0.0
    weights = r["count"][filled] / r["count"].sum()
    return float((weights * np.abs(r["accuracy"][filled] - r["confidence"][filled])).sum())


def coverage_at(probs, y, min_confidence: float) -> dict[str, float | None]:
    """At threshold min_confidence: the share of images answered (top probability >= it) and the accuracy on
    them (None when none is answered)."""
    probs, y = np.asarray(probs, np.float64), np.asarray(y, np.int64)
    answered = probs.max(axis=1) >= min_confidence
    accuracy = float((probs.argmax(axis=1)[answered] == y[answered]).mean()) if answered.any() else None
    return {"coverage": float(answered.mean()) if len(y) else 0.0, "answered_accuracy": accuracy}


def coverage_curve(probs, y) -> dict[str, np.ndarray]:
    """As the threshold rises through every distinct top probability: the threshold, the share of images
    answered and the accuracy on them (the answered images are those at or above the threshold)."""
    probs, y = np.asarray(probs, np.float64), np.asarray(y, np.int64)
    conf = probs.max(axis=1)
    order = np.argsort(-conf, kind="stable")
    correct = (probs.argmax(axis=1) == y)[order].astype(np.float64)
    n = np.arange(1, len(y) + 1)
    return {"threshold": conf[order], "coverage": n / max(len(y), 1), "accuracy": np.cumsum(correct) / n}


def calibration_metrics(probs, y, temperature: float | None, min_confidence: float) -> dict:
    """What evaluate.py reports: ece / nll / brier of probs (the model's output, calibrated when it has a
    temperature), the same before calibration, the temperature, and coverage at min_confidence."""
    raw = undo_temperature(probs, temperature)
    at = coverage_at(probs, y, min_confidence)
    return {"ece": ece(probs, y), "ece_uncalibrated": ece(raw, y), "nll": nll(probs, y),
            "nll_uncalibrated": nll(raw, y), "brier": brier(probs, y), "brier_uncalibrated": brier(raw, y),
            "temperature": temperature, "min_confidence": float(min_confidence), "coverage": at["coverage"],
            "answered_accuracy": at["answered_accuracy"]}
