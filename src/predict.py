"""Recognise the emotion of every face in photos: an image, a folder of images, or a glob.

    python src/predict.py --image_path photo.jpg
    python src/predict.py --image_path photos/ --json --save-images     # every image of the folder (sorted)
    python src/predict.py --image_path 'photos/*.png' --top-k 8           # a glob (quoted, or let the shell expand it)

Prints one block per image, e.g.
    photo.jpg: 1 face
      face 1 [120,84,96,96] happy 0.91 (neutral 0.05, surprise 0.02)
then one JSON summary line (images, faces, failed, ms_per_image). Faces are found with cfg.face_detector,
cropped like AffectNet's images and classified by the model at model_save_path (cfg.classifier_backend).
A small, near-square image without a detected face (a face crop such as AffectNet's 96x96 images) is
classified whole, and the output says so. Folders are classified in batches: the faces of --batch-size
images per classifier call.

--json writes <results_dir>/predictions.json: a list with one entry per image, {image, width, height, faces:
[{box, label, top_label, confidence, probabilities, detector_score, whole_image}], whole_image, error}; label is
"uncertain" when the top probability is below config min_confidence (top_label is the argmax, the line printed
says "uncertain: happy 0.42"). At start it prints one line from the model's card (emotion/card.py). --save-images
writes annotated copies to <results_dir>/labeled_images/. Both are written under temporary names and put in
place together at the end, so they hold one run's results: labeled_images/ is replaced whole, and only when
this project wrote it (it holds a .written-by-emotion-recognition file); an interrupted run leaves the previous
run's outputs. An unwritable results_dir is refused before any work.
An unreadable file gives one "error: cannot read image: PATH" line and the others carry on; the exit code is
then 1. Only regular files are read (a pipe or a device named as an image is an error, never waited on). A path
matching nothing: exit code 2.
"""
from __future__ import annotations

import glob
import json
import os
import sys
import time
from pathlib import Path

from emotion import cli
from emotion import atomic
from emotion import outputs
from emotion import paths
from emotion.config import UserError

# What a folder or a glob picks up (by extension, case-insensitive); a file named explicitly is always tried.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".webp", ".tif", ".tiff")


class NoInput(UserError):
    """No image matches what was asked for."""

    code = 2


def parse_args(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--image_path", "--image-path", dest="image_path", nargs="+", metavar="PATH",
                   help="image file(s), folder(s) (not recursive) or glob(s); required")
    p.add_argument("--top-k", type=cli.positive_int, default=3, metavar="K",
                   help="probabilities printed per face: the label's and the next K-1")
    p.add_argument("--json", action="store_true", help="write <results_dir>/predictions.json")
    p.add_argument("--save-images", action="store_true", help="write annotated copies to <results_dir>/labeled_images/")
    p.add_argument("--batch-size", type=cli.positive_int, default=32, metavar="N",
                   help="images whose faces are classified together in one call")
    args = p.parse_args(argv)
    args.parser = p
    return args


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


def _no_match_message(spec: str) -> str:
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
    from emotion.faces import quiet_stderr

    if not paths.is_regular_file(path):  # a pipe would block the read forever
        return None
    try:
        data = np.fromfile(path, np.uint8)
    except OSError:
        return None
    if data.size == 0:
        return None
    with quiet_stderr():
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)
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


def _unique_name(name: str, used: set[str]) -> str:
    stem, suffix = os.path.splitext(name)
    candidate, n = name, 1
    while candidate in used:
        candidate, n = f"{stem}_{n}{suffix}", n + 1
    used.add(candidate)
    return candidate


def _mark_no_face(image_bgr) -> None:
    from emotion.recognizer import _label_box, _style

    scale, thickness = _style(image_bgr.shape)
    _label_box(image_bgr, "no face found", 0, 0, (40, 40, 40), scale, thickness, above=False)


# ---------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = cli.load_config(args)  # a configuration mistake is reported first, as by every script
    if not args.image_path:
        args.parser.error("the following arguments are required: --image_path")
    image_paths, unmatched = collect_inputs(args.image_path)
    if not image_paths:
        raise NoInput(_no_match_message(unmatched[0]) if len(unmatched) == 1 else
                      "nothing matches any of " + ", ".join(args.image_path))
    results_dir = Path(cfg.results_dir)
    labeled_final = results_dir / "labeled_images"
    json_path = results_dir / "predictions.json"
    finals = {**({"json": json_path} if args.json else {}), **({"labeled": labeled_final} if args.save_images else {})}
    staged = outputs.Staged(finals, journal_dir=results_dir, folders={"labeled"} & finals.keys())
    if finals:
        paths.check_writable(results_dir, "results_dir")
        staged.check(inputs=[Path(p) for p in image_paths])

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from emotion import recognizer as rec_lib  # OpenCV, and TensorFlow with the classifier, are imported after parsing
    rec = rec_lib.EmotionRecognizer(cfg)
    print(f"{len(image_paths)} image{'s' if len(image_paths) != 1 else ''}; model {rec.model_path} ({rec.backend})",
          flush=True)
    from emotion import card
    print(card.summary_line(rec.model_path), flush=True)  # how good the model is, from its model card

    if finals:
        staged.prepare()
    try:
        return _run(args, image_paths, unmatched, rec, staged)
    except BaseException:
        staged.discard()
        raise


def _run(args, image_paths: list[str], unmatched: list[str], rec, staged: outputs.Staged) -> int:
    """Classify every image, print the blocks, write the staged outputs and publish them; the exit code."""
    import cv2
    from emotion import recognizer as rec_lib

    json_path, labeled_dir = staged.finals.get("json"), staged.finals.get("labeled")
    entries: list[dict] = []
    failed = faces_total = read_ok = 0
    for spec in unmatched:
        print(f"error: {_no_match_message(spec)}", file=sys.stderr, flush=True)
        entries.append({"image": spec, "width": None, "height": None, "faces": [], "whole_image": False,
                        "error": "not a regular file" if Path(spec).exists() else "no image matches"})
        failed += 1
    used_names: set[str] = set()
    start = time.perf_counter()
    for first in range(0, len(image_paths), args.batch_size):
        chunk = image_paths[first:first + args.batch_size]
        images = [read_image(p) for p in chunk]
        ok = [i for i, im in enumerate(images) if im is not None]
        rgbs = [cv2.cvtColor(images[i], cv2.COLOR_BGR2RGB) for i in ok]
        analysed = dict(zip(ok, rec.analyze_batch(rgbs)))
        for i, path in enumerate(chunk):
            image = images[i]
            if image is None:
                failed += 1
                print(f"error: cannot read image: {path}", file=sys.stderr, flush=True)
                entries.append({"image": path, "width": None, "height": None, "faces": [], "whole_image": False,
                                "error": "cannot read image"})
                continue
            read_ok += 1
            results = analysed[i]
            faces_total += len(results)
            print("\n".join(describe(path, results, args.top_k)), flush=True)
            entries.append({"image": path, "width": int(image.shape[1]), "height": int(image.shape[0]),
                            "faces": [r.to_dict() for r in results],
                            "whole_image": bool(results and results[0].whole_image), "error": None})
            if args.save_images:
                if results:
                    rec_lib.draw_results(image, results)
                else:
                    _mark_no_face(image)
                write_image_atomic(staged.tmp["labeled"] / _unique_name(Path(path).name, used_names), image)
    seconds = time.perf_counter() - start
    if args.json:
        staged.tmp["json"].write_text(json.dumps(entries, indent=2) + "\n", encoding="utf-8")
    if staged.finals:
        staged.publish()
    if args.json:
        print(f"wrote {json_path}")
    if args.save_images and read_ok:
        print(f"wrote {read_ok} annotated image{'s' if read_ok != 1 else ''} to {labeled_dir}")
    print(json.dumps({"images": len(image_paths) + len(unmatched), "faces": faces_total, "failed": failed,
                      "ms_per_image": round(1000 * seconds / read_ok, 2) if read_ok else None,
                      "json": str(json_path) if args.json else None,
                      "labeled_images": str(labeled_dir) if args.save_images else None}), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    cli.run(main)
