"""Fixtures only (the helpers they use, and that tests and benchmarks share, are in support.py), and the rule
that under CI=true a skip is a failure."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from support import YOLO_SAMPLE, in_ci, link_organized, megamind_face_crops, require, spread_model


@pytest.fixture
def yolo_sample() -> Path:
    """The read-only Kaggle YOLO_format sample; never modify it (link or copy it first)."""
    return require(YOLO_SAMPLE)


@pytest.fixture
def tiny(tmp_path):
    """tmp_path with 3 real images per class in data/train and data/val: the train.py tests' dataset.
    (test_classifier.py has a `tiny` of its own, a small model.)"""
    link_organized(tmp_path / "data", per_class=3, splits=("train", "val"))
    return tmp_path


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


def shared_folder(tmp_path_factory, name: str, build) -> Path:
    """A folder made once per test session and shared by every pytest-xdist worker: the first worker to ask
    runs build(folder) under a file lock, the others wait for it and reuse what it made. `name` says what
    built it (the models here depend only on the code under test, the same for the whole session). Under
    xdist each worker's basetemp is <session temp>/popen-gwN, so the session's folder is its parent."""
    import fcntl
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder = root / "shared" / name
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or when the worker dies
        if not (folder / ".done").exists():
            if folder.exists():  # a worker that died while building: start over
                import shutil
                shutil.rmtree(folder)
            folder.mkdir()
            build(folder)
            (folder / ".done").touch()
    return folder


@pytest.fixture(scope="session")
def spread_model_path(tmp_path_factory):
    """A saved 96x96 spread_model (calibrated on Megamind face crops) and its --set overrides (BlazeFace,
    TFLite backend): (path, overrides). Shared by the tests that compare outputs with the model, across the
    xdist workers too (with its cached TFLite conversion, made by whichever test runs first)."""
    from emotion.common import config

    def overrides_for(folder: Path) -> list[str]:
        return ["weights=null", "input_shape=[96, 96, 3]", f"model_save_path={folder / 'model.h5'}",
                "face_detector=blazeface", "classifier_backend=tflite"]

    def build(folder: Path) -> None:
        from emotion.model import network as model_lib
        cfg = config.load_config(None, overrides_for(folder))
        model_lib.save_model_atomic(spread_model(cfg, megamind_face_crops(24)), cfg.model_save_path)

    folder = shared_folder(tmp_path_factory, "spread_model", build)
    return folder / "model.h5", overrides_for(folder)


# ------------------------------------------------------------------------------------------------
# The slowest modules first. make test runs the suite on three workers, a module to a worker (pytest-xdist's
# --dist loadfile: a module's fixtures are made once); handed out in file-name order, the long modules would
# start near the end and run on alone. Slowest first, as measured (--durations), the workers finish together.
# Without xdist only the order changes.
SLOWEST_FIRST = ["test_export.py", "test_train.py", "test_train_commit.py", "test_pipeline.py", "test_web.py",
                 "test_inference.py", "test_learning.py", "test_export_cli.py", "test_calibration.py",
                 "test_documented_flow.py", "test_card.py", "test_archive.py", "test_robustness.py"]


def pytest_collection_modifyitems(config, items):
    def rank(item):
        name = item.path.name
        return SLOWEST_FIRST.index(name) if name in SLOWEST_FIRST else len(SLOWEST_FIRST)
    items.sort(key=rank)  # stable: the order inside a module, and of the other modules, stays


# ------------------------------------------------------------------------------------------------
# Under CI=true a skip is a failure: a missing prerequisite (Chromium, web/node_modules, ../shared, the BlazeFace
# model, a test dependency) must turn CI red, so that green means every test ran. A test that may legitimately
# skip there says so with @pytest.mark.allow_skip(reason="..."); the reason is required.


def pytest_configure(config):
    config.addinivalue_line("markers", "allow_skip(reason): this test may skip even under CI=true (say why)")
    _share_the_cores_between_workers()


def _share_the_cores_between_workers() -> None:
    """Under xdist (make test), each worker's TensorFlow, and the scripts it runs, get their share of the cores:
    two processes each with a thread pool as wide as the machine wait on each other (two tiny train.py runs at
    once on 2 cores: 113 s with the default pools, 98 s with one thread each). Runs before TensorFlow loads."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        share = str(max(1, (os.cpu_count() or 1) // workers))
        os.environ.setdefault("TF_NUM_INTRAOP_THREADS", share)
        os.environ.setdefault("TF_NUM_INTEROP_THREADS", share)


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
