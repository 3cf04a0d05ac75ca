"""Files as the project handles them: one content hash, one link-or-copy, one walk up to an existing folder.

    files.sha256(model_path)                   # hex digest; a file is read once per process while it is unchanged
    files.link_or_copy(src, dest)              # a hard link, or a copy where the file system cannot link
    files.link_or_copy(src, dest, replace=True)   # dest may exist: replaced atomically
    files.nearest_existing(Path("a/b/c"))      # the deepest existing folder of that path (where it would be made)

Nothing here imports TensorFlow.
"""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
from pathlib import Path

from emotion.common.atomic import atomic_path

# Why link(2) may fail where a copy works: another file system, one without hard links, or a per-file limit.
LINK_FALLBACK_ERRNOS = frozenset({errno.EXDEV, errno.EPERM, errno.EACCES, errno.ENOTSUP, errno.EOPNOTSUPP,
                                  errno.EMLINK, errno.ENOSYS})

# {(real path, device, inode, size, mtime_ns): hex sha256} of the files hashed in this process
_DIGESTS: dict[tuple, str] = {}


def sha256(path: str | os.PathLike) -> str:
    """The sha256 of the file's bytes (hex). Remembered per file state (inode, size, modification time), so a
    model file that several steps of one run identify (its conversion cache, its card) is read once."""
    real = os.path.realpath(path)
    st = os.stat(real)
    key = (real, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = _digest(real)
    return _DIGESTS[key]


def _digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def link_or_copy(src: str | os.PathLike, dest: str | os.PathLike, replace: bool = False,
                 try_link: bool = True) -> bool:
    """Make dest the file src names (a symbolic link's target, never the link): a hard link (no second copy of a
    90 MB model), or a copy where linking cannot work (LINK_FALLBACK_ERRNOS) or try_link is False. A copy is
    written under a temporary name beside dest, then renamed, so dest is never seen half-written. replace: dest
    may exist and is replaced in one rename; otherwise an existing dest is an error (FileExistsError).
    Returns whether it linked."""
    src, dest = os.path.realpath(src), Path(dest)
    if not replace and os.path.lexists(dest):
        raise FileExistsError(errno.EEXIST, "exists", str(dest))
    if try_link and not replace:
        try:
            os.link(src, dest)  # link(2) puts the whole file in place at once: no temporary name needed
            return True
        except OSError as exc:
            if exc.errno not in LINK_FALLBACK_ERRNOS:
                raise
            try_link = False
    with atomic_path(dest) as tmp:
        if try_link:
            try:
                os.link(src, tmp)
                return True
            except OSError as exc:
                if exc.errno not in LINK_FALLBACK_ERRNOS:
                    raise
        shutil.copyfile(src, tmp)
        shutil.copystat(src, tmp)
    return False


def nearest_existing(path: str | os.PathLike) -> Path:
    """The path itself when it exists, else the nearest folder above it that does (absolute, not resolved)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
