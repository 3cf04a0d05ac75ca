"""The report of a video or webcam run, per face track: who showed what, and when.

From the face entries a run collects (the entries of predictions.json: {frame, time_s, faces: [{id, box, label,
probabilities, ...}]}):

    rows = track_report.track_rows(predictions, class_names)    # one dict per track id, in order of first sight
    track_report.write_tracks_csv(rows, class_names, path)      # results/tracks.csv
    track_report.plot_timeline(predictions, class_names, path)  # results/emotion_timeline.png
    print("\\n".join(track_report.track_lines(rows)))          # "#1 0:00-0:11 (264 frames): happy 62%, ..."

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


def track_rows(predictions: Sequence[dict], class_names: Sequence[str], uncertain: bool = False) -> list[dict]:
    """One row per track id (see the module docstring), in the order the tracks first appear."""
    uncertain = uncertain or has_uncertain(predictions)
    labels = [*class_names, UNCERTAIN] if uncertain else list(class_names)
    acc: dict[int, dict] = {}
    for t, face in _faces(predictions):
        a = acc.setdefault(int(face["id"]), {"first": t, "last": t, "n": 0, "classified": 0,
                                             "sum": np.zeros(len(class_names)), "labels": Counter()})
        a["last"] = t
        a["n"] += 1
        a["classified"] += bool(face.get("classified", True))
        a["sum"] += [face["probabilities"][c] for c in class_names]
        a["labels"][face["label"]] += 1
    rows = []
    for track_id, a in acc.items():
        mean = a["sum"] / a["n"]
        row = {"id": track_id, "first_s": round(a["first"], 3), "last_s": round(a["last"], 3), "frames": a["n"],
               "faces_classified": a["classified"], "dominant_label": class_names[int(np.argmax(mean))]}
        row.update({f"mean_{c}": round(float(m), 4) for c, m in zip(class_names, mean)})
        row.update({f"share_{c}": round(a["labels"][c] / a["n"], 4) for c in labels})
        rows.append(row)
    return rows


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
    k = np.clip(((times - start) / width).astype(int), 0, bins - 1)
    counts = np.bincount(k, minlength=bins).astype(float)
    sums = np.zeros((bins, probs.shape[1]))
    np.add.at(sums, k, probs)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts[:, None]
    votes = np.zeros((bins, classes + 1))
    np.add.at(votes, (k, labels), 1)
    mode = np.where(counts > 0, votes.argmax(axis=1), -1)
    return means, mode


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
    plt = plots.pyplot()
    series = track_series(predictions, class_names)
    duration = {k: float(s[0][-1] - s[0][0]) for k, s in series.items()}
    long = sorted((k for k in series if duration[k] >= MIN_PANEL_S), key=lambda k: -duration[k])[:MAX_PANELS]
    panels = sorted(long, key=lambda k: series[k][0][0])
    rest = [k for k in series if k not in panels]
    step = _frame_step(predictions)
    times = [float(p["time_s"]) for p in predictions] or [0.0]
    start, end = min(times), max(times) + step
    bins = max(1, min(MAX_BINS, math.ceil((end - start) / step)))
    width = (end - start) / bins
    colors = np.array([(*c, 1.0) for c in colours.class_colors(class_names)])
    strip_colors = np.vstack([colors, [(*UNCERTAIN_RGB, 1.0), (0, 0, 0, 0)]])  # mode -1 (empty): transparent
    pictures = []
    for track_id in panels:
        means, mode = binned(*series[track_id], start, width, bins, len(class_names))
        pictures += [_stack_picture(means, mode, strip_colors, colors), np.zeros((SEP_ROWS, bins, 4))]
    height = max(1, len(panels))
    fig, ax = plt.subplots(figsize=(11, 1.0 + 1.2 * height))
    if pictures:
        picture = np.concatenate(pictures[:-1])
        ax.imshow(picture, aspect="auto", interpolation="nearest", extent=(start, end, len(picture), 0))
        rows = AREA_ROWS + GAP_ROWS + STRIP_ROWS + SEP_ROWS
        ax.set_yticks([n * rows + AREA_ROWS / 2 for n in range(len(panels))], [f"#{k}" for k in panels])
    else:
        ax.text(0.5, 0.5, "no face lasted 1 s" if series else "no face found", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_yticks([])
    ax.set_xlim(start, end)
    ax.set_xlabel("time (s); per track: probabilities stacked, labels in the strip below")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in [*colors, UNCERTAIN_RGB]]
    fig.legend(handles, [*class_names, UNCERTAIN], loc="upper right", ncol=len(class_names) + 1, frameon=False,
               fontsize=8, handlelength=1)
    fig.text(0.01, 1 - 0.12 / fig.get_figheight(), title or "Emotion per face track", fontsize=9, va="top")
    if rest:
        fig.text(0.01, 0.02 / fig.get_figheight(), _rest_line(rest, series, duration), fontsize=8, va="bottom")
    fig.subplots_adjust(left=0.06, right=0.99, top=1 - 0.45 / fig.get_figheight(), bottom=0.65 / fig.get_figheight())
    plots.save(fig, path)
    return {"panels": panels, "summarised": rest}


def _rest_line(rest: Sequence[int], series: dict, duration: dict, shown: int = 6) -> str:
    """The tracks without a panel, in one line: "Not drawn (shorter than 1 s or beyond 12 panels): #4 0:03
    (5 frames), ..."."""
    items = [f"#{k} {clock(series[k][0][0])} ({len(series[k][0])} frames)" for k in rest[:shown]]
    more = f" and {len(rest) - shown} more" if len(rest) > shown else ""
    return (f"Not drawn ({len(rest)} track{'s' if len(rest) != 1 else ''} shorter than {MIN_PANEL_S:g} s or beyond "
            f"{MAX_PANELS} panels): " + ", ".join(items) + more)


def write_report(predictions: Sequence[dict], class_names: Sequence[str], tracks_path: Path, timeline_path: Path,
                 uncertain: bool = False, title: str = "") -> list[dict]:
    """tracks.csv and emotion_timeline.png of a run (each written atomically); returns the rows."""
    rows = track_rows(predictions, class_names, uncertain)
    write_tracks_csv(rows, class_names, tracks_path)
    plot_timeline(predictions, class_names, timeline_path, title)
    return rows
