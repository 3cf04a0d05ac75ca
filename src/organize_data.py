"""Sort the Kaggle "AffectNet in YOLO format" download into class folders: DATA/{train,val,test}/<class>/.

Usage:
    python src/organize_data.py --source ~/Downloads/archive.zip     # the Kaggle zip: extracted into DATA, then moved
    python src/organize_data.py --source PATH/TO/YOLO_format          # a folder (or one holding it) outside DATA: hard-linked
    python src/organize_data.py                                       # DATA itself or a download in it, else kagglehub's
    python src/organize_data.py --source PATH --dry-run               # show what would happen; change nothing

DATA is the config key data_path. Label id i goes to class_names[i]; the split valid/ becomes val/.
Images whose label is missing, empty, malformed or out of range go to DATA/<split>/unclassified/, and the
reasons (and labels without an image) are appended to DATA/organize_log.csv. Nothing is overwritten: a
different file already holding a name gets the new one as NAME__1.jpg. Re-running is a no-op, and a run
that was killed resumes where it stopped. Folders outside DATA are hard-linked (copied where linking
fails) so they stay intact; --move or --link picks the mode yourself.

A download extracted as DATA itself (DATA/train/images/, DATA/valid/labels/, ...) is organized in place:
the images move into the class folders, the labels to DATA/yolo_labels/<split>/, and the emptied images/,
labels/ and valid/ folders are removed (an images/ folder still holding other files stays, with a
warning), so DATA holds what train.py reads and nothing else. A zip extracted into DATA/YOLO_format/, or
a folder elsewhere, keeps its labels where they are. A dry run on a zip reads the archive's member list
and labels: nothing is extracted.
"""
from __future__ import annotations

import contextlib
import csv
import errno
import functools
import os
import re
import shutil
import stat
import sys
import tempfile
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable
from datetime import datetime
from pathlib import Path

from emotion import cli
from emotion import config
from emotion import paths
from emotion.config import UserError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
# Source split folder -> output split folder, in the order the table shows them.
SPLITS = (("train", "train"), ("valid", "val"), ("val", "val"), ("test", "test"))
OUTPUT_SPLITS = ("train", "val", "test")
UNCLASSIFIED = "unclassified"
# A download extracted as DATA itself: its labels move to DATA/yolo_labels/<source split>/, out of the class tree.
KEPT_LABELS = "yolo_labels"
LOG_NAME = "organize_log.csv"
LOCK_NAME = ".organize.lock"
TMP_PREFIX = ".organize-tmp-"          # partial copies; a killed run leaves at most one per folder
EXTRACT_PREFIX = ".organize-extract-"  # zip extraction in progress
ZIP_MARKER = ".organize-source"        # written into an extracted folder: which zip it came from
SEARCH_DEPTH = 4
KAGGLE_URL = "https://www.kaggle.com/datasets/{handle}"
# Test-only hook: SIGKILL this process after N steps (files placed, labels moved, folders removed), to test
# resuming a killed run.
DIE_AFTER_ENV = "ORGANIZE_DATA_TEST_DIE_AFTER"
_CLASH_SUFFIX = re.compile(r"__\d+$")
_LINK_FALLBACK_ERRNOS = {errno.EXDEV, errno.EPERM, errno.EACCES, errno.ENOTSUP, errno.EOPNOTSUPP,
                         errno.EMLINK, errno.ENOSYS}


# ---------------------------------------------------------------------------------------------
# Result


@dataclass
class Summary:
    """What a run did (or, with dry_run, would do).

    counts[split][class]: files in DATA/<split>/<class>/ after the run ('unclassified' included),
    placed[split][class]: of those, files moved/linked there by this run,
    moved: files placed by this run; already: source files found already in place (re-runs),
    renamed: files placed under a new name because a different file held theirs,
    orphan_labels: labels without an image, reasons: unclassified images of this run by reason,
    labels_kept: label files of a download extracted as data_path moved to data_path/yolo_labels/.
    """

    source: Path
    data_path: Path
    class_names: list[str]
    mode: str
    dry_run: bool
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    placed: dict[str, dict[str, int]] = field(default_factory=dict)
    moved: int = 0
    already: int = 0
    renamed: int = 0
    orphan_labels: int = 0
    labels_kept: int = 0
    reasons: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    log_path: Path | None = None

    @property
    def unclassified(self) -> int:
        """Images in the unclassified folders of all splits after the run."""
        return sum(c.get(UNCLASSIFIED, 0) for c in self.counts.values())

    def table(self) -> str:
        """Files per class (rows) and split (columns), with totals."""
        splits = [s for s in OUTPUT_SPLITS if s in self.counts]
        rows = [*self.class_names, UNCLASSIFIED]
        width = max(len(r) for r in [*rows, "total"])
        lines = [f"{'class':<{width}}" + "".join(f"{s:>9}" for s in splits)]
        for row in rows:
            lines.append(f"{row:<{width}}" + "".join(f"{self.counts[s].get(row, 0):>9}" for s in splits))
        lines.append(f"{'total':<{width}}" + "".join(f"{sum(self.counts[s].values()):>9}" for s in splits))
        return "\n".join(lines)

    def report(self) -> str:
        """The table plus what happened: files placed, reasons, orphans, warnings."""
        verb = {"move": "moved", "link": "linked"}[self.mode]
        head = (f"dry run, nothing changed: {self.source} -> {self.data_path} ({self.mode} mode) would give"
                if self.dry_run else f"organized {self.source} -> {self.data_path} ({self.mode} mode)")
        lines = [head, self.table()]
        would = "would be " if self.dry_run else ""
        lines.append(f"{self.moved} files {would}{verb}, {self.already} already in place, "
                     f"{self.renamed} {would}renamed because the name was taken")
        if self.reasons:
            detail = ", ".join(f"{reason}: {n}" for reason, n in sorted(self.reasons.items()))
            lines.append(f"{sum(self.reasons.values())} images {would}unclassified ({detail})")
        if self.orphan_labels:
            lines.append(f"{self.orphan_labels} labels have no image")
        if self.labels_kept:
            lines.append(f"{self.labels_kept} label files {would or 'were '}moved to "
                         f"{self.data_path / KEPT_LABELS}/<split>/, out of the class folders")
        if (self.reasons or self.orphan_labels or self.renamed) and self.log_path and not self.dry_run:
            lines.append(f"details: {self.log_path}")
        if self.examples:
            lines.append("for example:")
            lines.extend(f"  {e}" for e in self.examples)
        lines.extend(f"warning: {w}" for w in self.warnings)
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Finding the download


def _is_yolo_root(path: Path) -> bool:
    """True when path holds train/ and valid/ (or val/), each with images/ and labels/."""
    def split_ok(name: str) -> bool:
        return (path / name / "images").is_dir() and (path / name / "labels").is_dir()
    return split_ok("train") and (split_ok("valid") or split_ok("val"))


def _search_yolo_roots(path: Path, skip_top: frozenset[str] = frozenset()) -> list[Path]:
    """YOLO_format folders at path or up to SEARCH_DEPTH levels below, shallowest level only."""
    level = [path]
    for depth in range(SEARCH_DEPTH + 1):
        found = [d for d in level if _is_yolo_root(d)]
        if found:
            return found
        below = []
        for folder in level:
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError:
                continue
            for entry in entries:
                # images/ and labels/ can hold 100,000 files and never hold a download.
                if (entry.name.startswith(".") or entry.name in ("images", "labels")
                        or (depth == 0 and entry.name in skip_top)):
                    continue
                if entry.is_dir():
                    below.append(Path(entry.path))
        level = below
    return []


def find_yolo_root(path: Path) -> Path:
    """The YOLO_format folder at `path` or a few levels below it; UserError if there is none (or several)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"source not found: {path}")
    if not path.is_dir():
        raise UserError(f"source {path} is not a folder or a .zip archive")
    found = _search_yolo_roots(path)
    if not found:
        raise UserError(f"no YOLO_format download in {path}: expected train/ and valid/ folders, each with "
                        f"images/ and labels/, there or up to {SEARCH_DEPTH} levels below")
    if len(found) > 1:
        raise UserError(f"several YOLO_format folders in {path} ({', '.join(str(f) for f in found)}): "
                        "pass one of them with --source")
    return found[0]


def _zip_yolo_prefix(names: list[str]) -> str | None:
    """The folder inside a zip that holds train/ and valid|val/ with images/ and labels/ ('' for the top)."""
    seen: dict[str, set[str]] = {}
    for name in names:
        parts = name.split("/")
        for i in range(len(parts) - 2):
            if parts[i] in ("train", "valid", "val") and parts[i + 1] in ("images", "labels"):
                prefix = "/".join(parts[:i])
                seen.setdefault(prefix, set()).add(f"{parts[i]}/{parts[i + 1]}")
                break
    roots = [p for p, subs in seen.items()
             if {"train/images", "train/labels"} <= subs
             and ({"valid/images", "valid/labels"} <= subs or {"val/images", "val/labels"} <= subs)]
    return min(roots, key=lambda p: (p.count("/"), p)) if roots else None


def _zip_identity(zip_path: Path) -> str:
    stat = zip_path.stat()
    return f"{zip_path.resolve()}\t{stat.st_size}\t{int(stat.st_mtime)}\n"


def extract_zip(zip_path: Path, into: Path) -> Path:
    """Extract the YOLO_format folder of a Kaggle zip to `into`/<its name>; returns that folder.

    Extraction goes to a temporary folder beside it that is renamed when complete, so a killed
    extraction leaves nothing half-done. A folder extracted from the same zip before is reused,
    which lets a killed organize run resume without extracting again.
    """
    zip_path = Path(zip_path)
    with _zip_errors(zip_path, "extract", into):
        with zipfile.ZipFile(zip_path) as archive:
            names = archive.namelist()
            prefix = _zip_yolo_prefix(names)
            if prefix is None:
                raise UserError(f"{zip_path} does not hold a YOLO_format download (train/ and valid/ "
                                "folders, each with images/ and labels/)")
            base = prefix.rsplit("/", 1)[-1] or "YOLO_format"
            target = into / base
            identity = _zip_identity(zip_path)
            n = 0
            while target.exists():
                marker = target / ZIP_MARKER
                if marker.is_file() and marker.read_text(encoding="utf-8") == identity and _is_yolo_root(target):
                    return target  # extracted by an earlier run, maybe organized half-way: resume
                n += 1
                target = into / f"{base}__{n}"
            into.mkdir(parents=True, exist_ok=True)
            _remove_stale_extractions(into)
            tmp = Path(tempfile.mkdtemp(prefix=EXTRACT_PREFIX, dir=into))
            try:
                root_prefix = f"{prefix}/" if prefix else ""
                archive.extractall(tmp, members=[m for m in names if m.startswith(root_prefix)])
                extracted = tmp / prefix if prefix else tmp
                (extracted / ZIP_MARKER).write_text(identity, encoding="utf-8")
                os.rename(extracted, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return target


@contextlib.contextmanager
def _zip_errors(zip_path: Path, verb: str, into: Path | None = None):
    """Turn what a broken archive or a full disk raises into one UserError line."""
    try:
        yield
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, ValueError, RuntimeError,
            NotImplementedError) as exc:  # corrupt, truncated, encrypted or exotic archives
        raise UserError(f"{zip_path} is not a readable zip archive ({exc}); download it again") from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC and into is not None:
            raise UserError(f"no space left on the disk of {into} to {verb} {zip_path}") from None
        raise UserError(f"could not {verb} {zip_path}: {exc.strerror or exc}") from None


def _remove_stale_extractions(folder: Path) -> None:
    """Remove temporary extraction folders left by a killed run."""
    for entry in os.scandir(folder):
        if entry.name.startswith(EXTRACT_PREFIX) and entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)


def _is_within(path: Path, folder: Path) -> bool:
    try:
        Path(path).resolve().relative_to(Path(folder).resolve())
        return True
    except ValueError:
        return False


def is_zip_source(source: Path) -> bool:
    """True for a zip archive, False for a folder; UserError for a missing path or another kind of file."""
    if not source.exists():
        raise UserError(f"source not found: {source}")
    if source.is_dir():
        return False
    if not zipfile.is_zipfile(source):
        raise UserError(f"{source} is not a zip archive (corrupt or incomplete download?) nor a folder")
    return True


def prepare_source(source: Path, data_path: Path) -> tuple[Path, str]:
    """(YOLO_format folder, mode) for --source: a zip is extracted into data_path and moved from;
    a folder inside data_path is moved from; a folder outside it is linked, so it stays intact."""
    source = Path(source).expanduser()
    if is_zip_source(source):
        return extract_zip(source, Path(data_path)), "move"
    root = find_yolo_root(source)
    return root, ("move" if _is_within(root, data_path) else "link")


def _short_reason(exc: BaseException) -> str:
    name = type(exc).__name__
    if "Connection" in name or "Timeout" in name or isinstance(exc, (ConnectionError, TimeoutError)):
        return "cannot reach Kaggle: offline?"
    text = " ".join(str(exc).split())
    return f"{name}: {text[:150]}" if text else name


def download_kaggle(handle: str) -> Path:
    """Download (or reuse from kagglehub's cache) a Kaggle dataset; UserError with what to do on failure."""
    how = (f"download it from {KAGGLE_URL.format(handle=handle)} and run: "
           "python src/organize_data.py --source PATH/TO/archive.zip")
    try:
        import kagglehub  # slow to import (0.5 s), and only needed here
    except ImportError:
        raise UserError(f"could not download the Kaggle dataset {handle} (kagglehub is not installed): {how}") from None
    try:
        return Path(kagglehub.dataset_download(handle))
    except Exception as exc:  # any failure (network, credentials, quota, API change) has the same remedy
        raise UserError(f"could not download the Kaggle dataset {handle} ({_short_reason(exc)}): {how}") from None


# ---------------------------------------------------------------------------------------------
# Labels


def _read_small(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


def parse_label(data: bytes, n_classes: int) -> tuple[int | None, str, str]:
    """(class id, '', '') for a valid YOLO label, else (None, reason, detail)."""
    text = data.decode("utf-8-sig", "replace")
    ids = set()
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        try:
            if len(fields) < 5:
                raise ValueError
            ids.add(int(fields[0]))
            for value in fields[1:]:
                float(value)
        except ValueError:
            return None, "malformed label", f"expected 'class cx cy w h', got {line.strip()[:40]!r}"
    if not ids:
        return None, "empty label", "the label file is empty"
    if len(ids) > 1:
        return None, "conflicting class ids", f"boxes of classes {sorted(ids)}"
    class_id = ids.pop()
    if not 0 <= class_id < n_classes:
        return None, "class id out of range", f"class {class_id}, expected 0 to {n_classes - 1}"
    return class_id, "", ""


def _is_label_name(name: str) -> bool:
    return name.lower().endswith(".txt") and not name.startswith(".")


def _read_labels(labels_dir: str, n_classes: int) -> tuple[dict[str, tuple[int | None, str, str]], list[str]]:
    """(stem -> parse_label(...) for every .txt file in labels_dir, names skipped because they are not
    regular files: a FIFO would block the read forever). A missing folder has no labels."""
    labels, skipped = {}, []
    if not os.path.isdir(labels_dir):
        return labels, skipped
    for entry in os.scandir(labels_dir):
        if not _is_label_name(entry.name):
            continue
        if not paths.is_regular_file(entry.path):
            skipped.append(entry.name)
            continue
        try:
            labels[os.path.splitext(entry.name)[0]] = parse_label(_read_small(entry.path), n_classes)
        except OSError as exc:
            raise UserError(f"cannot read label {entry.path}: {exc.strerror or exc}") from None
    return labels, sorted(skipped)


def _check_data_yaml(text: str | None, path: str | Path, class_names: list[str]) -> list[str]:
    """Warnings when data.yaml's class names differ from class_names (its paths are ignored).
    text: the file's content (None when there is none), path: where it lies, for the message."""
    if text is None:
        return []
    try:
        data = config.parse_yaml(text)
        names = data.get("names") if isinstance(data, dict) else None
        if isinstance(names, dict):
            names = [names[k] for k in sorted(names)]
    except Exception:  # a broken data.yaml only costs the comparison
        return [f"could not read {path}; class ids are mapped to class_names by position"]
    if not isinstance(names, list):
        return []
    if [str(n).lower() for n in names] != [c.lower() for c in class_names]:
        return [f"{path} names classes {names}, config class_names is {class_names}; "
                "id i goes to class_names[i]"]
    return []


def _check_class_names(class_names: list[str]) -> None:
    """Class folder names must be distinct even on case-insensitive disks, and not 'unclassified'."""
    seen: dict[str, str] = {}
    for name in class_names:
        key = name.lower()
        if key == UNCLASSIFIED or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
            raise UserError(f"class name '{name}' cannot be a class folder name (reserved or not a valid name)")
        if key in seen:
            raise UserError(f"class names '{seen[key]}' and '{name}' would share one folder on "
                            "case-insensitive disks; rename one in class_names")
        seen[key] = name


# ---------------------------------------------------------------------------------------------
# Destination folders


class _Folder:
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
                if entry.name.startswith(TMP_PREFIX) and not dry_run:
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


def _same_file(a: str, b: str) -> bool:
    """Same inode, or two regular files of the same size and bytes (a FIFO is never opened)."""
    sa, sb = os.stat(a), os.stat(b)
    if os.path.samestat(sa, sb):
        return True
    if not (stat.S_ISREG(sa.st_mode) and stat.S_ISREG(sb.st_mode)) or sa.st_size != sb.st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        return _same_bytes(fa, fb)


def _same_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: str) -> bool:
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


def _choose_name(folder: _Folder, name: str, same: Callable[[str], bool]) -> tuple[str, bool]:
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


class _Transfer:
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
                _copy_then_rename(src, dst)  # another disk: copy, then drop the source
                os.unlink(src)
            return
        self._link_or_copy(src, dst)
        if self.mode == "move":
            os.unlink(src)

    def _link_or_copy(self, src: str, dst: str) -> None:
        if self.can_link:
            try:
                os.link(os.path.realpath(src), dst)  # link(2) would hard-link a symbolic link itself
                return
            except OSError as exc:
                if exc.errno not in _LINK_FALLBACK_ERRNOS:
                    raise
                if exc.errno != errno.EMLINK:  # EMLINK is per file; the others hold for every file
                    self.can_link = False
        _copy_then_rename(src, dst)


def _copy_then_rename(src: str, dst: str) -> None:
    """Copy under a temporary name, then rename: dst is never seen half-written."""
    tmp = os.path.join(os.path.dirname(dst), TMP_PREFIX + os.path.basename(dst))
    shutil.copy2(src, tmp)
    os.rename(tmp, dst)


class _Log:
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


class _Lock:
    """An exclusive lock on data_path, so two runs never organize into it at once (freed on kill)."""

    def __init__(self, data_path: Path):
        self.fd = os.open(data_path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks, no check
            return
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self.fd)
            raise UserError(f"another organize_data.py run is organizing into {data_path}; wait for it") from None

    def close(self) -> None:
        os.close(self.fd)


class _Steps:
    """Counts the steps that change the disk; the test hook DIE_AFTER_ENV kills the process after N."""

    def __init__(self):
        self.done = 0
        self.die_after = int(os.environ.get(DIE_AFTER_ENV, "0") or 0)

    def step(self) -> None:
        self.done += 1
        if self.die_after and self.done >= self.die_after:
            os.kill(os.getpid(), 9)


def _progress(total: int, verb: str):
    from tqdm import tqdm  # imported here so --help stays fast
    return tqdm(total=total, unit="file", desc=verb, file=sys.stderr, disable=None, leave=False,
                mininterval=0.5)


# ---------------------------------------------------------------------------------------------
# Organizing


def _same_path(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _source_splits(root: Path, in_place: bool = False) -> list[tuple[str, str]]:
    """(source split, output split) pairs of a download: the splits with images/ and labels/. In place
    (a download extracted as DATA itself, which a killed run may have half tidied up), also those with
    either, or with labels kept in DATA/yolo_labels/<split>/ by an earlier run."""
    def present(split: str) -> bool:
        found = [(root / split / sub).is_dir() for sub in ("images", "labels")]
        if not in_place:
            return all(found)
        return any(found) or (root / KEPT_LABELS / split).is_dir()
    return [(src, out) for src, out in SPLITS if present(src)]


def _unfinished_in_place(data_path: Path) -> bool:
    """data_path holds yolo_labels/ and a source split's images/ or labels/: an in-place organize that was
    killed while tidying up, or whose images/ was left for the entries that are not images."""
    return (data_path / KEPT_LABELS).is_dir() and any(
        (data_path / split / sub).is_dir() for split, _ in SPLITS for sub in ("images", "labels"))


def _list_images(images_dir: str) -> tuple[list[str], list[str]]:
    """(sorted image names, sorted names of the other entries, which stay). Only regular files are images:
    reading a FIFO named like one would block forever."""
    images, other = [], []
    if not os.path.isdir(images_dir):
        return images, other
    for entry in os.scandir(images_dir):
        if entry.name.startswith("."):
            continue
        if os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS and paths.is_regular_file(entry.path):
            images.append(entry.name)
        else:
            other.append(entry.name)
    return sorted(images), sorted(other)


def _check_not_into_source(destinations: list[str], root: Path, splits: list[tuple[str, str]]) -> None:
    """UserError when a destination folder leads (through a symbolic link) into one of the download's own
    images/ or labels/ folders: its files would be moved onto themselves, or deleted as duplicates."""
    sources = [os.path.realpath(root / split / sub) for split, _ in splits for sub in ("images", "labels")]
    for folder in destinations:
        real = os.path.realpath(folder)
        for source in sources:
            if real == source or real.startswith(source + os.sep):
                raise UserError(f"{folder} leads to {source}, a folder of the download itself (a symbolic "
                                "link?); remove the link (or pass another data_path) and run again")


@dataclass
class _SplitListing:
    """One split of a download, read before anything moves.

    labels: stem -> parse_label(...) of labels/; images: image names in images/; other: the other names in
    images/ (they stay); skipped_labels: label names that are not regular files; same(name, path): whether
    the file at path holds image `name`'s bytes; images_dir: where the images lie (None inside a zip, which
    is only planned from); kept: labels an earlier in-place run moved to yolo_labels/; where: for messages.
    """
    src_split: str
    out_split: str
    labels: dict
    images: list[str]
    other: list[str]
    skipped_labels: list[str]
    same: Callable[[str, str], bool]
    images_dir: str | None
    where: str
    kept: dict = field(default_factory=dict)


def _folder_listing(root: Path, src_split: str, out_split: str, n_classes: int, in_place: bool) -> _SplitListing:
    images_dir = str(root / src_split / "images")
    labels, skipped = _read_labels(str(root / src_split / "labels"), n_classes)
    images, other = _list_images(images_dir)
    kept = _read_labels(str(root / KEPT_LABELS / src_split), n_classes)[0] if in_place else {}
    return _SplitListing(src_split, out_split, labels, images, other, skipped,
                         lambda name, path: _same_file(os.path.join(images_dir, name), path), images_dir,
                         str(root / src_split), kept)


def _zip_listings(archive: zipfile.ZipFile, prefix: str, n_classes: int) -> list[_SplitListing]:
    """The splits of the YOLO_format folder at `prefix` in archive, from its member list: labels are read
    from the archive in memory, nothing is extracted."""
    top = f"{prefix}/" if prefix else ""
    members: dict[tuple[str, str], dict[str, zipfile.ZipInfo]] = {}
    below: dict[tuple[str, str], set[str]] = {}  # folders inside images/ or labels/
    for info in archive.infolist():
        parts = info.filename[len(top):].split("/") if info.filename.startswith(top) else []
        if len(parts) < 3 or parts[1] not in ("images", "labels"):
            continue
        key, name = (parts[0], parts[1]), parts[2]
        entries = members.setdefault(key, {})
        if name and not name.startswith("."):
            if len(parts) > 3:
                below.setdefault(key, set()).add(name)
            else:
                entries[name] = info
    listings = []
    for src_split, out_split in SPLITS:
        if (src_split, "images") not in members or (src_split, "labels") not in members:
            continue
        labels = {os.path.splitext(name)[0]: parse_label(archive.read(info), n_classes)
                  for name, info in members[src_split, "labels"].items() if _is_label_name(name)}
        in_images = members[src_split, "images"]
        images = sorted(n for n in in_images if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS)
        other = sorted((set(in_images) - set(images)) | below.get((src_split, "images"), set()))
        listings.append(_SplitListing(
            src_split, out_split, labels, images, other, [],
            lambda name, path, in_images=in_images: _same_member(archive, in_images[name], path), None,
            f"{archive.filename}:{top}{src_split}"))
    return listings


def organize(source: Path, data_path: Path, class_names: list[str], mode: str = "move",
             dry_run: bool = False) -> Summary:
    """Sort a YOLO_format download (or a folder holding one) into data_path/<split>/<class>/.

    mode "move" renames the images (the source's images/ folders end empty); "link" hard-links
    them (copies where linking fails) and leaves the source intact. Labels are only read, except
    for a download extracted as data_path itself (data_path/train/images, ...): there a move also
    moves the labels to data_path/yolo_labels/<split>/ and removes the emptied images/, labels/ and
    valid/ folders, so data_path holds only class folders.
    Idempotent and resumable: files already in place (same name and same inode or same bytes)
    are skipped. dry_run plans everything and changes nothing.
    """
    if mode not in ("move", "link"):
        raise ValueError(f"mode must be 'move' or 'link', got {mode!r}")
    _check_class_names(class_names)
    source, data_path = Path(source), Path(data_path)
    if source.is_dir() and _same_path(source, data_path) and not _is_yolo_root(source) \
            and _unfinished_in_place(source):
        root = source
    else:
        root = find_yolo_root(source)
    in_place = _same_path(root, data_path)
    splits = _source_splits(root, in_place)
    if not dry_run:
        paths.check_writable(data_path, "data_path")
    if mode == "move" and not dry_run:
        for src_split, _ in splits:
            images_dir = root / src_split / "images"
            if images_dir.is_dir() and not images_dir.stat().st_mode & 0o222:
                raise UserError(f"{images_dir} is read-only; organize it with --link, which leaves it intact")
    if any((data_path / out).resolve() == (root / src).resolve() for src, out in splits) and \
            {c.lower() for c in class_names} & {"images", "labels"}:
        raise UserError("class names 'images' and 'labels' would collide with the download's own folders")
    _check_not_into_source(list(_destinations(data_path, splits, class_names).values()), root, splits)

    yaml_path = root / "data.yaml"
    yaml_text = yaml_path.read_text(encoding="utf-8", errors="replace") if paths.is_regular_file(yaml_path) else None
    warnings = _check_data_yaml(yaml_text, yaml_path, class_names)
    if in_place and mode == "link":
        warnings.append(f"the download's images/ and labels/ folders stay in {data_path}'s split folders "
                        "(--link), where train.py refuses them: organize with --move")
    listings = [_folder_listing(root, s, o, len(class_names), in_place) for s, o in splits]
    tidy = functools.partial(_tidy_in_place, root, splits, dry_run=dry_run) if in_place and mode == "move" else None
    return _place(root, listings, data_path, class_names, mode, dry_run, warnings, in_place, tidy)


def plan_zip(zip_path: Path, data_path: Path, class_names: list[str], mode: str = "move") -> Summary:
    """What organizing a Kaggle zip into data_path would do (a dry run), planned from the archive's
    member list and labels: nothing is extracted or written anywhere."""
    _check_class_names(class_names)
    zip_path = Path(zip_path)
    with _zip_errors(zip_path, "read"), zipfile.ZipFile(zip_path) as archive:
        prefix = _zip_yolo_prefix(archive.namelist())
        if prefix is None:
            raise UserError(f"{zip_path} does not hold a YOLO_format download (train/ and valid/ "
                            "folders, each with images/ and labels/)")
        yaml_name = f"{prefix}/data.yaml" if prefix else "data.yaml"
        yaml_text = (archive.read(yaml_name).decode("utf-8", "replace")
                     if yaml_name in archive.NameToInfo else None)
        warnings = _check_data_yaml(yaml_text, f"{zip_path}:{yaml_name}", class_names)
        listings = _zip_listings(archive, prefix, len(class_names))
        return _place(zip_path, listings, Path(data_path), class_names, mode, True, warnings, False, None)


def _destinations(data_path: Path, splits: list[tuple[str, str]], class_names: list[str]) -> dict:
    """(output split, class or unclassified) -> folder, for the splits of the download and those already
    in data_path."""
    out_splits = {out for _, out in splits} | {name for name in OUTPUT_SPLITS if (data_path / name).is_dir()}
    return {(s, c): os.path.join(data_path, s, c)
            for s in [o for o in OUTPUT_SPLITS if o in out_splits] for c in [*class_names, UNCLASSIFIED]}


def _place(source: Path, listings: list[_SplitListing], data_path: Path, class_names: list[str], mode: str,
           dry_run: bool, warnings: list[str], in_place: bool, tidy: Callable | None) -> Summary:
    """organize() once the download is listed: place every image, then tidy(...) up when given."""
    summary = Summary(source=source, data_path=data_path, class_names=list(class_names), mode=mode,
                      dry_run=dry_run, warnings=warnings)
    splits = [(listing.src_split, listing.out_split) for listing in listings]
    folders = {key: _Folder(path, dry_run) for key, path in _destinations(data_path, splits, class_names).items()}

    lock = None
    if not dry_run:
        data_path.mkdir(parents=True, exist_ok=True)
        lock = _Lock(data_path)
        summary.log_path = data_path / LOG_NAME
    log = _Log(summary.log_path)
    transfer, steps = _Transfer(mode), _Steps()
    try:
        _organize_splits(listings, folders, summary, log, transfer, dry_run, in_place, steps)
        if tidy is not None:
            tidy(summary, log, transfer, steps)
    finally:
        log.close()
        if lock is not None:
            lock.close()

    for (split, cls), folder in folders.items():
        summary.counts.setdefault(split, {})[cls] = len(folder.names)
    return summary


def _organize_splits(listings: list[_SplitListing], folders: dict, summary: Summary, log: _Log,
                     transfer: _Transfer, dry_run: bool, in_place: bool, steps: _Steps) -> None:
    """The work of organize(): each split's images, placed by their labels."""
    class_names = summary.class_names
    verb = {"move": "moving", "link": "linking"}[transfer.mode]
    for listing in listings:
        for name in listing.skipped_labels:
            summary.warnings.append(f"{listing.where}/labels/{name} is not a regular file "
                                    "(a pipe or a device?); skipped")
            log.write(listing.out_split, f"{listing.src_split}/labels/{name}", "", "not a regular file: skipped")
        if listing.other and not in_place:  # in place, the tidy-up says what to do with them
            summary.warnings.append(f"{len(listing.other)} entries of {listing.where}/images are not images "
                                    f"(e.g. {listing.other[0]}); left there")

    bar = _progress(sum(len(listing.images) for listing in listings), verb)
    src = dst = ""
    try:
        for listing in listings:
            src_split, out_split = listing.src_split, listing.out_split
            placed = summary.placed.setdefault(out_split, {})
            image_stems = set()
            for name in listing.images:
                stem = os.path.splitext(name)[0]
                image_stems.add(stem)
                class_id, reason, detail = listing.labels.get(stem) or (None, "no label", f"no labels/{stem}.txt")
                cls = class_names[class_id] if class_id is not None else UNCLASSIFIED
                folder = folders[out_split, cls]
                src = os.path.join(listing.images_dir or "", name)
                target, already = _choose_name(folder, name, functools.partial(listing.same, name))
                dst = os.path.join(folder.path, target)
                if already:
                    summary.already += 1
                    # Drop the duplicate, unless dst *is* src (through a link): that would delete both.
                    if transfer.mode == "move" and not dry_run and not _same_path(src, dst):
                        os.unlink(src)
                    bar.update()
                    continue
                rel = f"{src_split}/images/{name}"
                dest_rel = f"{out_split}/{cls}/{target}"
                if reason:
                    summary.reasons[reason] += 1
                    log.write(out_split, rel, dest_rel, f"{reason}: {detail}")
                if target != name:
                    summary.renamed += 1
                    log.write(out_split, rel, dest_rel, f"renamed: {out_split}/{cls}/{name} is a different file")
                if dry_run:
                    if len(summary.examples) < 5 or (reason and len(summary.examples) < 8):
                        summary.examples.append(f"{rel} -> {dest_rel}" + (f"  ({reason})" if reason else ""))
                else:
                    folder.ensure()
                    transfer(src, dst)
                    steps.step()
                folder.add(target)
                placed[cls] = placed.get(cls, 0) + 1
                summary.moved += 1
                bar.update()
            # Labels an earlier in-place run moved out of the way still count for "already in place".
            _report_orphans({**listing.kept, **listing.labels}, image_stems, src_split, out_split, folders,
                            summary, log)
    except OSError as exc:
        what = f"{verb} {src} to {dst}" if src else verb
        raise UserError(f"failed {what}: {exc.strerror or exc} ({summary.moved} files done; "
                        "fix this and run again to continue)") from None
    except KeyboardInterrupt:
        print(f"\ninterrupted while {verb} {src}; {summary.moved} files done, run again to continue",
              file=sys.stderr)
        raise
    finally:
        bar.close()


def _report_orphans(labels: dict, image_stems: set[str], src_split: str, out_split: str,
                    folders: dict, summary: Summary, log: _Log) -> None:
    """Count and log labels without an image, unless their image was moved to its folder before."""
    for stem, (class_id, _, _) in labels.items():
        if stem in image_stems:
            continue
        cls = summary.class_names[class_id] if class_id is not None else UNCLASSIFIED
        if folders[out_split, cls].has_stem(stem):
            summary.already += 1
            continue
        summary.orphan_labels += 1
        log.write(out_split, f"{src_split}/labels/{stem}.txt", "", "label without an image")


def _tidy_in_place(data_path: Path, splits: list[tuple[str, str]], summary: Summary, log: _Log,
                   transfer: _Transfer, steps: _Steps, dry_run: bool) -> None:
    """After an in-place move: the labels go to data_path/yolo_labels/<source split>/ (they are the
    user's data, kept whole) and the emptied images/, labels/ and source split folders are removed with
    rmdir, which never removes a folder that holds anything. Runs after every image is placed, so a
    killed run finds the labels of the images still to place in labels/."""
    src = ""
    try:
        for src_split, _ in splits:
            split_dir = os.path.join(data_path, src_split)
            labels_dir = os.path.join(split_dir, "labels")
            if os.path.isdir(labels_dir):
                kept = _Folder(os.path.join(data_path, KEPT_LABELS, src_split), dry_run)
                for name in sorted(os.listdir(labels_dir)):
                    src = os.path.join(labels_dir, name)
                    if _is_label_name(name) and paths.is_regular_file(src):
                        _keep_label(src, name, kept, src_split, log, transfer, dry_run)
                        summary.labels_kept += 1
                        if not dry_run:
                            steps.step()
            if dry_run:
                continue
            for folder in (os.path.join(split_dir, "images"), labels_dir):
                src = folder
                removed = _remove_if_empty(folder)
                if removed:
                    steps.step()
                elif removed is False:
                    left = sorted(os.listdir(folder))
                    summary.warnings.append(
                        f"{folder} still holds {len(left)} entries that are not image or label files (e.g. "
                        f"{left[0]}); left there: move them elsewhere and run organize_data.py again to "
                        "remove the folder")
            if src_split not in OUTPUT_SPLITS:  # valid/: the class folders went to val/
                _remove_if_empty(split_dir)
    except OSError as exc:
        raise UserError(f"failed tidying up {src}: {exc.strerror or exc} (all images are in place; "
                        "fix this and run again to finish)") from None


def _keep_label(src: str, name: str, kept: _Folder, src_split: str, log: _Log, transfer: _Transfer,
                dry_run: bool) -> None:
    """Move one label file into kept (yolo_labels/<split>/), never over a different file."""
    target, already = _choose_name(kept, name, lambda path: _same_file(src, path))
    dst = os.path.join(kept.path, target)
    if dry_run:
        return
    if already:
        if not _same_path(src, dst):
            os.unlink(src)  # the same bytes are kept already
        return
    if target != name:
        log.write(src_split, f"{src_split}/labels/{name}", f"{KEPT_LABELS}/{src_split}/{target}",
                  f"renamed: {KEPT_LABELS}/{src_split}/{name} is a different file")
    kept.ensure()
    transfer(src, dst)
    kept.add(target)


def _remove_if_empty(folder: str) -> bool | None:
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


def existing_summary(data_path: Path, class_names: list[str]) -> Summary:
    """A Summary of what data_path's class folders hold now (nothing is changed)."""
    summary = Summary(source=Path(data_path), data_path=Path(data_path), class_names=list(class_names),
                      mode="move", dry_run=True)
    for split in OUTPUT_SPLITS:
        if (Path(data_path) / split).is_dir():
            summary.counts[split] = {c: len(_Folder(os.path.join(data_path, split, c), True).names)
                                     for c in [*class_names, UNCLASSIFIED]}
    return summary


def _has_organized_splits(data_path: Path, class_names: list[str]) -> bool:
    return any((data_path / s / c).is_dir() for s in OUTPUT_SPLITS for c in [*class_names, UNCLASSIFIED])


# ---------------------------------------------------------------------------------------------
# Command line


def _default_source(data_path: Path, class_names: list[str], handle: str | None,
                    dry_run: bool) -> tuple[Path | None, str]:
    """(YOLO_format folder, mode) when --source is omitted (or is data_path itself: handle None, which never
    downloads); (None, '') when there is nothing to do."""
    if data_path.is_dir():
        found = _search_yolo_roots(data_path, skip_top=frozenset(OUTPUT_SPLITS))
        if len(found) > 1:
            raise UserError(f"several YOLO_format folders in {data_path} ({', '.join(map(str, found))}): "
                            "pass one of them with --source")
        if found:
            return found[0], "move"
        if _unfinished_in_place(data_path):
            return data_path, "move"
        if _has_organized_splits(data_path, class_names):
            return None, ""
    if handle is None:
        return find_yolo_root(data_path), "move"  # UserError: no download there
    if dry_run:
        print(f"dry run: no download found in {data_path}; would download {handle} with kagglehub "
              "and link it into class folders")
        return None, "dry"
    paths.check_writable(data_path, "data_path")  # before a download that could take an hour
    print(f"no download found in {data_path}: downloading {handle} with kagglehub", file=sys.stderr)
    return find_yolo_root(download_kaggle(handle)), "link"


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument("--source", metavar="PATH",
                        help="the Kaggle zip, a YOLO_format folder, or a folder holding one "
                             "(default: data_path itself or one inside it, else a kagglehub download)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--move", dest="mode", action="store_const", const="move",
                      help="move the images (default for a zip or a folder inside data_path)")
    mode.add_argument("--link", dest="mode", action="store_const", const="link",
                      help="hard-link the images, copying where linking fails; the source stays intact "
                           "(default for a folder outside data_path)")
    parser.add_argument("--dry-run", action="store_true", help="show what would happen; change nothing")
    args = parser.parse_args(argv)
    cfg = cli.load_config(args)
    data_path = Path(cfg.data_path)
    _check_class_names(cfg.class_names)

    source = Path(args.source).expanduser() if args.source is not None else None
    is_data_path = source is not None and source.is_dir() and _same_path(source, data_path)
    if source is None or is_data_path:  # data_path: organized in place, or organized already
        handle = None if is_data_path else cfg.kaggle_dataset
        root, default_mode = _default_source(data_path, cfg.class_names, handle, args.dry_run)
        if root is None:
            if default_mode != "dry":
                print(f"nothing to organize: {data_path} already holds class folders and no download "
                      "(pass --source PATH to add one)")
                print(existing_summary(data_path, cfg.class_names).table())
            return 0
    elif args.dry_run and is_zip_source(source):
        # Planned from the archive's member list: a dry run extracts nothing, anywhere.
        print(paths.printable(plan_zip(source, data_path, cfg.class_names, mode=args.mode or "move").report()))
        return 0
    else:
        if not args.dry_run:
            paths.check_writable(data_path, "data_path")  # a zip is extracted into it
        root, default_mode = prepare_source(source, data_path)
    summary = organize(root, data_path, cfg.class_names, mode=args.mode or default_mode, dry_run=args.dry_run)
    print(paths.printable(summary.report()))
    return 0


if __name__ == "__main__":
    cli.run(main)
