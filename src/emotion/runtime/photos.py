"""Emotion recognition on photos (what predict.py runs): find the images, classify their faces in batches, print
one block per image, write predictions.json and annotated copies.

    plan = photos.plan(cfg, ["photo.jpg", "photos/", "shots/*.png"], write_json=True, save_images=True)
    code = photos.run(plan, rec, top_k=3, batch_size=32)    # rec: recognizer.EmotionRecognizer(cfg); exit code
    code = photos.run(plan, None, workers=2, cfg=cfg)       # predict.py --workers 2: no model in this process

plan() finds the images (NoInput, exit code 2, when nothing matches) and refuses unwritable outputs before any
model loads; run() prints and publishes the outputs together (outputs.Staged). The images are classified in chunks
of batch_size (classify_chunk: one analyze_batch call, the annotated copies and Grad-CAM figures drawn to scratch
files), in this process or, workers > 1, in worker processes each with its own model (PhotoJob, workers.InOrder);
either way the chunks' outcomes are handled here in input order (printed, recorded, the drawings renamed to their
final names), so the outputs are the same whatever the number of workers. A worker that dies costs its chunk only
(its images failed: "error: worker died analysing PATH (exit code X)"). predictions.json is streamed
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from emotion.common import atomic, console, outputs, paths
from emotion.common.console import quiet_stderr
from emotion.common.errors import UserError
# What a folder or a glob picks up (by extension, case-insensitive); a file named explicitly is always tried.
# what OpenCV reads (one rule: image_types.py)
from emotion.common.image_types import OPENCV_EXTENSIONS as IMAGE_EXTENSIONS
from emotion.runtime import photo_journal, photo_summary
from emotion.runtime.prediction_stream import PredictionStream
from emotion.runtime.workers import InOrder, conversion_cached

PHOTOS_DIR = "photos"   # predict.py's own folder in results_dir: inference.py's files lie beside it, never in it
JSON_NAME = "predictions.json"
LABELED_DIR = "labeled_images"
SUMMARY_NAME, EXPLANATIONS_DIR = "summary.csv", "explanations"   # --summary, --explain
SCRATCH = ".chunk-"   # a chunk's drawings, in a folder of its own inside the staged one until named (Chunk)


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


def run(plan: Plan, rec, top_k: int = 3, batch_size: int = 32, workers: int = 1, cfg=None) -> int:
    """Classify every image with `rec`, print the blocks and a JSON summary line, publish the outputs; the exit
    code (1 when an image failed). workers > 1: that many worker processes (PhotoJob(cfg), rec None: this process
    loads no model) classify --batch-size chunks, handled here in input order. The staged outputs are discarded
    when this fails or is interrupted."""
    staged = plan.staged
    if staged.finals:
        staged.prepare()
    tally = {"failed": 0, "faces": 0, "read": 0, "used_names": set()}
    if "json" in staged.finals:   # each image's entry written as it is classified: a JSON array, one per line
        tally["stream"] = PredictionStream(staged.tmp["json"], array=True)
    if "summary" in staged.finals:   # each image's labels spooled to disk as it comes (photo_summary.py)
        tally["summary"] = photo_summary.PhotoSummary(cfg.class_names if rec is None else rec.class_names,
                                                      spool_dir=staged.tmp["summary"].parent)
    if "explanations" in staged.finals:
        from emotion.evaluation import explanations
        tally["figure_names"] = explanations.FigureNames()
    try:
        if plan.journal is not None:
            plan.journal.parent.mkdir(parents=True, exist_ok=True)
            tally["journal"] = photo_journal.ResumeJournal(plan.journal)
        if workers > 1:
            return _classify_all(plan, _in_workers(cfg, workers, staged, plan.image_paths, batch_size),
                                 top_k, batch_size, tally)
        return _classify_all(plan, _in_process(rec, staged), top_k, batch_size, tally)
    except BaseException:
        _close(tally)
        staged.discard()
        raise


def _close(tally: dict) -> None:
    for key in ("stream", "journal", "summary"):
        if key in tally:
            tally[key].close()


def _record(tally: dict, entry: dict) -> None:
    """One image's entry: to predictions.json's stream, and what summary.csv needs of it."""
    if "stream" in tally:
        tally["stream"].write(entry)
    if "summary" in tally:
        tally["summary"].add(entry)


def _classify_all(plan: Plan, classify, top_k: int, batch_size: int, tally: dict) -> int:
    """classify: _in_process or _in_workers, a context manager whose value, given the chunks, yields each chunk
    and its outcome, ("result", [Outcome per image]) or ("died", exit code), in input order."""
    staged = plan.staged
    json_path, labeled_dir = staged.finals.get("json"), staged.finals.get("labeled")
    if "journal" in tally:
        print(f"resuming: {len(tally['journal'])} image(s) done by an earlier run ({plan.journal})", flush=True)
    for spec in plan.unmatched:
        print(f"error: {no_match_message(spec)}", file=sys.stderr, flush=True)
        _record(tally, {"image": spec, "width": None, "height": None, "faces": [], "whole_image": False,
                        "error": "not a regular file" if Path(spec).exists() else "no image matches"})
        tally["failed"] += 1
    start = time.perf_counter()
    with classify as results:
        for chunk, (kind, value) in results(_chunks(plan, staged, batch_size, tally.get("journal"))):
            if kind == "result":
                _handle_chunk(chunk, value, top_k, staged, tally)
            else:   # ("died", exit code)
                _lost_chunk(chunk, value, tally)
    seconds = time.perf_counter() - start
    if "summary" in staged.finals:
        counts = tally["summary"].write(staged.tmp["summary"])
        print("faces per label: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    _close(tally)
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


# ---------------------------------------------------------------------------------------------
# One chunk of images: classified (in this process or a worker's), then handled here in input order


@dataclass(frozen=True)
class Chunk:
    """--batch-size images for one analyze_batch call, and where their drawings go: scratch folders inside the
    staged labeled_images/ and explanations/ (None: not asked), the files renamed to their final names here."""

    position: int               # the chunk's place in the run
    paths: list[str]
    keys: list                  # --resume: each image's journal identity, taken before it is read (else Nones)
    done: dict                  # --resume: index in the chunk -> the entry an earlier run journaled
    labeled: str | None = None
    explained: str | None = None


@dataclass
class Outcome:
    """What became of one image of a chunk: its size, None when it could not be read; its faces; the scratch
    files of its annotated copy and of its Grad-CAM figures (face 1, 2, ...)."""

    path: str
    size: tuple[int, int] | None
    results: list
    labeled: str | None = None
    figures: list[str] = field(default_factory=list)


def _chunks(plan: Plan, staged: outputs.Staged, batch_size: int, journal) -> Iterator[Chunk]:
    for position, first in enumerate(range(0, len(plan.image_paths), batch_size)):
        paths_ = plan.image_paths[first:first + batch_size]
        keys = [photo_journal.identity(p) for p in paths_] if journal is not None else [None] * len(paths_)
        done = {i: e for i, key in enumerate(keys) if journal is not None and (e := journal.get(key)) is not None}
        scratch = {k: str(staged.tmp[k] / f"{SCRATCH}{position}") if k in staged.finals else None
                   for k in ("labeled", "explanations")}
        yield Chunk(position, paths_, keys, done, scratch["labeled"], scratch["explanations"])


def classify_chunk(chunk: Chunk, rec, explainer=None) -> list[Outcome]:
    """Read, classify (one analyze_batch) and draw the images of one chunk; one Outcome per image, in order. An
    image the chunk's journal entries hold is not classified again (read only when drawn on). explainer: an
    explanations.Explainer when chunk.explained."""
    import cv2

    drawn = chunk.labeled is not None or chunk.explained is not None
    images = [read_image(p) if i not in chunk.done or drawn else None for i, p in enumerate(chunk.paths)]
    done = {i: e for i, e in chunk.done.items() if images[i] is not None or not drawn}   # unreadable now: failed
    rgbs = {i: cv2.cvtColor(im, cv2.COLOR_BGR2RGB) for i, im in enumerate(images) if im is not None}
    todo = [i for i in rgbs if i not in done]   # converted once: classified, explained
    analysed = dict(zip(todo, rec.analyze_batch([rgbs[i] for i in todo]))) if todo else {}
    analysed |= {i: _results_from_entry(e) for i, e in done.items()}
    outcomes = []
    for i, path in enumerate(chunk.paths):
        if i not in analysed:
            outcomes.append(Outcome(path, None, []))
            continue
        image = images[i]   # None: journaled, not drawn (its size is the entry's)
        size = (int(image.shape[1]), int(image.shape[0])) if image is not None else (done[i]["width"],
                                                                                      done[i]["height"])
        outcomes.append(_drawn(chunk, i, Outcome(path, size, analysed[i]), image, rgbs.get(i), explainer))
    return outcomes


def _drawn(chunk: Chunk, i: int, outcome: Outcome, image, rgb, explainer) -> Outcome:
    """The image's Grad-CAM figures and annotated copy, drawn to scratch files in the chunk's folders."""
    if chunk.explained is not None and outcome.results:
        folder = Path(chunk.explained)
        folder.mkdir(exist_ok=True)
        paths_ = [folder / f"{i}-face{k}.png" for k in range(1, len(outcome.results) + 1)]
        outcome.figures = [str(p) for p in explainer.render(outcome.path, rgb, outcome.results, paths_)]
    if chunk.labeled is not None:
        folder = Path(chunk.labeled)
        folder.mkdir(exist_ok=True)
        annotate(image, outcome.results)
        outcome.labeled = str(write_image_atomic(folder / f"{i}{Path(labeled_name(outcome.path)).suffix}", image))
    return outcome


def _handle_chunk(chunk: Chunk, outcomes: list[Outcome], top_k: int, staged: outputs.Staged, tally: dict) -> None:
    """Print, record, journal and name the drawings of one classified chunk, in input order."""
    journal = tally.get("journal")
    for i, o in enumerate(outcomes):
        if o.size is None:
            tally["failed"] += 1
            print(f"error: cannot read image: {o.path}", file=sys.stderr, flush=True)
            _record(tally, {"image": o.path, "width": None, "height": None, "faces": [], "whole_image": False,
                            "error": "cannot read image"})
            continue
        tally["read"] += 1
        tally["faces"] += len(o.results)
        print("\n".join(describe(o.path, o.results, top_k)), flush=True)
        if "figure_names" in tally:
            for scratch, name in zip(o.figures, tally["figure_names"].names(o.path, len(o.results))):
                os.replace(scratch, staged.tmp["explanations"] / name)
        entry = chunk.done.get(i) or {"image": o.path, "width": o.size[0], "height": o.size[1],
                                      "faces": [r.to_dict() for r in o.results],
                                      "whole_image": bool(o.results and o.results[0].whole_image), "error": None}
        _record(tally, entry)
        if journal is not None and i not in chunk.done:
            journal.add(chunk.keys[i], entry)
        if o.labeled is not None:
            name = Path(unique_name(labeled_name(o.path), tally["used_names"]))
            os.replace(o.labeled, staged.tmp["labeled"] / name.with_suffix(Path(o.labeled).suffix))
    _end_chunk(chunk, tally)


def _lost_chunk(chunk: Chunk, exitcode, tally: dict) -> None:
    """A worker process died on this chunk: its images failed (a --resume run tries them again)."""
    for path in chunk.paths:
        tally["failed"] += 1
        print(f"error: worker died analysing {path} (exit code {exitcode})", file=sys.stderr, flush=True)
        _record(tally, {"image": path, "width": None, "height": None, "faces": [], "whole_image": False,
                        "error": f"worker died (exit code {exitcode})"})
    _end_chunk(chunk, tally)


def _end_chunk(chunk: Chunk, tally: dict) -> None:
    import shutil
    for folder in (chunk.labeled, chunk.explained):   # emptied by the renames (a dead worker's: what it left)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
    for key in ("stream", "journal"):   # on disk before the next chunk: an interruption keeps this one's
        if key in tally:
            tally[key].flush()


def _results_from_entry(entry: dict) -> list:
    """The FaceResults of a journaled entry (what describe, annotate and the explainer take)."""
    from emotion.runtime.recognizer import FaceResult

    return [FaceResult(**{**f, "box": tuple(f["box"])}) for f in entry["faces"]]


# ---------------------------------------------------------------------------------------------
# Where the chunks are classified: this process, or worker processes (workers.py)


class _in_process:
    """Each chunk classified here, with `rec` (and the Explainer, when explanations are staged)."""

    def __init__(self, rec, staged: outputs.Staged):
        self.rec, self.staged, self.explainer = rec, staged, None

    def __enter__(self):
        if "explanations" in self.staged.finals:  # Grad-CAM figures, on the Keras model (TFLite has no gradients)
            from emotion.evaluation import explanations
            self.explainer = explanations.Explainer(self.rec, self.staged.tmp["explanations"])
        return self.results

    def __exit__(self, *exc) -> None:
        return None

    def results(self, chunks: Iterator[Chunk]) -> Iterator[tuple[Chunk, tuple]]:
        for chunk in chunks:
            yield chunk, ("result", classify_chunk(chunk, self.rec, self.explainer))


@dataclass(frozen=True)
class PhotoJob:
    """A worker process's job (workers.serve): its own recognizer (and Explainer), then classify_chunk per task."""

    cfg: object
    explain: bool = False
    threads: int | None = None   # the TFLite classifier's threads (None: its own choice); cores / workers

    def load(self):
        if self.threads:
            os.environ.setdefault("EMOTION_TFLITE_THREADS", str(self.threads))
        from emotion.runtime import recognizer
        rec = recognizer.EmotionRecognizer(self.cfg)
        if not self.explain:
            return rec, None
        from emotion.evaluation import explanations
        return rec, explanations.Explainer(rec)

    def run(self, state, chunk: Chunk, send) -> list[Outcome]:
        return classify_chunk(chunk, *state)


class _in_workers:
    """Each chunk classified by one of `count` worker processes (workers.InOrder), the outcomes in input order."""

    def __init__(self, cfg, count: int, staged: outputs.Staged, image_paths: list[str], batch_size: int):
        chunks = -(-len(image_paths) // batch_size)
        from emotion.runtime.classifier import available_cores
        count = min(count, chunks)
        quiet = "TF_CPP_MIN_LOG_LEVEL" in os.environ and "TF_CPP_MIN_LOG_LEVEL" not in console.child_env()
        job = PhotoJob(cfg, explain="explanations" in staged.finals, threads=max(1, available_cores() // count))
        self.run = InOrder(job, count, max_restarts=chunks, one_first=not conversion_cached(cfg), quiet=quiet,
                           name="emotion-photo-worker")

    def __enter__(self):
        return self.run.__enter__().results

    def __exit__(self, *exc) -> None:
        self.run.__exit__(*exc)
