"""web/timeline.js (FaceHistory) in Node, without a browser: the CSV's two sections, the per-track summary with
an "uncertain" label, faces without an id left out, and the oldest rows dropped beyond its memory bound.
The page's use of it (timelines drawn, the CSV downloaded) is tests/test_web.py's."""
from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess

import pytest
from support import REPO

SCRIPT = """
import {FaceHistory} from '%s';
const h = new FaceHistory(['happy', 'sad']);
const face = (id, label, p) => ({id, box: [1, 2, 30, 40], label, confidence: Math.max(p, 1 - p),
                                 probabilities: {happy: p, sad: 1 - p}});
h.add(0.0, [face(1, 'happy', 0.9), face(2, 'sad', 0.2), {...face(null, 'happy', 0.5), id: null}]);
h.add(0.1, [face(1, 'uncertain', 0.55)]);
h.add(0.2, [face(1, 'sad', 0.3)]);
const out = {csv: h.toCSV()};
const big = new FaceHistory(['happy', 'sad']);
for (let i = 0; i < 500010; i++) big.add(i / 10, [face(1 + (i >= 500000 ? 1 : 0), 'happy', 0.9)]);
out.big = {rows: big.rows.length, dropped: big.dropped, first: big.rows[0].time,
           tracks: big.tracks().map((t) => t.frames)};
console.log(JSON.stringify(out));
"""


def test_face_history_csv_and_bound():
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (make test installs it with the web tools)")
    proc = subprocess.run([node, "--input-type=module", "-e", SCRIPT % (REPO / "web" / "timeline.js").as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    frames, tracks = out["csv"].rstrip("\n").split("\n\n")
    rows = list(csv.DictReader(io.StringIO(frames)))
    assert [(r["time_s"], r["id"], r["label"]) for r in rows] == [("0.000", "1", "happy"), ("0.000", "2", "sad"),
                                                                  ("0.100", "1", "uncertain"), ("0.200", "1", "sad")]
    assert rows[0] == {"time_s": "0.000", "id": "1", "x": "1", "y": "2", "w": "30", "h": "40", "label": "happy",
                       "confidence": "0.900000", "prob_happy": "0.900000", "prob_sad": "0.100000"}
    summary = list(csv.DictReader(io.StringIO(tracks)))
    assert summary[0] == {"id": "1", "first_s": "0.000", "last_s": "0.200", "frames": "3", "faces_classified": "3",
                          "dominant_label": "happy", "mean_happy": "0.5833", "mean_sad": "0.4167",
                          "share_happy": "0.3333", "share_sad": "0.3333", "share_uncertain": "0.3333"}
    assert summary[1]["id"] == "2" and summary[1]["dominant_label"] == "sad"
    assert summary[1]["share_uncertain"] == "0.0000"
    assert out["big"] == {"rows": 500000, "dropped": 10, "first": 1.0, "tracks": [499990, 10]}
