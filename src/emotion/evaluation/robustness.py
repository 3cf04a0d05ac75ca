"""How the model does on worse pictures than its test split's: corruptions at graded severities, and the faces
found and classified end to end in larger scenes (evaluate.py --robustness).

    report = measure(model, files, cfg)                        # files: datasets.read_split(...); corruptions only
    report = measure(model, files, cfg, end_to_end=scenes)     # scenes: runtime.end_to_end.EndToEnd(cfg, model_path)
    report.rows                 # one dict per corruption and severity (and per end-to-end cell): ROW_COLUMNS
    summary_line(report)        # the terminal's line; says plainly when the model is at chance
    write(dest, report)         # dest["robustness.csv"], dest["robustness.png"]
    card_section(report)        # the model card's "robustness" section

The split is read once, batch by batch (memory stays flat): each batch's uint8 pixels go through every corruption
of corruptions.CORRUPTIONS at every severity and the model (in inference mode, as evaluate.py runs it) classifies
each version; a corrupted batch equal to the clean one (severity 0 always is) takes the clean probabilities
without running the model again. Per corruption and severity: accuracy, balanced accuracy, macro-F1, ECE, the share
answered "uncertain" (top probability below min_confidence), the share with the same top label as the clean
image (agreement) and the accuracy change from the clean figures on the same images.

End to end, `end_to_end(images, labels, first_index)` (evaluation never imports runtime, so evaluate.py passes
runtime.end_to_end.EndToEnd in) returns one record per image, scene and face detector: {"detector", "background",
"side", "label", "found", "probs" (the face's probabilities, None when not found), "crop_probs" (the same
classifier on the original crop)}; rows per detector, background and placed size give the detection rate, the
accuracy on the faces found and their agreement with the crop's answer.

With and without face alignment: the clean images and every severity of the rotation corruption are classified
a second time with their eyes levelled as face_alignment eyes levels a dataset image (BlazeFace on the crop,
faces.tight_crop_angle, then faces.turn), on the same model: rows of test "alignment". They say how much of what a
turned face costs the levelling wins back. Not measured when no BlazeFace model is installed (Haar finds no eyes).

At chance: when the clean balanced accuracy is within max(5 points, 2 standard errors) of 1 / number of classes,
a model that learned nothing stays at chance under every corruption; the line and the card then say so instead
of reading anything into the figures.
"""
from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from emotion.common import plots
from emotion.common.atomic import atomic_path
from emotion.evaluation import calibration_metrics, corruptions
from emotion.evaluation.metrics import classification_metrics

OUTPUTS = ("robustness.csv", "robustness.png")
ROW_COLUMNS = ["test", "corruption", "severity", "level", "detector", "background", "images", "faces_found",
               "detection_rate", "accuracy", "balanced_accuracy", "macro_f1", "ece", "uncertain", "agreement",
               "accuracy_change"]
ALIGNED = "rotation"  # the corruption repeated with the eyes levelled (test "alignment")
SMALL_FACE_PX = 32  # the card's headline size: a face of about 32 pixels, a person a few metres from a webcam
CHANCE_MARGIN = 0.05
AT_CHANCE = "the model is at chance: the figures say nothing about robustness"


@dataclass
class Report:
    """What measure() found. rows: ROW_COLUMNS dicts (test "corruption" or "end_to_end"); clean: the clean
    figures; end_to_end: per detector, its totals over every scene (None without end_to_end)."""

    rows: list[dict]
    clean: dict
    chance: float
    at_chance: bool
    num_images: int
    seconds: float
    images_per_s: float
    end_to_end: dict | None = None
    default_detector: str | None = None
    scenes_per_s: float | None = None
    aligner: str | None = None  # the BlazeFace model that found the eyes of the "alignment" rows; None: not measured
    info: dict = field(default_factory=dict)  # split, model_sha256, measured_at: set by the caller


def default_plan() -> list[tuple[str, int]]:
    """Every corruption at severities 0..n (0 is the clean image: its row repeats the clean figures)."""
    return [(name, s) for name in corruptions.CORRUPTIONS for s in (0, *corruptions.severities(name))]


def measure(model, files, cfg, end_to_end: Callable | None = None, plan: list[tuple[str, int]] | None = None,
            batch_size: int | None = None, alignment: bool = True) -> Report:
    """Run the corruptions of `plan` (default_plan()), the alignment rows (when `alignment` and BlazeFace is
    installed) and, when given, the end-to-end scenes over `files` (a datasets.SplitFiles); returns the Report.
    Prints one progress line."""
    plan = default_plan() if plan is None else list(plan)
    aligner = leveller(cfg) if alignment else None
    start = time.perf_counter()
    y, probs, records, e2e_seconds = _run(model, files, cfg, plan, end_to_end, batch_size, aligner)
    seconds = time.perf_counter() - start
    classes, side = list(cfg.class_names), int(cfg.input_shape[0])
    min_conf = float(cfg.min_confidence)
    clean_probs = probs[("clean", 0)]
    clean = _figures(y, clean_probs, clean_probs, min_conf, classes)
    rows = [_corruption_row(name, s, side, _figures(y, probs[(name, s)], clean_probs, min_conf, classes), clean)
            for name, s in plan]
    if aligner is not None:
        rows += [_alignment_row(s, side, _figures(y, probs[("levelled", s)], clean_probs, min_conf, classes), clean,
                                aligner[0]) for s in (0, *corruptions.severities(ALIGNED))]
    chance, at_chance = chance_level(y, clean_probs, len(classes))
    passes = len(y) * (1 + sum(s > 0 for _, s in plan))
    report = Report(rows, clean, chance, at_chance, len(y), round(seconds, 2),
                    round(passes / max(seconds - e2e_seconds, 1e-9), 2), aligner=aligner and aligner[0])
    if end_to_end is not None:
        report.rows += end_to_end_rows(records, min_conf, classes)
        report.end_to_end = end_to_end_totals(records, min_conf, classes)
        report.default_detector = getattr(end_to_end, "default", None)
        report.scenes_per_s = round(len(records) / max(e2e_seconds, 1e-9), 2)
    return report


def leveller(cfg) -> tuple[str, Callable[[np.ndarray], np.ndarray]] | None:
    """(BlazeFace backend, level(uint8 [N, H, W, 3]) -> the images with their eyes levelled as face_alignment
    eyes levels a dataset image); config face_detector's BlazeFace model, else short range; None when none is
    installed."""
    from emotion.data import faces
    backend = cfg.face_detector if cfg.face_detector in faces.BLAZEFACE_MODELS else "blazeface"
    if faces.blazeface_model_path(faces.BLAZEFACE_MODELS[backend]) is None:
        return None
    detector = faces.FaceDetector(backend, cfg.face_min_score)

    def level(images: np.ndarray) -> np.ndarray:
        return np.stack([faces.turn(image, faces.tight_crop_angle(detector, image)) for image in images])
    return backend, level


def _levelled(images: np.ndarray, aligner, forward, turned_by: dict) -> dict:
    """{("levelled", severity): probabilities} of one batch: the clean images and each rotation severity, levelled.
    turned_by: {severity: the batch rotated} the plan made already (the others are made here)."""
    out = {}
    for s in (0, *corruptions.severities(ALIGNED)):
        turned = images if s == 0 else turned_by.get(s)
        if turned is None:
            turned = corruptions.corrupt(images, ALIGNED, s)
        out[("levelled", s)] = forward(aligner[1](turned).astype(np.float32)).numpy()
    return out


def _run(model, files, cfg, plan, end_to_end, batch_size, aligner=None):
    """(labels, {(name, severity) or ("clean", 0) or ("levelled", severity): probabilities}, end-to-end records,
    seconds spent end to end)."""
    from emotion.data import datasets
    from emotion.model import network as model_lib

    ds, info = datasets.make_dataset(files, cfg, training=False, batch_size=batch_size or cfg.test_batch_size,
                                     cache=False)
    forward = model_lib.make_forward(model, False, ds.element_spec[0])
    print(f"robustness: {sum(s > 0 for _, s in plan)} corrupted versions of {info.num_images} images"
          + (f", and each image in {len(getattr(end_to_end, 'sides', ())) or 'several'} scenes per face detector"
             if end_to_end else ""), flush=True)
    probs = {key: [] for key in [("clean", 0), *plan]}
    if aligner is not None:
        probs.update({("levelled", s): [] for s in (0, *corruptions.severities(ALIGNED))})
    labels, records, e2e_seconds = [], [], 0.0
    for x, y in ds:
        images = x.numpy().astype(np.uint8)  # the decoded pixels exactly: float32 holds 0..255 integers
        clean = forward(x).numpy()
        probs[("clean", 0)].append(clean)
        turned_by = {}  # the rotated batches, levelled again below
        for name, severity in plan:
            changed = corruptions.corrupt(images, name, severity)
            if name == ALIGNED:
                turned_by[severity] = changed
            same = changed is images or np.array_equal(changed, images)
            probs[(name, severity)].append(clean if same else forward(changed.astype(np.float32)).numpy())
        if aligner is not None:
            for key, value in _levelled(images, aligner, forward, turned_by).items():
                probs[key].append(value)
        if end_to_end is not None:
            t = time.perf_counter()
            records += end_to_end(images, y.numpy(), sum(map(len, labels)))
            e2e_seconds += time.perf_counter() - t
        labels.append(y.numpy())
    y = np.concatenate(labels) if labels else np.zeros((0,), np.int64)
    return y, {k: np.concatenate(v) for k, v in probs.items()}, records, e2e_seconds


def _figures(y, probs, reference_probs, min_confidence: float, class_names) -> dict:
    """images, accuracy, balanced accuracy, macro-F1, ECE, uncertain share and agreement (the share with the same
    top label as reference_probs) of probs on labels y; the figures are None when there is no image."""
    y, probs = np.asarray(y, np.int64), np.asarray(probs, np.float64)
    if len(y) == 0:
        return {"images": 0, **dict.fromkeys(("accuracy", "balanced_accuracy", "macro_f1", "ece", "uncertain",
                                                "agreement"))}
    m = _metrics(y, probs, class_names)
    return {"images": int(len(y)), "accuracy": m["accuracy"], "balanced_accuracy": m["balanced_accuracy"],
            "macro_f1": m["macro_f1"], "ece": calibration_metrics.ece(probs, y),
            "uncertain": float((probs.max(axis=1) < min_confidence).mean()),
            "agreement": float((probs.argmax(axis=1) == np.asarray(reference_probs).argmax(axis=1)).mean())}


def _metrics(y, probs, class_names) -> dict:
    """classification_metrics without scikit-learn's warning that a class is predicted but absent from y (a
    small or partial split, the faces found in a scene): balanced accuracy averages over the classes present."""
    import warnings
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        return classification_metrics(y, probs, class_names)


def _corruption_row(name: str, severity: int, side: int, figures: dict, clean: dict) -> dict:
    return {"test": "corruption", "corruption": name, "severity": severity,
            "level": corruptions.level_label(name, severity, side), "detector": "", "background": "",
            **figures, "faces_found": "", "detection_rate": "",
            "accuracy_change": figures["accuracy"] - clean["accuracy"]}


def _alignment_row(severity: int, side: int, figures: dict, clean: dict, detector: str) -> dict:
    return {**_corruption_row(ALIGNED, severity, side, figures, clean), "test": "alignment", "detector": detector}


def chance_level(y, probs, num_classes: int) -> tuple[float, bool]:
    """(chance, whether the balanced accuracy of probs on y is within the chance margin of it). chance: 1 / the
    classes present in y (any constant answer, or a random one, scores that balanced accuracy; 1 / num_classes
    when all are present); margin: max(CHANCE_MARGIN, 2 standard errors of a proportion at chance over len(y))."""
    if len(y) == 0:
        return 1.0 / num_classes, True
    chance = 1.0 / len(np.unique(np.asarray(y)))
    balanced = _metrics(y, probs, list(range(num_classes)))["balanced_accuracy"]
    margin = max(CHANCE_MARGIN, 2 * math.sqrt(chance * (1 - chance) / len(y)))
    return chance, bool(balanced <= chance + margin)


# ------------------------------------------------------------------------------------------------
# End to end


def _group(records: list[dict], key) -> dict:
    groups: dict = {}
    for r in records:
        groups.setdefault(key(r), []).append(r)
    return groups


def _scene_figures(group: list[dict], min_confidence: float, class_names) -> dict:
    """Detection rate over the group's scenes; on the faces found, _figures against the crop's answer and the
    accuracy change from the crop's own accuracy on the same images."""
    found = [r for r in group if r["found"]]
    y = np.asarray([r["label"] for r in found], np.int64)
    probs = np.asarray([r["probs"] for r in found], np.float64).reshape(len(found), len(class_names))
    crops = np.asarray([r["crop_probs"] for r in found], np.float64).reshape(len(found), len(class_names))
    figures = _figures(y, probs, crops, min_confidence, class_names)
    crop_accuracy = float((crops.argmax(axis=1) == y).mean()) if len(found) else None
    change = None if figures["accuracy"] is None else figures["accuracy"] - crop_accuracy
    return {**figures, "images": len(group), "faces_found": len(found), "detection_rate": len(found) / len(group),
            "accuracy_change": change}


def end_to_end_rows(records: list[dict], min_confidence: float, class_names) -> list[dict]:
    """One row per detector, background and placed size (larger first: severity 1, 2, ...)."""
    sides = sorted({r["side"] for r in records}, reverse=True)
    rows = []
    groups = _group(records, lambda r: (r["detector"], r["background"], r["side"]))
    for (detector, background, side), group in groups.items():
        rows.append({"test": "end_to_end", "corruption": "scene", "severity": sides.index(side) + 1,
                     "level": f"{side} px", "detector": detector, "background": background,
                     **_scene_figures(group, min_confidence, class_names)})
    return sorted(rows, key=lambda r: (r["detector"], r["background"], r["severity"]))


def end_to_end_totals(records: list[dict], min_confidence: float, class_names) -> dict:
    """Per detector over all its scenes: scenes, found, detection_rate, accuracy (on the faces found),
    agreement with the crop's answer, and crop_accuracy (the crops of the same faces)."""
    totals = {}
    for detector, group in _group(records, lambda r: r["detector"]).items():
        f = _scene_figures(group, min_confidence, class_names)
        crop_accuracy = None if f["accuracy"] is None else f["accuracy"] - f["accuracy_change"]
        totals[detector] = {"scenes": f["images"], "found": f["faces_found"], "detection_rate": f["detection_rate"],
                            "accuracy": f["accuracy"], "agreement": f["agreement"], "crop_accuracy": crop_accuracy}
    return totals


# ------------------------------------------------------------------------------------------------
# What a person reads


def _row(report: Report, name: str, severity: int, test: str = "corruption") -> dict | None:
    return next((r for r in report.rows if r["test"] == test and r["corruption"] == name
                 and r["severity"] == severity), None)


def alignment_effect(report: Report) -> list[dict]:
    """Per rotation severity (0 = clean): level, accuracy without and with the eyes levelled; [] when the
    alignment rows were not measured."""
    out = []
    for s in (0, *corruptions.severities(ALIGNED)):
        without = _row(report, ALIGNED, s) if s else {"level": "clean", "accuracy": report.clean["accuracy"]}
        levelled = _row(report, ALIGNED, s, "alignment")
        if without is not None and levelled is not None:
            out.append({"level": "clean" if s == 0 else without["level"], "accuracy_without": without["accuracy"],
                        "accuracy_with": levelled["accuracy"]})
    return out


def _alignment_sentence(report: Report) -> str:
    effect = alignment_effect(report)
    if len(effect) < 2:
        return ""
    last = effect[-1]
    return (f"levelling the eyes takes faces turned {last['level']} from {last['accuracy_without']:.2f} to "
            f"{last['accuracy_with']:.2f} (clean {effect[0]['accuracy_without']:.2f} -> "
            f"{effect[0]['accuracy_with']:.2f})")


def small_faces(report: Report) -> dict | None:
    """The downscale row at SMALL_FACE_PX (at the reference size), or None when it was not measured."""
    levels = corruptions.levels("downscale")
    return _row(report, "downscale", levels.index(SMALL_FACE_PX) + 1) if SMALL_FACE_PX in levels else None


def worst(report: Report) -> dict | None:
    """The corruption row with the lowest accuracy (the first of equals), or None."""
    rows = [r for r in report.rows if r["test"] == "corruption" and r["severity"] > 0]
    return min(rows, key=lambda r: r["accuracy"]) if rows else None


def _end_to_end_sentence(report: Report, detection_only: bool = False) -> str:
    """The default detector's share of faces found and, unless detection_only, their agreement with the crop."""
    totals = report.end_to_end or {}
    detector = report.default_detector if report.default_detector in totals else next(iter(totals), None)
    if detector is None:
        return ""
    t = totals[detector]
    found = f"end to end ({detector}) {t['detection_rate']:.0%} of faces are found"
    if detection_only:
        return found
    agreement = "no face to compare" if t["agreement"] is None else \
        f"the answer agrees with the crop's {t['agreement']:.0%} of the time"
    return f"{found} and {agreement}"


def summary(report: Report) -> str:
    """The sentence of the card and the terminal: the few numbers a user needs, or that the model is at chance."""
    clean = report.clean["accuracy"]
    e2e = _end_to_end_sentence(report, detection_only=report.at_chance)
    if report.at_chance:
        text = (f"{AT_CHANCE} (clean balanced accuracy {report.clean['balanced_accuracy']:.2f}, chance "
                f"{report.chance:.2f})")
        return text + (f"; face detection does not depend on the model: {e2e}" if e2e else "")
    parts = []
    small = small_faces(report)
    if small is not None:
        verb = "falls" if small["accuracy"] < clean else "goes"
        parts.append(f"accuracy {verb} from {clean:.2f} to {small['accuracy']:.2f} on {small['level']} faces")
    bad = worst(report)
    if bad is not None:
        parts.append(f"worst: {bad['corruption']} {bad['level']} ({bad['accuracy']:.2f})")
    aligned = _alignment_sentence(report)
    return "; ".join(parts + [text for text in (aligned, e2e) if text])


def summary_line(report: Report) -> str:
    """robustness: <summary> (N images, S s)"""
    return f"robustness: {summary(report)} ({report.num_images} images, {report.seconds:.0f} s)"


def card_section(report: Report) -> dict:
    """The model card's "robustness" section: the summary, the clean figures, each corruption's accuracy per
    severity, the end-to-end totals; with the model's sha256 it was measured on (report.info)."""
    keys = ("accuracy", "balanced_accuracy", "macro_f1", "ece", "uncertain")
    per = {}
    for r in report.rows:
        if r["test"] == "corruption" and r["severity"] > 0:
            figures = {k: _rounded(r[k]) for k in ("accuracy", "macro_f1", "uncertain", "agreement")}
            per.setdefault(r["corruption"], []).append({"level": r["level"], **figures})
    return {**report.info, "num_images": report.num_images, "seconds": report.seconds,
            "chance": round(report.chance, 6), "at_chance": report.at_chance, "summary": summary(report),
            "clean": {k: _rounded(report.clean[k]) for k in keys}, "corruptions": per,
            "alignment": None if report.aligner is None else {
                "detector": report.aligner,
                "levels": [{k: _rounded(v) for k, v in e.items()} for e in alignment_effect(report)]},
            "end_to_end": None if report.end_to_end is None else {
                "detector": report.default_detector,
                "detectors": {d: {k: _rounded(v) for k, v in t.items()} for d, t in report.end_to_end.items()}}}


def _rounded(value):
    return round(value, 6) if isinstance(value, float) else value


# ------------------------------------------------------------------------------------------------
# Files


def write(dest: dict[str, Path], report: Report) -> None:
    """robustness.csv (ROW_COLUMNS, one row per corruption and severity, then the end-to-end cells) and
    robustness.png, each to dest[name]."""
    with atomic_path(dest["robustness.csv"]) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=ROW_COLUMNS)
        writer.writeheader()
        for row in report.rows:
            writer.writerow({k: ("" if row[k] is None else f"{row[k]:.6f}" if isinstance(row[k], float) else row[k])
                             for k in ROW_COLUMNS})
    plot(report, dest["robustness.png"])


def _corruption_panel(ax, report: Report, name: str) -> None:
    rows = [r for r in report.rows if r["test"] == "corruption" and r["corruption"] == name]
    x = [r["severity"] for r in rows]
    ax.plot(x, [r["accuracy"] for r in rows], "o-", color="#4c72b0", label="accuracy")
    levelled = [r for r in report.rows if r["test"] == "alignment" and r["corruption"] == name]
    if levelled:
        ax.plot([r["severity"] for r in levelled], [r["accuracy"] for r in levelled], "s--", color="#dd8452",
                label="eyes levelled")
        ax.legend(fontsize=6, loc="lower left")
    ax.axhline(report.clean["accuracy"], color="gray", linestyle="--", label="clean")
    ax.axhline(report.chance, color="#c44e52", linestyle=":", label="chance")
    ax.set_xticks(x, [r["level"] for r in rows], rotation=30, fontsize=7)
    last = rows[-1]["accuracy"] if rows else None
    ax.set(ylim=(0, 1.02), title=f"{name}" + (f": {last:.2f} at the last level" if last is not None else ""))
    ax.title.set_fontsize(9)


def _pooled(cell: list[dict], key: str) -> float:
    """The rows' `key` pooled over backgrounds, weighted by their scenes (detection) or faces found (the rest)."""
    known = [(r[key], r["images"] if key == "detection_rate" else r["faces_found"]) for r in cell]
    known = [(v, w) for v, w in known if v is not None and w]
    return sum(v * w for v, w in known) / sum(w for _, w in known) if known else np.nan


def _scene_panel(ax, report: Report, key: str, title: str) -> None:
    """`key` against the placed size per detector (one colour each); detection: plain background solid,
    cluttered dashed (BlazeFace short range differs most between them); accuracy: both pooled."""
    rows = [r for r in report.rows if r["test"] == "end_to_end"]
    for i, (detector, group) in enumerate(_group(rows, lambda r: r["detector"]).items()):
        split = _group(group, lambda r: r["background"]) if key == "detection_rate" else {"": group}
        for background, cells in split.items():
            by_size = _group(cells, lambda r: r["severity"])
            sizes = sorted(by_size)
            ax.plot(sizes, [_pooled(by_size[s], key) for s in sizes], "o--" if background == "cluttered" else "o-",
                    color=f"C{i}", label=f"{detector}, {background}" if background else detector)
            ax.set_xticks(sizes, [by_size[s][0]["level"] for s in sizes], fontsize=7)
    if key == "accuracy":
        ax.axhline(report.clean["accuracy"], color="gray", linestyle="--", label="clean")
        ax.axhline(report.chance, color="#c44e52", linestyle=":", label="chance")
    ax.set(ylim=(0, 1.02), title=title, xlabel="placed image side (640x480 frame)")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=6, loc="best")


def plot(report: Report, path: Path) -> None:
    """Accuracy against severity, one panel per corruption (clean accuracy dashed, chance dotted), and two
    end-to-end panels: the share of faces found and the accuracy on them, against the placed size."""
    plt = plots.pyplot()
    names = list(dict.fromkeys(r["corruption"] for r in report.rows if r["test"] == "corruption"))
    panels = len(names) + (2 if report.end_to_end else 0)
    cols = 4
    fig, axes = plt.subplots(math.ceil(panels / cols), cols, figsize=(16, 3.6 * math.ceil(panels / cols)),
                             squeeze=False)
    flat = list(axes.ravel())
    for ax, name in zip(flat, names):
        _corruption_panel(ax, report, name)
    if names:
        flat[0].legend(fontsize=7, loc="lower left")
    if report.end_to_end:
        _scene_panel(flat[len(names)], report, "detection_rate", "end to end: share of faces found")
        _scene_panel(flat[len(names) + 1], report, "accuracy", "end to end: accuracy on the faces found")
    for ax in flat[panels:]:
        ax.axis("off")
    title = (f"Robustness, {report.info.get('split', '')} split ({report.num_images} images): clean accuracy "
             f"{report.clean['accuracy']:.2f}")
    if report.at_chance:
        title += f"\n{AT_CHANCE.upper()}"
    fig.suptitle(title, color="#c44e52" if report.at_chance else "black")
    fig.tight_layout()
    plots.save(fig, path)
