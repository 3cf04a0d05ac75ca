"""src/inference.py on an archive of videos (emotion/runtime/{archive,manifest,batch,batch_workers,progress}.py):
inputs listed, named and sharded; the manifest's resume plan and the shards' merge (no model); then end to end
with a tiny model on short clips cut from ../shared/videos: a folder of four videos, one damaged (3 done, 1
failed, each video's outputs as long as the video); a batch killed with kill -9 during its second video and run
again (only that video redone, the first one's outputs byte-identical); two shards run side by side (every video
once) and merged.

Expected values come from the clips themselves (frames counted with OpenCV here), never from the code under
test. The end-to-end runs are subprocesses, as a user runs them; each starts one worker process (its TensorFlow
import is most of a run's time), so there are few of them and the clips are 3 to 150 frames long.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
from support import REPO, VIDEOS, as_set_args, read_csv, require, run_script, snapshot, tiny_model

from emotion.data import faces
from emotion.runtime import archive, manifest

MEGAMIND = VIDEOS / "Megamind.avi"
BUGY = VIDEOS / "Megamind_bugy.avi"


# ------------------------------------------------------------------------------------------------
# Helpers


def cut_clip(source: Path, dest: Path, start: int, count: int) -> Path:
    """Frames start .. start+count-1 of source as an MJPG AVI at its frame rate."""
    cap = cv2.VideoCapture(str(require(source)))
    cap.set(cv2.CAP_PROP_POS_FRAMES, start)
    fps, writer = cap.get(cv2.CAP_PROP_FPS), None
    for _ in range(count):
        ok, frame = cap.read()
        assert ok, f"{source} has fewer than {start + count} frames"
        if writer is None:
            dest.parent.mkdir(parents=True, exist_ok=True)
            writer = cv2.VideoWriter(str(dest), cv2.VideoWriter_fourcc(*"MJPG"), fps, (frame.shape[1], frame.shape[0]))
        writer.write(frame)
    writer.release()
    cap.release()
    return dest


def count_frames(path: Path) -> int:
    """Frames OpenCV decodes from the file (0 when it cannot open it)."""
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.isOpened() and cap.read()[0]:
        n += 1
    cap.release()
    return n


def jsonl_frames(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def batch_args(overrides: list[str], results: Path, *args: str) -> list[str]:
    return [*args, *as_set_args([*overrides, f"results_dir={results}"])]


def summary_of(proc) -> dict:
    return json.loads(proc.stdout.strip().splitlines()[-1])


def by_path(rows: list[dict]) -> dict[str, dict]:
    return {r["path"]: r for r in rows}


# ------------------------------------------------------------------------------------------------
# Listing, names, shards (no model, no video decoded)


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_folders_globs_and_files_are_listed_sorted_once_each_with_unique_names(tmp_path):
    root = tmp_path / "archive"
    x1, x2 = _touch(root / "x.avi"), _touch(root / "deeper" / "x.MP4")
    y = _touch(root / "y y.mkv")
    _touch(root / "notes.txt")                               # not a video type: not listed from a folder
    _touch(root / ".hidden" / "z.avi")                       # hidden folder and file: left out
    _touch(root / ".z.avi")
    outputs = _touch(root / "results" / "videos" / "x" / "test_out.avi")  # the batch's own outputs: left out
    other = _touch(tmp_path / "other" / "w.webm")
    named = _touch(tmp_path / "named.dat")                   # named explicitly: taken whatever its type
    (tmp_path / "link.avi").symlink_to(x1)                   # the same file twice: once
    videos = archive.list_videos([str(root), str(tmp_path / "other" / "*.webm"), str(named),
                                  str(tmp_path / "link.avi")], exclude=root / "results" / "videos")
    expected = sorted(str(p) for p in (x1, x2, y, other, named))
    assert [v.path for v in videos] == expected
    names = {v.path: v.name for v in videos}
    for x in (x1, x2):  # two stems "x": each gets its path's digest
        assert names[str(x)] == f"x-{hashlib.sha1(os.fsencode(str(x))).hexdigest()[:8]}"
    assert names[str(y)] == "y_y" and names[str(other)] == "w" and names[str(named)] == "named"
    assert [(v.size, v.mtime_ns) for v in videos] == [(os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in expected]
    assert archive.is_batch([str(root)]) and archive.is_batch([str(x1), str(y)])
    assert archive.is_batch([str(root / "*.avi")]) and archive.is_batch([str(x1)], sharded=True)
    assert not archive.is_batch([str(x1)]) and not archive.is_batch([str(tmp_path / "missing.avi")])
    with pytest.raises(archive.BadInputs, match="lies in .* the batch's own outputs"):
        archive.list_videos([str(outputs)], exclude=root / "results" / "videos")


def test_shards_take_every_nth_video_and_cover_each_exactly_once(tmp_path):
    files = [_touch(tmp_path / f"clip{i:02d}.avi") for i in range(11)]
    videos = archive.list_videos([str(tmp_path)])
    for count in (1, 2, 3, 4, 11, 13):
        shards = [archive.shard(videos, i, count) for i in range(count)]
        taken = [v.path for s in shards for v in s]
        assert sorted(taken) == sorted(str(f) for f in files) and len(taken) == len(set(taken))
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert [v.path for v in archive.shard(videos, 1, 4)] == [str(files[i]) for i in (1, 5, 9)]
    assert archive.parse_shard("2/8") == (2, 8)
    for bad in ("8/8", "1", "-1/4", "a/b", "0/0"):
        with pytest.raises(archive.BadInputs):
            archive.parse_shard(bad)


def test_bad_inputs_are_one_error_line_and_exit_code_2(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [(["-v", str(empty)], f"error: no video found in {empty}"),
             (["-v", str(tmp_path / "*.mp4")], "error: no video found in"),
             (["-v", str(tmp_path / "gone.avi"), str(tmp_path / "also-gone.avi")], "error: video not found"),
             (["-v", str(empty), "--shard", "2/2"], "error: --shard 2/2: the index must be from 0 to N-1"),
             (["-v", str(tmp_path / "one.avi"), "--restart"], "error: --restart is for a batch")]
    for args, expected in cases:
        proc = run_script("inference.py", *args, "--set", f"results_dir={tmp_path / 'r'}", timeout=60)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, (args, proc.stderr)
        assert len(errors) == 1 and errors[0].startswith(expected) and proc.stderr.strip().endswith(errors[0])
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------------------------------------
# The manifest: what a run again does (no model)


def test_a_run_again_keeps_what_still_stands_and_redoes_the_rest(tmp_path):
    folder = tmp_path / "videos"
    files = {k: _touch(tmp_path / "in" / f"{k}.avi", k.encode()) for k in ("done", "changed", "gone_folder",
                                                                            "failed", "new")}
    listed = archive.list_videos([str(tmp_path / "in")])
    videos = {v.name: v for v in listed}
    for name in ("done", "changed"):  # their folders are there; gone_folder's is not
        (folder / name).mkdir(parents=True)
    old = [{**manifest.pending_row(videos["done"], "done"), "status": "done", "frames": "12"},
           {**manifest.pending_row(videos["changed"], "changed"), "status": "done", "mtime_ns": "1"},
           {**manifest.pending_row(videos["gone_folder"], "gone_folder"), "status": "done"},
           {**manifest.pending_row(videos["failed"], "failed"), "status": "failed", "error": "damaged"},
           {**manifest.pending_row(archive.Video("/elsewhere/new.avi", 1, 1, "new"), "new"), "status": "done"}]
    rows, todo = manifest.plan(listed, old, folder)
    assert [r["path"] for r in rows] == [v.path for v in listed] + ["/elsewhere/new.avi"]  # not in the list: after
    redo = {Path(rows[i]["path"]).stem for i in todo}
    assert redo == {"changed", "gone_folder", "new"}          # kept: done (same file, folder there), failed
    assert by_path(rows)[str(files["done"])]["frames"] == "12"
    assert by_path(rows)[str(files["new"])]["output"] != "new"  # "new" is the folder of /elsewhere/new.avi
    assert all(rows[i]["status"] == "skipped" and rows[i]["error"] == manifest.NOT_REACHED for i in todo)
    _, todo = manifest.plan(listed, old, folder, retry_failed=True)
    assert {Path(rows[i]["path"]).stem for i in todo} == {"changed", "gone_folder", "new", "failed"}
    _, todo = manifest.plan(listed, old, folder, restart=True)
    assert len(todo) == len(listed)
    manifest.write(folder / "manifest.csv", rows)
    assert manifest.read(folder / "manifest.csv") == [{k: str(v) for k, v in r.items()} for r in rows]
    (folder / "manifest.csv").write_text("path,something\n/a,b\n")
    with pytest.raises(manifest.UserError, match="not a manifest this project wrote"):
        manifest.read(folder / "manifest.csv")


def test_merge_joins_all_shards_and_refuses_a_missing_one(tmp_path):
    for i, (paths, tracks) in enumerate([(["/v/a.avi", "/v/c.avi"], [["/v/a.avi", "1", "3"]]),
                                         (["/v/b.avi"], [["/v/b.avi", "1", "5"], ["/v/b.avi", "2", "1"]])]):
        rows = [{**dict.fromkeys(manifest.COLUMNS, ""), "path": p, "output": Path(p).stem, "status": "done"}
                for p in paths]
        manifest.write(tmp_path / f"manifest-{i}-of-3.csv", rows)
        with open(tmp_path / f"tracks_all-{i}-of-3.csv", "w", newline="") as f:
            csv.writer(f).writerows([["video", "id", "frames"], *tracks])
    with pytest.raises(manifest.UserError, match="shard 2 of 3 missing"):
        manifest.merge_shards(tmp_path)
    manifest.write(tmp_path / "manifest-2-of-3.csv", [])
    summary = manifest.merge_shards(tmp_path)
    assert summary["videos"] == 3 and summary["done"] == 3 and summary["track_rows"] == 3
    assert [r["path"] for r in read_csv(tmp_path / "manifest.csv")] == ["/v/a.avi", "/v/b.avi", "/v/c.avi"]
    assert [(r["video"], r["id"]) for r in read_csv(tmp_path / "tracks_all.csv")] == [
        ("/v/a.avi", "1"), ("/v/b.avi", "1"), ("/v/b.avi", "2")]


# ------------------------------------------------------------------------------------------------
# End to end with a tiny model


@pytest.fixture(scope="module")
def tiny_overrides(tmp_path_factory):
    """--set overrides for a tiny 32x32 model of the project's kind, saved and converted to TFLite once."""
    if faces.blazeface_model_path() is None:
        pytest.skip(f"BlazeFace model not installed ({faces.BLAZEFACE_INSTALL})")
    from emotion.model import network
    from emotion.runtime import classifier
    path = tmp_path_factory.mktemp("archive_model") / "model.h5"
    network.save_model_atomic(tiny_model((32, 32, 3)), path)
    classifier.load_classifier(path, prefer="tflite", num_threads=1)  # the conversion, cached beside it
    return ["weights=null", "input_shape=[32, 32, 3]", f"model_save_path={path}", "face_detector=blazeface"]


def test_a_folder_of_four_videos_one_damaged(tiny_overrides, tmp_path):
    """3 done + 1 failed (with its reason); each done video's folder holds as many frames as the clip (counted
    here with OpenCV) in predictions.jsonl and test_out.avi; tracks_all.csv is every tracks.csv with the video's
    path. A run again changes nothing and analyses nothing."""
    clips = tmp_path / "clips"
    a = cut_clip(MEGAMIND, clips / "a_first.avi", 0, 12)
    b = cut_clip(MEGAMIND, clips / "b_second.avi", 120, 9)
    sub = cut_clip(BUGY, clips / "sub" / "a_first.avi", 60, 7)          # the same name in a sub-folder
    damaged = clips / "c_damaged.avi"
    damaged.write_bytes(a.read_bytes()[:3000])                           # the header and a piece of a frame
    assert count_frames(damaged) == 0
    expected = {str(p): count_frames(p) for p in (a, b, sub)}
    assert sorted(expected.values()) == [7, 9, 12]
    results = tmp_path / "results"
    proc = run_script("inference.py", *batch_args(tiny_overrides, results, "-v", str(clips),
                                                  "--set", "labeled_frame_stride=5"), timeout=600)
    assert proc.returncode == 1, proc.stderr                            # one failed: exit code 1
    assert proc.stderr.strip().splitlines()[-1] == (f"warning: 1 of 4 videos failed: {results / 'videos' / 'manifest.csv'}"
                                                    f" says why (column error)")
    summary = summary_of(proc)
    assert (summary["done"], summary["failed"], summary["skipped"], summary["analysed"]) == (3, 1, 0, 4)
    assert sorted(p.name for p in results.iterdir()) == ["videos"]       # never results/photos/ or results/*.json
    rows = read_csv(results / "videos" / "manifest.csv")
    assert [r["path"] for r in rows] == sorted([*expected, str(damaged)])
    failed = by_path(rows)[str(damaged)]
    assert failed["status"] == "failed" and failed["error"].startswith(f"cannot read video {damaged}")
    assert not (results / "videos" / failed["output"]).exists()
    tracks_all = read_csv(results / "videos" / "tracks_all.csv")
    for path, frames in expected.items():
        row = by_path(rows)[path]
        out = results / "videos" / row["output"]
        assert row["status"] == "done" and int(row["frames"]) == frames and row["error"] == ""
        assert (int(row["size"]), int(row["mtime_ns"])) == (os.stat(path).st_size, os.stat(path).st_mtime_ns)
        records = jsonl_frames(out / "predictions.jsonl")
        assert [r["frame"] for r in records] == list(range(frames))
        assert count_frames(out / "test_out.avi") == frames
        assert sorted(p.name for p in (out / "labeled_images").glob("*.png")) == [
            f"frame_{i:03d}.png" for i in range(0, frames, 5)]
        tracks = read_csv(out / "tracks.csv")
        assert sum(int(t["frames"]) for t in tracks) == sum(len(r["faces"]) for r in records) == int(row["faces"])
        assert [{k: v for k, v in t.items() if k != "video"} for t in tracks_all if t["video"] == path] == tracks
    assert len({by_path(rows)[str(p)]["output"] for p in (a, sub)}) == 2  # two a_first.avi, two folders
    assert len(tracks_all) == sum(int(by_path(rows)[p]["tracks"]) for p in expected)

    before = snapshot(results)
    again = run_script("inference.py", *batch_args(tiny_overrides, results, "-v", str(clips)), timeout=600)
    assert again.returncode == 1 and summary_of(again)["analysed"] == 0 and summary_of(again)["kept"] == 4
    assert snapshot(results) == before


def test_a_batch_killed_during_its_second_video_redoes_only_that_one(tiny_overrides, tmp_path):
    """kill -9 of the batch while its worker writes the second video: the worker dies with it, the manifest says
    the first done and the second skipped; the same command again analyses the second only, the first video's
    outputs byte-identical."""
    clips = tmp_path / "clips"
    first = cut_clip(MEGAMIND, clips / "a.avi", 0, 4)
    second = cut_clip(MEGAMIND, clips / "b.avi", 0, 150)
    results = tmp_path / "results"
    folder = results / "videos"
    args = batch_args(tiny_overrides, results, "-v", str(clips), "--no-video")
    proc = subprocess.Popen([sys.executable, str(REPO / "src" / "inference.py"), *args], cwd=REPO,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline, temp = time.monotonic() + 300, []
        while proc.poll() is None and time.monotonic() < deadline and not temp:
            temp = list(folder.glob(".b.tmp-*")) if folder.is_dir() else []
            time.sleep(0.02)
        assert temp and proc.poll() is None, f"the batch ended first: {proc.communicate()}"
        proc.kill()
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=60)
    worker = int(temp[0].name.rsplit("-", 1)[1])
    deadline = time.monotonic() + 30
    while _alive(worker) and time.monotonic() < deadline:  # killed by the kernel with its parent
        time.sleep(0.05)
    assert not _alive(worker), "the worker outlived the batch"
    rows = by_path(read_csv(folder / "manifest.csv"))
    assert rows[str(first)]["status"] == "done" and rows[str(second)]["status"] == "skipped"
    kept = snapshot(folder / rows[str(first)]["output"])

    again = run_script("inference.py", *args, timeout=600)
    assert again.returncode == 0, again.stderr
    summary = summary_of(again)
    assert (summary["analysed"], summary["kept"], summary["done"]) == (1, 1, 2)
    rows = by_path(read_csv(folder / "manifest.csv"))
    assert snapshot(folder / rows[str(first)]["output"]) == kept
    assert int(rows[str(second)]["frames"]) == count_frames(second) == 150
    assert len(jsonl_frames(folder / rows[str(second)]["output"] / "predictions.jsonl")) == 150
    assert not (folder / rows[str(second)]["output"] / "test_out.avi").exists()   # --no-video
    assert sorted(p.name for p in folder.iterdir()) == ["a", "b", "manifest.csv", "tracks_all.csv"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for this purpose
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] != "Z"
    except OSError:
        return True


def test_two_shards_side_by_side_cover_every_video_once_and_merge(tiny_overrides, tmp_path):
    clips = tmp_path / "clips"
    paths = [cut_clip(MEGAMIND, clips / f"{k}.avi", start, 3) for k, start in (("p", 0), ("q", 50), ("r", 200))]
    results = tmp_path / "results"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    procs = [subprocess.Popen([sys.executable, str(REPO / "src" / "inference.py"),
                               *batch_args(tiny_overrides, results, "-v", str(clips), "--shard", f"{i}/2",
                                           "--no-video")],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    folder = results / "videos"
    shards = [read_csv(folder / f"manifest-{i}-of-2.csv") for i in range(2)]
    taken = [r["path"] for rows in shards for r in rows]
    assert sorted(taken) == sorted(str(p) for p in paths) and len(taken) == len(set(taken))
    assert [r["path"] for r in shards[0]] == [str(paths[0]), str(paths[2])]
    merged = run_script("inference.py", "--merge", "--set", f"results_dir={results}", timeout=60)
    assert merged.returncode == 0, merged.stderr
    rows = read_csv(folder / "manifest.csv")
    assert [r["path"] for r in rows] == sorted(str(p) for p in paths) and {r["status"] for r in rows} == {"done"}
    assert all(int(r["frames"]) == 3 for r in rows)
    tracks = read_csv(folder / "tracks_all.csv")
    assert len(tracks) == sum(len(read_csv(folder / f"tracks_all-{i}-of-2.csv")) for i in range(2))
    assert {t["video"] for t in tracks} <= {str(p) for p in paths}
    for r in rows:
        assert sorted(p.name for p in (folder / r["output"]).iterdir()) == [
            ".written-by-emotion-recognition", "emotion_timeline.png", "inference_logs.txt", "predictions.jsonl",
            "tracks.csv"]
