"""predict.py's summary.csv: one row per image, its faces' labels and a count per class.

    summary = PhotoSummary(class_names, spool_dir=results_dir)
    summary.add(entry)              # each image as it is classified: {image, faces: [{label, ...}], error}
    counts = summary.write(results_dir / "summary.csv")   # {"happy": 3, "sad": 1, ...}: the terminal's one line
    summary.close()

The images' labels are spooled to an anonymous temporary file as they come, not kept in memory, so a folder of a
million photos costs no more memory than ten; write() reads the spool back once. The count_uncertain column is
there when a face was "uncertain" (below min_confidence), which only the last image may tell: hence the spool.
"""
from __future__ import annotations

import csv
import json
import tempfile
from collections import Counter
from pathlib import Path
from typing import Sequence

from emotion.common.atomic import atomic_path
from emotion.runtime.confidence import UNCERTAIN


class PhotoSummary:
    """summary.csv's rows: image, faces, labels (the faces' labels in order, ";" between), error, and
    count_<label> for every class (and count_uncertain when a face was uncertain)."""

    def __init__(self, class_names: Sequence[str], spool_dir: Path | None = None):
        self.class_names = list(class_names)
        self.uncertain = False
        self.spool = tempfile.TemporaryFile("w+", encoding="utf-8", dir=spool_dir)  # gone when closed

    def add(self, entry: dict) -> None:
        labels = [f["label"] for f in entry["faces"]]
        self.uncertain = self.uncertain or UNCERTAIN in labels
        self.spool.write(json.dumps([entry["image"], labels, entry.get("error") or ""]) + "\n")

    def rows(self):
        """The rows, one per image added, in order (read back from the spool)."""
        columns = [*self.class_names, UNCERTAIN] if self.uncertain else self.class_names
        self.spool.flush()
        self.spool.seek(0)
        for line in self.spool:
            image, labels, error = json.loads(line)
            found = Counter(labels)
            yield {"image": image, "faces": len(labels), "labels": ";".join(labels), "error": error,
                   **{f"count_{c}": found[c] for c in columns}}

    def write(self, path: Path) -> dict[str, int]:
        """summary.csv (atomically); returns the faces per label over all images, in column order."""
        columns = [*self.class_names, UNCERTAIN] if self.uncertain else self.class_names
        counts = Counter()
        with atomic_path(Path(path)) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["image", "faces", "labels", "error",
                                                   *(f"count_{c}" for c in columns)])
            writer.writeheader()
            for row in self.rows():
                writer.writerow(row)
                counts.update({c: row[f"count_{c}"] for c in columns})
        return {c: counts[c] for c in columns}

    def close(self) -> None:
        self.spool.close()
