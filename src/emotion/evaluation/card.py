"""The model card: <model stem>.card.json and .card.md beside every saved model, and its one-line summary.

Usage:
    update_card(model_path, data=data_section(...), recipe=recipe_section(cfg, versions), training={...},
                calibration={...}, metrics={"val": metrics_section(y, probs, class_names)})   # train.py
    update_card(model_path, metrics={"test": ...}, calibration={...})                         # evaluate.py
    update_card(model_path, ..., robustness=robustness.card_section(report))  # evaluate.py --robustness
    read_card(model_path)          # the card's dict, or None
    summary_line(model_path)       # "model: test accuracy 0.24, macro-F1 0.22, calibrated (T=1.80)"

update_card merges the given sections into the card already there (a section given replaces the old one; a
"metrics" dict is merged split by split), stamps the model file's sha256 and rewrites both files atomically.
A card whose sha256 is not the model file's is reported as out of date by summary_line. The Markdown is
rendered from the JSON, so the two always agree. Nothing here imports TensorFlow.
"""
from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

from emotion.common import atomic, files

INTENDED_USE = (
    "Research and teaching: studying facial expression recognition, and demonstrating a complete, reproducible "
    "training and deployment pipeline. The output is a guess about the expression a face shows in one picture.")
LIMITS = [
    "AffectNet, the training data, is licensed for non-commercial research only: a model trained on it inherits "
    "that restriction.",
    "A facial expression is not reliable evidence of what a person feels: the same feeling shows differently, "
    "or not at all, and expressions and their reading vary across people, ages and cultures.",
    "The EU AI Act (Regulation (EU) 2024/1689, Article 5(1)(f)) prohibits emotion recognition systems in the "
    "workplace and in education, except for medical or safety reasons.",
    "Not for decisions about people (hiring, grading, policing, credit, health, border control) or for "
    "monitoring anyone.",
    "Accuracy is measured on AffectNet-like, mostly frontal, well-lit face crops; it drops on other faces, "
    "angles, lighting and occlusions. Below min_confidence the answer is \"uncertain\".",
]
NO_CARD = "model: no model card"


def card_paths(model_path: str | os.PathLike) -> tuple[Path, Path]:
    """(<stem>.card.md, <stem>.card.json) beside the model."""
    model_path = Path(model_path)
    return (model_path.with_name(f"{model_path.stem}.card.md"), model_path.with_name(f"{model_path.stem}.card.json"))


def read_card(model_path: str | os.PathLike) -> dict | None:
    """The card's JSON, or None when there is none or it cannot be read."""
    try:
        card = json.loads(card_paths(model_path)[1].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return card if isinstance(card, dict) else None


def update_card(model_path: str | os.PathLike, *, into: tuple[Path, Path] | None = None,
                model_file: str | os.PathLike | None = None, **sections) -> dict:
    """Merge `sections` into the model's card, stamp the model's sha256, write .card.json and .card.md.
    into: (md, json) paths to write instead, e.g. a staged set's temporary names published with other outputs;
    model_file: where the model's bytes lie until then (its staged temporary name; default model_path)."""
    model_path = Path(model_path)
    card = read_card(model_path) or {}
    metrics = {**card.get("metrics", {}), **sections.pop("metrics", {})}
    card.update(sections, metrics=metrics)
    card.update(model=model_path.name, model_sha256=files.sha256(model_file or model_path), intended_use=INTENDED_USE,
                limits=LIMITS, updated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    md_path, json_path = into or card_paths(model_path)
    atomic.write_text(json_path, json.dumps(card, indent=2) + "\n")
    atomic.write_text(md_path, render_markdown(card))
    return card


def summary_line(model_path: str | os.PathLike) -> str:
    """One line for predict.py, inference.py and the web page: how good the model is and whether it is calibrated.

        model: test accuracy 0.24, macro-F1 0.22, calibrated (T=1.80)
        model: not evaluated yet, calibrated (T=1.80)      |  model: no model card
    """
    card = read_card(model_path)
    if card is None:
        return NO_CARD
    try:
        stale = Path(model_path).is_file() and card.get("model_sha256") != files.sha256(model_path)
    except OSError:
        stale = False
    if stale:
        return "model: its model card describes another model file (evaluate it again: python src/evaluate.py)"
    test = card.get("metrics", {}).get("test")
    head = (f"model: test accuracy {test['accuracy']:.2f}, macro-F1 {test['macro_f1']:.2f}" if test
            else "model: not evaluated yet")
    t = card.get("calibration", {}).get("temperature")
    return head + (f", calibrated (T={t:.2f})" if t is not None else ", not calibrated")


def metrics_section(y, probs, class_names, base: dict | None = None) -> dict:
    """accuracy, balanced accuracy, macro-F1 (from `base` when given, so the card repeats a report's figures
    exactly), per-class F1 and the three most confused (true, predicted) pairs."""
    import numpy as np
    from sklearn.metrics import confusion_matrix

    from emotion.evaluation.metrics import classification_metrics, per_class_report
    y, probs = np.asarray(y), np.asarray(probs)
    base = base or classification_metrics(y, probs, class_names)
    pred = probs.argmax(axis=1)
    report = per_class_report(y, pred, class_names)
    counts = confusion_matrix(y, pred, labels=np.arange(len(class_names)))
    np.fill_diagonal(counts, 0)
    order = np.argsort(-counts, axis=None, kind="stable")[:3]
    confused = [{"true": class_names[i], "predicted": class_names[j], "images": int(counts[i, j])}
                for i, j in zip(*np.unravel_index(order, counts.shape)) if counts[i, j] > 0]
    return {"num_images": int(len(y)), **{k: float(base[k]) for k in ("accuracy", "balanced_accuracy", "macro_f1")},
            "per_class_f1": {c: round(float(f), 6) for c, f in zip(report["class"], report["f1"])},
            "most_confused": confused}


def data_section(data_path: str | os.PathLike, images_per_class: dict[str, dict[str, int]],
                 limit_per_class: int | None = None) -> dict:
    """Where the images come from and how many per class per split: images_per_class {split: {class: count}},
    the images a run read (after limit_per_class when it used fewer)."""
    return {"source": "AffectNet (Mollahosseini et al. 2017), 8 expression classes, as organised by "
                      "src/organize_data.py", "data_path": str(data_path), "images_per_class": images_per_class,
            "max_images_per_class": limit_per_class}


def recipe_section(cfg, versions: dict | None = None) -> dict:
    """How the model was trained: weights, phases (epochs, learning rate), augmentation, seed and the rest."""
    keys = ("weights", "input_shape", "dense_units", "dropout", "optimizer", "lr_schedule", "label_smoothing",
            "class_weighting", "train_batch_size", "seed", "monitor", "mixed_precision", "face_alignment")
    return {**{k: cfg[k] for k in keys},
            "phases": [{"phase": "head", "epochs": cfg.num_epochs, "learning_rate": cfg.learning_rate},
                       {"phase": "fine_tune", "epochs": cfg.fine_tune_epochs,
                        "learning_rate": cfg.fine_tune_learning_rate, "blocks": cfg.fine_tune_blocks}],
            "augmentation": {k.removeprefix("augment_"): cfg[k] for k in cfg if k.startswith("augment_")},
            "versions": versions or {}}


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "–" if value is None else str(value)


def _metrics_md(metrics: dict) -> list[str]:
    lines = []
    for split in ("val", "test"):
        m = metrics.get(split)
        if not m:
            lines.append(f"- {split}: not measured yet" + (" (run python src/evaluate.py)" if split == "test" else ""))
            continue
        lines.append(f"- **{split}** ({m.get('num_images')} images): accuracy {_fmt(m.get('accuracy'))}, balanced "
                     f"accuracy {_fmt(m.get('balanced_accuracy'))}, macro-F1 {_fmt(m.get('macro_f1'))}")
        for k in ("ece_uncalibrated", "ece", "nll", "brier", "coverage", "answered_accuracy"):
            if k in m:
                lines.append(f"  - {k}: {_fmt(m[k])}")
        f1 = m.get("per_class_f1", {})
        if f1:
            lines.append("  - per-class F1: " + ", ".join(f"{c} {v:.3f}" for c, v in f1.items()))
        pairs = m.get("most_confused", [])
        if pairs:
            lines.append("  - most confused (true -> predicted): "
                         + "; ".join(f"{p['true']} -> {p['predicted']} ({p['images']})" for p in pairs))
    return lines


def _robustness_md(section: dict, model_sha256: str | None) -> list[str]:
    """evaluate.py --robustness's figures (evaluation/robustness.card_section), or one line saying they were
    measured on another model file (a later train.py run keeps the section but not its model)."""
    if section.get("model_sha256") != model_sha256:
        return [f"- measured on another model file (sha256 {str(section.get('model_sha256'))[:16]}...): run "
                f"python src/evaluate.py --robustness again"]
    clean = section.get("clean", {})
    lines = [f"In short: {section.get('summary', '')}.", "",
             f"- {section.get('split')} split, {section.get('num_images')} images, measured "
             f"{section.get('measured_at')}: clean accuracy {_fmt(clean.get('accuracy'))}, macro-F1 "
             f"{_fmt(clean.get('macro_f1'))}, ECE {_fmt(clean.get('ece'))}, uncertain {_fmt(clean.get('uncertain'))}"]
    for name, levels in section.get("corruptions", {}).items():
        lines.append(f"- {name}: accuracy " + ", ".join(f"{lv['level']} {_fmt(lv['accuracy'])}" for lv in levels))
    aligned = section.get("alignment") or {}
    if aligned.get("levels"):
        lines.append(f"- the same with the eyes levelled (face_alignment eyes, {aligned['detector']}): accuracy "
                     + ", ".join(f"{lv['level']} {_fmt(lv['accuracy_without'])} -> {_fmt(lv['accuracy_with'])}"
                                 for lv in aligned["levels"]))
    e2e = section.get("end_to_end") or {}
    for detector, t in e2e.get("detectors", {}).items():
        default = " (face_detector's)" if detector == e2e.get("detector") else ""
        lines.append(f"- end to end, {detector}{default}: {t['found']} of {t['scenes']} faces found "
                     f"({_fmt(t['detection_rate'])}), accuracy on them {_fmt(t['accuracy'])} (their crops "
                     f"{_fmt(t['crop_accuracy'])}), same answer as the crop {_fmt(t['agreement'])}")
    lines.append("- details: performance_dir's robustness.csv and robustness.png")
    return lines


def render_markdown(card: dict) -> str:
    """The card as Markdown (what a person reads); every figure comes from the JSON."""
    data, recipe, training = card.get("data", {}), card.get("recipe", {}), card.get("training", {})
    cal = card.get("calibration", {})
    lines = [f"# Model card: {card.get('model')}", "", f"sha256 `{card.get('model_sha256')}`, updated "
             f"{card.get('updated_at')}", "", "## Data", ""]
    lines += [f"- source: {data.get('source', '–')}", f"- folder: {data.get('data_path', '–')}"]
    for split, counts in data.get("images_per_class", {}).items():
        lines.append(f"- {split}: {sum(counts.values())} images (" + ", ".join(f"{c} {n}" for c, n in counts.items()) + ")")
    lines += ["", "## Recipe", ""]
    for phase in recipe.get("phases", []):
        lines.append(f"- {phase['phase']}: {phase['epochs']} epochs at learning rate {phase['learning_rate']}")
    lines += [f"- {k}: {v}" for k, v in recipe.items() if k not in ("phases", "versions")]
    lines += ["- versions: " + ", ".join(f"{k} {v}" for k, v in recipe.get("versions", {}).items())]
    lines += ["", "## Training", ""] + [f"- {k}: {_fmt(v)}" for k, v in training.items()]
    lines += ["", "## Calibration", ""]
    if cal.get("temperature") is None:
        lines.append("- not calibrated (run python src/calibrate.py)")
    else:
        lines += [f"- {k}: {_fmt(v)}" for k, v in cal.items()]
    lines += ["", "## Metrics", ""] + _metrics_md(card.get("metrics", {}))
    if card.get("robustness"):
        lines += ["", "## Robustness", ""] + _robustness_md(card["robustness"], card.get("model_sha256"))
    lines += ["", "## Intended use", "", card.get("intended_use", INTENDED_USE), "", "## Limits", ""]
    lines += [f"- {text}" for text in card.get("limits", LIMITS)]
    return "\n".join(lines) + "\n"
