"""predict.py --resume's journal: the entries of the images already classified, one JSON object per line, kept in
results_dir/photos/ under a name tied to the run's inputs, so that a run stopped half-way (Ctrl-C, kill) and run
again with --resume and the same inputs classifies only the images not yet done.

    journal = ResumeJournal(journal_path(out_dir, image_paths, unmatched, cfg))
    key = identity("photos/a.jpg")       # [absolute path, size, mtime_ns], taken before the image is read
    entry = journal.get(key)             # its entry from an earlier run (same path, size and mtime), or None
    journal.add(key, entry); journal.flush()   # after each batch
    journal.remove()                     # once the outputs are published

The name holds a hash of the image list, the configuration and the model file's identity, so a journal is only
ever used by a run of the same inputs and model. Only the byte offset of each done entry is held in memory; the
entry is read back from the file when its image comes. A line torn by a kill is dropped when the journal opens.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

PREFIX = ".resume-"


def identity(path: str) -> list | None:
    """[absolute path, size, mtime_ns] of an image, or None when it cannot be stat'ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [os.path.abspath(path), st.st_size, st.st_mtime_ns]


def journal_path(folder: Path, image_paths: Sequence[str], unmatched: Sequence[str], cfg) -> Path:
    """folder/.resume-<16 hex digits>.jsonl: the digits hash the inputs, the configuration and the model file."""
    material = json.dumps({"images": [os.path.abspath(p) for p in image_paths], "unmatched": list(unmatched),
                           "config": dict(cfg), "model": identity(str(cfg["model_save_path"]))},
                          sort_keys=True, default=str)
    return Path(folder) / f"{PREFIX}{hashlib.sha1(material.encode()).hexdigest()[:16]}.jsonl"


class ResumeJournal:
    """The done entries of a journal file (read at open), and the writer that appends new ones."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.index: dict[str, tuple[list, int]] = {}   # absolute path -> (identity, byte offset of its line)
        if self.path.exists():
            self._scan()
        self.file = open(self.path, "ab")

    def _scan(self) -> None:
        end = 0
        with open(self.path, "rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    break   # a line torn by a kill
                try:
                    record = json.loads(line)
                    key, _ = record["id"], record["entry"]
                except (ValueError, KeyError, TypeError):
                    break
                self.index[key[0]] = (key, end)
                end += len(line)
        if end < self.path.stat().st_size:
            os.truncate(self.path, end)

    def __len__(self) -> int:
        return len(self.index)

    def get(self, key: list | None) -> dict | None:
        """The entry journaled for this image identity, or None (not done, or changed since)."""
        found = self.index.get(key[0]) if key else None
        if found is None or found[0] != key:
            return None
        self.file.flush()
        with open(self.path, "rb") as f:
            f.seek(found[1])
            return json.loads(f.readline())["entry"]

    def add(self, key: list | None, entry: dict) -> None:
        if key is None:
            return
        line = (json.dumps({"id": key, "entry": entry}, separators=(",", ":")) + "\n").encode("utf-8")
        self.index[key[0]] = (key, self.file.tell())
        self.file.write(line)

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.close()

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
