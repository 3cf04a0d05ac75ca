"""Emotion recognition on photos (what predict.py runs): find the images, classify their faces in batches, print
one block per image, write predictions.json and annotated copies.

    plan = photos.plan(cfg, ["photo.jpg", "photos/", "shots/*.png"], write_json=True, save_images=True)
    code = photos.run(plan, rec, top_k=3, batch_size=32)    # rec: recognizer.EmotionRecognizer(cfg); exit code

plan() finds the images (NoInput, exit code 2, when nothing matches) and refuses unwritable outputs before any
model loads; run() prints and publishes the outputs together (outputs.Staged). predictions.json is streamed
(prediction_stream.PredictionStream: a JSON array, one entry per line, flushed after each batch), so memory does
not grow with the number of images; plan(..., resume=True) keeps a journal of the images done
(photo_journal.py) that a run of the same inputs reads to classify only the rest. The pieces are public too:
collect_inputs, read_image, describe, write_image_atomic.
"""
from __future__ import annotations

import glob
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from emotion.common import atomic, outputs, paths
from emotion.common.console import quiet_stderr
from emotion.common.errors import UserError
# What a folder or a glob picks up (by extension, case-insensitive); a file named explicitly is always tried.
# what OpenCV reads (one rule: image_types.py)
from emotion.common.image_types import OPENCV_EXTENSIONS as IMAGE_EXTENSIONS
from emotion.runtime import photo_journal, photo_summary
from emotion.runtime.prediction_stream import PredictionStream

PHOTOS_DIR = "photos"   # predict.py's own folder in results_dir: inference.py's files lie beside it, never in it
JSON_NAME = "predictions.json"
LABELED_DIR = "labeled_images"
SUMMARY_NAME, EXPLANATIONS_DIR = "summary.csv", "explanations"   # --summary, --explain


class NoInput(UserError):
    """No image matches what was asked for."""

    code = 2


# ---------------------------------------------------------------------------------------------
# Inputs


def collect_inputs(specs: list[str]) -> tuple[list[str], list[str]]:
    """(image paths in order, specs that matched nothing). A folder gives its image files sorted by name, a
    glob its matching image files sorted, an existing file itself. A file reached twice is listed once."""
    image_paths, unmatched, seen = [], [], set()
    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            found = [str(p / c.name) for c in sorted(p.iterdir())
                     if c.suffix.lower() in IMAGE_EXTENSIONS and c.is_file()]
        elif p.exists():
            found = [spec] if paths.is_regular_file(p) else []
        elif glob.has_magic(spec):
            found = [m for m in sorted(glob.glob(spec))
                     if Path(m).suffix.lower() in IMAGE_EXTENSIONS and Path(m).is_file()]
        else:
            found = []
        if not found:
            unmatched.append(spec)
        for path in found:
            key = os.path.realpath(path)
            if key not in seen:
                seen.add(key)
                image_paths.append(path)
    return image_paths, unmatched


def no_match_message(spec: str) -> str:
    """Why `spec` (a path or glob given by the user) gave no image."""
    p = Path(spec)
    if p.is_dir():
        return f"no images in the folder {spec} (looked for {', '.join(IMAGE_EXTENSIONS)})"
    if p.exists():
        return f"{spec} is not a regular file (a pipe, socket or device): give an image file"
    if glob.has_magic(spec):
        return f"no image matches {spec}"
    return f"no such file or folder: {spec}"


def read_image(path: str):
    """BGR uint8 HxWx3 (EXIF orientation applied, gray and alpha made 3-channel), or None when the file cannot
    be read or decoded. libjpeg's warnings about damaged data are silenced: the caller reports failures."""
    import cv2
    import numpy as np

    if not paths.is_regular_file(path):  # a pipe would block the read forever
        return None
    try:
        data = np.fromfile(path, np.uint8)
    except OSError:
        return None
    if data.size == 0:
        return None
    try:
        with quiet_stderr():
            image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error:  # e.g. a header claiming more pixels than OpenCV decodes (an image bomb)
        return None
    if image is None or image.ndim != 3 or min(image.shape[:2]) == 0:
        return None
    return image


# ---------------------------------------------------------------------------------------------
# Output


def describe(name: str, results, top_k: int) -> list[str]:
    """The printed block of one image."""
    if not results:
        return [f"{name}: no face found"]
    head = f"{name}: {len(results)} face{'s' if len(results) != 1 else ''}"
    if results[0].whole_image:
        head += " (whole image: no face detected, classified as a face crop)"
    lines = [head]
    for i, r in enumerate(results, 1):
        ranked = sorted(r.probabilities.items(), key=lambda kv: -kv[1])
        others = [f"{k} {v:.2f}" for k, v in ranked if k != r.top_label][:top_k - 1]
        box = ",".join(str(int(v)) for v in r.box)
        best = f"{r.top_label} {r.confidence:.2f}"
        best = f"uncertain: {best}" if r.label != r.top_label else best  # below min_confidence (confidence.py)
        lines.append(f"  face {i} [{box}] {best}" + (f" ({', '.join(others)})" if others else ""))
    return lines


def write_image_atomic(path: Path, image_bgr) -> Path:
    """Encode by the extension (PNG when OpenCV cannot write that format) and rename into place."""
    import cv2

    ok, buf = False, None
    try:
        ok, buf = cv2.imencode(path.suffix or ".png", image_bgr)
    except cv2.error:
        ok = False
    if not ok:
        path = path.with_suffix(".png")
        ok, buf = cv2.imencode(".png", image_bgr)
    atomic.write_bytes(path, buf.tobytes())
    return path


def labeled_name(path: str) -> str:
    """The annotated copy's file name: the input's, with .png where OpenCV cannot write the extension (an image
    named face.txt becomes face.png), decided before the name is reserved, so that copies never collide."""
    name = Path(path).name
    return name if Path(name).suffix.lower() in IMAGE_EXTENSIONS else f"{Path(name).stem}.png"


def unique_name(name: str, used: set[str]) -> str:
    """`name`, or name_1, name_2, ... when taken; the result is added to `used`."""
    stem, suffix = os.path.splitext(name)
    candidate, n = name, 1
    while candidate in used:
        candidate, n = f"{stem}_{n}{suffix}", n + 1
    used.add(candidate)
    return candidate


def annotate(image_bgr, results) -> None:
    """Draw the results on the image in place, or "no face found" in its corner when there are none."""
    from emotion.runtime import drawing

    if results:
        drawing.draw_results(image_bgr, results)
        return
    scale, thickness = drawing.style(image_bgr.shape)
    drawing.label_box(image_bgr, "no face found", 0, 0, (40, 40, 40), scale, thickness, above=False)


# ---------------------------------------------------------------------------------------------
# A run


@dataclass
class Plan:
    """What plan() found: the images, the specs that matched nothing, and the staged outputs."""

    image_paths: list[str]
    unmatched: list[str]
    staged: outputs.Staged
    journal: Path | None = None   # --resume: the journal of the images done (photo_journal.py)


def output_dir(cfg) -> Path:
    """Where predict.py writes: <results_dir>/photos/, so that its predictions.json and labeled_images/ are never
    the video run's (inference.py writes the same names in results_dir itself)."""
    return Path(cfg.results_dir) / PHOTOS_DIR


def plan(cfg, specs: list[str], write_json: bool = False, save_images: bool = False, summary: bool = False,
         explain: bool = False, resume: bool = False) -> Plan:
    """Find the images of `specs` and check the outputs can be written, before any model loads. NoInput
    (exit code 2) when nothing matches; UserError for an unwritable results_dir or a folder not ours.
    summary: summary.csv (photo_summary.py); explain: explanations/ (Grad-CAM figures, explanations.py);
    resume: keep a journal of the images done and skip those an earlier run of the same inputs journaled."""
    image_paths, unmatched = collect_inputs(specs)
    if not image_paths:
        raise NoInput(no_match_message(unmatched[0]) if len(unmatched) == 1 else
                      "nothing matches any of " + ", ".join(specs))
    results_dir = output_dir(cfg)
    finals = {**({"json": results_dir / JSON_NAME} if write_json else {}),
              **({"labeled": results_dir / LABELED_DIR} if save_images else {})}
    finals |= {**({"summary": results_dir / SUMMARY_NAME} if summary else {}),
               **({"explanations": results_dir / EXPLANATIONS_DIR} if explain else {})}
    staged = outputs.Staged(finals, journal_dir=results_dir, folders={"labeled", "explanations"} & finals.keys())
    if finals or resume:
        paths.check_writable(results_dir, "results_dir")   # (its photos/ folder is created when missing)
        staged.check(inputs=[Path(p) for p in image_paths])
    journal = photo_journal.journal_path(results_dir, image_paths, unmatched, cfg) if resume else None
    return Plan(image_paths, unmatched, staged, journal)


def run(plan: Plan, rec, top_k: int = 3, batch_size: int = 32) -> int:
    """Classify every image with `rec`, print the blocks and a JSON summary line, publish the outputs; the exit
    code (1 when an image failed). The staged outputs are discarded when this fails or is interrupted."""
    staged = plan.staged
    if staged.finals:
        staged.prepare()
    tally = {"failed": 0, "faces": 0, "read": 0, "used_names": set()}
    if "json" in staged.finals:   # each image's entry written as it is classified: a JSON array, one per line
        tally["stream"] = PredictionStream(staged.tmp["json"], array=True)
    if "summary" in staged.finals:
        tally["summary_entries"] = []   # what summary.csv needs only: image, labels, error
    try:
        if plan.journal is not None:
            plan.journal.parent.mkdir(parents=True, exist_ok=True)
            tally["journal"] = photo_journal.ResumeJournal(plan.journal)
        return _classify_all(plan, rec, top_k, batch_size, tally)
    except BaseException:
        _close(tally)
        staged.discard()
        raise


def _close(tally: dict) -> None:
    for key in ("stream", "journal"):
        if key in tally:
            tally[key].close()


def _record(tally: dict, entry: dict) -> None:
    """One image's entry: to predictions.json's stream, and what summary.csv needs of it."""
    if "stream" in tally:
        tally["stream"].write(entry)
    if "summary_entries" in tally:
        tally["summary_entries"].append({"image": entry["image"], "error": entry["error"],
                                         "faces": [{"label": f["label"]} for f in entry["faces"]]})


def _classify_all(plan: Plan, rec, top_k: int, batch_size: int, tally: dict) -> int:
    staged = plan.staged
    json_path, labeled_dir = staged.finals.get("json"), staged.finals.get("labeled")
    if "journal" in tally:
        print(f"resuming: {len(tally['journal'])} image(s) done by an earlier run ({plan.journal})", flush=True)
    if "explanations" in staged.finals:  # Grad-CAM figures, on the Keras model (TFLite has no gradients)
        from emotion.evaluation import explanations
        tally["explainer"] = explanations.Explainer(rec, staged.tmp["explanations"])
    for spec in plan.unmatched:
        print(f"error: {no_match_message(spec)}", file=sys.stderr, flush=True)
        _record(tally, {"image": spec, "width": None, "height": None, "faces": [], "whole_image": False,
                        "error": "not a regular file" if Path(spec).exists() else "no image matches"})
        tally["failed"] += 1
    start = time.perf_counter()
    for first in range(0, len(plan.image_paths), batch_size):
        _classify_chunk(plan.image_paths[first:first + batch_size], rec, top_k, staged, tally)
    seconds = time.perf_counter() - start
    _close(tally)
    if "summary" in staged.finals:
        rows = photo_summary.photo_rows(tally["summary_entries"], rec.class_names)
        photo_summary.write_photo_summary(rows, staged.tmp["summary"])
        print("faces per label: " + ", ".join(f"{k} {v}" for k, v in photo_summary.label_counts(rows).items()))
    if staged.finals:
        staged.publish()
    if "journal" in tally:
        tally["journal"].remove()   # the outputs are complete: nothing left to resume
    read_ok = tally["read"]
    if json_path is not None:
        print(f"wrote {json_path}")
    if labeled_dir is not None and read_ok:
        print(f"wrote {read_ok} annotated image{'s' if read_ok != 1 else ''} to {labeled_dir}")
    print(json.dumps({"images": len(plan.image_paths) + len(plan.unmatched), "faces": tally["faces"],
                      "failed": tally["failed"], "ms_per_image": round(1000 * seconds / read_ok, 2) if read_ok else None,
                      "json": str(json_path) if json_path is not None else None,
                      "labeled_images": str(labeled_dir) if labeled_dir is not None else None,
                      **{k: str(staged.finals[k]) if k in staged.finals else None for k in ("summary", "explanations")}}),
          flush=True)
    return 1 if tally["failed"] else 0


def _classify_chunk(chunk: list[str], rec, top_k: int, staged: outputs.Staged, tally: dict) -> None:
    """Read, classify (one analyze_batch), print, record and annotate the images of one batch. With --resume, an
    image the journal holds is not classified again: its entry is the journal's (read only when drawn on)."""
    import cv2

    journal = tally.get("journal")
    keys = [photo_journal.identity(p) for p in chunk] if journal is not None else [None] * len(chunk)
    done = {i: e for i, key in enumerate(keys) if journal is not None and (e := journal.get(key)) is not None}
    drawn = "labeled" in staged.finals or "explainer" in tally
    images = [read_image(p) if i not in done or drawn else None for i, p in enumerate(chunk)]
    done = {i: e for i, e in done.items() if images[i] is not None or not drawn}   # unreadable now: a failure
    rgbs = {i: cv2.cvtColor(im, cv2.COLOR_BGR2RGB) for i, im in enumerate(images) if im is not None}
    todo = [i for i in rgbs if i not in done]   # converted once: classified, explained
    analysed = dict(zip(todo, rec.analyze_batch([rgbs[i] for i in todo]))) if todo else {}
    analysed |= {i: _results_from_entry(e) for i, e in done.items()}
    for i, path in enumerate(chunk):
        if i not in analysed:
            tally["failed"] += 1
            print(f"error: cannot read image: {path}", file=sys.stderr, flush=True)
            _record(tally, {"image": path, "width": None, "height": None, "faces": [], "whole_image": False,
                            "error": "cannot read image"})
            continue
        tally["read"] += 1
        results = analysed[i]
        tally["faces"] += len(results)
        print("\n".join(describe(path, results, top_k)), flush=True)
        if "explainer" in tally:
            tally["explainer"].explain(path, rgbs[i], results)
        entry = done.get(i) or {"image": path, "width": int(images[i].shape[1]), "height": int(images[i].shape[0]),
                                "faces": [r.to_dict() for r in results],
                                "whole_image": bool(results and results[0].whole_image), "error": None}
        _record(tally, entry)
        if journal is not None and i not in done:
            journal.add(keys[i], entry)
        if "labeled" in staged.finals:
            annotate(images[i], results)
            write_image_atomic(staged.tmp["labeled"] / unique_name(labeled_name(path), tally["used_names"]),
                               images[i])
    for key in ("stream", "journal"):   # on disk before the next batch: an interruption keeps this one's
        if key in tally:
            tally[key].flush()


def _results_from_entry(entry: dict) -> list:
    """The FaceResults of a journaled entry (what describe, annotate and the explainer take)."""
    from emotion.runtime.recognizer import FaceResult

    return [FaceResult(**{**f, "box": tuple(f["box"])}) for f in entry["faces"]]
