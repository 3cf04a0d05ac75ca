"""Face tracks across video frames: stable ids and per-face temporal smoothing of the class probabilities.

    tracker = FaceTracker(smoothing=0.6)                 # weight of a face's past probabilities; 0 = off
    for frame in video:
        boxes = [...]                                    # this frame's face boxes (x, y, w, h)
        probs = classifier(...)                          # [N, C] raw probabilities, one row per box
        ids, smoothed = tracker.update(boxes, probs)     # ids[i] and smoothed[i] belong to boxes[i]

    # or the two halves apart (a video run assigns ids while detecting, smooths after classifying):
    ids = tracker.assign(boxes)                      # FaceTracker: ids only
    smoothed = smoother.update(ids, probs)           # ProbabilitySmoother: the exponential average per id

Matching: each box is matched to at most one live track of the previous frames, greedily by affinity.
A pair qualifies when the boxes overlap by IoU >= iou_threshold, or when their centres lie within
max_center_distance times the mean of the two boxes' sides (a face moving fast, or a box that changes size,
overlaps little but stays close); IoU matches rank above distance-only matches, better ones first. An
unmatched box starts a new track with a new id (ids are never reused); a track unmatched for more than
max_missed consecutive frames is dropped, so a face hidden for a moment (a detector miss, an occlusion)
keeps its id when it comes back within max_missed frames.

Smoothing: a track's probabilities are an exponential moving average,
    smoothed_t = smoothing * smoothed_{t-1} + (1 - smoothing) * probs_t,
starting from the first observation; a missed frame leaves them unchanged, and the average of an id not
seen for more than max_missed updates is forgotten. With smoothing 0 the output is the raw probabilities.
The label of a face is the argmax of its smoothed probabilities, so a one-frame flicker of the classifier
does not flip the label.

Pure numpy; no TensorFlow, no OpenCV.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass
class Track:
    """One face followed over frames. box: its last matched (x, y, w, h); hits: frames matched; misses:
    consecutive frames unmatched; first_frame / last_frame: tracker frame numbers (0-based) of the first and
    last match."""

    id: int
    box: tuple[float, float, float, float]
    hits: int = 1
    misses: int = 0
    first_frame: int = 0
    last_frame: int = 0


def _as_boxes(boxes) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64)
    if b.size == 0:
        return np.zeros((0, 4))
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must be [N, 4] (x, y, w, h), got shape {b.shape}")
    return b


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[len(a), len(b)] IoU of (x, y, w, h) boxes."""
    a, b = _as_boxes(a), _as_boxes(b)
    ax0, ay0, ax1, ay1 = a[:, 0:1], a[:, 1:2], a[:, 0:1] + a[:, 2:3], a[:, 1:2] + a[:, 3:4]
    bx0, by0, bx1, by1 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(ax1, bx1) - np.maximum(ax0, bx0), 0, None)
    ih = np.clip(np.minimum(ay1, by1) - np.maximum(ay0, by0), 0, None)
    inter = iw * ih
    union = (a[:, 2:3] * a[:, 3:4]) + (b[:, 2] * b[:, 3]) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def center_distance_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[len(a), len(b)] distance between box centres divided by the mean side of the two boxes."""
    a, b = _as_boxes(a), _as_boxes(b)
    ca = a[:, :2] + a[:, 2:] / 2
    cb = b[:, :2] + b[:, 2:] / 2
    dist = np.linalg.norm(ca[:, None, :] - cb[None, :, :], axis=2)
    size = (a[:, 2:].mean(axis=1)[:, None] + b[:, 2:].mean(axis=1)[None, :]) / 2
    return dist / np.maximum(size, 1e-9)


class ProbabilitySmoother:
    """Exponential average of each id's probabilities: smoothed = smoothing * previous + (1 - smoothing) * probs,
    starting from the first observation. An id absent from more than forget_after consecutive updates is
    forgotten (its next observation starts afresh)."""

    def __init__(self, smoothing: float = 0.6, forget_after: int = 5):
        if not 0.0 <= float(smoothing) < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        self.smoothing = float(smoothing)
        self.forget_after = int(forget_after)
        self.state: dict[int, np.ndarray] = {}
        self._last_seen: dict[int, int] = {}
        self._step = -1

    def update(self, ids: Sequence[int], probs) -> np.ndarray:
        """ids: one per row of probs [N, C]. Returns float32 [N, C], the smoothed rows."""
        self._step += 1
        probs = np.asarray(probs, dtype=np.float64)
        if probs.ndim != 2 or len(probs) != len(ids):
            raise ValueError(f"probs must be [N, C] with N = {len(ids)} ids, got shape {probs.shape}")
        out = np.empty(probs.shape, np.float32)
        for i, (face_id, p) in enumerate(zip(ids, probs)):
            past = self.state.get(face_id)
            if past is None or past.shape != p.shape or self.smoothing == 0:
                current = p.copy()
            else:
                current = self.smoothing * past + (1.0 - self.smoothing) * p
            self.state[face_id] = current
            self._last_seen[face_id] = self._step
            out[i] = current
        for face_id in [k for k, seen in self._last_seen.items() if self._step - seen > self.forget_after]:
            del self.state[face_id], self._last_seen[face_id]
        return out


class FaceTracker:
    """Stable ids for the faces of consecutive frames, and their smoothed probabilities (module docstring).

    smoothing: weight of the past in the exponential average, in [0, 1); 0 = off.
    iou_threshold: boxes overlapping at least this much can be the same face.
    max_center_distance: or centres at most this many (mean) box sides apart.
    max_missed: a track survives this many consecutive frames without a match, then is dropped.
    """

    def __init__(self, smoothing: float = 0.6, iou_threshold: float = 0.3, max_center_distance: float = 0.5,
                 max_missed: int = 5):
        if int(max_missed) < 0:
            raise ValueError(f"max_missed must be >= 0, got {max_missed}")
        self.smoothing = float(smoothing)
        self.iou_threshold = float(iou_threshold)
        self.max_center_distance = float(max_center_distance)
        self.max_missed = int(max_missed)
        self.tracks: list[Track] = []
        self.smoother = ProbabilitySmoother(self.smoothing, forget_after=self.max_missed)
        self.frame = -1          # number of the last update (0-based)
        self._next_id = 1

    def match(self, boxes) -> list[int | None]:
        """For each box, the index in self.tracks of the track it continues, or None (a new face)."""
        boxes = _as_boxes(boxes)
        assigned: list[int | None] = [None] * len(boxes)
        if not len(boxes) or not self.tracks:
            return assigned
        old = np.array([t.box for t in self.tracks], dtype=np.float64)
        iou = iou_matrix(old, boxes)
        dist = center_distance_matrix(old, boxes)
        # Affinity: IoU matches in (1, 2], distance-only matches in (0, 1]; 0 = no match.
        affinity = np.where(iou >= self.iou_threshold, 1.0 + iou,
                            np.where(dist <= self.max_center_distance,
                                     1.0 - dist / max(self.max_center_distance, 1e-9) + 1e-6, 0.0))
        used_tracks: set[int] = set()
        order = np.argsort(-affinity, axis=None, kind="stable")
        for flat in order:
            t, b = divmod(int(flat), len(boxes))
            if affinity[t, b] <= 0:
                break
            if t in used_tracks or assigned[b] is not None:
                continue
            assigned[b] = t
            used_tracks.add(t)
        return assigned

    def assign(self, boxes: Sequence[Sequence[float]]) -> list[int]:
        """Advance one frame: match `boxes` (x, y, w, h) to the live tracks, start tracks for the others, drop
        tracks missed more than max_missed times. Returns the track id of each box, in order."""
        self.frame += 1
        boxes = _as_boxes(boxes)
        assigned = self.match(boxes)
        ids: list[int] = []
        matched: set[int] = set()
        new_tracks: list[Track] = []
        for i, t_index in enumerate(assigned):
            box = tuple(float(v) for v in boxes[i])
            if t_index is None:
                track = Track(self._next_id, box, first_frame=self.frame, last_frame=self.frame)
                self._next_id += 1
                new_tracks.append(track)
            else:
                track = self.tracks[t_index]
                matched.add(t_index)
                track.box, track.hits, track.misses, track.last_frame = box, track.hits + 1, 0, self.frame
            ids.append(track.id)
        survivors = []
        for t_index, track in enumerate(self.tracks):
            if t_index not in matched:
                track.misses += 1
                if track.misses > self.max_missed:
                    continue
            survivors.append(track)
        self.tracks = survivors + new_tracks
        return ids

    def update(self, boxes: Sequence[Sequence[float]], probs=None) -> tuple[list[int], np.ndarray | None]:
        """assign(boxes), then the exponential average of probs (raw [N, C], one row per box, or None).

        Returns (ids, smoothed): ids[i] is the track id of boxes[i]; smoothed[i] its probabilities after the
        average (float32 [N, C], rows summing to 1 when the inputs do), or None when probs is None.
        """
        n = len(_as_boxes(boxes))
        if probs is not None:
            probs = np.asarray(probs, dtype=np.float64)
            if probs.ndim != 2 or len(probs) != n:
                raise ValueError(f"probs must be [N, C] with N = {n} boxes, got shape {probs.shape}")
        ids = self.assign(boxes)
        if probs is None:
            return ids, None
        return ids, self.smoother.update(ids, probs)

    def __repr__(self) -> str:
        return (f"FaceTracker(smoothing={self.smoothing}, tracks={[t.id for t in self.tracks]}, "
                f"max_missed={self.max_missed})")
