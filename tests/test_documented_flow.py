"""The README's own flow, end to end: extract the Kaggle YOLO_format/ folder AS data/, remove data.yaml,
run organize_data.py with no --source, then train.py. data/ must end up holding only class folders (and
unclassified/), the log and yolo_labels/, with every image and every label byte-identical."""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
from organize_killer import run_killed
from support import CLASS_NAMES, YOLO_SAMPLE, as_set_args, require, run_script, tiny_config

PER_CLASS = 5
KEPT = "yolo_labels"
SPLIT_OUT = {"train": "train", "valid": "val", "test": "test"}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def copy_subset(dest: Path, per_class: int) -> dict:
    """Copy (not link: the flow moves the files) `per_class` images per class of each split, with their
    labels, into dest/<split>/{images,labels}/. Returns {(split, kind, name): (class, sha256)}."""
    root = require(YOLO_SAMPLE)
    copied = {}
    for split in SPLIT_OUT:
        taken = dict.fromkeys(CLASS_NAMES, 0)
        for image in sorted((root / split / "images").iterdir()):
            label = root / split / "labels" / f"{image.stem}.txt"
            cls = CLASS_NAMES[int(label.read_text().split()[0])]
            if taken[cls] >= per_class:
                continue
            taken[cls] += 1
            for kind, src in (("images", image), ("labels", label)):
                (dest / split / kind).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dest / split / kind / src.name)
                copied[split, kind, src.name] = (cls, _digest(src))
    shutil.copyfile(root / "data.yaml", dest / "data.yaml")
    return copied


def tree(root: Path) -> set[str]:
    """Every folder under root, relative (hidden ones included)."""
    return {str(Path(folder).relative_to(root)) for folder, _, _ in os.walk(root)} - {"."}


def files(root: Path) -> set[str]:
    return {str((Path(folder) / name).relative_to(root)) for folder, _, names in os.walk(root) for name in names}


def expected_layout(copied: dict) -> dict[str, str]:
    """relative path -> sha256 of every image and label once the flow has organized `copied`."""
    return {(f"{SPLIT_OUT[split]}/{cls}/{name}" if kind == "images" else f"{KEPT}/{split}/{name}"): digest
            for (split, kind, name), (cls, digest) in copied.items()}


def expected_tree() -> set[str]:
    splits = SPLIT_OUT.values()
    return {*splits, KEPT, *(f"{KEPT}/{s}" for s in SPLIT_OUT)} | {f"{s}/{c}" for s in splits for c in CLASS_NAMES}


def assert_organized(data: Path, copied: dict) -> None:
    """data/ holds exactly the class folders and yolo_labels/, every file byte-identical."""
    assert tree(data) == expected_tree()
    # No organize_log.csv: it is written only when an image is unclassified or renamed, or a label is orphaned.
    assert {f: _digest(data / f) for f in files(data)} == expected_layout(copied)
    assert files(data) == set(expected_layout(copied))


def test_extract_as_data_organize_then_train(tmp_path):
    data = tmp_path / "data"
    copied = copy_subset(data, PER_CLASS)
    (data / "data.yaml").unlink()  # as the README says

    organized = run_script("organize_data.py", "--set", f"data_path={data}", timeout=60)
    assert organized.returncode == 0, organized.stderr
    assert "120 files moved" in organized.stdout

    assert_organized(data, copied)

    snapshot = {f: _digest(data / f) for f in files(data)}
    again = run_script("organize_data.py", "--set", f"data_path={data}", timeout=60)
    assert again.returncode == 0 and "nothing to organize" in again.stdout, again.stderr
    named = run_script("organize_data.py", "--source", str(data), "--set", f"data_path={data}", timeout=60)
    assert named.returncode == 0 and "nothing to organize" in named.stdout, named.stderr
    assert {f: _digest(data / f) for f in files(data)} == snapshot

    overrides = tiny_config(tmp_path, "num_epochs=1", "fine_tune_epochs=0")
    trained = run_script("train.py", *as_set_args(overrides), timeout=300)
    assert trained.returncode == 0, trained.stderr[-2000:]
    n = PER_CLASS * len(CLASS_NAMES)
    assert f"data: {n} train images" in trained.stdout + trained.stderr
    assert f"{n} val images" in trained.stdout + trained.stderr
    assert (tmp_path / "models" / "model.h5").is_file()


@pytest.mark.parametrize("die_after", [1, 60, 121, 200, 205, 242, 244, 246])
def test_a_killed_in_place_run_finishes_when_started_again(tmp_path, die_after):
    """Steps (tests/organize_killer.py): 120 images placed (1-120), then per split its 40 labels moved and its
    images/ and labels/ removed (train 121-162, valid 163-204 and valid/ itself 205, test 206-247).
    Killed while tidying up, data/ is no longer a whole download: resumed with --source data/ too."""
    data = tmp_path / "data"
    copied = copy_subset(data, PER_CLASS)
    args = ("--set", f"data_path={data}")
    killed = run_killed(die_after, *args)
    assert killed.returncode == -9, killed.stderr
    resumed = run_script("organize_data.py", *args, *(["--source", str(data)] if die_after > 240 else []),
                         timeout=60)
    assert resumed.returncode == 0, resumed.stderr
    placed = min(die_after, 120)
    assert f"{120 - placed} files moved, {placed} already in place" in resumed.stdout
    (data / "data.yaml").unlink()
    assert_organized(data, copied)


def test_an_images_folder_holding_other_files_stays_with_a_warning(tmp_path):
    data = tmp_path / "data"
    copied = copy_subset(data, 1)
    (data / "data.yaml").unlink()
    (data / "valid" / "images" / "notes.docx").write_bytes(b"the user's notes")
    first = run_script("organize_data.py", "--set", f"data_path={data}", timeout=60)
    assert first.returncode == 0, first.stderr
    warning = (f"warning: {data / 'valid' / 'images'} still holds 1 entries that are not image or label files "
               "(e.g. notes.docx)")
    assert warning in first.stdout
    assert (data / "valid" / "images" / "notes.docx").read_bytes() == b"the user's notes"
    assert tree(data) == expected_tree() | {"valid", "valid/images"}

    again = run_script("organize_data.py", "--set", f"data_path={data}", timeout=60)  # still says what to do
    assert again.returncode == 0 and "0 files moved, 24 already in place" in again.stdout and warning in again.stdout

    (data / "valid" / "images" / "notes.docx").rename(tmp_path / "notes.docx")  # as the warning says
    last = run_script("organize_data.py", "--set", f"data_path={data}", timeout=60)
    assert last.returncode == 0 and "warning" not in last.stdout, last.stdout
    assert_organized(data, copied)
