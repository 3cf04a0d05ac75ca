"""A video run's per-frame records (and predict.py's per-image entries), streamed to disk as they are made and
read back one at a time, so that a run's memory does not grow with its length.

    stream = PredictionStream(Path("predictions.jsonl"))          # JSON Lines: one frame's JSON object per line
    stream = PredictionStream(Path("predictions.json"), array=True)   # a JSON array, one frame per line
    stream.write({"frame": 0, "source_frame": 0, "time_s": 0.0, "faces": [...]}); stream.close()
    for frame in FrameFile(Path("predictions.jsonl")):            # read again, one frame at a time, as often as asked
        ...

Both forms hold one compact JSON object per line, so either is read back line by line (read_frames): the array
form is what `json.load` takes whole (the predictions.json of a single video), the lines form what a batch
writes per video (predictions.jsonl: `jq -c . predictions.jsonl`, `pandas.read_json(path, lines=True)`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator


def _dumps(record: dict) -> str:
    return json.dumps(record, separators=(",", ":"))


class PredictionStream:
    """Writes frames as they come: JSON Lines, or (array=True) a JSON array with one frame per line."""

    def __init__(self, path: Path, array: bool = False):
        self.path, self.array = Path(path), array
        self.file = open(self.path, "w", encoding="utf-8", buffering=1 << 16)
        self.count = 0
        if array:
            self.file.write("[")

    def write(self, record: dict) -> None:
        if self.array:
            self.file.write(("\n" if self.count == 0 else ",\n") + _dumps(record))
        else:
            self.file.write(_dumps(record) + "\n")
        self.count += 1

    def flush(self) -> None:
        """Hand what was written to the operating system (a reader of the file sees every record so far)."""
        self.file.flush()

    def close(self) -> None:
        if self.file.closed:
            return
        if self.array:
            self.file.write("\n]\n" if self.count else "]\n")
        self.file.close()


def read_frames(path: Path) -> Iterator[dict]:
    """The frames of a file PredictionStream wrote (either form), one at a time."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            text = line.strip().rstrip(",")
            if text and text not in ("[", "]", "[]"):
                yield json.loads(text)


class FrameFile:
    """The frames of a file PredictionStream wrote, as an iterable that reads the file again each time it is
    iterated (what track_report's second pass over a run needs), never holding more than one frame."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def __iter__(self) -> Iterator[dict]:
        return read_frames(self.path)
