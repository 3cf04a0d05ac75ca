"""A run's outputs, published together: written under temporary names beside their places, renamed into place
at the end, so the outputs on disk are always those of one complete run.

    staged = outputs.Staged({"video": out / "test_out.avi", "labeled": out / "labeled_images"},
                            journal_dir=out, folders={"labeled"})
    staged.check()                    # optional, before long work: refuses to replace a folder not ours
    staged.prepare()                  # when the work starts: see below
    write(staged.tmp["video"]); write_into(staged.tmp["labeled"])   # the folder is created (and marked)
    staged.publish()                  # every output renamed into place, back to back
    # or staged.discard(): the temporary outputs are removed and the previous run's outputs stay

prepare() finishes the publication of a run killed in the middle of publish() (its journal lists renames of
outputs that were complete), removes the temporary outputs of dead processes, and refuses (UserError) to
replace a folder this project did not write. A folder this project writes holds the file MARKER:
is_own_folder() and mark() are also what web.py uses for its builds.

One run at a time per output set: every script that writes holds its output places for the whole run,

    with outputs.exclusive(cfg.model_save_path, cfg.performance_dir):
        train(...)

and a second run on any of them stops at once with one line naming the process that holds it. The lock is an
advisory lock (flock) on a file named by the place's real path in a folder of this user's in the system's
temporary folder, so nothing appears beside the outputs, two spellings of one place (a symlink, "..") are one
lock, and the operating system frees it when the process ends, kill -9 included. (Windows has no flock: there
the check is skipped.)
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterable

from emotion.common import atomic, paths
from emotion.common.errors import UserError

MARKER = ".written-by-emotion-recognition"
_JOURNAL = re.compile(r"\.publish-(\d+)\.json(\.part)?")


def mark(folder: Path) -> None:
    """Mark `folder` as written by this project, so a later run may replace it."""
    (Path(folder) / MARKER).write_text("This folder is an output of the emotion recognition project: "
                                       "a later run replaces it whole.\n", encoding="utf-8")


def is_own_folder(folder: Path, legacy: Callable[[str], bool] | None = None) -> bool:
    """Whether `folder` (a real folder, not a symlink) is one this project wrote: it holds MARKER, or is empty,
    or every entry's name passes `legacy` (what older versions wrote before they marked their folders)."""
    folder = Path(folder)
    if folder.is_symlink() or not folder.is_dir():
        return False
    names = [p.name for p in folder.iterdir()]
    return MARKER in names or all(legacy is not None and legacy(n) for n in names)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _install(tmp: Path, final: Path, aside: Path) -> None:
    """Rename tmp to final; an existing final folder is renamed aside first, then removed."""
    if final.is_dir() and not final.is_symlink():
        os.replace(final, aside)
        os.replace(tmp, final)
        _remove(aside)
    else:
        os.replace(tmp, final)


def _read_journal(path: Path) -> list[tuple[Path, Path]]:
    try:
        pairs = json.loads(path.read_text(encoding="utf-8"))
        return [(Path(tmp), Path(final)) for tmp, final in pairs]
    except (OSError, ValueError, TypeError):
        return []


class Staged:
    """The outputs of one run, by key: final paths in `finals`, the keys in `folders` being folders.
    `legacy(name)` recognises the entries of an unmarked folder an older version wrote (see is_own_folder)."""

    def __init__(self, finals: dict[str, Path], journal_dir: Path, folders: Iterable[str] = (),
                 legacy: Callable[[str], bool] | None = None):
        self.finals = {k: Path(v) for k, v in finals.items()}
        self.folders = set(folders)
        self.journal_dir = Path(journal_dir)
        self.legacy = legacy
        self.tmp = {k: atomic.temp_path(v) for k, v in self.finals.items()}

    def prepare(self) -> None:
        """Create the folders, finish a dead run's publication, clean dead runs' temp outputs, refuse a folder
        output that is not this project's, create (and mark) the temporary folders. OSError on an unwritable
        place (the caller reports it)."""
        for folder in {self.journal_dir, *(p.parent for p in self.finals.values())}:
            folder.mkdir(parents=True, exist_ok=True)
        self._finish_dead_publications()
        self._clean_dead_temps()
        self.check()
        for key in self.folders:
            _remove(self.tmp[key])
            self.tmp[key].mkdir()
            mark(self.tmp[key])

    def check(self, inputs: Iterable[Path] = ()) -> None:
        """UserError when an output would replace a folder this project did not write (also done by prepare;
        call it alone to refuse before long work starts), or one of the run's `inputs` (the same file, or a
        file inside an output folder), or when a file output lies inside a folder output (replaced with it)."""
        folders = [(self.finals[k], self.finals[k].resolve()) for k in self.folders]
        files = [self.finals[k] for k in self.finals if k not in self.folders]
        for path in inputs:
            real = Path(path).resolve()
            for final in files:
                if paths.same_file(Path(path), final):
                    raise UserError(f"{path} is an input of this run and {final} an output it writes: choose "
                                    f"another output place; nothing was written")
            for final, real_final in folders:
                if real.is_relative_to(real_final):
                    raise UserError(f"{path} is an input of this run and lies in {final}, which this run "
                                    f"replaces: copy it elsewhere first; nothing was written")
        for final in files:
            for folder, real_folder in folders:
                if final.resolve().is_relative_to(real_folder):
                    raise UserError(f"{final} lies in {folder}, which this run replaces (it would be lost): choose "
                                    f"another output place; nothing was written")
        for key, final in self.finals.items():
            if key in self.folders:
                if (final.exists() or final.is_symlink()) and not is_own_folder(final, self.legacy):
                    raise UserError(f"{final} was not written by this project (it has no {MARKER} file): move "
                                    f"it away or choose another output folder; nothing was written")
            elif final.is_dir():
                raise UserError(f"{final} is a folder: choose another output name; nothing was written")

    def publish(self) -> None:
        """Rename every temporary output into place. The renames are listed in a journal first, so that a kill
        in the middle of them is completed by the next run's prepare()."""
        pairs = [(str(self.tmp[k]), str(self.finals[k])) for k in self.finals if self.tmp[k].exists()]
        journal = self.journal_dir / f".publish-{os.getpid()}.json"
        part = journal.with_name(journal.name + ".part")
        part.write_text(json.dumps(pairs), encoding="utf-8")
        os.replace(part, journal)
        for tmp, final in pairs:
            _install(Path(tmp), Path(final), Path(final).with_name(f".{Path(final).name}.old-{os.getpid()}"))
        journal.unlink()

    def discard(self) -> None:
        for tmp in self.tmp.values():
            _remove(tmp)

    def _finish_dead_publications(self) -> None:
        for entry in self.journal_dir.iterdir():
            match = _JOURNAL.fullmatch(entry.name)
            if not match or atomic.pid_alive(int(match.group(1))):
                continue
            if match.group(2) is None:  # a complete journal: its outputs were complete, finish the renames
                pid = int(match.group(1))
                for tmp, final in _read_journal(entry):
                    # only what a publication does: .NAME.tmp-PID beside NAME becomes NAME
                    if tmp == atomic.temp_path(final, pid) and (tmp.exists() or tmp.is_symlink()):
                        _install(tmp, final, final.with_name(f".{final.name}.old-{pid}"))
            entry.unlink(missing_ok=True)

    def _clean_dead_temps(self) -> None:
        for final in self.finals.values():
            stem, suffix = re.escape(final.stem), re.escape(final.suffix)
            pattern = re.compile(rf"\.(?:{stem}\.tmp-(\d+){suffix}|{re.escape(final.name)}\.old-(\d+))")
            for entry in final.parent.iterdir():
                match = pattern.fullmatch(entry.name)
                if match and not atomic.pid_alive(int(match.group(1) or match.group(2))):
                    _remove(entry)


def lock_path(place: str | os.PathLike) -> Path:
    """The lock file of an output place (a file or a folder), named by the sha1 of its real path."""
    real = os.path.realpath(place)
    folder = Path(tempfile.gettempdir()) / f"emotion-recognition-locks-{os.getuid()}"
    return folder / f"{hashlib.sha1(os.fsencode(real)).hexdigest()[:20]}.lock"


@contextlib.contextmanager
def exclusive(*places: str | os.PathLike):
    """Hold every place for the block (see the module docstring); UserError when another process holds one."""
    with contextlib.ExitStack() as stack:
        for place in dict.fromkeys(Path(os.path.abspath(p)) for p in places):  # each place once
            stack.enter_context(_hold(place))
        yield


@contextlib.contextmanager
def _hold(place: Path):
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    path = lock_path(place)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    _check_own_folder(path.parent)
    # O_NOFOLLOW: the lock file is truncated below, so it must never be a link to some other file
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise UserError(f"cannot open the lock of {place} ({path}: {exc.strerror or exc}): remove that file and "
                        f"run again") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise UserError(f"{place} is in use by another run ({_holder(fd)}): wait for it to end, or point this "
                            f"run at other outputs; nothing was written") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "command": " ".join(sys.argv)}).encode())
        yield
    finally:
        os.close(fd)  # releases the lock


def _check_own_folder(folder: Path) -> None:
    """UserError unless the lock folder (in the shared temporary folder) is a real folder of this user's: another
    user who made it first could otherwise point our lock files at files of ours."""
    st = os.lstat(folder)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise UserError(f"{folder} is not a folder of yours: remove it (the runs' locks live there) and run again")


def _holder(fd: int) -> str:
    """"process 4242: python src/train.py ..." from a held lock file (what its holder wrote), as far as known."""
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"process {int(holder['pid'])}: {holder.get('command') or '?'}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"
