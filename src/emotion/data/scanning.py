"""The class folders of one split: which files are there, which look like images, and the class weights.

The data layout (made by organize_data.py):

    <data_path>/{train,val,test}/<class>/*.jpg|*.png     class names = config class_names, label id = index
    <data_path>/<split>/unclassified/                    ignored

Usage:
    paths, labels = list_split("data/train", cfg.class_names)          # sorted paths, int32 label ids
    keep, bad = check_images(paths)                                     # a warning line per unreadable file
    weights = compute_class_weights({"happy": 30, "sad": 10}, ["happy", "sad"])   # {0: 0.667, 1: 2.0}

A fast pre-scan: file names only (list_split), then two small reads per file (check_images: the magic bytes and,
for JPEG and PNG, the end marker), so that a truncated or foreign file is named in one warning line instead of
failing a batch. A file name that is not valid UTF-8 is skipped with a warning naming it (TensorFlow cannot hold
it). Nothing here imports TensorFlow; decoding.py decodes, datasets.py builds the tf.data pipeline.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from emotion.common import console, paths
from emotion.common.errors import UserError
from emotion.common.image_types import PIPELINE_EXTENSIONS

IGNORED_FOLDERS = ("unclassified",)
MAX_WARNINGS = 20  # per check_images call; the rest are counted in one summary line
_WARNED: set = set()  # what make_dataset has warned about in this process (one warning, not one per epoch)
JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_GIF_MAGIC = (b"GIF87a", b"GIF89a")
_BMP_MAGIC = b"BM"
_TAIL_BYTES = 1024  # where the JPEG EOI / PNG IEND marker must appear (trailing padding is tolerated)


def _scan_split(split_dir: str | os.PathLike, class_names: Sequence[str]) -> dict[str, list[str]]:
    """{class name: sorted image paths} for each class of class_names; [] for a missing class folder.

    Raises UserError when split_dir is missing or holds folders that are not classes.
    """
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise UserError(f"data folder {split_dir} not found: run python src/organize_data.py first "
                        f"(or point config key data_path at the organized data)")
    with os.scandir(split_dir) as it:
        folders = sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))
    extra = [f for f in folders if f not in class_names and f not in IGNORED_FOLDERS]
    if extra:
        missing = [c for c in class_names if c not in folders]
        hint = f" (and it lacks {', '.join(missing)})" if missing else ""
        raise UserError(f"{split_dir} holds folder(s) {', '.join(extra)} that are not in config key class_names "
                        f"{list(class_names)}{hint}: rename or remove them, or fix class_names")
    found: dict[str, list[str]] = {}
    other_files: list[str] = []
    for name in class_names:
        folder = split_dir / name
        if not folder.is_dir():
            found[name] = []
            continue
        files = []
        with os.scandir(folder) as it:
            for e in it:
                if e.name.startswith(".") or not e.is_file():
                    continue
                if not _utf8_name(e.path):
                    continue
                if e.name.lower().endswith(PIPELINE_EXTENSIONS):
                    files.append(e.path)
                else:
                    other_files.append(e.path)
        found[name] = sorted(files)
    key = ("ignored", str(split_dir), len(other_files))
    if other_files and key not in _WARNED:
        _WARNED.add(key)
        console.warn(f"ignoring {len(other_files)} file(s) in {split_dir} that are not "
                 f"{'/'.join(x[1:] for x in PIPELINE_EXTENSIONS)} by name, e.g. {sorted(other_files)[0]}")
    return found



def _utf8_name(path: str) -> bool:
    """False (after one warning naming it) for a file name that is not valid UTF-8: TensorFlow's string tensors
    cannot hold it, so the file is skipped; renaming it makes it usable."""
    try:
        path.encode("utf-8")
        return True
    except UnicodeEncodeError:
        if ("name", path) not in _WARNED:
            _WARNED.add(("name", path))
            console.warn(f"skipping {paths.printable(path)}: its file name is not valid UTF-8 (rename it to use it)")
        return False



def list_split(split_dir: str | os.PathLike, class_names: Sequence[str],
               limit_per_class: int | None = None) -> tuple[list[str], np.ndarray]:
    """All image paths of one split and their int labels (index in class_names), paths in sorted order.

        paths, labels = list_split("data/train", cfg.class_names)        # labels: int32 array

    limit_per_class keeps the first N files (by name) of each class, for quick runs.
    Raises UserError (one line, naming the folder) when split_dir is missing, a class folder is missing or
    holds no images, or there are folders that are not in class_names (`unclassified/` is ignored).
    """
    split_dir = Path(split_dir)
    found = _scan_split(split_dir, class_names)
    missing = [c for c in class_names if not (split_dir / c).is_dir()]
    if missing:
        raise UserError(f"{split_dir} lacks class folder(s) {', '.join(missing)} listed in config key class_names: "
                        f"run python src/organize_data.py first, or fix class_names")
    empty = [c for c in class_names if not found[c]]
    if empty:
        raise UserError(f"class folder(s) {', '.join(str(split_dir / c) for c in empty)} hold no images "
                        f"({'/'.join(x[1:] for x in PIPELINE_EXTENSIONS)}); every class in config key "
                        f"class_names needs some")
    pairs = []
    for label, name in enumerate(class_names):
        files = found[name][:limit_per_class] if limit_per_class else found[name]
        pairs.extend((p, label) for p in files)
    pairs.sort()
    paths = [p for p, _ in pairs]
    labels = np.array([lab for _, lab in pairs], dtype=np.int32)
    return paths, labels



def class_counts(split_dir: str | os.PathLike, class_names: Sequence[str]) -> dict[str, int]:
    """{class name: number of image files} in class_names order (0 for an empty or missing class folder).

    Counts files by name, without opening them. Raises UserError when split_dir is missing or holds folders
    that are not classes.
    """
    found = _scan_split(split_dir, class_names)
    return {name: len(found[name]) for name in class_names}



def compute_class_weights(counts: Mapping[str, int], class_names: Sequence[str]) -> dict[int, float]:
    """Inverse-frequency class weights {label id: n_total / (n_classes * n_c)}: the training loss scales each
    example by its class's weight (trainer.TrainEpoch).

    The mean weight over the training samples is 1, so the loss keeps its scale:
        compute_class_weights({"a": 30, "b": 10}, ["a", "b"])  ->  {0: 0.667, 1: 2.0}
    Raises UserError when a class has no images.
    """
    n = [int(counts.get(name, 0)) for name in class_names]
    empty = [name for name, c in zip(class_names, n) if c <= 0]
    if empty:
        raise UserError(f"class(es) {', '.join(empty)} have no training images, so class weights are undefined: "
                        f"add images, or set config key class_weighting: none")
    total = sum(n)
    return {i: total / (len(class_names) * c) for i, c in enumerate(n)}



def image_problem(path: str | os.PathLike) -> str | None:
    """Why the file at path is not a readable image (one short phrase), or None if it looks fine.

    Checks only magic bytes and, for JPEG and PNG, the end marker (EOI / IEND), so it reads two small
    pieces of each file. A file that passes can still fail to decode; the pipeline drops those too.
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(16)
            f.seek(max(0, size - _TAIL_BYTES))
            tail = f.read()
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if size == 0:
        return "empty file"
    if head.startswith(JPEG_MAGIC):
        return None if b"\xff\xd9" in tail else "truncated JPEG (no end-of-image marker)"
    if head.startswith(_PNG_MAGIC):
        return None if b"IEND" in tail else "truncated PNG (no IEND chunk)"
    if head.startswith(_GIF_MAGIC) or (head.startswith(_BMP_MAGIC) and size > 26):
        return None
    return "not a JPEG, PNG, GIF or BMP image"



def check_images(paths: Sequence[str], max_warnings: int = MAX_WARNINGS,
                 warn_once: bool = False) -> tuple[list[int], list[str]]:
    """Pre-scan files: (indices of the good ones, the bad paths). Logs one warning line per bad file.

        keep, bad = check_images(paths)         # "warning: skipping data/train/sad/x.jpg: truncated JPEG ..."
        paths = [paths[i] for i in keep]

    At most max_warnings lines are logged, then one line with the count of the rest. warn_once: stay quiet
    about files already reported by an earlier warn_once call in this process (make_dataset runs per epoch).
    """
    problems = {i: image_problem(p) for i, p in enumerate(paths)}
    return report_problems(paths, problems, max_warnings, warn_once)



def report_problems(paths: Sequence[str], problems: Mapping[int, str | None], max_warnings: int,
            warn_once: bool) -> tuple[list[int], list[str]]:
    """check_images' result and warnings for {index: problem or None} (check_decoding reports with it too)."""
    keep, bad, to_report = [], [], []
    for i, p in enumerate(paths):
        problem = problems.get(i)
        if problem is None:
            keep.append(i)
            continue
        bad.append(p)
        if not warn_once or ("bad", p) not in _WARNED:
            to_report.append((p, problem))
            if warn_once:
                _WARNED.add(("bad", p))
    for p, problem in to_report[:max_warnings]:
        console.warn(f"skipping {p}: {problem}")
    if len(to_report) > max_warnings:
        console.warn(f"skipped {len(to_report) - max_warnings} more unreadable image(s) ({len(bad)} in all)")
    return keep, bad

