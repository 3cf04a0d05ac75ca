"""Shared fixtures: where the real data lies, and how to run a script as a user would."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SHARED_DATA_DIR", REPO.parent / "shared"))
YOLO_SAMPLE = SHARED / "data" / "affectnet-yolo-sample" / "YOLO_format"
FACES_GRAY = SHARED / "data" / "faces-grayscale-350"
VIDEOS = SHARED / "videos"


def require(path: Path) -> Path:
    """Skip the calling test, with the reason, when a piece of ../shared is absent."""
    if not path.exists():
        pytest.skip(f"real data not found at {path} (see ../shared/README.md)")
    return path


@pytest.fixture
def yolo_sample() -> Path:
    """The read-only Kaggle YOLO_format sample; never modify it (link or copy it first)."""
    return require(YOLO_SAMPLE)


def run_script(script: str, *args: str, cwd: Path | None = None, timeout: float = 600,
               env: dict | None = None) -> subprocess.CompletedProcess:
    """Run src/<script> with this interpreter; returns the CompletedProcess (text output)."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run([sys.executable, str(REPO / "src" / script), *args], cwd=cwd or REPO,
                          capture_output=True, text=True, timeout=timeout, env=full_env)


CLASS_NAMES = ["anger", "contempt", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
SPLITS = {"train": "train", "valid": "val", "test": "test"}


def link_organized(dest: Path, per_class: int | None = None, splits=("train", "val", "test")) -> Path:
    """Hard-link the real sample into dest/<split>/<class>/ (the layout organize_data.py makes),
    at most `per_class` images per class; independent of organize_data.py, so tests of other stages
    do not depend on it. Returns dest."""
    root = require(YOLO_SAMPLE)
    for src_split, split in SPLITS.items():
        if split not in splits:
            continue
        taken = {c: 0 for c in CLASS_NAMES}
        for image in sorted((root / src_split / "images").iterdir()):
            label = root / src_split / "labels" / f"{image.stem}.txt"
            cls = CLASS_NAMES[int(label.read_text().split()[0])]
            if per_class is not None and taken[cls] >= per_class:
                continue
            target = dest / split / cls / image.name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(image, target)
            taken[cls] += 1
    return dest


def tiny_config(tmp_path: Path, *overrides: str) -> list[str]:
    """--set overrides for a fast run entirely inside tmp_path (random init, 32x32 inputs, small batches)."""
    return [f"data_path={tmp_path / 'data'}", f"model_save_path={tmp_path / 'models' / 'model.h5'}",
            f"checkpoint_dir={tmp_path / 'models' / 'checkpoints'}", f"performance_dir={tmp_path / 'performance'}",
            f"results_dir={tmp_path / 'results'}", "weights=null", "input_shape=[32, 32, 3]",
            "train_batch_size=8", "val_batch_size=16", "test_batch_size=16", "dense_units=16",
            *overrides]


def as_set_args(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def random_batchnorm_model(cfg, seed: int = 0):
    """build_model(cfg) with random BatchNorm statistics in the backbone: a fresh model's are 0/1, so folding
    or converting them would go untested (a trained model's are not). Imports Keras: call it in a fixture."""
    import keras
    import numpy as np

    from emotion import model as model_lib
    model = model_lib.build_model(cfg)
    rng = np.random.default_rng(seed)
    for layer in model_lib.backbone(model).layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.1, beta.shape),
                               rng.normal(0, 0.1, mean.shape), rng.uniform(0.5, 1.5, var.shape)])
    return model


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder no file can be created in: a read-only bind mount as root (root ignores permission bits,
    as on a read-only disk), else a folder with its write bits removed. Yields its path."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True).returncode == 0
    if not mounted or subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)],
                                     capture_output=True).returncode != 0:
        if mounted:
            subprocess.run(["umount", str(folder)], capture_output=True)
        pytest.skip("cannot make a read-only bind mount here (mount refused)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)


def spread_head(model, calibration_images, logit_std: float = 3.0, seed: int = 0):
    """Re-draw the logits layer ("logits", before the temperature and the softmax) of `model` in place so that its outputs SPREAD: its logits,
    centred on `calibration_images` (RGB [N, H, W, 3], e.g. face crops), vary by about `logit_std` between
    images. A fresh model's probabilities lie within a few hundredths of 1/8 for every input, so "returns a
    constant", "ignores its input" or an RGB/BGR swap would pass a check at 1e-2; with this head the same
    mistakes move probabilities by tenths. Returns the model."""
    import keras
    import numpy as np

    head = model.get_layer("logits")
    pooled = keras.Model(model.input, head.input)
    features = pooled(np.asarray(calibration_images, np.float32), training=False).numpy().astype(np.float64)
    mean = features.mean(axis=0)
    kernel = np.random.default_rng(seed).normal(0, 1, head.kernel.shape)
    # Orthogonal to the features' mean, so the logits carry no large common part (float32 rounding of a
    # large part cancelled by the bias would make TFLite and Keras differ far more than on a real model).
    unit = mean / np.linalg.norm(mean)
    kernel -= np.outer(unit, unit @ kernel)
    kernel *= logit_std / ((features - mean) @ kernel).std()
    head.set_weights([kernel.astype(np.float32), (-mean @ kernel).astype(np.float32)])
    return model


def spread_model(cfg, calibration_images, logit_std: float = 3.0, seed: int = 0):
    """build_model(cfg) with spread_head. Imports Keras: call it in a fixture."""
    from emotion import model as model_lib
    return spread_head(model_lib.build_model(cfg), calibration_images, logit_std, seed)


def megamind_face_crops(count: int = 12, size=(96, 96)):
    """RGB face crops (recognizer's framing) from every 5th frame of Megamind.avi, BlazeFace boxes; skips the
    calling test when the clip or BlazeFace is absent."""
    import cv2
    import numpy as np

    from emotion import faces
    require(VIDEOS / "Megamind.avi")
    if faces.blazeface_model_path() is None:
        pytest.skip(f"BlazeFace model not installed ({faces.MEDIAPIPE_INSTALL})")
    detector = faces.FaceDetector("blazeface")
    cap = cv2.VideoCapture(str(VIDEOS / "Megamind.avi"))
    crops, index = [], 0
    while len(crops) < count:
        ok, frame = cap.read()
        if not ok:
            break
        if index % 5 == 0:
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            crops += [faces.crop_face(rgb, f.box, size=size) for f in detector.detect(rgb)]
        index += 1
    cap.release()
    return np.stack(crops[:count])


@pytest.fixture(scope="session")
def spread_model_path(tmp_path_factory):
    """A saved 96x96 spread_model (calibrated on Megamind face crops) and its --set overrides (BlazeFace,
    TFLite backend): (path, overrides). Shared by the tests that compare outputs with the model."""
    from emotion import config
    from emotion import model as model_lib
    folder = tmp_path_factory.mktemp("spread_model")
    overrides = ["weights=null", "input_shape=[96, 96, 3]", f"model_save_path={folder / 'model.h5'}",
                 "face_detector=blazeface", "classifier_backend=tflite"]
    cfg = config.load_config(None, overrides)
    model = spread_model(cfg, megamind_face_crops(24))
    model_lib.save_model_atomic(model, cfg.model_save_path)
    return folder / "model.h5", overrides


# ------------------------------------------------------------------------------------------------
# Under CI=true a skip is a failure: a missing prerequisite (Chromium, web/node_modules, ../shared, the BlazeFace
# model, a test dependency) must turn CI red, so that green means every test ran. A test that may legitimately
# skip there says so with @pytest.mark.allow_skip(reason="..."); the reason is required.


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def pytest_configure(config):
    config.addinivalue_line("markers", "allow_skip(reason): this test may skip even under CI=true (say why)")


def _skip_message(report) -> str:
    longrepr = report.longrepr
    message = str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return message.removeprefix("Skipped: ")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not (in_ci() and report.skipped) or hasattr(report, "wasxfail"):
        return
    marker = item.get_closest_marker("allow_skip")
    if marker is not None and (marker.kwargs.get("reason") or marker.args):
        return
    report.outcome = "failed"
    report.longrepr = f"skipped under CI=true, where every test must run: {_skip_message(report)}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    report = outcome.get_result()
    if in_ci() and report.skipped:  # a whole module skipped (pytest.importorskip at import time)
        report.outcome = "failed"
        report.longrepr = f"{collector.nodeid} skipped under CI=true, where every test must run: " \
                          f"{_skip_message(report)}"
