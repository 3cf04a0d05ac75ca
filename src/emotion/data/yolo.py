"""Reading a Kaggle "AffectNet in YOLO format" download: finding it (folder or zip), extracting a zip,
reading its labels and listing its images, without changing anything in it.

    root = find_yolo_root(Path("~/Downloads"))                 # the folder with train/ and valid/
    parse_label(b"3 0.5 0.5 1 1", n_classes=8)                 # (3, "", "")
    listing = folder_listing(root, "valid", "val", 8, in_place=False)
    listing.images, listing.labels["img001"]                    # names in images/, parsed labels

Layout: <root>/{train,valid|val,test}/{images,labels}/, one label file `class cx cy w h` per image.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from emotion.common import config, paths
from emotion.common.errors import UserError
from emotion.common.image_types import KNOWN_EXTENSIONS
from emotion.data.placing import same_content, same_member

# Source split folder -> output split folder, in the order the table shows them.
SPLITS = (("train", "train"), ("valid", "val"), ("val", "val"), ("test", "test"))
# A download extracted as DATA itself: its labels move to DATA/yolo_labels/<source split>/, out of the class tree.
KEPT_LABELS = "yolo_labels"
EXTRACT_PREFIX = ".organize-extract-"  # zip extraction in progress
ZIP_MARKER = ".organize-source"        # written into an extracted folder: which zip it came from
SEARCH_DEPTH = 4
KAGGLE_URL = "https://www.kaggle.com/datasets/{handle}"



def is_yolo_root(path: Path) -> bool:
    """True when path holds train/ and valid/ (or val/), each with images/ and labels/."""
    def split_ok(name: str) -> bool:
        return (path / name / "images").is_dir() and (path / name / "labels").is_dir()
    return split_ok("train") and (split_ok("valid") or split_ok("val"))


def search_yolo_roots(path: Path, skip_top: frozenset[str] = frozenset()) -> list[Path]:
    """YOLO_format folders at path or up to SEARCH_DEPTH levels below, shallowest level only."""
    level = [path]
    for depth in range(SEARCH_DEPTH + 1):
        found = [d for d in level if is_yolo_root(d)]
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
    found = search_yolo_roots(path)
    if not found:
        raise UserError(f"no YOLO_format download in {path}: expected train/ and valid/ folders, each with "
                        f"images/ and labels/, there or up to {SEARCH_DEPTH} levels below")
    if len(found) > 1:
        raise UserError(f"several YOLO_format folders in {path} ({', '.join(str(f) for f in found)}): "
                        "pass one of them with --source")
    return found[0]


def zip_yolo_prefix(names: list[str]) -> str | None:
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
    with zip_errors(zip_path, "extract", into):
        with zipfile.ZipFile(zip_path) as archive:
            names = archive.namelist()
            prefix = zip_yolo_prefix(names)
            if prefix is None:
                raise UserError(f"{zip_path} does not hold a YOLO_format download (train/ and valid/ "
                                "folders, each with images/ and labels/)")
            base = prefix.rsplit("/", 1)[-1] or "YOLO_format"
            target = into / base
            identity = _zip_identity(zip_path)
            n = 0
            while target.exists():
                marker = target / ZIP_MARKER
                if marker.is_file() and marker.read_text(encoding="utf-8") == identity and is_yolo_root(target):
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
def zip_errors(zip_path: Path, verb: str, into: Path | None = None):
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


def is_within(path: Path, folder: Path) -> bool:
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
    return root, ("move" if is_within(root, data_path) else "link")


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


def is_label_name(name: str) -> bool:
    return name.lower().endswith(".txt") and not name.startswith(".")


def read_labels(labels_dir: str, n_classes: int) -> tuple[dict[str, tuple[int | None, str, str]], list[str]]:
    """(stem -> parse_label(...) for every .txt file in labels_dir, names skipped because they are not
    regular files: a FIFO would block the read forever). A missing folder has no labels."""
    labels, skipped = {}, []
    if not os.path.isdir(labels_dir):
        return labels, skipped
    for entry in os.scandir(labels_dir):
        if not is_label_name(entry.name):
            continue
        if not paths.is_regular_file(entry.path):
            skipped.append(entry.name)
            continue
        try:
            labels[os.path.splitext(entry.name)[0]] = parse_label(_read_small(entry.path), n_classes)
        except OSError as exc:
            raise UserError(f"cannot read label {entry.path}: {exc.strerror or exc}") from None
    return labels, sorted(skipped)


def check_data_yaml(text: str | None, path: str | Path, class_names: list[str]) -> list[str]:
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


def source_splits(root: Path, in_place: bool = False) -> list[tuple[str, str]]:
    """(source split, output split) pairs of a download: the splits with images/ and labels/. In place
    (a download extracted as DATA itself, which a killed run may have half tidied up), also those with
    either, or with labels kept in DATA/yolo_labels/<split>/ by an earlier run."""
    def present(split: str) -> bool:
        found = [(root / split / sub).is_dir() for sub in ("images", "labels")]
        if not in_place:
            return all(found)
        return any(found) or (root / KEPT_LABELS / split).is_dir()
    return [(src, out) for src, out in SPLITS if present(src)]


def unfinished_in_place(data_path: Path) -> bool:
    """data_path holds yolo_labels/ and a source split's images/ or labels/: an in-place organize that was
    killed while tidying up, or whose images/ was left for the entries that are not images."""
    return (data_path / KEPT_LABELS).is_dir() and any(
        (data_path / split / sub).is_dir() for split, _ in SPLITS for sub in ("images", "labels"))


def list_images(images_dir: str) -> tuple[list[str], list[str]]:
    """(sorted image names, sorted names of the other entries, which stay). Only regular files are images:
    reading a FIFO named like one would block forever."""
    images, other = [], []
    if not os.path.isdir(images_dir):
        return images, other
    for entry in os.scandir(images_dir):
        if entry.name.startswith("."):
            continue
        if os.path.splitext(entry.name)[1].lower() in KNOWN_EXTENSIONS and paths.is_regular_file(entry.path):
            images.append(entry.name)
        else:
            other.append(entry.name)
    return sorted(images), sorted(other)


@dataclass
class SplitListing:
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


def folder_listing(root: Path, src_split: str, out_split: str, n_classes: int, in_place: bool) -> SplitListing:
    images_dir = str(root / src_split / "images")
    labels, skipped = read_labels(str(root / src_split / "labels"), n_classes)
    images, other = list_images(images_dir)
    kept = read_labels(str(root / KEPT_LABELS / src_split), n_classes)[0] if in_place else {}
    return SplitListing(src_split, out_split, labels, images, other, skipped,
                         lambda name, path: same_content(os.path.join(images_dir, name), path), images_dir,
                         str(root / src_split), kept)


def zip_listings(archive: zipfile.ZipFile, prefix: str, n_classes: int) -> list[SplitListing]:
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
                  for name, info in members[src_split, "labels"].items() if is_label_name(name)}
        in_images = members[src_split, "images"]
        images = sorted(n for n in in_images if os.path.splitext(n)[1].lower() in KNOWN_EXTENSIONS)
        other = sorted((set(in_images) - set(images)) | below.get((src_split, "images"), set()))
        listings.append(SplitListing(
            src_split, out_split, labels, images, other, [],
            lambda name, path, in_images=in_images: same_member(archive, in_images[name], path), None,
            f"{archive.filename}:{top}{src_split}"))
    return listings
