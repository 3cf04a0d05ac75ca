"""predict.py's summary.csv: one row per image, its faces' labels and a count per class.

    rows = photo_rows(entries, class_names)          # entries: predict.py's {image, faces: [{label, ...}], error}
    write_photo_summary(rows, results_dir / "summary.csv")
    label_counts(rows)                               # {"happy": 3, "sad": 1, ...}: the terminal's one line
"""
from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path
from typing import Sequence

from emotion.common.atomic import atomic_path
from emotion.runtime.confidence import UNCERTAIN


def photo_rows(entries: Sequence[dict], class_names: Sequence[str], uncertain: bool = False) -> list[dict]:
    """summary.csv's rows from predict.py's entries ({image, faces: [{label, ...}], error}): image, faces,
    labels (the faces' labels in order, ";" between), error, and count_<label> for every class (and
    count_uncertain when asked for or present)."""
    uncertain = uncertain or any(f["label"] == UNCERTAIN for e in entries for f in e["faces"])
    labels = [*class_names, UNCERTAIN] if uncertain else list(class_names)
    rows = []
    for e in entries:
        found = Counter(f["label"] for f in e["faces"])
        rows.append({"image": e["image"], "faces": len(e["faces"]), "labels": ";".join(f["label"] for f in e["faces"]),
                     "error": e.get("error") or "", **{f"count_{c}": found[c] for c in labels}})
    return rows


def label_counts(rows: Sequence[dict]) -> dict[str, int]:
    """Faces per label over all rows of photo_rows: {label: count}, in column order."""
    return {k[6:]: sum(r[k] for r in rows) for k in (rows[0] if rows else {}) if k.startswith("count_")}


def write_photo_summary(rows: Sequence[dict], path: Path) -> None:
    """summary.csv (atomically): photo_rows, one per image."""
    with atomic_path(Path(path)) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["image", "faces", "labels", "error"])
        writer.writeheader()
        writer.writerows(rows)
