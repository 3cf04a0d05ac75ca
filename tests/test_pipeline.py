"""pipeline.py end to end on a tiny budget: the README's first command (make demo) on a small real dataset.

One run for the module: a YOLO_format folder of 3 images per class and split hard-linked from ../shared, a
12-frame clip cut from Megamind.avi, --epochs 1 --max-images 3, 32x32 inputs, two export formats (--formats: the
default list's TF.js conversions and browser check are what made this run last 3 minutes). config.yaml's
weights (imagenet) cannot be downloaded here, so the run also shows the demo's fall-back to random init
(train.py's exit code 3, in a process of its own). Each stage's outputs are checked by content. The run is the
user's default, TF_CPP_MIN_LOG_LEVEL unset: TensorFlow's own logging must not show; --verbose shows it.
"""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from support import CLASS_NAMES, VIDEOS, YOLO_SAMPLE, as_set_args, require, run_script

PER_CLASS = 3
CLIP_FRAMES = 12
FORMATS = ["saved_model", "tflite_float32"]  # two, so --formats is passed through; int8: test_export
# TensorFlow's own C++/absl log lines: "2026-12-01 10:52:21.960317: I tensorflow/...", "E0000 00:00:17.. 8879 cuda_dnn.cc",
# "WARNING: All log messages before absl::InitializeLog()", "... rebuild TensorFlow with the appropriate compiler flags".
TF_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] |[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ )"
                         r"|absl::InitializeLog|rebuild TensorFlow", re.MULTILINE)
SPLITS = {"train": "train", "valid": "val", "test": "test"}


def _mini_dataset(dest: Path) -> dict[str, dict[str, list[Path]]]:
    """dest/YOLO_format with PER_CLASS images (and labels) per class and split, hard-linked from the sample.
    Returns {split: {class: [source image]}}, the reference for organize's output."""
    root = require(YOLO_SAMPLE)
    taken: dict[str, dict[str, list[Path]]] = {}
    for src_split, split in SPLITS.items():
        taken[split] = {c: [] for c in CLASS_NAMES}
        for image in sorted((root / src_split / "images").iterdir()):
            label = root / src_split / "labels" / f"{image.stem}.txt"
            cls = CLASS_NAMES[int(label.read_text().split()[0])]
            if len(taken[split][cls]) >= PER_CLASS:
                continue
            taken[split][cls].append(image)
            for src in (image, label):
                target = dest / src_split / src.parent.name / src.name
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(src, target)
    shutil.copyfile(root / "data.yaml", dest / "data.yaml")
    return taken


def _clip(source: Path, dest: Path, frames: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(source))
    fps = cap.get(cv2.CAP_PROP_FPS)
    read = [cap.read()[1] for _ in range(frames)]
    cap.release()
    writer = cv2.VideoWriter(str(dest), cv2.VideoWriter_fourcc(*"MJPG"), fps, (read[0].shape[1], read[0].shape[0]))
    for frame in read:
        writer.write(frame)
    writer.release()
    return read


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipeline")
    sources = _mini_dataset(tmp / "YOLO_format")
    _clip(require(VIDEOS / "Megamind.avi"), tmp / "clip.avi", CLIP_FRAMES)
    overrides = [f"data_path={tmp / 'data'}", f"model_save_path={tmp / 'models' / 'model.h5'}",
                 f"checkpoint_dir={tmp / 'models' / 'checkpoints'}", f"performance_dir={tmp / 'performance'}",
                 f"results_dir={tmp / 'results'}", "input_shape=[32, 32, 3]", "train_batch_size=8",
                 "val_batch_size=16", "test_batch_size=16"]  # weights stay config.yaml's: imagenet
    proc = run_script("pipeline.py", "--dataset", str(tmp / "YOLO_format"), "--epochs", "1",
                      "--max-images", str(PER_CLASS), "--video", str(tmp / "clip.avi"), "--formats", ",".join(FORMATS),
                      *as_set_args(overrides), timeout=1500, env={"TF_CPP_MIN_LOG_LEVEL": None})
    return tmp, sources, proc


def test_every_stage_ran_and_the_demo_fell_back_to_random_init(demo):
    tmp, _, proc = demo
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    for stage in ("organize_data", "train", "evaluate", "predict", "inference", "export"):
        assert f"=== {stage} done in" in out, stage
    assert "pipeline: stage" not in out
    # Offline: the ImageNet weights cannot be fetched; the demo says so (train.py's error line turned into a
    # warning, never shown as an error), then trains from random init.
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
    assert warnings[0].startswith("warning: could not download the ImageNet weights"), proc.stderr[-3000:]
    assert "warning: the demo goes on from random init (weights=null)" in warnings[1]
    assert "error: " not in proc.stderr
    train_out = out[out.index("=== train:"):out.index("=== train done")]
    summary = json.loads([line for line in train_out.splitlines() if line.startswith("{")][-1])
    assert summary["epochs"] == 2 and summary["train_images"] == 8 * PER_CLASS
    assert "random init" in train_out
    saved = (tmp / "models" / "model.config.yaml").read_text()
    assert "weights: null" in saved


def test_organize_sorted_every_image_into_its_class(demo):
    tmp, sources, _ = demo
    for split, by_class in sources.items():
        folder = tmp / "data" / split
        assert sorted(p.name for p in folder.iterdir()) == sorted(CLASS_NAMES)
        for cls, images in by_class.items():
            got = sorted((folder / cls).iterdir())
            assert [p.name for p in got] == sorted(p.name for p in images), (split, cls)
            for path in got:
                assert path.read_bytes() == (YOLO_SAMPLE / {v: k for k, v in SPLITS.items()}[split] / "images"
                                             / path.name).read_bytes()
    # The source folder is left as it was: nothing moved out of it.
    assert len(list((tmp / "YOLO_format" / "train" / "images").iterdir())) == 8 * PER_CLASS


def test_training_log_has_one_row_per_epoch_of_each_phase(demo):
    tmp, _, _ = demo
    with (tmp / "performance" / "training_log.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["epoch"], r["phase"]) for r in rows] == [("1", "head"), ("2", "fine_tune")]
    for row in rows:
        assert np.isfinite(float(row["loss"])) and float(row["loss"]) > 0
        assert 0 <= float(row["val_accuracy"]) <= 1 and 0 <= float(row["val_macro_f1"]) <= 1
    assert float(rows[0]["learning_rate"]) == pytest.approx(1e-3) and float(rows[1]["learning_rate"]) < 1e-3
    assert (tmp / "models" / "model.h5").stat().st_size > 1e6 and (tmp / "models" / "model_last.h5").exists()


def test_evaluation_metrics_agree_with_predictions_csv(demo):
    tmp, sources, _ = demo
    metrics = json.loads((tmp / "performance" / "evaluation_metrics.json").read_text())
    with (tmp / "performance" / "predictions.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert metrics["num_images"] == len(rows) == 8 * PER_CLASS and metrics["split"] == "test"
    assert sorted(Path(r["path"]).name for r in rows) == sorted(p.name for c in sources["test"].values() for p in c)
    probs = np.array([[float(r[f"prob_{c}"]) for c in CLASS_NAMES] for r in rows])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    true = np.array([CLASS_NAMES.index(r["true_class"]) for r in rows])
    assert all(Path(r["path"]).parent.name == r["true_class"] for r in rows)
    assert [r["predicted_class"] for r in rows] == [CLASS_NAMES[i] for i in probs.argmax(axis=1)]
    assert metrics["accuracy"] == pytest.approx(float((probs.argmax(axis=1) == true).mean()), abs=1e-9)
    assert metrics["loss"] == pytest.approx(float(-np.log(np.clip(probs[np.arange(len(true)), true], 1e-7, 1)).mean()),
                                            abs=1e-5)
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "top2_accuracy"):
        assert 0 <= metrics[key] <= 1
    assert metrics["top2_accuracy"] >= metrics["accuracy"]


def test_predict_classified_every_test_photo(demo):
    tmp, sources, _ = demo
    entries = json.loads((tmp / "results" / "photos" / "predictions.json").read_text())
    expected = sorted(str(tmp / "data" / "test" / c / p.name) for c, ps in sources["test"].items() for p in ps)
    assert sorted(e["image"] for e in entries) == expected
    for entry in entries:
        assert entry["error"] is None and entry["width"] == entry["height"] == 96
        assert len(entry["faces"]) >= 1
        for face in entry["faces"]:
            assert list(face["probabilities"]) == CLASS_NAMES
            assert sum(face["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
            assert face["top_label"] == max(face["probabilities"], key=face["probabilities"].get)


def test_video_stage_wrote_one_prediction_per_frame_and_the_video(demo):
    tmp, _, _ = demo
    results = tmp / "results"
    predictions = json.loads((results / "predictions.json").read_text())
    assert [p["frame"] for p in predictions] == list(range(CLIP_FRAMES))
    assert sum(len(p["faces"]) for p in predictions) >= CLIP_FRAMES // 2  # Megamind's face is in most frames
    cap = cv2.VideoCapture(str(results / "test_out.avi"))
    count = 0
    while cap.read()[0]:
        count += 1
    cap.release()
    assert count == CLIP_FRAMES
    log = (results / "inference_logs.txt").read_text().splitlines()
    assert len(log) == CLIP_FRAMES + 1 and json.loads(log[-1])["frames"] == CLIP_FRAMES


def test_export_wrote_the_formats_asked_for_within_their_thresholds(demo):
    tmp, _, proc = demo
    with (tmp / "performance" / "export_report.csv").open(newline="") as f:
        rows = {r["format"]: r for r in csv.DictReader(f)}
    assert sorted(rows) == sorted(FORMATS)
    assert f"--formats {','.join(FORMATS)}" in proc.stdout  # the export stage's command line
    for name, row in rows.items():
        assert Path(row["path"]).exists(), name
        assert float(row["size_mb"]) > 1, name
    assert float(rows["tflite_float32"]["max_abs_prob_diff_vs_keras"]) < 1e-4
    # The predict stage converted the model for its classifier; export ships that conversion, not a second one.
    cache = next((tmp / "models").glob("model.*.float32.tflite"))
    assert Path(rows["tflite_float32"]["path"]).read_bytes() == cache.read_bytes()
    assert "tflite_float32 written in" in proc.stdout and f"(the cached conversion {cache.name})" in proc.stdout
    assert float(rows["saved_model"]["max_abs_prob_diff_vs_keras"]) < 1e-4
    final = json.loads([line for line in proc.stdout.splitlines() if line.startswith('{"formats"')][-1])
    assert set(final["formats"]) == set(rows) and final["num_val_images"] == 8 * PER_CLASS


def test_tensorflow_logging_is_hidden_by_default(demo):
    _, _, proc = demo
    assert proc.returncode == 0
    assert not TF_LOG_LINE.search(proc.stdout + proc.stderr), TF_LOG_LINE.findall(proc.stdout + proc.stderr)[:5]


def test_verbose_shows_tensorflow_logging_in_every_stage(demo):
    tmp, _, _ = demo
    # Every stage gets --verbose from the pipeline ...
    dry = run_script("pipeline.py", "--verbose", "--dry-run", "--set", f"data_path={tmp / 'data'}",
                     env={"TF_CPP_MIN_LOG_LEVEL": None}, timeout=60)
    commands = [line for line in dry.stdout.splitlines() if line.startswith("=== ") and "python src/" in line]
    assert len(commands) >= 5 and all(line.endswith("--verbose") or " --verbose " in line for line in commands)
    # ... and a stage with --verbose shows TensorFlow's own lines, which the demo above did not.
    overrides = [f"data_path={tmp / 'data'}", f"model_save_path={tmp / 'models' / 'model.h5'}",
                 f"performance_dir={tmp / 'verbose-performance'}", f"results_dir={tmp / 'verbose-results'}",
                 "input_shape=[32, 32, 3]", "test_batch_size=16"]
    proc = run_script("evaluate.py", "--verbose", *as_set_args(overrides), env={"TF_CPP_MIN_LOG_LEVEL": None})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert TF_LOG_LINE.search(proc.stderr), proc.stderr[-3000:]


def test_a_failing_stage_stops_the_pipeline_with_its_error_line_last(tmp_path):
    proc = run_script("pipeline.py", "--dataset", str(tmp_path / "no-such-download"),
                      "--set", f"data_path={tmp_path / 'data'}", timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "pipeline: stage organize_data failed (exit code 1); later stages not run" in proc.stdout
    assert "=== train" not in proc.stdout
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "no-such-download" in last, proc.stderr
    assert not (tmp_path / "data").exists()


def test_a_bad_export_format_stops_the_pipeline_before_its_first_stage(tmp_path):
    """--formats is export's last stage: checked when the arguments are read, not after hours of training."""
    proc = run_script("pipeline.py", "--formats", "saved_model,bogus", "--set", f"data_path={tmp_path / 'data'}",
                      timeout=60)
    assert proc.returncode == 2 and "===" not in proc.stdout
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "pipeline.py: error: argument --formats: unknown format(s) bogus; choose from saved_model,")
    assert not (tmp_path / "data").exists()


def test_the_predict_stage_finds_the_test_photos_under_a_data_path_with_glob_characters(tmp_path):
    """The stage's --image_path is a pattern: a data_path such as "run[1]" is matched literally."""
    import glob

    import pipeline
    from emotion.common import config

    data = tmp_path / "run[1]" / "data"
    photo = data / "test" / "happy" / "face.jpg"
    photo.parent.mkdir(parents=True)
    photo.write_bytes(b"jpeg")
    (tmp_path / "run1" / "data" / "test" / "sad").mkdir(parents=True)  # what the unescaped "[1]" would match
    (tmp_path / "run1" / "data" / "test" / "sad" / "other.jpg").write_bytes(b"jpeg")
    args = pipeline.parse_args(["--set", f"data_path={data}"])
    stage = pipeline.stage_arguments(args, config.load_config(args.config, args.overrides))["predict"]
    pattern = stage[stage.index("--image_path") + 1]
    assert glob.glob(pattern) == [str(photo)]


def test_a_stage_dies_with_a_killed_pipeline(tmp_path):
    """kill -9 of pipeline.py left its running stage (e.g. train.py) alive beside the next run."""
    import signal
    import subprocess
    import sys
    import time

    (tmp_path / "sleeper.py").write_text("import os, time\nprint(os.getpid(), flush=True)\ntime.sleep(120)\n")
    code = ("import sys, pipeline; from pathlib import Path\n"
            "pipeline.SRC = Path(sys.argv[1]); pipeline.run_stage('sleeper', [])")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    stage = int(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    def alive(pid: int) -> bool:  # a zombie (dead, not yet reaped by its new parent) counts as dead
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False
    deadline = time.monotonic() + 10
    while alive(stage) and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        assert not alive(stage), "the stage outlived the pipeline"
    finally:
        if alive(stage):
            os.kill(stage, signal.SIGKILL)
