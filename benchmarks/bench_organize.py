"""Time emotion.organize.organize (move mode, what organize_data.py runs) against a naive per-file sort on a synthetic YOLO_format tree.

Usage:
    python benchmarks/bench_organize.py                 # 100,000 images (and as many labels)
    python benchmarks/bench_organize.py --files 20000

Both runs sort their own identical tree in one temporary folder on the same disk, in the same
process, so the page cache treats them alike. The images are a few fake bytes, never decoded.
Prints one JSON line: files, seconds and files_per_s of each, and speedup (ours / naive).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from emotion.data.organize import organize

CLASSES = ["anger", "contempt", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
SPLITS = (("train", 0.80), ("valid", 0.15), ("test", 0.05))


def make_tree(root: Path, files: int) -> None:
    """files images (alternating .jpg/.png) with one-line labels, split 80/15/5, classes round-robin."""
    start = 0
    for split, share in SPLITS:
        count = files - start if split == "test" else int(files * share)
        images, labels = root / split / "images", root / split / "labels"
        images.mkdir(parents=True)
        labels.mkdir(parents=True)
        for i in range(start, start + count):
            name = f"img_{i:07d}"
            (images / f"{name}.{'jpg' if i % 2 else 'png'}").write_bytes(b"\xff\xd8fake%d" % i)
            (labels / f"{name}.txt").write_text(f"{i % len(CLASSES)} 0.5 0.5 0.9 0.9")
        start += count


def naive_organize(root: Path, data: Path) -> None:
    """The straightforward way: per image, find and read its label with pathlib, copy, then delete."""
    for split, _ in SPLITS:
        out = "val" if split == "valid" else split
        for image in sorted((root / split / "images").iterdir()):
            label = root / split / "labels" / (image.stem + ".txt")
            cls = CLASSES[int(label.read_text().split()[0])] if label.exists() else "unclassified"
            dest = data / out / cls
            dest.mkdir(parents=True, exist_ok=True)
            if not (dest / image.name).exists():
                shutil.copy2(image, dest / image.name)
            image.unlink()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def count_files(data: Path) -> int:
    return sum(len(os.listdir(data / s / c)) for s in os.listdir(data) if (data / s).is_dir()
               for c in os.listdir(data / s) if (data / s / c).is_dir())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000, help="number of images (each with a label)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-organize-") as tmp:
        tmp = Path(tmp)
        print(f"writing two trees of {args.files} images and labels in {tmp} ...", file=sys.stderr)
        make_tree(tmp / "ours" / "YOLO_format", args.files)
        make_tree(tmp / "naive" / "YOLO_format", args.files)
        ours = timed(lambda: organize(tmp / "ours" / "YOLO_format", tmp / "ours" / "data",
                                                    CLASSES, mode="move"))
        naive = timed(lambda: naive_organize(tmp / "naive" / "YOLO_format", tmp / "naive" / "data"))
        for which in ("ours", "naive"):
            placed = count_files(tmp / which / "data")
            if placed != args.files:
                raise SystemExit(f"{which} placed {placed} of {args.files} files")
        print("cleaning up ...", file=sys.stderr)
    print(json.dumps({
        "files": args.files,
        "ours_seconds": round(ours, 3), "ours_files_per_s": round(args.files / ours),
        "naive_seconds": round(naive, 3), "naive_files_per_s": round(args.files / naive),
        "speedup": round(naive / ours, 2),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
