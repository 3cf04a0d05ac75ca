"""Atomic file writes: write beside the target under a temporary name, then rename over it.

    with atomic_path(Path("performance/plot.png")) as tmp:   # tmp keeps the suffix (savefig, model.save)
        fig.savefig(tmp)
    write_text(Path("performance/versions.json"), text)
    write_bytes(Path("models/model.tflite"), data)
    with atomic_dir(Path("models/export/tfjs_uint8")) as tmp:   # a folder: filled in tmp, then swapped in
        convert(into=tmp)
    remove_stale_temps(Path("models"), lambda name: name == "model.h5")   # temps of killed writers of model.h5

A crash or Ctrl-C leaves the old file or the new one, never half of one.
"""
from __future__ import annotations

import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path


def temp_path(path: str | os.PathLike, pid: int | None = None) -> Path:
    """Where `path` is written before it is renamed into place: .STEM.tmp-PID.SUFFIX beside it.

        temp_path(Path("models/model.h5"), 4242)  ->  models/.model.tmp-4242.h5
    """
    path = Path(path)
    return path.with_name(f".{path.stem}.tmp-{pid or os.getpid()}{path.suffix}")


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temp path beside `path`; on success it replaces `path`, on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


class atomic_dir:
    """with atomic_dir(path) as tmp: write into tmp (a fresh folder beside path); on success it replaces path."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir()
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                old = self.path.with_name(f".{self.path.name}.old-{os.getpid()}")
                if self.path.exists():
                    os.replace(self.path, old)
                os.replace(self.tmp, self.path)
                shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return False


# The temp names above: "." + target stem + ".tmp-" + writer's PID + target suffix.
_TEMP_NAME = re.compile(r"^\.(?P<stem>.+)\.tmp-(?P<pid>\d+)(?P<suffix>\.[^.]*)?$")


def temp_target(name: str) -> tuple[str, int] | None:
    """(target file name, writer PID) when `name` is one of this module's temp names, else None.

        temp_target(".epoch_002.tmp-4242.keras")  ->  ("epoch_002.keras", 4242)
    """
    match = _TEMP_NAME.match(name)
    if not match:
        return None
    return match["stem"] + (match["suffix"] or ""), int(match["pid"])


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists (ours included)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except (OverflowError, ValueError):  # not a PID this system can have
        return False
    return True


def remove_stale_temps(folder: Path, is_target) -> list[Path]:
    """Delete the temp files/folders in `folder` left by killed writers: only our temp-name pattern, only for
    targets where is_target(name) is true, only when the writing PID is no longer alive. Returns what went."""
    removed = []
    if not Path(folder).is_dir():
        return removed
    for entry in Path(folder).iterdir():
        found = temp_target(entry.name)
        if found is None or not is_target(found[0]) or pid_alive(found[1]):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        removed.append(entry)
    return removed
