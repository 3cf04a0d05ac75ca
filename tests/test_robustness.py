"""evaluate.py --robustness: the corruptions checked against pixels computed another way, known answers from tiny
models trained on synthetic data (a class carried by colour is lost in gray and kept mirrored; one carried by the
eyes' band is lost when the eyes are covered and kept when the mouth is), severity 0 equal to the clean figures,
the at-chance wording, the end-to-end detection rate on the shared photos against bench_faces.py's own count, and
the script itself on a tiny model (CSV, figure, card)."""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import math
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from sklearn import metrics as skm
from support import (CLASS_NAMES, FACES_GRAY, REPO, YOLO_SAMPLE, as_set_args, keras_probs, link_organized, read_csv,
                     require, run_script, tiny_config)

from emotion.evaluation import corruptions

SIDE = 32
LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601


# ------------------------------------------------------------------------------------------------
# The corruptions, each checked against pixels derived without the function under test


def _face_like(n: int = 6, side: int = 96, seed: int = 0) -> np.ndarray:
    """uint8 [n, side, side, 3]: smooth colour gradients with edges and a few dark blobs (JPEG and resizing
    behave on it as on a photo: errors grow with the corruption)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side] / side
    out = []
    for _ in range(n):
        base = np.stack([80 + 120 * xx, 60 + 150 * yy, 200 - 100 * xx * yy], axis=-1)
        for _ in range(5):
            cx, cy, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.15)
            base[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.uniform(0, 255, 3)
        out.append(np.clip(base + rng.normal(0, 4, base.shape), 0, 255))
    return np.stack(out).astype(np.uint8)


def test_severity_zero_is_the_images_themselves_and_every_level_is_repeatable():
    images = _face_like(3)
    for name in corruptions.CORRUPTIONS:
        assert corruptions.corrupt(images, name, 0) is images, name
        for severity in corruptions.severities(name):
            once = corruptions.corrupt(images, name, severity)
            again = corruptions.corrupt(images.copy(), name, severity)
            assert once.dtype == np.uint8 and once.shape == images.shape, name
            assert np.array_equal(once, again), f"{name} {severity} is not deterministic"
            assert not np.array_equal(once, images), f"{name} {severity} changed nothing"
    with pytest.raises(ValueError, match="severities 0..4"):
        corruptions.corrupt(images, "blur", 5)
    with pytest.raises(ValueError, match="unknown corruption"):
        corruptions.corrupt(images, "fog", 1)


def test_grayscale_is_the_luma_in_every_channel_and_flip_the_mirror():
    images = _face_like(3)
    gray = corruptions.corrupt(images, "grayscale", 1).astype(int)
    luma = images.astype(float) @ LUMA
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])
    assert np.abs(gray[..., 0] - luma).max() <= 1  # rounding
    assert np.array_equal(corruptions.corrupt(images, "flip", 1), images[:, :, ::-1, :])


def test_brightness_scales_and_contrast_shrinks_towards_the_mean_gray():
    images = _face_like(3)
    for severity, factor in zip(corruptions.severities("brightness"), (0.6, 0.4, 0.25)):
        dark = corruptions.corrupt(images, "brightness", severity).astype(float)
        assert np.abs(dark - images * factor).max() <= 0.5 + 1e-9
    spreads = [float(corruptions.corrupt(images, "contrast", s).astype(float).std(axis=(1, 2)).mean())
               for s in (0, *corruptions.severities("contrast"))]
    assert spreads == sorted(spreads, reverse=True) and spreads[-1] < 0.3 * spreads[0]
    mean_luma = (images.astype(float) @ LUMA).mean()
    low = corruptions.corrupt(images, "contrast", 3).astype(float) @ LUMA
    assert abs(low.mean() - mean_luma) < 1.0  # the picture flattens around its own mean gray


def test_jpeg_blur_and_downscale_errors_grow_with_severity_and_keep_flat_images_flat():
    images = _face_like(6)
    for name in ("jpeg", "blur", "downscale"):
        errors = [float(np.abs(corruptions.corrupt(images, name, s).astype(float) - images).mean())
                  for s in corruptions.severities(name)]
        assert errors == sorted(errors) and errors[0] > 0.5, (name, errors)
    flat = np.full((2, 96, 96, 3), 137, np.uint8)
    for name in ("blur", "downscale", "rotation"):  # filters and resampling keep a constant picture constant
        for severity in corruptions.severities(name):
            assert np.array_equal(corruptions.corrupt(flat, name, severity), flat), (name, severity)
    assert corruptions.level_label("downscale", 3, 96) == "32 px" and corruptions.level_label("jpeg", 3) == "quality 10"


def test_rotation_turns_a_dot_counter_clockwise_about_the_centre():
    image = np.zeros((1, 96, 96, 3), np.uint8)
    cv2.circle(image[0], (47 + 30, 47), 3, (255, 255, 255), -1)  # 30 px right of the centre (47.5, 47.5)
    for severity, degrees in zip(corruptions.severities("rotation"), (10, 20, 30)):
        turned = corruptions.corrupt(image, "rotation", severity)[0, :, :, 0].astype(float)
        ys, xs = np.mgrid[0:96, 0:96]
        cx, cy = (xs * turned).sum() / turned.sum(), (ys * turned).sum() / turned.sum()
        angle = math.radians(degrees)  # counter-clockwise on screen: up is -y
        assert abs(cx - (47 + 30 * math.cos(angle))) < 1.0 and abs(cy - (47 - 30 * math.sin(angle))) < 1.0


def test_the_bands_cover_the_eyes_and_the_mouth_and_nothing_else():
    """Eyes at 0.449 of the crop's height (0.416-0.489), mouth at 0.748 (0.710-0.791): BlazeFace's keypoints on
    the shared AffectNet test crops (corruptions.py's docstring)."""
    images = np.full((1, 96, 96, 3), 200, np.uint8)
    eyes, mouth = corruptions.corrupt(images, "eyes", 1)[0], corruptions.corrupt(images, "mouth", 1)[0]
    for row in (round(0.416 * 96), round(0.449 * 96), round(0.489 * 96)):
        assert (eyes[row] == 0).all() and (mouth[row] == 200).all(), row
    for row in (round(0.710 * 96), round(0.748 * 96), round(0.791 * 96)):
        assert (mouth[row] == 0).all() and (eyes[row] == 200).all(), row
    for row in (0, 20, 60, 95):  # forehead, between the two, chin
        assert (eyes[row] == 200).all() and (mouth[row] == 200).all(), row


# ------------------------------------------------------------------------------------------------
# Known answers: tiny models trained on synthetic data


def _chroma_colours(radius: float = 55.0, luma: float = 128.0) -> np.ndarray:
    """8 RGB colours of the same luma (BT.601) around a circle in the plane orthogonal to the luma weights:
    in gray they are all one colour."""
    u = np.array([1.0, -1.0, 0.0]) - (np.array([1.0, -1.0, 0.0]) @ LUMA) / (LUMA @ LUMA) * LUMA
    u /= np.linalg.norm(u)
    v = np.cross(LUMA, u)
    v /= np.linalg.norm(v)
    angles = np.arange(8) * 2 * np.pi / 8
    return luma + radius * (np.cos(angles)[:, None] * u + np.sin(angles)[:, None] * v)


def _colour_images(labels, rng) -> np.ndarray:
    """The class is the picture's colour (equal luma for all), under pixel noise."""
    colours = _chroma_colours()
    images = colours[labels][:, None, None, :] + rng.uniform(-20, 20, (len(labels), SIDE, SIDE, 3))
    return np.clip(np.rint(images), 0, 255).astype(np.uint8)


def _eye_images(labels, rng) -> np.ndarray:
    """The class is the colour of rows 12-15 (the eyes' band at 32 px: 0.36-0.54 of the height is rows 11-17), one
    of the 8 corners of the RGB cube; every other 4-row band is a gray of random level (so covering it with black
    is nothing new), under noise."""
    n = len(labels)
    corners = np.array([[(k >> 2) & 1, (k >> 1) & 1, k & 1] for k in range(8)]) * 175.0 + 40
    levels = rng.uniform(0, 255, (n, SIDE // 4))
    images = np.repeat(levels, 4, axis=1)[:, :, None, None] * np.ones((1, 1, SIDE, 3))
    images[:, 12:16] = corners[labels][:, None, None, :]
    return np.clip(np.rint(images + rng.uniform(-20, 20, images.shape)), 0, 255).astype(np.uint8)


def _trained(make_images, pooling, seed: int, epochs: int):
    """A tiny model (Rescaling -> pooling -> Dense softmax, float RGB 0..255 in, as the project's models take)
    trained on 800 synthetic images; returns (model, test images, test labels): 4 per class, never trained on."""
    import keras
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    train_y = np.tile(np.arange(8), 100)
    test_y = np.repeat(np.arange(8), 4)
    inputs = keras.Input((SIDE, SIDE, 3))
    x = keras.layers.Flatten()(pooling(keras.layers.Rescaling(1 / 255)(inputs)))
    model = keras.Model(inputs, keras.layers.Dense(8, activation="softmax")(x))
    model.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy")
    model.fit(make_images(train_y, rng).astype(np.float32), train_y, epochs=epochs, batch_size=50, verbose=0)
    return model, make_images(test_y, rng), test_y


def _write_split(folder: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """data/test/<class>/<n>.png (lossless, so the decoded pixels are these)."""
    for i, (image, label) in enumerate(zip(images, labels)):
        path = folder / CLASS_NAMES[label] / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


@pytest.fixture(scope="module")
def known(tmp_path_factory):
    """The colour model and the eye model, each with its 32-image test split on disk and its config."""
    import keras

    from emotion.common import config
    tmp = tmp_path_factory.mktemp("robustness_known")
    out = {}
    for name, make, pooling, epochs in (
            ("colour", _colour_images, keras.layers.GlobalAveragePooling2D(keepdims=True), 10),
            ("eyes", _eye_images, keras.layers.AveragePooling2D((4, SIDE)), 10)):  # pooled per 4-row band
        model, images, labels = _trained(make, pooling, seed=1, epochs=epochs)
        _write_split(tmp / name / "data" / "test", images, labels)
        cfg = config.load_config(None, tiny_config(tmp / name))
        out[name] = {"model": model, "images": images, "labels": labels, "cfg": cfg, "tmp": tmp / name}
    return out


def _measure_to_csv(case: dict, plan, test: str = "corruption", alignment: bool = False) -> tuple[object, dict]:
    """robustness.measure on the case's split, written with robustness.write; (report, {(corruption, severity):
    CSV row} of the rows of `test`). alignment: also the rows with the eyes levelled (BlazeFace: real faces only)."""
    from emotion.data import datasets
    from emotion.evaluation import robustness
    files = datasets.read_split(case["tmp"] / "data" / "test", case["cfg"])
    report = robustness.measure(case["model"], files, case["cfg"], plan=plan, alignment=alignment)
    report.info = {"split": "test"}
    dest = {name: case["tmp"] / name for name in robustness.OUTPUTS}
    robustness.write(dest, report)
    rows = {(r["corruption"], int(r["severity"])): r for r in read_csv(dest["robustness.csv"]) if r["test"] == test}
    return report, rows


def test_a_colour_model_loses_its_accuracy_in_gray_and_keeps_it_mirrored(known):
    case = known["colour"]
    report, rows = _measure_to_csv(case, [("grayscale", 0), ("grayscale", 1), ("flip", 0), ("flip", 1)])
    clean = float(rows[("grayscale", 0)]["accuracy"])
    assert clean >= 0.9, "the colour model did not learn the colours"
    assert float(rows[("grayscale", 1)]["accuracy"]) <= 0.3  # every class is one gray: about 1 in 8
    assert float(rows[("flip", 1)]["accuracy"]) == clean and float(rows[("flip", 1)]["agreement"]) == 1.0
    assert float(rows[("grayscale", 1)]["accuracy_change"]) <= -0.6
    assert not report.at_chance


def test_an_eye_model_loses_its_accuracy_with_the_eyes_covered_not_the_mouth(known):
    case = known["eyes"]
    report, rows = _measure_to_csv(case, [("eyes", 0), ("eyes", 1), ("mouth", 1)])
    clean = float(rows[("eyes", 0)]["accuracy"])
    assert clean >= 0.9, "the eye model did not learn the band"
    assert float(rows[("eyes", 1)]["accuracy"]) <= 0.3
    assert float(rows[("mouth", 1)]["accuracy"]) >= clean - 0.07 and float(rows[("mouth", 1)]["agreement"]) >= 0.9
    assert not report.at_chance


def _striped_faces(paths, labels) -> np.ndarray:
    """Real AffectNet crops with the class painted as a band across the forehead (rows 12-23 of 96: above the
    eyes, so BlazeFace still finds them), one of the 8 corners of the RGB cube."""
    corners = np.array([[(k >> 2) & 1, (k >> 1) & 1, k & 1] for k in range(8)]) * 175.0 + 40
    images = np.stack([cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in paths])
    images[:, 12:24] = np.rint(corners[labels][:, None, None, :]).astype(np.uint8)
    return images


def test_a_forehead_band_model_loses_a_turned_face_and_levelling_the_eyes_wins_it_back(tmp_path):
    """Known answer for face_alignment: a tiny model reading the forehead band of real faces is right on upright
    faces, wrong once they are turned 30 degrees (the band slants out of its rows), and right again when the
    turned faces' eyes are found by BlazeFace and levelled, all on the same model (the "alignment" rows)."""
    import keras

    from emotion.common import config
    from emotion.data import datasets, faces
    from emotion.evaluation import card, robustness
    if faces.blazeface_model_path() is None:
        pytest.skip(f"BlazeFace model not installed ({faces.BLAZEFACE_INSTALL})")
    images = {split: sorted((require(YOLO_SAMPLE) / split / "images").iterdir()) for split in ("train", "test")}
    train_y, test_y = np.tile(np.arange(8), 100), np.repeat(np.arange(8), 5)
    keras.utils.set_random_seed(1)
    inputs = keras.Input((96, 96, 3))
    bands = keras.layers.AveragePooling2D((12, 96))(keras.layers.Rescaling(1 / 255)(inputs))  # one per 12 rows
    model = keras.Model(inputs, keras.layers.Dense(8, activation="softmax")(keras.layers.Flatten()(bands)))
    model.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy")
    model.fit(_striped_faces(images["train"][:800], train_y).astype(np.float32), train_y, epochs=10, batch_size=50,
              verbose=0)
    _write_split(tmp_path / "data" / "test", _striped_faces(images["test"][:40], test_y), test_y)
    case = {"model": model, "tmp": tmp_path,
            "cfg": config.load_config(None, tiny_config(tmp_path, "input_shape=[96, 96, 3]"))}
    plan = [("rotation", s) for s in (0, 1, 2, 3)]
    report, rows = _measure_to_csv(case, plan, alignment=True)
    _, levelled = _measure_to_csv(case, plan, test="alignment", alignment=True)
    clean = float(rows[("rotation", 0)]["accuracy"])
    assert clean >= 0.95, "the band model did not learn the band"
    assert float(rows[("rotation", 3)]["accuracy"]) <= 0.5  # turned 30 degrees: the band leaves its rows
    assert float(levelled[("rotation", 3)]["accuracy"]) >= clean - 0.1  # levelled: back
    assert float(levelled[("rotation", 0)]["accuracy"]) >= clean - 0.1  # levelling upright faces costs little
    assert {r["detector"] for r in levelled.values()} == {"blazeface"} and report.aligner == "blazeface"
    assert "levelling the eyes takes faces turned 30 deg from" in robustness.summary(report)
    section = robustness.card_section(report)
    assert [lv["level"] for lv in section["alignment"]["levels"]] == ["clean", "10 deg", "20 deg", "30 deg"]
    assert section["alignment"]["levels"][-1]["accuracy_with"] == pytest.approx(
        float(levelled[("rotation", 3)]["accuracy"]), abs=1e-6)
    markdown = card.render_markdown({"model_sha256": None, "robustness": {**section, "model_sha256": None}})
    assert "with the eyes levelled (face_alignment eyes, blazeface)" in markdown
    # not asked: no alignment rows, nothing said about them
    files = datasets.read_split(tmp_path / "data" / "test", case["cfg"])
    report = robustness.measure(model, files, case["cfg"], plan=plan[:2], alignment=False)
    assert report.aligner is None and not [r for r in report.rows if r["test"] == "alignment"]
    assert "levelling" not in robustness.summary(report)


def _ece(probs, y, bins: int = 15) -> float:
    """Expected calibration error written out: |accuracy - confidence| per equal-width bin, weighted by its share."""
    conf, right = probs.max(axis=1), probs.argmax(axis=1) == y
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = (conf > lo) & (conf <= hi) if b else (conf <= hi)
        if inside.any():
            total += inside.mean() * abs(right[inside].mean() - conf[inside].mean())
    return total


def test_severity_zero_of_every_corruption_equals_the_clean_figures(known):
    """The default plan (every corruption from severity 0) on the colour model; the clean figures computed here
    from the model's own probabilities on the PNG files, with scikit-learn."""
    from emotion.evaluation import robustness
    case = known["colour"]
    _, rows = _measure_to_csv(case, None)
    paths = sorted((case["tmp"] / "data" / "test").rglob("*.png"))
    y = np.array([CLASS_NAMES.index(p.parent.name) for p in paths])
    images = np.stack([cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in paths])
    probs = keras_probs(case["model"], images).astype(np.float64)
    pred = probs.argmax(axis=1)
    expected = {"images": len(y), "accuracy": skm.accuracy_score(y, pred),
                "balanced_accuracy": skm.balanced_accuracy_score(y, pred),
                "macro_f1": skm.f1_score(y, pred, labels=np.arange(8), average="macro", zero_division=0),
                "ece": _ece(probs, y), "uncertain": float((probs.max(axis=1) < 0.5).mean()), "agreement": 1.0,
                "accuracy_change": 0.0}
    names = list(corruptions.CORRUPTIONS)
    assert sorted({c for c, _ in rows}) == sorted(names) and len(rows) == sum(
        1 + len(corruptions.levels(n)) for n in names)  # one row per corruption and severity
    for name in names:
        row = rows[(name, 0)]
        assert row["level"] == "clean" and row["test"] == "corruption"
        for key, value in expected.items():
            assert float(row[key]) == pytest.approx(value, abs=2e-6), (name, key)
    for row in rows.values():  # every figure in its range
        assert int(row["images"]) == len(y) and row["detection_rate"] == "" and row["detector"] == ""
        assert all(0 <= float(row[k]) <= 1 for k in ("accuracy", "balanced_accuracy", "macro_f1", "ece",
                                                        "uncertain", "agreement"))
    assert robustness.ROW_COLUMNS == list(read_csv(case["tmp"] / "robustness.csv")[0])


def test_a_model_at_chance_is_called_so_and_nothing_is_read_into_its_figures(known):
    """A model that answers "neutral" to everything: the line, the card section and its Markdown say plainly
    that it is at chance, and draw no conclusion (no "falls from", no "worst")."""
    import keras

    from emotion.data import datasets
    from emotion.evaluation import card, robustness
    case = known["colour"]
    inputs = keras.Input((SIDE, SIDE, 3))
    dense = keras.layers.Dense(8, activation="softmax")
    constant = keras.Model(inputs, dense(keras.layers.GlobalAveragePooling2D()(inputs)))
    dense.set_weights([np.zeros((3, 8), np.float32), np.eye(8, dtype=np.float32)[CLASS_NAMES.index("neutral")] * 3])
    files = datasets.read_split(case["tmp"] / "data" / "test", case["cfg"])
    report = robustness.measure(constant, files, case["cfg"], plan=[("blur", 0), ("blur", 1), ("downscale", 3)])
    report.info = {"split": "test", "model_sha256": "f" * 64, "measured_at": "2026-12-02T00:00:00+00:00"}
    assert report.at_chance and report.chance == 1 / 8
    line = robustness.summary_line(report)
    assert "the model is at chance: the figures say nothing about robustness" in line
    assert "falls from" not in line and "worst" not in line
    section = robustness.card_section(report)
    assert section["at_chance"] is True and section["summary"].startswith("the model is at chance")
    markdown = card.render_markdown({"model_sha256": "f" * 64, "robustness": section})
    assert "## Robustness" in markdown and "the model is at chance: the figures say nothing" in markdown
    # the colour model is not at chance: its summary reads the figures
    good = robustness.measure(case["model"], files, case["cfg"], plan=[("grayscale", 0), ("downscale", 3)])
    assert not good.at_chance and "on 11 px faces" in robustness.summary(good)  # 32 px at 96: 11 px at 32


def test_a_card_section_of_another_model_file_is_not_shown_as_this_ones():
    from emotion.evaluation import card
    section = {"model_sha256": "a" * 64, "summary": "accuracy falls from 0.60 to 0.40 on 32 px faces", "clean": {}}
    markdown = card.render_markdown({"model_sha256": "b" * 64, "robustness": section})
    assert "## Robustness" in markdown and "measured on another model file" in markdown
    assert "falls from" not in markdown
    assert "falls from 0.60" in card.render_markdown({"model_sha256": "a" * 64, "robustness": section})
    assert "## Robustness" not in card.render_markdown({"model_sha256": "a" * 64})


# ------------------------------------------------------------------------------------------------
# End to end


def _bench_faces():
    """benchmarks/bench_faces.py as a module (its place and on_photo: what the benchmark counts), loaded by file
    path like its `tests_helpers` import (nothing edits sys.path)."""
    def load(name: str, path: Path):
        if name not in sys.modules:
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        return sys.modules[name]
    load("tests_helpers", REPO / "benchmarks" / "tests_helpers.py")
    return load("bench_faces_under_test", REPO / "benchmarks" / "bench_faces.py")


def test_end_to_end_detection_rate_on_the_shared_photos_is_bench_faces_count(known, tmp_path):
    """The report's detection step (EndToEnd.run_scenes: predict.py's recognizer) on the 93 shared photos at
    bench_faces' placement (350 px, centred, black 640x480) finds exactly the faces bench_faces counts, which
    this test counts itself: faces.FaceDetector.detect called directly and bench_faces' own centre check."""
    from emotion.common import config
    from emotion.data import faces
    from emotion.runtime.classifier import KerasClassifier
    from emotion.runtime.end_to_end import EndToEnd, installed_detectors
    photos = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in sorted((require(FACES_GRAY) / "images").iterdir())]
    bench = _bench_faces()
    placed = [bench.place(photo, bench.PHOTO_SIDE) for photo in photos]
    cfg = config.load_config(None, tiny_config(tmp_path))
    scenes = EndToEnd(cfg, tmp_path / "unused.h5", classifier=KerasClassifier(known["colour"]["model"]))
    assert scenes.detectors == installed_detectors() and "haar" in scenes.detectors
    for detector in scenes.detectors:
        direct = faces.FaceDetector(detector)
        expected = sum(bench.on_photo(direct.detect(frame), rect) for frame, rect in placed)
        found = scenes.run_scenes(placed, detector)
        assert sum(face is not None for face in found) == expected, detector
        assert expected >= 0.85 * len(photos), (detector, expected)  # README: 85 to 92 of the 93


# ------------------------------------------------------------------------------------------------
# evaluate.py --robustness


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """evaluate.py --robustness on 2 real test images per class with a random-init 32x32 ResNet50 (at chance)."""
    import evaluate
    from emotion.common import config
    from emotion.model import network as model_lib
    tmp = tmp_path_factory.mktemp("robustness_cli")
    link_organized(tmp / "data", per_class=2, splits=("test",))
    overrides = tiny_config(tmp, "classifier_backend=keras")  # no TFLite conversion in a test
    cfg = config.load_config(None, overrides)
    model_lib.save_model_atomic(model_lib.build_model(cfg), cfg.model_save_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert evaluate.main([*as_set_args(overrides), "--robustness"]) == 0
    return {"tmp": tmp, "overrides": overrides, "cfg": cfg, "stdout": out.getvalue()}


def test_evaluate_robustness_writes_the_csv_the_figure_and_the_card_section(evaluated):
    from emotion.runtime.end_to_end import BACKGROUNDS, SIDES, installed_detectors
    tmp, cfg = evaluated["tmp"], evaluated["cfg"]
    perf, n = tmp / "performance", 2 * len(CLASS_NAMES)
    rows = read_csv(perf / "robustness.csv")
    corruption_rows = [r for r in rows if r["test"] == "corruption"]
    assert len(corruption_rows) == sum(1 + len(corruptions.levels(c)) for c in corruptions.CORRUPTIONS)
    assert all(int(r["images"]) == n for r in corruption_rows)
    levelled = [r for r in rows if r["test"] == "alignment"]  # the rotation again, eyes levelled (BlazeFace)
    assert [(r["corruption"], int(r["severity"]), r["detector"]) for r in levelled] == [
        ("rotation", s, "blazeface") for s in range(1 + len(corruptions.levels("rotation")))
        if "blazeface" in installed_detectors()]
    assert all(int(r["images"]) == n for r in levelled)
    scene_rows = [r for r in rows if r["test"] == "end_to_end"]
    detectors = installed_detectors()
    assert {(r["detector"], r["background"], r["level"]) for r in scene_rows} == {
        (d, b, f"{s} px") for d in detectors for b in BACKGROUNDS for s in SIDES}
    for d in detectors:  # every image placed at every size, half on each background
        assert sum(int(r["images"]) for r in scene_rows if r["detector"] == d) == n * len(SIDES)
    for r in scene_rows:
        found, placed = int(r["faces_found"]), int(r["images"])
        assert 0 <= found <= placed and float(r["detection_rate"]) == pytest.approx(found / placed, abs=1e-6)
        assert (r["accuracy"] == "") == (found == 0)
    data = (perf / "robustness.png").read_bytes()
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[0] >= 700 and image.shape[1] >= 1200 and image.std() > 10

    card_json = json.loads((tmp / "models" / "model.card.json").read_text())
    section = card_json["robustness"]
    sha = hashlib.sha256(Path(cfg.model_save_path).read_bytes()).hexdigest()
    assert section["model_sha256"] == card_json["model_sha256"] == sha and section["num_images"] == n
    assert section["at_chance"] is True and set(section["end_to_end"]["detectors"]) == set(detectors)
    if "blazeface" in detectors:
        assert section["alignment"]["detector"] == "blazeface" and len(section["alignment"]["levels"]) == 4
    assert "test" in card_json["metrics"]  # the test figures, written in the same update
    markdown = (tmp / "models" / "model.card.md").read_text()
    assert "## Robustness" in markdown
    assert "the model is at chance: the figures say nothing about robustness" in markdown
    lines = evaluated["stdout"].strip().splitlines()
    assert lines[-2].startswith("robustness: the model is at chance: the figures say nothing about robustness")
    summary = json.loads(lines[-1])
    assert summary["robustness_at_chance"] is True and summary["robustness_images_per_s"] > 0
    assert not list(perf.glob(".*tmp*")) and not list((tmp / "models").glob(".*tmp*"))


def test_a_run_without_robustness_leaves_the_last_robustness_files_and_section(evaluated):
    import evaluate
    tmp = evaluated["tmp"]
    before = {name: (tmp / "performance" / name).read_bytes() for name in ("robustness.csv", "robustness.png")}
    section = json.loads((tmp / "models" / "model.card.json").read_text())["robustness"]
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert evaluate.main([*as_set_args(evaluated["overrides"]), "--max-images-per-class", "1"]) == 0
    assert not [key for key in json.loads(out.getvalue().splitlines()[-1]) if key.startswith("robustness")]
    assert {name: (tmp / "performance" / name).read_bytes() for name in before} == before
    card_json = json.loads((tmp / "models" / "model.card.json").read_text())
    assert card_json["robustness"] == section and card_json["metrics"]["test"]["num_images"] == len(CLASS_NAMES)


def test_the_pipeline_runs_robustness_on_a_full_budget_only(tmp_path):
    def evaluate_line(*args):
        proc = run_script("pipeline.py", "--dry-run", "--set", f"data_path={tmp_path / 'data'}", *args, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return next(line for line in proc.stdout.splitlines() if line.startswith("=== evaluate:"))
    assert evaluate_line().endswith(" --robustness")
    assert "--robustness" not in evaluate_line("--epochs", "1", "--max-images", "25")
    assert evaluate_line("--epochs", "1", "--robustness").endswith(" --robustness")
    assert "--robustness" not in evaluate_line("--no-robustness")
