"""Checks on the paths a user hands a script, made before any work starts.

Usage:
    paths.check_writable(Path(cfg.performance_dir), "performance_dir")   # UserError if it cannot be written
    paths.is_regular_file(path)                                          # False for a FIFO, device or folder
    paths.same_file(Path("in.avi"), Path("out.avi"))                     # by resolved path or by inode
    paths.printable(name)                                                # a file name any log or terminal takes

Nothing here imports TensorFlow.
"""
from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from emotion.common import files
from emotion.common.errors import UserError


def check_writable(folder: Path, what: str, hint: str | None = None) -> None:
    """UserError unless files can be created in `folder` (or, when it does not exist yet, in the nearest
    existing folder above it, where it would be created). Tries a real file: permission bits say nothing
    about a read-only mount. Leaves nothing behind. `hint`: how to choose another folder (default: the
    config key `what`, --set what=PATH)."""
    folder = Path(folder)
    base = files.nearest_existing(folder)
    if not base.is_dir():
        raise UserError(f"{what} {folder} cannot be created: {base} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=base)
    except OSError as exc:
        raise UserError(f"{what} {folder} is not writable ({exc.strerror or exc} in {base}): "
                        f"point it at a folder you can write to ({hint or f'--set {what}=PATH'})") from None
    os.close(fd)
    os.unlink(probe)


def is_regular_file(path: str | os.PathLike) -> bool:
    """True for a regular file (following symlinks); False for FIFOs, devices, folders and missing paths."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def same_file(a: Path, b: Path) -> bool:
    """True when a and b name the same file: the same resolved path, or (both existing) the same inode."""
    if Path(a).resolve() == Path(b).resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def printable(text: str) -> str:
    """text with file-name bytes that are not UTF-8 (held as surrogates by os.fsdecode) written as \\xNN,
    so a log or a terminal can always take it: printable(os.fsdecode(b"z_\\xff.png")) == "z_\\\\xff.png"."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def require_model_file(path: str | os.PathLike) -> Path:
    """path as a Path when a trained model file is there; otherwise the one line every command gives."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no trained model at {path}: run python src/train.py first "
                        f"(or point --set model_save_path=PATH at one)")
    return path
