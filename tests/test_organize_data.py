"""organize_data.py: nothing lost, nothing duplicated, re-runs are no-ops, killed runs resume, errors are one line."""
from __future__ import annotations

import csv
import errno
import hashlib
import os
import stat
import zipfile
from collections import Counter
from pathlib import Path

import pytest
from organize_killer import run_killed
from support import run_script
from test_documented_flow import copy_subset

import organize_data
from emotion.common import cli, image_types
from emotion.common.errors import UserError
from emotion.data import organize, yolo

CLASSES = ["anger", "contempt", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
SPLIT_OUT = {"train": "train", "valid": "val", "test": "test"}


# ---------------------------------------------------------------------------------------------
# Helpers


def link_tree(src: Path, dst: Path) -> Path:
    """A copy of src made of hard links (falls back to copies across disks): cheap and writable."""
    for folder, _, files in os.walk(src):
        out = dst / Path(folder).relative_to(src)
        out.mkdir(parents=True, exist_ok=True)
        for name in files:
            try:
                os.link(Path(folder) / name, out / name)
            except OSError:
                (out / name).write_bytes((Path(folder) / name).read_bytes())
    return dst


def listing(path: Path) -> list[tuple[str, int, int]]:
    """Every file under path as (relative path, inode, size)."""
    rows = []
    for folder, _, files in os.walk(path):
        for name in files:
            st = os.stat(Path(folder) / name)
            rows.append((str((Path(folder) / name).relative_to(path)), st.st_ino, st.st_size))
    return sorted(rows)


def label_classes(yolo: Path) -> dict[str, dict[str, str]]:
    """Read independently of the module: split -> image name -> class name, from the label files."""
    result = {}
    for split in ("train", "valid", "test"):
        labels = {p.stem: CLASSES[int(p.read_text().split()[0])] for p in (yolo / split / "labels").iterdir()}
        result[SPLIT_OUT[split]] = {img.name: labels[img.stem] for img in (yolo / split / "images").iterdir()}
    return result


def organized(data: Path) -> dict[str, dict[str, str]]:
    """split -> file name -> class folder, asserting no name appears twice within a split."""
    result = {}
    for split in ("train", "val", "test"):
        result[split] = {}
        for folder in sorted((data / split).iterdir()):
            for f in folder.iterdir():
                assert f.name not in result[split], f"{f.name} is in two folders of {split}"
                result[split][f.name] = folder.name
    return result


def main_out(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run the script's main as the command line does: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        cli.run(organize_data.main, argv)
    out, err = capsys.readouterr()
    return exit_info.value.code or 0, out, err


def make_yolo(root: Path, items: list[tuple[str, str, bytes | None, str | None]]) -> Path:
    """A small YOLO_format tree: items are (split, file name, image bytes or None, label text or None)."""
    for split in ("train", "valid"):
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "labels").mkdir(parents=True, exist_ok=True)
    for split, name, image, label in items:
        if image is not None:
            (root / split / "images" / name).write_bytes(image)
        if label is not None:
            (root / split / "labels" / (Path(name).stem + ".txt")).write_text(label)
    return root


def read_log(data: Path) -> list[dict[str, str]]:
    with open(data / organize.LOG_NAME, newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------------------------
# The real sample


def test_link_mode_from_read_only_sample_accounts_for_every_image(yolo_sample, tmp_path):
    before = listing(yolo_sample)
    data = tmp_path / "data"
    summary = organize.organize(yolo_sample, data, CLASSES, mode="link")

    expected = label_classes(yolo_sample)
    assert organized(data) == expected  # every image, in its label's class, once
    for split, images in expected.items():
        want = Counter(images.values())
        assert {c: summary.counts[split][c] for c in CLASSES} == {c: want[c] for c in CLASSES}
        assert summary.counts[split]["unclassified"] == 0
    assert {s: sum(c.values()) for s, c in summary.counts.items()} == {"train": 4800, "val": 1200, "test": 320}
    assert summary.moved == 6320 and summary.orphan_labels == 0 and summary.unclassified == 0
    assert listing(yolo_sample) == before  # the source is untouched

    after_first = listing(data)
    again = organize.organize(yolo_sample, data, CLASSES, mode="link")
    assert listing(data) == after_first
    assert again.moved == 0 and again.already == 6320 and again.counts == summary.counts


def test_move_mode_empties_the_source_and_a_rerun_changes_nothing(yolo_sample, tmp_path, capsys):
    source = link_tree(yolo_sample, tmp_path / "download")
    inodes = {(SPLIT_OUT[p.parts[-3]], p.name): p.stat().st_ino for p in source.glob("*/images/*")}
    data = tmp_path / "data"
    code, out, _ = main_out(["--source", str(source), "--move", "--set", f"data_path={data}"], capsys)
    assert code == 0 and "6320 files moved" in out and "anger" in out
    assert not any(source.glob("*/images/*"))
    assert len(list(source.glob("*/labels/*"))) == 6320  # labels are only read
    placed = {(split, name): (data / split / cls / name).stat().st_ino
              for split, names in organized(data).items() for name, cls in names.items()}
    assert placed == inodes

    snapshot = listing(tmp_path)
    code, out, _ = main_out(["--source", str(source), "--move", "--set", f"data_path={data}"], capsys)
    assert code == 0 and "0 files moved, 6320 already in place" in out
    assert "labels have no image" not in out
    assert listing(tmp_path) == snapshot


def test_link_mode_copies_when_linking_fails_and_reruns_without_duplicates(yolo_sample, tmp_path, monkeypatch):
    def no_link(src, dst, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link")
    monkeypatch.setattr(os, "link", no_link)
    data = tmp_path / "data"
    first = organize.organize(yolo_sample, data, CLASSES, mode="link")
    assert first.moved == 6320
    f = next((data / "train" / "anger").iterdir())
    assert f.stat().st_ino != (yolo_sample / "train" / "images" / f.name).stat().st_ino  # a copy
    snapshot = listing(data)
    again = organize.organize(yolo_sample, data, CLASSES, mode="link")
    assert again.moved == 0 and again.already == 6320 and listing(data) == snapshot


@pytest.mark.parametrize("mode", ["move", "link"])
def test_a_killed_run_resumes_with_nothing_lost_or_duplicated(yolo_sample, tmp_path, mode):
    source = link_tree(yolo_sample, tmp_path / "download")
    inodes = sorted(p.stat().st_ino for p in source.glob("*/images/*"))
    data = tmp_path / "data"
    args = ["--source", str(source), f"--{mode}", "--set", f"data_path={data}"]
    killed = run_killed(2500, *args)
    assert killed.returncode == -9, killed.stderr
    done = sum(1 for _ in data.glob("*/*/*"))
    assert done == 2500

    resumed = run_script("organize_data.py", *args, timeout=60)
    assert resumed.returncode == 0, resumed.stderr
    verb = "moved" if mode == "move" else "linked"
    assert f"3820 files {verb}, 2500 already in place" in resumed.stdout
    assert sorted(p.stat().st_ino for p in data.glob("*/*/*")) == inodes  # every image once
    assert organized(data) == label_classes(yolo_sample)
    left = list(source.glob("*/images/*"))
    assert len(left) == (0 if mode == "move" else 6320)


# ---------------------------------------------------------------------------------------------
# Synthetic trees: bad labels, orphans, clashes


def test_bad_labels_go_to_unclassified_with_reasons_and_orphans_are_reported(tmp_path):
    src = make_yolo(tmp_path / "YOLO_format", [
        ("train", "good.jpg", b"good", "4 0.5 0.5 1 1"),
        ("train", "empty.jpg", b"empty", ""),
        ("train", "malformed.png", b"malformed", "happy 0.5 0.5"),
        ("train", "nine.jpg", b"nine", "9 0.5 0.5 1 1"),
        ("train", "conflict.jpg", b"conflict", "1 0.5 0.5 1 1\n2 0.5 0.5 1 1"),
        ("train", "nolabel.jpg", b"nolabel", None),
        ("train", "orphan.jpg", None, "3 0.5 0.5 1 1"),
        ("valid", "v.jpg", b"v", "7 0.5 0.5 1 1\n"),
    ])
    data = tmp_path / "data"
    summary = organize.organize(src, data, CLASSES)
    assert (data / "train" / "happy" / "good.jpg").read_bytes() == b"good"
    assert (data / "val" / "surprise" / "v.jpg").exists()
    unclassified = sorted(p.name for p in (data / "train" / "unclassified").iterdir())
    assert unclassified == ["conflict.jpg", "empty.jpg", "malformed.png", "nine.jpg", "nolabel.jpg"]
    assert summary.unclassified == 5 and summary.orphan_labels == 1
    assert summary.reasons == Counter({"empty label": 1, "malformed label": 1, "class id out of range": 1,
                                       "conflicting class ids": 1, "no label": 1})
    reasons = {Path(r["file"]).name: r["reason"] for r in read_log(data)}
    assert reasons["empty.jpg"].startswith("empty label")
    assert reasons["malformed.png"].startswith("malformed label")
    assert reasons["nine.jpg"].startswith("class id out of range")
    assert reasons["nolabel.jpg"].startswith("no label")
    assert reasons["orphan.txt"] == "label without an image"
    report = summary.report()
    assert "5 images unclassified" in report and "1 labels have no image" in report

    again = organize.organize(src, data, CLASSES)  # move mode: the images are gone, labels remain
    assert again.moved == 0 and again.orphan_labels == 1 and again.counts == summary.counts


def test_image_types_the_pipeline_cannot_read_go_to_unclassified_with_the_reason(yolo_sample, tmp_path):
    """A real photo as .jpg, .png, .webp, .tif, .tiff and .jpe: the class folders get only what train.py
    decodes (image_types.PIPELINE_EXTENSIONS); the others are unclassified, with the reason, and stay
    readable by OpenCV (predict.py)."""
    import cv2
    photo = sorted((yolo_sample / "train" / "images").iterdir())[0]
    pixels = cv2.imread(str(photo), cv2.IMREAD_COLOR)
    encoded = {ext: cv2.imencode(".jpg" if ext == ".jpe" else ext, pixels)[1].tobytes()
               for ext in (".png", ".webp", ".tif", ".tiff", ".jpe")}
    encoded[".jpg"] = photo.read_bytes()
    src = make_yolo(tmp_path / "YOLO_format", [("train", f"face{ext.replace('.', '_')}{ext}", data, "4 0.5 0.5 1 1")
                                               for ext, data in encoded.items()])
    data = tmp_path / "data"
    summary = organize.organize(src, data, CLASSES)
    assert sorted(p.name for p in (data / "train" / "happy").iterdir()) == ["face_jpg.jpg", "face_png.png"]
    unreadable = sorted(p.name for p in (data / "train" / "unclassified").iterdir())
    assert unreadable == ["face_jpe.jpe", "face_tif.tif", "face_tiff.tiff", "face_webp.webp"]
    assert summary.reasons == Counter({"image type train.py cannot read": 4})
    reasons = {Path(r["file"]).name: r["reason"] for r in read_log(data)}
    assert reasons["face_webp.webp"].startswith("image type train.py cannot read: .webp: train.py reads "
                                                "jpg/jpeg/png/gif/bmp only")
    for name in unreadable:  # real images all the same: predict.py (OpenCV) reads them
        image = cv2.imread(str(data / "train" / "unclassified" / name), cv2.IMREAD_COLOR)
        assert image is not None and image.shape == pixels.shape, name
    assert all(image_types.pipeline_reads(p.name) for p in (data / "train" / "happy").iterdir())
    assert not any(image_types.pipeline_reads(name) for name in unreadable)
    assert set(image_types.OPENCV_EXTENSIONS) - set(image_types.PIPELINE_EXTENSIONS) == {".jpe", ".webp", ".tif",
                                                                                         ".tiff"}


def test_a_name_clash_never_overwrites_and_reruns_add_no_duplicates(tmp_path):
    data = tmp_path / "data"
    (data / "train" / "anger").mkdir(parents=True)
    (data / "train" / "anger" / "a.jpg").write_bytes(b"someone else's a.jpg")
    (data / "train" / "anger" / "a__1.jpg").write_bytes(b"another one")
    (data / "train" / "anger" / "same.jpg").write_bytes(b"same bytes")
    items = [("train", "a.jpg", b"our a.jpg", "0 0.5 0.5 1 1"),
             ("train", "same.jpg", b"same bytes", "0 0.5 0.5 1 1")]
    src = make_yolo(tmp_path / "one", items)
    summary = organize.organize(src, data, CLASSES, mode="link")
    folder = data / "train" / "anger"
    assert (folder / "a.jpg").read_bytes() == b"someone else's a.jpg"
    assert (folder / "a__1.jpg").read_bytes() == b"another one"
    assert (folder / "a__2.jpg").read_bytes() == b"our a.jpg"
    assert summary.renamed == 1 and summary.moved == 1 and summary.already == 1
    assert any(r["reason"].startswith("renamed") for r in read_log(data))

    snapshot = listing(data)
    organize.organize(src, data, CLASSES, mode="link")  # same inodes
    organize.organize(make_yolo(tmp_path / "two", items), data, CLASSES, mode="move")  # same bytes
    assert listing(data) == snapshot
    assert sorted(p.name for p in folder.iterdir()) == ["a.jpg", "a__1.jpg", "a__2.jpg", "same.jpg"]
    assert not any((tmp_path / "two").glob("*/images/*"))  # the duplicates were moved onto themselves


def test_dry_run_touches_nothing(yolo_sample, tmp_path, capsys):
    source = link_tree(yolo_sample, tmp_path / "download")
    data = tmp_path / "data"
    (data / "train" / "anger").mkdir(parents=True)
    (data / "train" / "anger" / "old.jpg").write_bytes(b"old")
    snapshot = listing(tmp_path)
    code, out, _ = main_out(["--source", str(source), "--move", "--dry-run", "--set", f"data_path={data}"], capsys)
    assert code == 0 and listing(tmp_path) == snapshot
    assert "dry run, nothing changed" in out and "6320 files would be moved" in out
    assert "train/images/" in out and " -> train/" in out  # example moves
    anger = next(line for line in out.splitlines() if line.startswith("anger"))
    assert anger.split() == ["anger", "601", "150", "40"]


def test_zip_source_is_extracted_into_data_path_and_organized(yolo_sample, tmp_path, capsys):
    archive = tmp_path / "archive.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(yolo_sample.rglob("*")):
            zf.write(path, "YOLO_format/" + str(path.relative_to(yolo_sample)))
    data = tmp_path / "data"

    code, out, _ = main_out(["--source", str(archive), "--dry-run", "--set", f"data_path={data}"], capsys)
    assert code == 0 and "6320 files would be moved" in out and not data.exists()

    code, out, _ = main_out(["--source", str(archive), "--set", f"data_path={data}"], capsys)
    assert code == 0 and "6320 files moved" in out
    assert organized(data) == label_classes(yolo_sample)
    assert not any((data / "YOLO_format").glob("*/images/*"))
    assert len(list((data / "YOLO_format").glob("*/labels/*.txt"))) == 6320  # kept where the zip put them
    assert not (data / yolo.KEPT_LABELS).exists()
    assert not any(p.name.startswith(yolo.EXTRACT_PREFIX) for p in data.iterdir())

    snapshot = listing(data)
    code, out, _ = main_out(["--source", str(archive), "--set", f"data_path={data}"], capsys)
    assert code == 0 and "0 files moved, 6320 already in place" in out
    code, out, _ = main_out(["--set", f"data_path={data}"], capsys)  # finds data/YOLO_format itself
    assert code == 0 and "0 files moved, 6320 already in place" in out
    assert listing(data) == snapshot


def test_without_source_downloads_with_kagglehub_and_links(yolo_sample, tmp_path, monkeypatch, capsys):
    kagglehub = pytest.importorskip("kagglehub")
    cache = link_tree(yolo_sample, tmp_path / "cache" / "versions" / "1" / "YOLO_format").parent
    calls = []
    monkeypatch.setattr(kagglehub, "dataset_download", lambda handle, *a, **k: calls.append(handle) or str(cache))
    before = listing(cache)
    data = tmp_path / "data"
    code, out, _ = main_out(["--set", f"data_path={data}"], capsys)
    assert code == 0 and calls == ["fatihkgg/affectnet-yolo-format"]
    assert "(link mode)" in out and "6320 files linked" in out
    assert organized(data) == label_classes(yolo_sample)
    assert listing(cache) == before

    code, out, _ = main_out(["--set", f"data_path={data}"], capsys)
    assert code == 0 and "nothing to organize" in out and calls == ["fatihkgg/affectnet-yolo-format"]


@pytest.mark.parametrize("failure", [ConnectionError("Failed to resolve 'api.kaggle.com'"),
                                     RuntimeError("401 Client Error: Unauthorized\nfor url ...")])
def test_a_failed_download_says_what_to_do_in_one_line(tmp_path, monkeypatch, capsys, failure):
    kagglehub = pytest.importorskip("kagglehub")

    def fail(handle, *args, **kwargs):
        raise failure
    monkeypatch.setattr(kagglehub, "dataset_download", fail)
    code, out, err = main_out(["--set", f"data_path={tmp_path / 'data'}"], capsys)
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code != 0 and len(error_lines) == 1 and "Traceback" not in err
    line = error_lines[0]
    assert line.startswith("error: could not download the Kaggle dataset fatihkgg/affectnet-yolo-format (")
    assert "https://www.kaggle.com/datasets/fatihkgg/affectnet-yolo-format" in line
    assert "python src/organize_data.py --source PATH/TO/archive.zip" in line


# ---------------------------------------------------------------------------------------------
# Errors, finding the download, speed of --help


def test_user_mistakes_are_one_error_line(tmp_path, capsys):
    good = make_yolo(tmp_path / "good", [("train", "a.jpg", b"a", "0 0 0 1 1"), ("valid", "b.jpg", b"b", "1 0 0 1 1")])
    (tmp_path / "corrupt.zip").write_bytes(b"PK\x03\x04 this is not really a zip")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as zf:
        zf.writestr("readme.txt", "no images here")
    with zipfile.ZipFile(tmp_path / "damaged.zip", "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(good.rglob("*")):
            zf.write(path, str(path.relative_to(good)))
    damaged = (tmp_path / "damaged.zip").read_bytes().replace(b"0 0 0 1 1", b"0 0 0 1 7")  # CRC fails
    (tmp_path / "damaged.zip").write_bytes(damaged)
    (tmp_path / "notyolo" / "train").mkdir(parents=True)
    clash = tmp_path / "clash"
    (clash / "train").mkdir(parents=True)
    (clash / "train" / "anger").write_text("a file where a class folder goes")
    readonly = link_tree(good, tmp_path / "readonly")
    for images in readonly.glob("*/images"):
        images.chmod(0o555)
    data = f"data_path={tmp_path / 'data'}"
    cases = [
        (["--source", str(tmp_path / "missing"), "--set", data], "source not found"),
        (["--source", str(tmp_path / "notyolo"), "--set", data], "no YOLO_format download"),
        (["--source", str(tmp_path / "corrupt.zip"), "--set", data], "not a zip archive"),
        (["--source", str(tmp_path / "other.zip"), "--set", data], "does not hold a YOLO_format download"),
        (["--source", str(tmp_path / "damaged.zip"), "--set", data], "not a readable zip archive"),
        (["--source", str(good), "--set", data, "--set", "class_names=[Happy, happy]"], "case-insensitive"),
        (["--source", str(good), "--set", data, "--set", "class_names=[a, Unclassified]"], "cannot be a class folder"),
        (["--source", str(good), "--set", f"data_path={clash}"], "is not a folder"),
        (["--source", str(readonly), "--move", "--set", data], "read-only"),
    ]
    for argv, message in cases:
        code, _, err = main_out(argv, capsys)
        assert code != 0 and err.count("\n") == 1 and err.startswith("error: ") and message in err, (argv, err)
    assert len(list(readonly.glob("*/images/*"))) == 2
    assert not list(tmp_path.glob("data/.organize-extract-*"))  # the damaged zip's extraction was cleaned up
    assert (tmp_path / "data").exists()


def test_a_failing_file_is_named_and_the_run_resumes(tmp_path, monkeypatch):
    src = make_yolo(tmp_path / "src", [("train", f"{i}.jpg", b"x%d" % i, "0 0 0 1 1") for i in range(20)])
    real_rename, calls = os.rename, []

    def flaky_rename(a, b):
        calls.append(a)
        if len(calls) == 10:
            raise OSError(errno.EIO, "Input/output error")
        real_rename(a, b)
    monkeypatch.setattr(os, "rename", flaky_rename)
    with pytest.raises(UserError, match=r"failed moving .*images/17\.jpg to .*train/anger/17\.jpg: "
                                        r"Input/output error \(9 files done"):
        organize.organize(src, tmp_path / "data", CLASSES)
    monkeypatch.setattr(os, "rename", real_rename)
    summary = organize.organize(src, tmp_path / "data", CLASSES)
    assert summary.moved == 11 and summary.counts["train"]["anger"] == 20


def test_find_yolo_root_searches_a_few_levels(tmp_path):
    root = make_yolo(tmp_path / "a" / "b" / "YOLO_format", [("train", "x.jpg", b"x", "0 0 0 1 1")])
    assert yolo.find_yolo_root(tmp_path) == root
    assert yolo.prepare_source(tmp_path / "a", tmp_path / "data") == (root, "link")
    assert yolo.prepare_source(tmp_path / "a", tmp_path) == (root, "move")
    make_yolo(tmp_path / "a" / "c" / "YOLO_format", [])
    with pytest.raises(UserError, match="several YOLO_format folders"):
        yolo.find_yolo_root(tmp_path)
    with pytest.raises(UserError, match="no YOLO_format download"):
        yolo.find_yolo_root(tmp_path / "a" / "b" / "YOLO_format" / "train")


def test_data_yaml_class_names_are_compared_case_insensitively(yolo_sample, tmp_path):
    same = organize.organize(yolo_sample, tmp_path / "d1", CLASSES, mode="link", dry_run=True)
    assert same.warnings == []
    other = ["angry", *CLASSES[1:]]
    different = organize.organize(yolo_sample, tmp_path / "d2", other, mode="link", dry_run=True)
    assert len(different.warnings) == 1 and "data.yaml" in different.warnings[0]
    assert not (tmp_path / "d1").exists() and not (tmp_path / "d2").exists()


def test_parse_label():
    assert yolo.parse_label(b"3 0.5 0.5 1 1", 8) == (3, "", "")
    assert yolo.parse_label(b"\xef\xbb\xbf7 0.5 0.5 1 1\r\n", 8)[0] == 7
    assert yolo.parse_label(b"2 0.1 0.1 0.2 0.2\n2 0.5 0.5 0.2 0.2", 8)[0] == 2
    assert yolo.parse_label(b"  \n", 8)[1] == "empty label"
    assert yolo.parse_label(b"3", 8)[1] == "malformed label"
    assert yolo.parse_label(b"3 a b c d", 8)[1] == "malformed label"
    assert yolo.parse_label(b"-1 0 0 1 1", 8)[1] == "class id out of range"


def test_help_imports_no_tensorflow():
    result = run_script("organize_data.py", "--help", timeout=30)
    assert result.returncode == 0 and "--source" in result.stdout and "--dry-run" in result.stdout
    probe = run_script("organize_data.py", "--help", env={"PYTHONPROFILEIMPORTTIME": "1"}, timeout=30)
    assert "tensorflow" not in probe.stderr and "kagglehub" not in probe.stderr


# ---------------------------------------------------------------------------------------------
# Links, odd names, pipes, read-only outputs


def digests(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under root (links followed), with names as bytes-safe text."""
    return {os.fsencode(str(p.relative_to(root))).decode("utf-8", "backslashreplace"): _digest(p)
            for p in root.rglob("*") if p.is_file()}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_class_folder_linked_into_the_source_is_refused_and_nothing_is_lost(tmp_path, capsys):
    source = tmp_path / "download"
    copied = copy_subset(source, 2)
    before = digests(source)
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    (data / "train" / "happy").symlink_to(source / "train" / "images")
    argv = ["--source", str(source), "--move", "--set", f"data_path={data}"]
    code, out, err = main_out(argv, capsys)
    assert code != 0 and err.count("\n") == 1 and "leads to" in err and "remove the link" in err, err
    assert digests(source) == before  # every image still there, byte-identical
    assert sorted(p.name for p in data.rglob("*")) == ["happy", "train"]  # nothing created

    (data / "train" / "happy").unlink()  # as the error says
    code, out, _ = main_out(argv, capsys)
    assert code == 0 and "48 files moved, 0 already in place" in out
    happy = next(line for line in out.splitlines() if line.startswith("happy"))
    assert happy.split() == ["happy", "2", "2", "2"]
    for (split, kind, name), (cls, digest) in copied.items():
        if kind == "images":
            assert _digest(data / SPLIT_OUT[split] / cls / name) == digest


def test_a_linked_file_in_place_keeps_its_target_and_a_linked_source_image_never_dangles(tmp_path, capsys):
    source = tmp_path / "download"
    copied = copy_subset(source, 1)
    images = source / "train" / "images"
    happy_name = next(n for (s, k, n), (c, _) in copied.items() if (s, k, c) == ("train", "images", "happy"))
    data = tmp_path / "data"
    (data / "train" / "happy").mkdir(parents=True)
    (data / "train" / "happy" / happy_name).symlink_to(images / happy_name)  # dst is a link to src
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    sad_name = next(n for (s, k, n), (c, _) in copied.items() if (s, k, c) == ("train", "images", "sad"))
    (images / sad_name).rename(elsewhere / sad_name)
    (images / sad_name).symlink_to(Path("..", "..", "..", "elsewhere", sad_name))  # relative: src is a link
    code, out, _ = main_out(["--source", str(source), "--move", "--set", f"data_path={data}"], capsys)
    assert code == 0 and "23 files moved, 1 already in place" in out, out
    want = copied["train", "images", happy_name][1]
    assert _digest(images / happy_name) == want  # not deleted as a duplicate of itself
    assert _digest(data / "train" / "happy" / happy_name) == want  # the link still resolves
    sad = data / "train" / "sad" / sad_name
    assert not sad.is_symlink() and _digest(sad) == copied["train", "images", sad_name][1]
    assert _digest(elsewhere / sad_name) == copied["train", "images", sad_name][1]  # the target is untouched
    assert not os.path.lexists(images / sad_name)


def test_names_that_are_not_utf8_are_logged_escaped_and_the_run_finishes(yolo_sample, tmp_path):
    source = tmp_path / "download"
    copied = copy_subset(source, 1)
    image = next(p for p in sorted((source / "test" / "images").iterdir()))
    image_bytes = image.read_bytes()
    odd = os.fsdecode(b"z_\xff") + image.suffix  # no label for it: it is logged as unclassified
    odd_path = source / "test" / "images" / odd
    odd_path.write_bytes(image_bytes)
    data = tmp_path / "data"
    (data / "test" / "happy").mkdir(parents=True)
    clash = data / "test" / "happy" / (os.fsdecode(b"w_\xfe") + ".png")
    clash.write_bytes(b"the user's own file")
    labelled = source / "test" / "images" / clash.name  # labelled happy, and its name is taken: renamed
    labelled.write_bytes(image_bytes)
    (source / "test" / "labels" / (os.fsdecode(b"w_\xfe") + ".txt")).write_text("4 0.5 0.5 1 1\n")
    args = ["--source", str(source), "--move", "--set", f"data_path={data}"]

    dry = run_script("organize_data.py", *args, "--dry-run", timeout=60)
    assert dry.returncode == 0 and "26 files would be moved" in dry.stdout, dry.stderr
    assert "test/images/z_\\xff" in dry.stdout  # its example line, escaped
    real = run_script("organize_data.py", *args, timeout=60)
    assert real.returncode == 0 and "26 files moved" in real.stdout, real.stderr
    assert (data / "test" / "unclassified" / odd).read_bytes() == image_bytes
    assert (data / "test" / "happy" / (os.fsdecode(b"w_\xfe") + "__1.png")).read_bytes() == image_bytes
    assert clash.read_bytes() == b"the user's own file"
    rows = {r["file"]: r for r in read_log(data)}
    assert rows[f"test/images/z_\\xff{image.suffix}"]["reason"].startswith("no label")
    assert rows["test/images/w_\\xfe.png"]["destination"] == "test/happy/w_\\xfe__1.png"
    again = run_script("organize_data.py", *args, timeout=60)
    assert again.returncode == 0 and "0 files moved" in again.stdout, again.stderr


@pytest.mark.parametrize("in_place", [False, True])
def test_a_fifo_in_labels_or_images_is_skipped_with_a_warning_not_a_hang(tmp_path, in_place):
    data = tmp_path / "data"
    source = data if in_place else tmp_path / "download"
    copied = copy_subset(source, 1)
    os.mkfifo(source / "train" / "labels" / "pipe.txt")
    os.mkfifo(source / "train" / "images" / "pipe.jpg")
    result = run_script("organize_data.py", *([] if in_place else ["--source", str(source)]), "--move",
                        "--set", f"data_path={data}", timeout=30)
    assert result.returncode == 0, result.stderr
    assert f"warning: {source / 'train' / 'labels' / 'pipe.txt'} is not a regular file" in result.stdout
    assert "24 files moved" in result.stdout
    for (split, kind, name), (cls, digest) in copied.items():
        if kind == "images":
            assert _digest(data / SPLIT_OUT[split] / cls / name) == digest
    assert stat.S_ISFIFO(os.lstat(source / "train" / "labels" / "pipe.txt").st_mode)
    assert stat.S_ISFIFO(os.lstat(source / "train" / "images" / "pipe.jpg").st_mode)
    assert any(r["file"] == "train/labels/pipe.txt" and "not a regular file" in r["reason"] for r in read_log(data))


def test_a_read_only_data_path_is_one_error_line_and_nothing_changes(read_only_folder, tmp_path, capsys):
    source = tmp_path / "download"
    copy_subset(source, 1)
    before = digests(source)
    archive = tmp_path / "archive.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(source.rglob("*")):
            zf.write(path, "YOLO_format/" + str(path.relative_to(source)))
    for data in (read_only_folder, read_only_folder / "data"):
        for src in (source, archive):
            for mode in ("--move", "--link"):
                code, out, err = main_out(["--source", str(src), mode, "--set", f"data_path={data}"], capsys)
                assert code != 0 and err.count("\n") == 1 and "is not writable" in err, (src, mode, err)
                assert err.startswith(f"error: data_path {data}")
    assert list(read_only_folder.iterdir()) == [] and digests(source) == before


def _outcome(report: str) -> list[str]:
    """A report's table and counts, the same words for a dry run and a real one (no head line, examples,
    details path, or warnings, which name the zip's folder or the extracted one)."""
    lines, keep = [], True
    for line in report.splitlines()[1:]:
        if line == "for example:":
            keep = False
        elif not line.startswith("  "):
            keep = True
        if keep and not line.startswith(("details: ", "warning: ")):
            lines.append(line.replace("would be ", ""))
    return lines


def test_dry_run_on_a_zip_plans_from_its_member_list_and_writes_nothing(tmp_path, monkeypatch, capsys):
    source = tmp_path / "download"
    copied = copy_subset(source, 2)
    first = sorted(n for (s, k, n) in copied if (s, k) == ("train", "images"))
    (source / "train" / "labels" / (Path(first[0]).stem + ".txt")).write_text("9 0.5 0.5 1 1\n")  # unclassified
    (source / "valid" / "images" / "notes.docx").write_bytes(b"not an image")
    archive = tmp_path / "archive.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(source.rglob("*")):
            zf.write(path, "YOLO_format/" + str(path.relative_to(source)))
    data = tmp_path / "data"
    same, clash = (data / "train" / copied["train", "images", n][0] / n for n in first[1:3])
    for path in (same, clash):
        path.parent.mkdir(parents=True, exist_ok=True)
    same.write_bytes((source / "train" / "images" / same.name).read_bytes())  # already in place
    clash.write_bytes(b"a different file of that name")  # renamed
    args = ["--source", str(archive), "--set", f"data_path={data}"]

    # As a user runs it. (An extraction into TMPDIR would be cleaned up by the end: the check that nothing
    # is extracted at all is the one below, in this process.)
    scratch = tmp_path / "tmpdir"
    scratch.mkdir()
    snapshot = digests(tmp_path)
    dry = run_script("organize_data.py", *args, "--dry-run", env={"TMPDIR": str(scratch)}, timeout=60)
    assert dry.returncode == 0, dry.stderr
    assert "47 files would be moved, 1 already in place, 1 would be renamed" in dry.stdout, dry.stdout
    assert "1 images would be unclassified (class id out of range: 1)" in dry.stdout
    assert "1 entries of " in dry.stdout and "notes.docx" in dry.stdout
    assert digests(tmp_path) == snapshot and list(scratch.iterdir()) == []

    def no_extraction(*a, **k):
        raise AssertionError("a dry run extracted the archive")
    monkeypatch.setattr(zipfile.ZipFile, "extractall", no_extraction)
    monkeypatch.setattr(zipfile.ZipFile, "extract", no_extraction)
    code, planned, _ = main_out([*args, "--dry-run"], capsys)
    assert code == 0 and digests(tmp_path) == snapshot
    monkeypatch.undo()

    code, done, _ = main_out(args, capsys)
    assert code == 0 and _outcome(done) == _outcome(planned), (done, planned)
    assert "notes.docx); left there" in done and "notes.docx); left there" in planned

    code, out, _ = main_out(["--source", str(archive), "--dry-run", "--set", f"data_path={tmp_path / 'new'}"], capsys)
    assert code == 0 and "48 files would be moved" in out and not (tmp_path / "new").exists()
