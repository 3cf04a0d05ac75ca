"""Sorting a YOLO download into class folders, DATA/{train,val,test}/<class>/: plan (dry run) and apply.

    summary = organize(Path("~/Downloads/YOLO_format"), Path("data"), class_names, mode="link")
    print(summary.report())                                    # table per class and split, then what happened
    plan_zip(Path("archive.zip"), Path("data"), class_names)   # a dry run read from the archive, nothing extracted
    run(cfg, source=None, mode=None, dry_run=False)            # what organize_data.py does: find, organize, print

Label id i goes to class_names[i]; images without a usable label, or of a type train.py cannot read, go to
DATA/<split>/unclassified/ with the reason in DATA/organize_log.csv. Nothing is overwritten, re-runs are
no-ops and a killed run resumes (see src/organize_data.py for the whole contract).
"""
from __future__ import annotations

import functools
import os
import sys
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from emotion.common import outputs, paths
from emotion.common.config import Config
from emotion.common.errors import UserError
from emotion.common.image_types import PIPELINE_EXTENSIONS, pipeline_reads
from emotion.data import placing
from emotion.data.placing import Folder, Log, Transfer, choose_name, same_content, same_path
from emotion.data.yolo import (KEPT_LABELS, SplitListing, check_data_yaml, download_kaggle, find_yolo_root,
                               folder_listing, is_label_name, is_yolo_root, is_zip_source, prepare_source,
                               search_yolo_roots, source_splits, unfinished_in_place, zip_errors, zip_listings,
                               zip_yolo_prefix)

OUTPUT_SPLITS = ("train", "val", "test")
UNCLASSIFIED = "unclassified"
LOG_NAME = "organize_log.csv"


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


def check_class_names(class_names: list[str]) -> None:
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
    check_class_names(class_names)
    source, data_path = Path(source), Path(data_path)
    if source.is_dir() and same_path(source, data_path) and not is_yolo_root(source) \
            and unfinished_in_place(source):
        root = source
    else:
        root = find_yolo_root(source)
    in_place = same_path(root, data_path)
    splits = source_splits(root, in_place)
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
    warnings = check_data_yaml(yaml_text, yaml_path, class_names)
    if in_place and mode == "link":
        warnings.append(f"the download's images/ and labels/ folders stay in {data_path}'s split folders "
                        "(--link), where train.py refuses them: organize with --move")
    listings = [folder_listing(root, s, o, len(class_names), in_place) for s, o in splits]
    tidy = functools.partial(_tidy_in_place, root, splits) if in_place and mode == "move" else None
    return _place(root, listings, data_path, class_names, mode, dry_run, warnings, in_place, tidy)


def plan_zip(zip_path: Path, data_path: Path, class_names: list[str], mode: str = "move") -> Summary:
    """What organizing a Kaggle zip into data_path would do (a dry run), planned from the archive's
    member list and labels: nothing is extracted or written anywhere."""
    check_class_names(class_names)
    zip_path = Path(zip_path)
    with zip_errors(zip_path, "read"), zipfile.ZipFile(zip_path) as archive:
        prefix = zip_yolo_prefix(archive.namelist())
        if prefix is None:
            raise UserError(f"{zip_path} does not hold a YOLO_format download (train/ and valid/ "
                            "folders, each with images/ and labels/)")
        yaml_name = f"{prefix}/data.yaml" if prefix else "data.yaml"
        yaml_text = (archive.read(yaml_name).decode("utf-8", "replace")
                     if yaml_name in archive.NameToInfo else None)
        warnings = check_data_yaml(yaml_text, f"{zip_path}:{yaml_name}", class_names)
        listings = zip_listings(archive, prefix, len(class_names))
        return _place(zip_path, listings, Path(data_path), class_names, mode, True, warnings, False, None)


def _destinations(data_path: Path, splits: list[tuple[str, str]], class_names: list[str]) -> dict:
    """(output split, class or unclassified) -> folder, for the splits of the download and those already
    in data_path."""
    out_splits = {out for _, out in splits} | {name for name in OUTPUT_SPLITS if (data_path / name).is_dir()}
    return {(s, c): os.path.join(data_path, s, c)
            for s in [o for o in OUTPUT_SPLITS if o in out_splits] for c in [*class_names, UNCLASSIFIED]}


@dataclass
class _Run:
    """What placing the files of one run shares: its folders, summary, log and transfer."""
    folders: dict
    summary: Summary
    log: Log
    transfer: Transfer
    dry_run: bool


def _place(source: Path, listings: list[SplitListing], data_path: Path, class_names: list[str], mode: str,
           dry_run: bool, warnings: list[str], in_place: bool, tidy: Callable | None) -> Summary:
    """organize() once the download is listed: place every image, then tidy(run) up when given."""
    summary = Summary(source=source, data_path=data_path, class_names=list(class_names), mode=mode,
                      dry_run=dry_run, warnings=warnings)
    splits = [(listing.src_split, listing.out_split) for listing in listings]
    folders = {key: Folder(path, dry_run) for key, path in _destinations(data_path, splits, class_names).items()}

    with outputs.exclusive(*([] if dry_run else [data_path])):  # one run at a time organizes into data_path
        if not dry_run:
            data_path.mkdir(parents=True, exist_ok=True)
            summary.log_path = data_path / LOG_NAME
        run_ = _Run(folders, summary, Log(summary.log_path), Transfer(mode), dry_run)
        try:
            _organize_splits(listings, run_, in_place)
            if tidy is not None:
                tidy(run_)
        finally:
            run_.log.close()

    for (split, cls), folder in folders.items():
        summary.counts.setdefault(split, {})[cls] = len(folder.names)
    return summary


def _warn_listing(listing: SplitListing, run_: _Run, in_place: bool) -> None:
    """Warn (and log) about the entries of a split that are neither labels nor images."""
    for name in listing.skipped_labels:
        run_.summary.warnings.append(f"{listing.where}/labels/{name} is not a regular file "
                                     "(a pipe or a device?); skipped")
        run_.log.write(listing.out_split, f"{listing.src_split}/labels/{name}", "", "not a regular file: skipped")
    if listing.other and not in_place:  # in place, the tidy-up says what to do with them
        run_.summary.warnings.append(f"{len(listing.other)} entries of {listing.where}/images are not images "
                                     f"(e.g. {listing.other[0]}); left there")


def _organize_splits(listings: list[SplitListing], run_: _Run, in_place: bool) -> None:
    """The work of organize(): each split's images, placed by their labels."""
    verb = {"move": "moving", "link": "linking"}[run_.transfer.mode]
    for listing in listings:
        _warn_listing(listing, run_, in_place)
    bar = placing.progress(sum(len(listing.images) for listing in listings), verb)
    where = ["", ""]  # (src, dst) of the file being placed, for the messages
    try:
        for listing in listings:
            for name in listing.images:
                _place_image(listing, name, run_, where)
                bar.update()
            # Labels an earlier in-place run moved out of the way still count for "already in place".
            image_stems = {os.path.splitext(name)[0] for name in listing.images}
            _report_orphans({**listing.kept, **listing.labels}, image_stems, listing.src_split,
                            listing.out_split, run_.folders, run_.summary, run_.log)
    except OSError as exc:
        src, dst = where
        what = f"{verb} {src} to {dst}" if src else verb
        raise UserError(f"failed {what}: {exc.strerror or exc} ({run_.summary.moved} files done; "
                        "fix this and run again to continue)") from None
    except KeyboardInterrupt:
        print(f"\ninterrupted while {verb} {where[0]}; {run_.summary.moved} files done, run again to continue",
              file=sys.stderr)
        raise
    finally:
        bar.close()


def _class_of(listing: SplitListing, name: str) -> tuple[int | None, str, str]:
    """(class id, reason, detail) for image `name`, as parse_label gives them; an image type the training
    pipeline does not decode is unclassified whatever its label says."""
    ext = os.path.splitext(name)[1]
    if not pipeline_reads(name):
        return None, "image type train.py cannot read", (
            f"{ext}: train.py reads {'/'.join(e[1:] for e in PIPELINE_EXTENSIONS)} only; convert it to .jpg "
            "and move it to its class folder")
    stem = os.path.splitext(name)[0]
    return listing.labels.get(stem) or (None, "no label", f"no labels/{stem}.txt")


def _place_image(listing: SplitListing, name: str, run_: _Run, where: list[str]) -> None:
    """Place one image into its class folder (or unclassified/), logging why when that is not its class."""
    summary, out_split = run_.summary, listing.out_split
    class_id, reason, detail = _class_of(listing, name)
    cls = summary.class_names[class_id] if class_id is not None else UNCLASSIFIED
    folder = run_.folders[out_split, cls]
    src = where[0] = os.path.join(listing.images_dir or "", name)
    target, already = choose_name(folder, name, functools.partial(listing.same, name))
    dst = where[1] = os.path.join(folder.path, target)
    if already:
        summary.already += 1
        # Drop the duplicate, unless dst *is* src (through a link): that would delete both.
        if run_.transfer.mode == "move" and not run_.dry_run and not same_path(src, dst):
            os.unlink(src)
        return
    rel, dest_rel = f"{listing.src_split}/images/{name}", f"{out_split}/{cls}/{target}"
    if reason:
        summary.reasons[reason] += 1
        run_.log.write(out_split, rel, dest_rel, f"{reason}: {detail}")
    if target != name:
        summary.renamed += 1
        run_.log.write(out_split, rel, dest_rel, f"renamed: {out_split}/{cls}/{name} is a different file")
    if run_.dry_run:
        if len(summary.examples) < 5 or (reason and len(summary.examples) < 8):
            summary.examples.append(f"{rel} -> {dest_rel}" + (f"  ({reason})" if reason else ""))
    else:
        folder.ensure()
        run_.transfer(src, dst)
    folder.add(target)
    placed = summary.placed.setdefault(out_split, {})
    placed[cls] = placed.get(cls, 0) + 1
    summary.moved += 1


def _report_orphans(labels: dict, image_stems: set[str], src_split: str, out_split: str,
                    folders: dict, summary: Summary, log: Log) -> None:
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


def _tidy_in_place(data_path: Path, splits: list[tuple[str, str]], run_: _Run) -> None:
    """After an in-place move: the labels go to data_path/yolo_labels/<source split>/ (they are the
    user's data, kept whole) and the emptied images/, labels/ and source split folders are removed with
    rmdir, which never removes a folder that holds anything. Runs after every image is placed, so a
    killed run finds the labels of the images still to place in labels/."""
    where = [""]
    try:
        for src_split, _ in splits:
            split_dir = os.path.join(data_path, src_split)
            _keep_labels(data_path, src_split, run_, where)
            if run_.dry_run:
                continue
            for folder in (os.path.join(split_dir, "images"), os.path.join(split_dir, "labels")):
                where[0] = folder
                if placing.remove_if_empty(folder) is False:
                    left = sorted(os.listdir(folder))
                    run_.summary.warnings.append(
                        f"{folder} still holds {len(left)} entries that are not image or label files (e.g. "
                        f"{left[0]}); left there: move them elsewhere and run organize_data.py again to "
                        "remove the folder")
            if src_split not in OUTPUT_SPLITS:  # valid/: the class folders went to val/
                placing.remove_if_empty(split_dir)
    except OSError as exc:
        raise UserError(f"failed tidying up {where[0]}: {exc.strerror or exc} (all images are in place; "
                        "fix this and run again to finish)") from None


def _keep_labels(data_path: Path, src_split: str, run_: _Run, where: list[str]) -> None:
    """Move the label files of data_path/<src_split>/labels/ to data_path/yolo_labels/<src_split>/."""
    labels_dir = os.path.join(data_path, src_split, "labels")
    if not os.path.isdir(labels_dir):
        return
    kept = Folder(os.path.join(data_path, KEPT_LABELS, src_split), run_.dry_run)
    for name in sorted(os.listdir(labels_dir)):
        src = where[0] = os.path.join(labels_dir, name)
        if is_label_name(name) and paths.is_regular_file(src):
            _keep_label(src, name, kept, src_split, run_.log, run_.transfer, run_.dry_run)
            run_.summary.labels_kept += 1


def _keep_label(src: str, name: str, kept: Folder, src_split: str, log: Log, transfer: Transfer,
                dry_run: bool) -> None:
    """Move one label file into kept (yolo_labels/<split>/), never over a different file."""
    target, already = choose_name(kept, name, lambda path: same_content(src, path))
    dst = os.path.join(kept.path, target)
    if dry_run:
        return
    if already:
        if not same_path(src, dst):
            os.unlink(src)  # the same bytes are kept already
        return
    if target != name:
        log.write(src_split, f"{src_split}/labels/{name}", f"{KEPT_LABELS}/{src_split}/{target}",
                  f"renamed: {KEPT_LABELS}/{src_split}/{name} is a different file")
    kept.ensure()
    transfer(src, dst)
    kept.add(target)


def existing_summary(data_path: Path, class_names: list[str]) -> Summary:
    """A Summary of what data_path's class folders hold now (nothing is changed)."""
    summary = Summary(source=Path(data_path), data_path=Path(data_path), class_names=list(class_names),
                      mode="move", dry_run=True)
    for split in OUTPUT_SPLITS:
        if (Path(data_path) / split).is_dir():
            summary.counts[split] = {c: len(Folder(os.path.join(data_path, split, c), True).names)
                                     for c in [*class_names, UNCLASSIFIED]}
    return summary


def has_organized_splits(data_path: Path, class_names: list[str]) -> bool:
    return any((data_path / s / c).is_dir() for s in OUTPUT_SPLITS for c in [*class_names, UNCLASSIFIED])


def default_source(data_path: Path, class_names: list[str], handle: str | None,
                    dry_run: bool) -> tuple[Path | None, str]:
    """(YOLO_format folder, mode) when --source is omitted (or is data_path itself: handle None, which never
    downloads); (None, '') when there is nothing to do."""
    if data_path.is_dir():
        found = search_yolo_roots(data_path, skip_top=frozenset(OUTPUT_SPLITS))
        if len(found) > 1:
            raise UserError(f"several YOLO_format folders in {data_path} ({', '.join(map(str, found))}): "
                            "pass one of them with --source")
        if found:
            return found[0], "move"
        if unfinished_in_place(data_path):
            return data_path, "move"
        if has_organized_splits(data_path, class_names):
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


def run(cfg: Config, source: str | None, mode: str | None, dry_run: bool) -> None:
    """What organize_data.py does: organize `source` (None: data_path itself, a download in it, else a
    kagglehub download) into cfg.data_path by cfg.class_names, and print the report.
    mode: 'move', 'link' or None (move a zip or a folder inside data_path, link one outside it)."""
    data_path = Path(cfg.data_path)
    check_class_names(cfg.class_names)
    source = Path(source).expanduser() if source is not None else None
    is_data_path = source is not None and source.is_dir() and same_path(source, data_path)
    if source is None or is_data_path:  # data_path: organized in place, or organized already
        handle = None if is_data_path else cfg.kaggle_dataset
        root, default_mode = default_source(data_path, cfg.class_names, handle, dry_run)
        if root is None:
            if default_mode != "dry":
                print(f"nothing to organize: {data_path} already holds class folders and no download "
                      "(pass --source PATH to add one)")
                print(existing_summary(data_path, cfg.class_names).table())
            return
    elif dry_run and is_zip_source(source):
        # Planned from the archive's member list: a dry run extracts nothing, anywhere.
        print(paths.printable(plan_zip(source, data_path, cfg.class_names, mode=mode or "move").report()))
        return
    else:
        if not dry_run:
            paths.check_writable(data_path, "data_path")  # a zip is extracted into it
        root, default_mode = prepare_source(source, data_path)
    summary = organize(root, data_path, cfg.class_names, mode=mode or default_mode, dry_run=dry_run)
    print(paths.printable(summary.report()))
