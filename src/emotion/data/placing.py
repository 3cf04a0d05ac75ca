"""Placing files into folders without ever overwriting one: the listed destination folder, the choice of
a free name (NAME__1.jpg), move/link/copy, and the CSV log written before each move (the run's hold on
data_path: outputs.exclusive).

    folder = Folder("data/train/happy", dry_run=False)
    name, already = choose_name(folder, "img.jpg", lambda path: same_content("src/img.jpg", path))
    if not already:
        folder.ensure(); Transfer("link")("src/img.jpg", os.path.join(folder.path, name)); folder.add(name)

Transfer and remove_if_empty are the only calls that change the disk (besides the log and the lock).
"""
from __future__ import annotations

import csv
import errno
import os
import re
import stat
import sys
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Callable

from emotion.common import atomic, files, paths
from emotion.common.errors import UserError

_CLASH_SUFFIX = re.compile(r"__\d+$")


class Folder:
    """One destination folder, listed once; names placed during the run are added as they go."""

    def __init__(self, path: str, dry_run: bool):
        self.path = path
        self.names: set[str] = set()
        self._stems: set[str] | None = None
        self.exists = os.path.isdir(path)
        if os.path.lexists(path) and not self.exists:
            raise UserError(f"{path} exists but is not a folder; move it away")
        if self.exists:
            for entry in os.scandir(path):
                found = atomic.temp_target(entry.name)
                if found and not dry_run and not atomic.pid_alive(found[1]):
                    os.unlink(entry.path)  # a partial copy from a killed run; its source is intact
                elif not entry.name.startswith("."):
                    self.names.add(entry.name)

    def ensure(self) -> None:
        if not self.exists:
            os.makedirs(self.path, exist_ok=True)
            self.exists = True

    def add(self, name: str) -> None:
        self.names.add(name)
        if self._stems is not None:
            self._stems.add(_base_stem(name))

    def has_stem(self, stem: str) -> bool:
        """Whether an image of this stem (or stem__N) is here: labels whose image was moved before."""
        if self._stems is None:
            self._stems = {_base_stem(n) for n in self.names}
        return stem in self._stems


def _base_stem(name: str) -> str:
    return _CLASH_SUFFIX.sub("", os.path.splitext(name)[0])


def same_content(a: str, b: str) -> bool:
    """Same inode, or two regular files of the same size and bytes (a FIFO is never opened)."""
    sa, sb = os.stat(a), os.stat(b)
    if os.path.samestat(sa, sb):
        return True
    if not (stat.S_ISREG(sa.st_mode) and stat.S_ISREG(sb.st_mode)) or sa.st_size != sb.st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        return _same_bytes(fa, fb)


def same_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: str) -> bool:
    """Whether the regular file at path holds the bytes of a zip member (read from the archive, not extracted)."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode) or st.st_size != info.file_size:
        return False
    with archive.open(info) as fa, open(path, "rb") as fb:
        return _same_bytes(fa, fb)


def _same_bytes(fa, fb) -> bool:
    while True:
        ca, cb = fa.read(1 << 20), fb.read(1 << 20)
        if ca != cb:
            return False
        if not ca:
            return True


def choose_name(folder: Folder, name: str, same: Callable[[str], bool]) -> tuple[str, bool]:
    """(name to place a file under, already there?); same(path) tells whether the file at path holds the
    same bytes. A taken name never gets overwritten: NAME__1.ext..."""
    if name not in folder.names:
        return name, False
    if same(os.path.join(folder.path, name)):
        return name, True
    stem, ext = os.path.splitext(name)
    n = 1
    while True:
        candidate = f"{stem}__{n}{ext}"
        if candidate not in folder.names:
            return candidate, False
        if same(os.path.join(folder.path, candidate)):
            return candidate, True
        n += 1


class Transfer:
    """Places one file: rename (move) or hard link (link), with a copy when that cannot work.

    A source that is a symbolic link is never renamed (a relative link would dangle in its new folder):
    the file it points to is hard-linked (or copied) into place, then a move drops the link itself.
    """

    def __init__(self, mode: str):
        self.mode = mode
        self.can_link = True

    def __call__(self, src: str, dst: str) -> None:
        if self.mode == "move" and not os.path.islink(src):
            try:
                os.rename(src, dst)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                files.link_or_copy(src, dst, try_link=False)  # another disk: copy, then drop the source
                os.unlink(src)
            return
        self._link_or_copy(src, dst)
        if self.mode == "move":
            os.unlink(src)

    def _link_or_copy(self, src: str, dst: str) -> None:
        if not files.link_or_copy(src, dst, try_link=self.can_link):
            self.can_link = False  # the destination's file system cannot link: copy the rest without trying


class Log:
    """organize_log.csv rows (time, split, file, destination, reason), written before each move."""

    def __init__(self, path: Path | None):
        self.path = path
        self._file = None
        self._writer = None
        self.time = datetime.now().isoformat(timespec="seconds")

    def write(self, split: str, file: str, destination: str, reason: str) -> None:
        if self.path is None:
            return
        if self._file is None:
            new = not self.path.exists()
            self._file = open(self.path, "a", newline="", encoding="utf-8")
            self._writer = csv.writer(self._file)
            if new:
                self._writer.writerow(["time", "split", "file", "destination", "reason"])
        self._writer.writerow([paths.printable(v) for v in (self.time, split, file, destination, reason)])
        self._file.flush()  # the row must be on disk before the file moves, in case of a kill

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def progress(total: int, verb: str):
    from tqdm import tqdm  # imported here so --help stays fast
    return tqdm(total=total, unit="file", desc=verb, file=sys.stderr, disable=None, leave=False,
                mininterval=0.5)


def same_path(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def remove_if_empty(folder: str) -> bool | None:
    """rmdir folder: True when removed, False when it holds something, None when it is not a folder."""
    if os.path.islink(folder) or not os.path.isdir(folder):
        return None
    try:
        os.rmdir(folder)
        return True
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            return False
        raise
