"""The report of a video or webcam run, per face track: who showed what, and when.

From the face entries a run collects (the entries of predictions.json: {frame, time_s, faces: [{id, box, label,
probabilities, ...}]}):

    rows = track_report.track_rows(predictions, class_names)    # one dict per track id, in order of first sight
    track_report.write_tracks_csv(rows, class_names, path)      # results/tracks.csv
    track_report.plot_timeline(predictions, class_names, path)  # results/emotion_timeline.png
    print("\\n".join(track_report.track_lines(rows)))          # "#1 0:00-0:11 (264 frames): happy 62%, ..."

The same, built frame by frame while a run goes (memory: a few numbers per track, nothing per frame):

    report = track_report.TrackReport(class_names, uncertain=True)
    report.add(time_s, faces)                                   # each frame, in time order, as it is made
    rows = report.rows()
    track_report.write_report(frames, class_names, tracks_path, timeline_path, report=report)
    # frames: the run's frames read again from disk (prediction_stream.FrameFile): the figure's second pass

A row: id, first_s, last_s, frames (face entries of that id: the column adds up to the face entries of the
run), faces_classified (entries whose probabilities came from a classifier call: --classify-every reuses them
in between), dominant_label (the class of the highest mean probability), mean_<class> (mean probability) and
share_<class> (the share of its entries labelled that class) for every class, and share_uncertain when
`uncertain` is asked for or an entry is labelled "uncertain" (below the model's min_confidence).
Pure: numpy, csv and (for the figure only) matplotlib; nothing here reads a video or a model.
"""
from __future__ import annotations

import csv
import math
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from emotion.common import colours, plots
from emotion.common.atomic import atomic_path
from emotion.runtime.confidence import UNCERTAIN

MIN_PANEL_S = 1.0       # a track lasting less is summarised in one line under the panels, not drawn
MAX_PANELS = 12         # the longest tracks get panels; the others join the one-line summary
MAX_BINS = 600          # time bins per panel at most: a long video is averaged into bins, a short one is not
UNCERTAIN_RGB = (0.55, 0.55, 0.55)


def _columns(class_names: Sequence[str], uncertain: bool) -> list[str]:
    shares = [*class_names, UNCERTAIN] if uncertain else list(class_names)
    return ["id", "first_s", "last_s", "frames", "faces_classified", "dominant_label",
            *(f"mean_{c}" for c in class_names), *(f"share_{c}" for c in shares)]


def _faces(predictions: Iterable[dict]):
    """(time_s, face) for every face entry, in frame order."""
    for p in predictions:
        for face in p["faces"]:
            yield float(p["time_s"]), face


def has_uncertain(predictions: Iterable[dict]) -> bool:
    return any(face["label"] == UNCERTAIN for _, face in _faces(predictions))


class TrackReport:
    """The per-track report of a run, built one frame at a time (add), so that a long run keeps a few numbers per
    track and nothing per frame: rows() are track_rows' rows; the timeline (plot_timeline) needs the frames once
    more, read again from wherever the run streamed them. Frames are expected in time order, as a run makes them
    (the timeline's frame step is then counted as they come)."""

    def __init__(self, class_names: Sequence[str], uncertain: bool = False):
        self.class_names = list(class_names)
        self.uncertain = bool(uncertain)
        self.tracks: dict[int, dict] = {}
        self.frames = 0
        self.start: float | None = None       # first and last time_s
        self.end: float | None = None
        self.steps: Counter = Counter()       # time between consecutive distinct times -> how often
        self.ordered = True                   # times came in order (else the step is recounted from the frames)

    def add(self, time_s: float, faces: Sequence[dict]) -> None:
        """One frame (predictions.json's time_s and faces)."""
        t = float(time_s)
        self._add_time(t)
        for face in faces:
            a = self.tracks.setdefault(int(face["id"]), {"first": t, "last": t, "n": 0, "classified": 0,
                                                         "sum": np.zeros(len(self.class_names)),
                                                         "labels": Counter()})
            a["last"] = t
            a["n"] += 1
            a["classified"] += bool(face.get("classified", True))
            a["sum"] += [face["probabilities"][c] for c in self.class_names]
            a["labels"][face["label"]] += 1
            self.uncertain = self.uncertain or face["label"] == UNCERTAIN

    def _add_time(self, t: float) -> None:
        if self.end is not None:
            if t > self.end:
                self.steps[t - self.end] += 1
            elif t < self.end:
                self.ordered = False
        self.start = t if self.start is None else min(self.start, t)
        self.end = t if self.end is None else max(self.end, t)
        self.frames += 1

    def rows(self) -> list[dict]:
        """One row per track id (see the module docstring), in the order the tracks first appear."""
        class_names = self.class_names
        labels = [*class_names, UNCERTAIN] if self.uncertain else list(class_names)
        rows = []
        for track_id, a in self.tracks.items():
            mean = a["sum"] / a["n"]
            row = {"id": track_id, "first_s": round(a["first"], 3), "last_s": round(a["last"], 3),
                   "frames": a["n"], "faces_classified": a["classified"],
                   "dominant_label": class_names[int(np.argmax(mean))]}
            row.update({f"mean_{c}": round(float(m), 4) for c, m in zip(class_names, mean)})
            row.update({f"share_{c}": round(a["labels"][c] / a["n"], 4) for c in labels})
            rows.append(row)
        return rows

    def frame_step(self, frames: Iterable[dict] = ()) -> float:
        """The run's time between frames (the median over distinct times, as _frame_step), 1/24 s when it cannot
        tell; counted again from `frames` when times did not come in order."""
        if not self.ordered:
            return _frame_step(frames)
        return _counted_median(self.steps) if self.steps else 1 / 24


def _counted_median(counts: Counter) -> float:
    """np.median of the values `counts` holds (value -> how often): the middle one, or the mean of the two."""
    total = sum(counts.values())
    wanted, found, seen = ((total - 1) // 2, total // 2), [], 0
    for value in sorted(counts):
        seen += counts[value]
        while len(found) < 2 and wanted[len(found)] < seen:
            found.append(value)
        if len(found) == 2:
            break
    return float(np.mean(found)) if total % 2 == 0 else float(found[0])


def track_rows(predictions: Sequence[dict], class_names: Sequence[str], uncertain: bool = False) -> list[dict]:
    """One row per track id (see the module docstring), in the order the tracks first appear."""
    report = TrackReport(class_names, uncertain)
    for p in predictions:
        report.add(p["time_s"], p["faces"])
    return report.rows()


def write_tracks_csv(rows: Sequence[dict], class_names: Sequence[str], path: Path) -> None:
    """tracks.csv (atomically): the columns of track_rows, share_uncertain when the rows have it."""
    uncertain = any(f"share_{UNCERTAIN}" in r for r in rows)
    with atomic_path(Path(path)) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=_columns(class_names, uncertain))
        writer.writeheader()
        writer.writerows(rows)


def clock(seconds: float) -> str:
    """0:07, 1:02:03: whole seconds as a clock reads them."""
    s = int(max(0.0, seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def track_lines(rows: Sequence[dict], top: int = 3) -> list[str]:
    """One line per track: "#1 0:00-0:11 (264 frames): happy 62%, neutral 30%, ..." (the shares of its
    frames by label, largest first, the `top` largest; "..." when more labels occur)."""
    lines = []
    for r in rows:
        shares = sorted(((k[6:], v) for k, v in r.items() if k.startswith("share_") and v > 0), key=lambda kv: -kv[1])
        text = ", ".join(f"{name} {v:.0%}" for name, v in shares[:top]) + (", ..." if len(shares) > top else "")
        lines.append(f"#{r['id']} {clock(r['first_s'])}-{clock(r['last_s'])} ({r['frames']} frame"
                     f"{'s' if r['frames'] != 1 else ''}): {text}")
    return lines


# ------------------------------------------------------------------------------------------------
# The timeline figure


def _frame_step(predictions: Sequence[dict]) -> float:
    """The run's time between frames (median), 1/24 s when it cannot tell."""
    times = np.unique([float(p["time_s"]) for p in predictions])
    steps = np.diff(times)
    return float(np.median(steps)) if len(steps) and np.median(steps) > 0 else 1 / 24


def track_series(predictions: Sequence[dict], class_names: Sequence[str]) -> dict[int, tuple]:
    """track id -> (times [n], probabilities [n, C], label index [n]: C for uncertain or unknown)."""
    index = {c: i for i, c in enumerate(class_names)}
    out: dict[int, list] = {}
    for t, face in _faces(predictions):
        out.setdefault(int(face["id"]), []).append(
            (t, [face["probabilities"][c] for c in class_names], index.get(face["label"], len(class_names))))
    return {k: (np.array([v[0] for v in vs]), np.array([v[1] for v in vs]), np.array([v[2] for v in vs]))
            for k, vs in out.items()}


def binned(times: np.ndarray, probs: np.ndarray, labels: np.ndarray, start: float, width: float, bins: int,
           classes: int):
    """One track on a grid of `bins` time bins of `width` s from `start`: (mean probabilities [bins, C], NaN in
    empty bins; the most frequent label of each bin [bins], -1 when empty)."""
    grid = _Bins(start, width, bins, classes, probs.shape[1])
    grid.add(times, probs, labels)
    return grid.result()


class _Bins:
    """binned() filled in pieces: each piece's probabilities and label votes are added to the bins in frame order,
    so the result is binned()'s on the whole track, bit for bit."""

    def __init__(self, start: float, width: float, bins: int, classes: int, columns: int):
        self.start, self.width, self.bins = start, width, bins
        self.counts = np.zeros(bins, np.int64)
        self.sums = np.zeros((bins, columns))
        self.votes = np.zeros((bins, classes + 1))

    def add(self, times: np.ndarray, probs: np.ndarray, labels: np.ndarray) -> None:
        k = np.clip(((times - self.start) / self.width).astype(int), 0, self.bins - 1)
        self.counts += np.bincount(k, minlength=self.bins)
        np.add.at(self.sums, k, probs)
        np.add.at(self.votes, (k, labels), 1)

    def result(self):
        counts = self.counts.astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            means = self.sums / counts[:, None]
        return means, np.where(counts > 0, self.votes.argmax(axis=1), -1)


def _panel_bins(frames: Iterable[dict], panels: Sequence[int], class_names: Sequence[str], start: float,
                width: float, bins: int, chunk: int = 4096) -> dict[int, tuple]:
    """binned() of each panel track, from one pass over the frames (read again), `chunk` faces at a time."""
    index = {c: i for i, c in enumerate(class_names)}
    grids = {k: _Bins(start, width, bins, len(class_names), len(class_names)) for k in panels}
    pending: dict[int, list] = {k: [] for k in panels}

    def flush(k: int) -> None:
        if pending[k]:
            times, probs, labels = zip(*pending[k])
            grids[k].add(np.array(times), np.array(probs), np.array(labels))
            pending[k].clear()

    for t, face in _faces(frames):
        k = int(face["id"])
        if k in pending:
            pending[k].append((t, [face["probabilities"][c] for c in class_names],
                               index.get(face["label"], len(class_names))))
            if len(pending[k]) >= chunk:
                flush(k)
    for k in panels:
        flush(k)
    return {k: grids[k].result() for k in panels}


AREA_ROWS, STRIP_ROWS, GAP_ROWS, SEP_ROWS = 60, 9, 3, 14  # a panel's picture rows: area, label strip, between


def _stack_picture(means: np.ndarray, mode: np.ndarray, strip_colors: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """RGBA rows of one panel: the probabilities stacked bottom-up (class 0 at the bottom) over AREA_ROWS rows,
    a gap, then the label strip. Empty bins (NaN) stay transparent."""
    bins = len(mode)
    y = (np.arange(AREA_ROWS)[::-1] + 0.5) / AREA_ROWS          # top row first, as an image is drawn
    cum = np.cumsum(np.nan_to_num(means), axis=1)                # [bins, C]
    cls = (cum[:, None, :] < y[None, :, None]).sum(axis=2)       # [bins, rows]: the class under height y
    cls = np.minimum(cls, len(colors) - 1)
    area = colors[cls].transpose(1, 0, 2)                        # [rows, bins, 4]
    area[:, mode < 0] = 0
    picture = np.zeros((AREA_ROWS + GAP_ROWS + STRIP_ROWS, bins, 4))
    picture[:AREA_ROWS] = area
    picture[AREA_ROWS + GAP_ROWS:] = strip_colors[mode][None]
    return picture


def plot_timeline(predictions: Sequence[dict], class_names: Sequence[str], path: Path, title: str = "") -> dict:
    """emotion_timeline.png: one panel per track lasting MIN_PANEL_S or more (the MAX_PANELS longest), time on
    the x-axis (shared), its probabilities as a stacked area in the overlay's class colours and its label
    sequence as a strip below it; the other tracks in one line under the panels. Averaged into at most MAX_BINS
    time bins, so a 10-minute video draws as fast as a clip (one picture in one axes).
    Returns {"panels": [ids drawn, top to bottom], "summarised": [ids in the line]}."""
    report = TrackReport(class_names)
    for p in predictions:
        report.add(p["time_s"], p["faces"])
    return draw_timeline(report, predictions, path, title)


def draw_timeline(report: TrackReport, frames: Iterable[dict], path: Path, title: str = "") -> dict:
    """plot_timeline() of the frames `report` was built from; `frames` are read once more (one pass), for the
    panels' bins only."""
    plt = plots.pyplot()
    class_names, tracks = report.class_names, report.tracks
    duration = {k: float(a["last"] - a["first"]) for k, a in tracks.items()}
    long = sorted((k for k in tracks if duration[k] >= MIN_PANEL_S), key=lambda k: -duration[k])[:MAX_PANELS]
    panels = sorted(long, key=lambda k: tracks[k]["first"])
    rest = [k for k in tracks if k not in panels]
    step = report.frame_step(frames)
    start, end = (report.start, report.end + step) if report.frames else (0.0, step)
    bins = max(1, min(MAX_BINS, math.ceil((end - start) / step)))
    width = (end - start) / bins
    colors = np.array([(*c, 1.0) for c in colours.class_colors(class_names)])
    strip_colors = np.vstack([colors, [(*UNCERTAIN_RGB, 1.0), (0, 0, 0, 0)]])  # mode -1 (empty): transparent
    grids = _panel_bins(frames, panels, class_names, start, width, bins) if panels else {}
    fig, ax = plt.subplots(figsize=(11, 1.0 + 1.2 * max(1, len(panels))))
    if panels:
        rows = AREA_ROWS + GAP_ROWS + STRIP_ROWS + SEP_ROWS
        for n, track_id in enumerate(panels):  # one picture per panel: matplotlib resamples each to the screen
            # as bytes: matplotlib turns float RGBA into bytes (floor of 255 x) after resampling; nearest
            # resampling of the bytes gives the same pixels, in less memory
            picture = (_stack_picture(*grids[track_id], strip_colors, colors) * 255).astype(np.uint8)
            ax.imshow(picture, aspect="auto", interpolation="nearest",
                      extent=(start, end, n * rows + len(picture), n * rows))
        ax.set_ylim(len(panels) * rows - SEP_ROWS, 0)
        ax.set_yticks([n * rows + AREA_ROWS / 2 for n in range(len(panels))], [f"#{k}" for k in panels])
    else:
        ax.text(0.5, 0.5, "no face lasted 1 s" if tracks else "no face found", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_yticks([])
    ax.set_xlim(start, end)
    ax.set_xlabel("time (s); per track: probabilities stacked, labels in the strip below")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in [*colors, UNCERTAIN_RGB]]
    fig.legend(handles, [*class_names, UNCERTAIN], loc="upper right", ncol=len(class_names) + 1, frameon=False,
               fontsize=8, handlelength=1)
    fig.text(0.01, 1 - 0.12 / fig.get_figheight(), title or "Emotion per face track", fontsize=9, va="top")
    if rest:
        fig.text(0.01, 0.02 / fig.get_figheight(), _rest_line(rest, tracks), fontsize=8, va="bottom")
    fig.subplots_adjust(left=0.06, right=0.99, top=1 - 0.45 / fig.get_figheight(), bottom=0.65 / fig.get_figheight())
    plots.save(fig, path)
    return {"panels": panels, "summarised": rest}


def _rest_line(rest: Sequence[int], tracks: dict, shown: int = 6) -> str:
    """The tracks without a panel, in one line: "Not drawn (shorter than 1 s or beyond 12 panels): #4 0:03
    (5 frames), ..."."""
    items = [f"#{k} {clock(tracks[k]['first'])} ({tracks[k]['n']} frames)" for k in rest[:shown]]
    more = f" and {len(rest) - shown} more" if len(rest) > shown else ""
    return (f"Not drawn ({len(rest)} track{'s' if len(rest) != 1 else ''} shorter than {MIN_PANEL_S:g} s or beyond "
            f"{MAX_PANELS} panels): " + ", ".join(items) + more)


def write_report(predictions: Iterable[dict], class_names: Sequence[str], tracks_path: Path, timeline_path: Path,
                 uncertain: bool = False, title: str = "", report: TrackReport | None = None) -> list[dict]:
    """tracks.csv and emotion_timeline.png of a run (each written atomically); returns the rows. report: the
    TrackReport the run built as it went (then `predictions` is read once, for the figure; `uncertain` is the
    report's); None: built here from `predictions` (read twice: a list, or frames read again from disk)."""
    if report is None:
        report = TrackReport(class_names, uncertain)
        for p in predictions:
            report.add(p["time_s"], p["faces"])
    rows = report.rows()
    write_tracks_csv(rows, class_names, tracks_path)
    draw_timeline(report, predictions, timeline_path, title)
    return rows
