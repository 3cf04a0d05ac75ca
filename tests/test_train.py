"""train.py on tiny real data: every output written and right, two workers, bad inputs, output folders, the disk
estimate. (Resume and the commit point: test_train_commit.py.)"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from support import (REPO, as_set_args, link_organized, plain_keras_probs, read_csv, run_script, snapshot_folders,
                     tensorboard_scalars, tiny_config)

from emotion.common import config, errors


def _rgb(path: Path, size=(32, 32)) -> np.ndarray:
    from PIL import Image
    return np.asarray(Image.open(path).convert("RGB").resize(size), np.float32)


# For the tests about files, disks and failures rather than the optimizer: SGD's update traces in a fraction of
# Adam's time (Adam: about 4 s more per phase on 2 cores). Adam itself is trained by
# test_train_writes_every_output, test_train_commit's exact resume test and test_learning.
SGD = "optimizer=sgd"


def test_train_writes_every_output(tiny, capsys):
    import train
    from emotion.model.network import load_model

    overrides = tiny_config(tiny, "num_epochs=1", "fine_tune_epochs=1")
    assert train.main(as_set_args(overrides)) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["epochs"] == 2 and summary["train_images"] == 24 and summary["val_images"] == 24
    assert 0.0 <= summary["best_val_macro_f1"] <= 1.0

    rows = read_csv(tiny / "performance" / "training_log.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"] and [r["phase"] for r in rows] == ["head", "fine_tune"]
    for row in rows:
        assert np.isfinite(float(row["loss"])) and 0 <= float(row["val_accuracy"]) <= 1
        assert float(row["images_per_s"]) > 0 and float(row["learning_rate"]) > 0
    assert float(rows[1]["learning_rate"]) < float(rows[0]["learning_rate"])  # phase 2 runs at the lower rate

    model = load_model(tiny / "models" / "model.h5")
    probs = model(np.full((2, 32, 32, 3), 128.0, np.float32)).numpy()
    assert probs.shape == (2, 8) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # The trained (and calibrated) file is a plain Keras model: it opens without this project, same answers.
    faces = np.stack([_rgb(p) for p in sorted((tiny / "data" / "val").rglob("*.*"))[:8]])
    ours = np.asarray(model(faces, training=False))
    np.testing.assert_allclose(plain_keras_probs(tiny / "models" / "model.h5", faces, tiny / "plain"), ours,
                               atol=1e-6)
    assert load_model(tiny / "models" / "model_last.h5").count_params() == model.count_params()

    # TensorBoard: the same numbers as training_log.csv, train and validation side by side, every step's loss,
    # a confusion matrix image per epoch, and the run's hyperparameters.
    (run_dir,) = (tiny / "performance" / "tensorboard").iterdir()
    scalars = tensorboard_scalars(run_dir)
    for split, prefix in (("train", ""), ("validation", "val_")):
        for name in ("loss", "accuracy", "macro_f1"):
            got = scalars[split][f"epoch_{name}"]
            assert [step for step, _ in got] == [1, 2], (split, name)
            np.testing.assert_allclose([v for _, v in got], [float(r[prefix + name]) for r in rows], rtol=1e-6)
    np.testing.assert_allclose([v for _, v in scalars["train"]["epoch_learning_rate"]],
                               [float(r["learning_rate"]) for r in rows], rtol=1e-6)
    batch = scalars["train"]["batch_loss"]  # 24 images in batches of 8: 3 steps an epoch
    assert [step for step, _ in batch] == list(range(1, 7)) and all(np.isfinite(v) and v > 0 for _, v in batch)
    assert [step for step, _ in scalars["validation"]["epoch_confusion_matrix"]] == [1, 2]
    hparams = next(run_dir.glob("*hparams*")).read_bytes()
    assert b"hparams" in hparams and b"learning_rate" in hparams and b"epoch_macro_f1" in hparams

    saved = yaml.safe_load((tiny / "performance" / "train_config.yaml").read_text())
    assert saved == dict(config.load_config(None, overrides))
    assert json.loads((tiny / "performance" / "versions.json").read_text())["tensorflow"].startswith("2.")
    png = (tiny / "performance" / "loss_accuracy_plot.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000

    # Started again with the same config, a finished run has nothing left to do and changes nothing (issue 18,
    # D-4: it used to copy the uncalibrated checkpoint over the calibrated model and recalibrate it, and set the
    # card's test figures to None): every file of models/ and performance/ keeps its bytes and its mtime.
    def stamps():
        return {p: (p.stat().st_mtime_ns, p.stat().st_ino) for d in ("models", "performance")
                for p in (tiny / d).rglob("*") if p.is_file()}
    before, before_stamps = snapshot_folders(tiny / "models", tiny / "performance"), stamps()
    card = json.loads((tiny / "models" / "model.card.json").read_text())
    assert card["calibration"]["temperature"] is not None and card["training"]["epochs"] == 2
    assert train.main(as_set_args(overrides)) == 0
    out = capsys.readouterr().out
    assert "nothing left to do" in out and "unchanged" in out
    assert json.loads(out.strip().splitlines()[-1])["temperature"] == card["calibration"]["temperature"]
    assert snapshot_folders(tiny / "models", tiny / "performance") == before and stamps() == before_stamps
    with pytest.raises(errors.UserError, match="another config: pass --restart"):
        train.main(as_set_args(overrides + ["dropout=0.5"]))

    # A damaged state.json is one line that says what to do, and nothing is touched.
    state = tiny / "models" / "checkpoints" / "state.json"
    state.write_text(state.read_text()[:40])
    before = snapshot_folders(tiny / "models", tiny / "performance")
    with pytest.raises(errors.UserError, match=r"state.json is damaged \(not JSON: .*\): pass --restart"):
        train.main(as_set_args(overrides))
    assert snapshot_folders(tiny / "models", tiny / "performance") == before


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_workers_agree_and_only_chief_writes(tmp_path):
    link_organized(tmp_path / "data", per_class=2, splits=("train", "val"))
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(2):
        out = tmp_path / f"worker{index}"
        overrides = tiny_config(tmp_path, "num_epochs=1", "fine_tune_epochs=0", "strategy=multi_worker", SGD,
                                f"model_save_path={out}/model.h5", f"checkpoint_dir={out}/ckpt",
                                f"performance_dir={out}/performance", "train_batch_size=4")
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
               "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        procs.append(subprocess.Popen([sys.executable, str(REPO / "src" / "train.py"), *as_set_args(overrides)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    outputs = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-3000:]
        outputs.append(json.loads(stdout.strip().splitlines()[-1]))
    chief, other = outputs
    assert chief["chief"] is True and other["chief"] is False
    # Trainable weights are all-reduced, so both workers end with the same model. (Validation metrics may
    # differ slightly: from scratch, BatchNorm's moving statistics are per worker.)
    for key in ("weights_checksum", "epochs", "train_images"):
        assert chief[key] == pytest.approx(other[key], rel=1e-6), key
    assert (tmp_path / "worker0" / "model.h5").is_file()
    assert (tmp_path / "worker0" / "performance" / "training_log.csv").is_file()
    assert not (tmp_path / "worker1").exists()


# ---- bad inputs: one line, non-zero exit


def test_missing_data_folder(tmp_path):
    proc = run_script("train.py", *as_set_args(tiny_config(tmp_path)), timeout=120)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "organize_data.py" in lines[-1], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_class_folders_must_match_class_names(tiny):
    import train

    (tiny / "data" / "train" / "happy").rename(tiny / "data" / "train" / "happiness")
    with pytest.raises(errors.UserError, match="happ"):
        train.main(as_set_args(tiny_config(tiny)))


def test_nan_loss_stops_with_a_clear_message(tmp_path):
    import tensorflow as tf

    from emotion.model import network as model_lib
    from emotion.training import trainer

    cfg = config.load_config(None, tiny_config(tmp_path, "class_weighting=none", SGD))
    strategy = tf.distribute.get_strategy()
    model = model_lib.build_model(cfg)
    trainer.compile_model(model, cfg, "head", steps_per_epoch=2)
    head = model.get_layer("logits")
    head.kernel.assign(np.full(head.kernel.shape, np.nan, np.float32))  # as if the weights had diverged
    images = np.full((2, 8, 32, 32, 3), 100.0, np.float32)
    labels = np.tile(np.eye(8, dtype=np.float32), (2, 1, 1))
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    run = trainer.TrainEpoch(model, strategy, cfg, None, jit=False)
    with pytest.raises(errors.UserError, match=r"training loss became nan in epoch 1/1 \(head\), step 1: lower the learning rate"):
        run(dataset, 2, "epoch 1/1 (head)")


def test_too_little_disk(tiny, monkeypatch):
    import shutil

    import train

    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(errors.UserError, match="MB free at .*checkpoints need about"):
        train.main(as_set_args(tiny_config(tiny, "num_epochs=1", "fine_tune_epochs=0")))


# ---- --restart and output folders


def test_restart_never_deletes_a_folder_that_is_not_ours(tiny):
    import train

    keep = tiny / "keep"
    (keep / "sub").mkdir(parents=True)
    (keep / "precious.txt").write_text("x\n")
    with pytest.raises(errors.UserError, match=r"--restart deletes only train.py's own files, but checkpoint_dir "
                                               r".*keep also holds precious.txt, sub"):
        train.main(as_set_args(tiny_config(tiny, "num_epochs=1", "fine_tune_epochs=0", SGD, f"checkpoint_dir={keep}"))
                   + ["--restart"])
    assert sorted(str(p.relative_to(keep)) for p in keep.rglob("*")) == ["precious.txt", "sub"]
    assert (keep / "precious.txt").read_text() == "x\n"
    assert not (tiny / "models").exists() and not (tiny / "performance").exists()


@pytest.mark.parametrize("key", ["model_save_path", "checkpoint_dir", "performance_dir"])
def test_read_only_output_folder_fails_before_any_work(tiny, read_only_folder, key, capsys):
    import train

    value = read_only_folder / "model.h5" if key == "model_save_path" else read_only_folder / "out"
    with pytest.raises(errors.UserError, match=rf"{key} .* is not writable .*--set {key}=PATH"):
        train.main(as_set_args(tiny_config(tiny, "num_epochs=1", "fine_tune_epochs=0", f"{key}={value}")))
    assert capsys.readouterr().out == ""  # before the data summary: no work done
    assert list(read_only_folder.iterdir()) == []


@pytest.fixture
def small_disk(tmp_path):
    """mount(size_bytes) -> a fresh folder on a tmpfs of that size (root only; skipped elsewhere). Unmounted after."""
    mounted = []

    def mount(size: int) -> Path:
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                                               capture_output=True).returncode != 0:
            pytest.skip("cannot mount a small tmpfs here (needs root)")
        mounted.append(folder)
        return folder
    yield mount
    for folder in mounted:
        subprocess.run(["umount", str(folder)], capture_output=True)


def test_the_disk_estimate_holds_on_a_real_small_disk(tiny, small_disk):
    """Checkpoints and models on a disk of exactly the estimated peak: 2 epochs train with no ENOSPC. A disk
    a little smaller is refused before training, with one line and nothing written."""
    import train
    from emotion.model import network as model_lib
    from emotion.training import checkpoints

    flags = ["num_epochs=2", "fine_tune_epochs=0"]
    params = model_lib.build_model(config.load_config(None, tiny_config(tiny, *flags))).count_params()
    peak = checkpoints.peak_bytes(params, "adam", cross_device=False)

    short = small_disk(peak - (8 << 20))
    with pytest.raises(errors.UserError, match=rf"MB free at {short}/checkpoints; checkpoints need about"):
        train.main(as_set_args(tiny_config(tiny, *flags, f"model_save_path={short}/model.h5",
                                           f"checkpoint_dir={short}/checkpoints")))
    assert not any(p.is_file() for p in short.rglob("*"))

    disk = small_disk(peak)
    assert train.main(as_set_args(tiny_config(tiny, *flags, f"model_save_path={disk}/model.h5",
                                              f"checkpoint_dir={disk}/checkpoints"))) == 0
    assert json.loads((disk / "checkpoints" / "state.json").read_text())["epoch"] == 2
