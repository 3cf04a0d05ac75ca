"""Classification metrics from predicted probabilities, computed with scikit-learn.

Usage:
    m = classification_metrics(y_true, probs, class_names)
    m["accuracy"], m["macro_f1"], m["top2_accuracy"], m["loss"]
    report = per_class_report(y_true, probs.argmax(1), class_names)   # pandas DataFrame

Shared by train.py (validation after each epoch) and evaluate.py (the test report), so both report
the same numbers the same way.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn import metrics as skm


def cross_entropy(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Mean categorical cross-entropy of integer labels under predicted probabilities."""
    p = np.clip(probs[np.arange(len(y_true)), y_true], 1e-7, 1.0)
    return float(-np.log(p).mean())


def top_k_accuracy(y_true: np.ndarray, probs: np.ndarray, k: int) -> float:
    top = np.argsort(-probs, axis=1)[:, :k]
    return float((top == y_true[:, None]).any(axis=1).mean())


def classification_metrics(y_true, probs, class_names) -> dict[str, float]:
    """Accuracy, balanced accuracy, macro/weighted precision-recall-F1, top-2 accuracy and loss."""
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    y_pred = probs.argmax(axis=1)
    labels = np.arange(len(class_names))
    out = {
        "num_images": int(len(y_true)),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, y_pred)),
        "top2_accuracy": top_k_accuracy(y_true, probs, 2),
        "loss": cross_entropy(y_true, probs),
    }
    for avg in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, average=avg, zero_division=0)
        out.update({f"{avg}_precision": float(p), f"{avg}_recall": float(r), f"{avg}_f1": float(f)})
    return out


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """int64 [C, C] counts: row = true class, column = predicted class."""
    return skm.confusion_matrix(y_true, y_pred, labels=np.arange(num_classes)).astype(np.int64)


def macro_f1_from_confusion(confusion) -> float:
    """The unweighted mean of the per-class F1 scores of a confusion matrix (a class with no true and no
    predicted image scores 0, as scikit-learn's zero_division=0 does)."""
    confusion = np.asarray(confusion, np.float64)
    tp = np.diag(confusion)
    denominator = confusion.sum(axis=0) + confusion.sum(axis=1)  # predicted + true = 2 tp + fp + fn
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    return float(f1.mean())


def per_class_report(y_true, y_pred, class_names) -> pd.DataFrame:
    """Per-class precision, recall, F1 and support, one row per class."""
    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, labels=np.arange(len(class_names)),
                                                     zero_division=0)
    return pd.DataFrame({"class": class_names, "precision": p, "recall": r, "f1": f, "support": s})
