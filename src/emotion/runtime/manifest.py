"""A batch's record of its archive (batch.py): manifest.csv, one row per video with what became of it, the plan
of a resumed run made from it, tracks_all.csv (every video's tracks.csv in one file) and the merge of the shards'
records into one.

    rows = manifest.read(folder / "manifest.csv")               # [] when there is none yet
    rows, todo = manifest.plan(videos, rows, folder)            # todo: positions in rows of the videos to analyse
    rows[todo[0]] = manifest.result_row(rows[todo[0]], result)  # what a worker reported (status, counts, error)
    manifest.write(folder / "manifest.csv", rows)               # atomically: temp file + rename, after each video
    manifest.write_tracks_all(rows, folder, folder / "tracks_all.csv")
    manifest.merge_shards(folder)                               # manifest-I-of-N.csv of all N shards -> manifest.csv

A row: path (absolute), output (its folder's name beside the manifest), size and mtime_ns (the file's identity
when it was listed), status, frames, faces, tracks, video_s (the video's length by its header), seconds (time
spent analysing it), skipped_frames, lost_frames (undecodable frames passed over, frames never reached), error
(one line: why it failed, or why a done video stopped early) and finished (UTC time). Status: done (its outputs
are complete in its folder), failed, or skipped (not analysed: the batch stopped before it, or it was killed
while analysing it). plan() keeps a done row whose file has the same path, size and modification time and
whose folder is still there, and a failed row likewise unless retry_failed; every other video of the list is
analysed again (restart: all of them). Rows of videos that are not in the list stay as they are, and so do their
names: a new video never takes the folder of one the manifest lists.
"""
from __future__ import annotations

import csv
import re
import time
from pathlib import Path
from typing import Iterable, Sequence

from emotion.common.atomic import atomic_path
from emotion.common.errors import UserError
from emotion.runtime.archive import Video, path_digest

COLUMNS = ("path", "output", "size", "mtime_ns", "status", "frames", "faces", "tracks", "video_s", "seconds",
           "skipped_frames", "lost_frames", "error", "finished")
DONE, FAILED, SKIPPED = "done", "failed", "skipped"
NOT_REACHED = "not analysed: the batch stopped before it"
TRACKS_NAME = "tracks.csv"                  # each video's, in its folder (video.TRACKS_NAME)
_SHARD_MANIFEST = re.compile(r"manifest-(\d+)-of-(\d+)\.csv")


def file_names(shard: tuple[int, int] | None = None) -> tuple[str, str]:
    """(manifest, tracks_all) file names: manifest.csv and tracks_all.csv, or manifest-I-of-N.csv and
    tracks_all-I-of-N.csv for shard (I, N)."""
    if shard is None:
        return "manifest.csv", "tracks_all.csv"
    return f"manifest-{shard[0]}-of-{shard[1]}.csv", f"tracks_all-{shard[0]}-of-{shard[1]}.csv"


def read(path: Path) -> list[dict]:
    """The rows of a manifest ([] when the file does not exist); UserError when it is not one this project wrote."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            columns = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"cannot read the batch's manifest {path}: {exc}") from None
    if tuple(columns) != COLUMNS or any(r["status"] not in (DONE, FAILED, SKIPPED) for r in rows):
        raise UserError(f"{path} is not a manifest this project wrote (columns or statuses differ): move it away, "
                        f"or point the batch at another results_dir; nothing was written")
    return rows


def write(path: Path, rows: Sequence[dict]) -> None:
    """The manifest, atomically (a reader sees the old one or the new one, never half)."""
    with atomic_path(Path(path)) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def pending_row(video: Video, name: str) -> dict:
    """A video to analyse: skipped (not analysed) until its result comes."""
    return {**dict.fromkeys(COLUMNS, ""), "path": video.path, "output": name, "size": video.size,
            "mtime_ns": video.mtime_ns, "status": SKIPPED, "error": NOT_REACHED}


def _keeps(row: dict | None, video: Video, folder: Path, retry_failed: bool) -> bool:
    """Whether an earlier row still stands for `video`: same file (size, mtime), done with its folder there, or
    failed (unless retried)."""
    if row is None or str(row["size"]) != str(video.size) or str(row["mtime_ns"]) != str(video.mtime_ns):
        return False
    if row["status"] == DONE:
        return bool(row["output"]) and (folder / row["output"]).is_dir()
    return row["status"] == FAILED and not retry_failed


def plan(videos: Sequence[Video], old_rows: Sequence[dict], folder: Path, restart: bool = False,
         retry_failed: bool = False) -> tuple[list[dict], list[int]]:
    """The manifest of this run before any work, and the positions (in it) of the videos to analyse: the list's
    videos in order, each keeping the row of an earlier run that still stands (not with restart), then the rows
    of videos not in the list, unchanged. A video keeps the folder name an earlier row gave it."""
    old = {r["path"]: r for r in old_rows}
    listed = {v.path for v in videos}
    others = [r for r in old_rows if r["path"] not in listed]
    taken = {r["output"].casefold(): r["path"] for r in old_rows if r["output"]}
    rows, todo = [], []
    for video in videos:
        row = old.get(video.path)
        if not restart and _keeps(row, video, folder, retry_failed):
            rows.append(row)
            continue
        name = row["output"] if row is not None and row["output"] else video.name
        if taken.get(name.casefold(), video.path) != video.path:  # another video's folder: never take it
            name = f"{video.name}-{path_digest(video.path)}"
        taken[name.casefold()] = video.path
        rows.append(pending_row(video, name))
        todo.append(len(rows) - 1)
    return rows + others, todo


def result_row(row: dict, result: dict) -> dict:
    """`row` with a worker's result (status, frames, faces, tracks, video_s, seconds, skipped_frames, lost_frames,
    error), finished now."""
    out = {**row, **{k: result.get(k, "") for k in COLUMNS if k in result}}
    out["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return out


def _concat(sources: Iterable[tuple[Path, dict]], out: Path, first: Sequence[str]) -> int:
    """CSV files one after another into `out` (atomically): `first` columns (values from each source's dict),
    then every column of the sources in the order first seen (empty where a file lacks it). Streams the rows;
    returns how many. A missing source is left out."""
    sources = [(Path(p), extra) for p, extra in sources if Path(p).is_file()]
    columns = list(first)
    for path, _ in sources:
        with open(path, newline="", encoding="utf-8") as f:
            columns += [c for c in next(csv.reader(f), []) if c not in columns]
    count = 0
    with atomic_path(Path(out)) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        for path, extra in sources:
            with open(path, newline="", encoding="utf-8") as src:
                for row in csv.DictReader(src):
                    writer.writerow({**row, **extra})
                    count += 1
    return count


def write_tracks_all(rows: Sequence[dict], folder: Path, out: Path) -> int:
    """tracks_all.csv: the tracks.csv of every done video in manifest order, a `video` column (its path) first.
    Returns the number of track rows."""
    done = [(Path(folder) / r["output"] / TRACKS_NAME, {"video": r["path"]}) for r in rows if r["status"] == DONE]
    return _concat(done, out, ["video"])


def shard_manifests(folder: Path) -> dict[int, dict[int, Path]]:
    """{N: {I: manifest-I-of-N.csv}} of the shard manifests in folder."""
    found: dict[int, dict[int, Path]] = {}
    for entry in sorted(Path(folder).glob("manifest-*-of-*.csv")):
        match = _SHARD_MANIFEST.fullmatch(entry.name)
        if match:
            found.setdefault(int(match[2]), {})[int(match[1])] = entry
    return found


def merge_shards(folder: Path) -> dict:
    """manifest.csv and tracks_all.csv in `folder` from the N shards' manifest-I-of-N.csv and
    tracks_all-I-of-N.csv (all N must be there, each video in one of them). Returns a summary."""
    folder = Path(folder)
    found = shard_manifests(folder)
    if not found:
        raise UserError(f"no shard manifests (manifest-I-of-N.csv) in {folder}: run the shards first "
                        f"(inference.py -v ... --shard I/N)")
    if len(found) > 1:
        raise UserError(f"{folder} holds manifests of {' and of '.join(str(n) for n in sorted(found))} shards: "
                        f"remove those of the older split, then merge again")
    count, files = next(iter(found.items()))
    missing = [i for i in range(count) if i not in files]
    if missing:
        raise UserError(f"shard{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))} of {count} "
                        f"missing in {folder} (manifest-I-of-{count}.csv): run {'them' if len(missing) > 1 else 'it'}"
                        f" first; nothing was written")
    rows, owner = [], {}
    for index in range(count):
        for row in read(files[index]):
            if row["path"] in owner:
                raise UserError(f"{row['path']} is in shard {owner[row['path']]} and in shard {index}: the shards "
                                f"ran on different lists; nothing was written")
            owner[row["path"]] = index
            rows.append(row)
    rows.sort(key=lambda r: r["path"])
    manifest_name, tracks_name = file_names()
    tracks = _concat(((folder / file_names((i, count))[1], {}) for i in range(count)), folder / tracks_name,
                     ["video"])
    write(folder / manifest_name, rows)
    statuses = {s: sum(r["status"] == s for r in rows) for s in (DONE, FAILED, SKIPPED)}
    return {"merged_shards": count, "videos": len(rows), **statuses, "track_rows": tracks,
            "manifest": str(folder / manifest_name), "tracks_all": str(folder / tracks_name)}
