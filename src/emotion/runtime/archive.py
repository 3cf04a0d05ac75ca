"""An archive of videos as a batch sees it: which files (several paths, folders searched recursively, globs),
in which order, under which output names, and which of them one shard of a cluster job takes.

    archive.is_batch(["clips/"])                         # True: a folder, a glob or several paths; one file: False
    videos = archive.list_videos(["clips/", "extra/*.mp4", "one.avi"], exclude=Path("results/videos"))
    videos[0].path, videos[0].size, videos[0].mtime_ns, videos[0].name   # absolute path, identity, output name
    mine = archive.shard(videos, *archive.parse_shard("2/8"))           # every 8th video from the third: 2, 10, ...

A folder is searched recursively for the video types OpenCV reads (VIDEO_SUFFIXES, any case), skipping hidden
files and folders and the batch's own output folder; a glob (quoted, so that the shell leaves it: 'clips/**/*.mp4')
is expanded here (** spans folders), its folders searched like folders; a file given by name is taken whatever
its type (it fails later if OpenCV cannot read it). The list is sorted by path, once per file (the same file
through two spellings counts once), so every shard of a job array sees the same list and `--shard I/N` takes
positions I, I+N, I+2N, ... with no coordinator. Output names come from the file names (letters, digits, _ and -),
with the first 8 hex digits of the path's SHA-1 added when two videos of the list would share one
(clips/a/clip.mp4 and clips/b/clip.mp4: clip-1a2b3c4d and clip-5e6f7a8b), so they depend on the list only.
Nothing here opens a video: no OpenCV, no TensorFlow.
"""
from __future__ import annotations

import glob
import hashlib
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from emotion.common import console, errors, paths

VIDEO_SUFFIXES = (".avi", ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts",
                  ".mts", ".m2ts", ".ogv", ".asf", ".vob", ".mxf")
GLOB_CHARS = re.compile(r"[*?\[]")


class BadInputs(errors.UserError):
    """Inputs that name no video, or a bad --shard: one line, exit code 2 (as argparse's own mistakes)."""

    code = errors.EXIT_CONFIG


@dataclass(frozen=True)
class Video:
    """One video of the archive: its absolute path (the manifest's key), size and modification time (its
    identity: a resumed batch redoes a video whose file changed), and the name of its output folder."""

    path: str
    size: int
    mtime_ns: int
    name: str


def is_batch(inputs: Sequence[str], sharded: bool = False) -> bool:
    """Whether -v inputs make a batch (outputs per video under results/videos/): several paths, a folder, a glob
    or a shard; one plain file path (existing or not) keeps the single-video layout."""
    if sharded or len(inputs) > 1:
        return True
    if not inputs:
        return False
    path = Path(inputs[0]).expanduser()
    return path.is_dir() or (not path.exists() and bool(GLOB_CHARS.search(inputs[0])))


def is_video_name(name: str) -> bool:
    return name.lower().endswith(VIDEO_SUFFIXES) and not name.startswith(".")


def _walk(folder: Path, exclude: Path | None) -> Iterable[Path]:
    """The video files under folder, recursively: hidden entries and the `exclude` folder left out."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and not (exclude is not None and _inside(Path(root) / d, exclude)))
        yield from (Path(root) / f for f in sorted(files) if is_video_name(f))


def _inside(path: Path, folder: Path) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(folder)


def _expand(text: str, exclude: Path | None) -> list[Path]:
    """The files one -v input names; BadInputs when it names nothing."""
    path = Path(text).expanduser()
    if path.is_dir():
        found = list(_walk(path, exclude))
        if not found:
            console.warn(f"no video in {text} (looked for {', '.join(VIDEO_SUFFIXES)} in it and its sub-folders)")
        return found
    if path.exists() or path.is_symlink() or not GLOB_CHARS.search(text):
        if not path.exists():
            raise BadInputs(f"video not found: {text}")
        if exclude is not None and _inside(path, exclude):
            raise BadInputs(f"{text} lies in {exclude}, the batch's own outputs: give the original video")
        return [path]
    found = []
    for match in sorted(glob.glob(os.path.expanduser(text), recursive=True)):
        m = Path(match)
        if m.is_dir():
            found += _walk(m, exclude)
        elif is_video_name(m.name) and not (exclude is not None and _inside(m, exclude)):
            found.append(m)
    if not found:
        console.warn(f"no video matches {text}")
    return found


def list_videos(inputs: Sequence[str], exclude: Path | None = None) -> list[Video]:
    """Every video the inputs name, sorted by absolute path, each file once, with its output name. `exclude`:
    a folder never searched (the batch's outputs). BadInputs when they name none."""
    exclude = Path(os.path.realpath(exclude)) if exclude is not None else None
    seen, found = set(), []
    for text in inputs:
        for path in _expand(text, exclude):
            real = os.path.realpath(path)
            if real not in seen:
                seen.add(real)
                found.append(os.path.abspath(path))
    if not found:
        raise BadInputs(f"no video found in {' '.join(inputs)} (looked for {', '.join(VIDEO_SUFFIXES)})")
    found.sort()
    names = output_names(found)
    videos = []
    for path, name in zip(found, names):
        try:
            st = os.stat(path)
        except OSError as exc:  # gone since it was listed
            raise BadInputs(f"cannot read {path}: {exc.strerror or exc}") from None
        videos.append(Video(path, st.st_size, st.st_mtime_ns, name))
    return videos


def _clean(stem: str) -> str:
    """A file name's stem as a folder name: letters, digits, _ and - only (no dot: never a .csv beside it)."""
    return re.sub(r"[^\w-]+", "_", paths.printable(stem)).strip("_")[:80] or "video"


def path_digest(path: str, digits: int = 8) -> str:
    """The first `digits` hex digits of the SHA-1 of a path: what tells apart two videos' output names."""
    return hashlib.sha1(os.fsencode(path)).hexdigest()[:digits]


def output_names(video_paths: Sequence[str]) -> list[str]:
    """Each video's output folder name: its cleaned stem, with the path's digest added where two stems of the
    list are equal (ignoring case, for case-insensitive disks). Unique within the list."""
    stems = [_clean(Path(p).stem) for p in video_paths]
    counts = Counter(s.casefold() for s in stems)
    names = [s if counts[s.casefold()] == 1 else f"{s}-{path_digest(p)}" for s, p in zip(stems, video_paths)]
    if len({n.casefold() for n in names}) < len(names):  # a stem that looks like another's name + digest
        names = [f"{s}-{path_digest(p, 40)}" for s, p in zip(stems, video_paths)]
    return names


def parse_shard(text: str) -> tuple[int, int]:
    """--shard I/N -> (I, N): N >= 1 shards, I from 0 to N-1 (SLURM_ARRAY_TASK_ID with --array=0-(N-1), a
    Kubernetes indexed Job's JOB_COMPLETION_INDEX). BadInputs otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not match:
        raise BadInputs(f"--shard must be I/N (this job's index from 0, then the number of jobs), got {text!r}")
    index, count = int(match[1]), int(match[2])
    if count < 1 or index >= count:
        raise BadInputs(f"--shard {text}: the index must be from 0 to N-1 and N at least 1")
    return index, count


def shard(videos: Sequence[Video], index: int, count: int) -> list[Video]:
    """The videos shard `index` of `count` takes: positions index, index + count, ... of the sorted list."""
    return list(videos[index::count])
