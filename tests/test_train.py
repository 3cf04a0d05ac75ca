"""train.py on tiny real data: every output written and right, resume after kill -9, two workers, bad inputs."""
from __future__ import annotations

import csv
import re
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from emotion import config
from support import REPO, as_set_args, link_organized, plain_keras_probs, run_script, tensorboard_scalars, tiny_config


def _rgb(path: Path, size=(32, 32)) -> np.ndarray:
    from PIL import Image
    return np.asarray(Image.open(path).convert("RGB").resize(size), np.float32)


# For the tests about files, commits, disks and failures rather than the optimizer: SGD's update traces in a
# fraction of Adam's time (Adam: about 4 s more per phase on 2 cores). Adam itself is trained by
# test_train_writes_every_output, the exact resume test and test_learning.
SGD = "optimizer=sgd"


def _read_log(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def tiny(tmp_path):
    link_organized(tmp_path / "data", per_class=3, splits=("train", "val"))
    return tmp_path


def test_train_writes_every_output(tiny, capsys):
    import train
    from emotion.model import load_model

    overrides = tiny_config(tiny, "num_epochs=1", "fine_tune_epochs=1")
    assert train.main(as_set_args(overrides)) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["epochs"] == 2 and summary["train_images"] == 24 and summary["val_images"] == 24
    assert 0.0 <= summary["best_val_macro_f1"] <= 1.0

    rows = _read_log(tiny / "performance" / "training_log.csv")
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

    # Started again with the same config, a finished run has nothing left to do; with another, it says how.
    assert train.main(as_set_args(overrides)) == 0
    assert "nothing left to do" in capsys.readouterr().out
    assert len(_read_log(tiny / "performance" / "training_log.csv")) == 2
    with pytest.raises(config.UserError, match="another config: pass --restart"):
        train.main(as_set_args(overrides + ["dropout=0.5"]))

    # A damaged state.json is one line that says what to do, and nothing is touched.
    state = tiny / "models" / "checkpoints" / "state.json"
    state.write_text(state.read_text()[:40])
    before = _snapshot(tiny / "models", tiny / "performance")
    with pytest.raises(config.UserError, match=r"state.json is damaged \(not JSON: .*\): pass --restart"):
        train.main(as_set_args(overrides))
    assert _snapshot(tiny / "models", tiny / "performance") == before


# A train.py run with deterministic ops (no hook in src/: the flag is set before train.main runs).
DETERMINISTIC_TRAIN = ("import sys, tensorflow as tf; tf.config.experimental.enable_op_determinism(); "
                       "from emotion import cli; import train; sys.argv[0] = 'train.py'; cli.run(train.main)")
COMPARED = ["epoch", "phase", "loss", "accuracy", "macro_f1", "val_loss", "val_accuracy", "val_macro_f1", "learning_rate"]


def _train_cmd(overrides: list[str]) -> list[str]:
    return [sys.executable, "-c", DETERMINISTIC_TRAIN, *as_set_args(overrides)]


def _env() -> dict:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO / "src")}


def _weights(path: Path) -> list[np.ndarray]:
    from emotion.model import load_model
    return [w.numpy() for w in load_model(path).weights]


def test_resume_after_kill_is_exact(tmp_path):
    """kill -9 after epoch 1 is committed, run again: the log and the final weights are bit for bit those of an
    uninterrupted run (with deterministic ops), data order, augmentation, dropout and optimizer included."""
    for run in ("whole", "killed"):
        link_organized(tmp_path / run / "data", per_class=3, splits=("train", "val"))
    flags = ["num_epochs=2", "fine_tune_epochs=0", "augment_flip=true", "augment_rotation=0.05", "dropout=0.5"]
    whole = subprocess.run(_train_cmd(tiny_config(tmp_path / "whole", *flags)), capture_output=True, text=True,
                           env=_env(), timeout=300)
    assert whole.returncode == 0, whole.stderr[-3000:]

    killed = tmp_path / "killed"
    overrides = tiny_config(killed, *flags)
    state = killed / "models" / "checkpoints" / "state.json"
    proc = subprocess.Popen(_train_cmd(overrides), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=_env())
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if state.exists() and json.loads(state.read_text())["epoch"] >= 1:
            break
        time.sleep(0.1)
    assert proc.poll() is None, "training finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = json.loads(state.read_text())["epoch"]
    assert killed_at == 1

    resumed = subprocess.run(_train_cmd(overrides), capture_output=True, text=True, env=_env(), timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming head from epoch {killed_at}" in resumed.stdout
    expected = _read_log(tmp_path / "whole" / "performance" / "training_log.csv")
    rows = _read_log(killed / "performance" / "training_log.csv")
    assert [[r[k] for k in COMPARED] for r in rows] == [[r[k] for k in COMPARED] for r in expected]
    # TensorBoard continues the same curves: each epoch and step once, the values of the uninterrupted run.
    (whole_tb,), (killed_tb,) = ((tmp_path / run / "performance" / "tensorboard").iterdir()
                                 for run in ("whole", "killed"))
    assert tensorboard_scalars(killed_tb) == tensorboard_scalars(whole_tb)
    assert [step for step, _ in tensorboard_scalars(killed_tb)["train"]["epoch_loss"]] == [1, 2]
    for name in ("model.h5", "model_last.h5"):
        for got, want in zip(_weights(killed / "models" / name), _weights(tmp_path / "whole" / "models" / name),
                             strict=True):
            assert np.array_equal(got, want), name
    assert json.loads(state.read_text())["epoch"] == 2
    # Only the files of the last epoch (and the best one) are kept.
    assert sorted(p.name for p in state.parent.iterdir()) == sorted(
        {"state.json", "epoch_002.keras", "last_002.h5", json.loads(state.read_text())["best_model"]})


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
    with pytest.raises(config.UserError, match="happ"):
        train.main(as_set_args(tiny_config(tiny)))


def test_nan_loss_stops_with_a_clear_message(tmp_path):
    import tensorflow as tf
    from emotion import model as model_lib
    from emotion import training

    cfg = config.load_config(None, tiny_config(tmp_path, "class_weighting=none", SGD))
    strategy = tf.distribute.get_strategy()
    model = model_lib.build_model(cfg)
    training.compile_model(model, cfg, "head", steps_per_epoch=2)
    head = model.get_layer("logits")
    head.kernel.assign(np.full(head.kernel.shape, np.nan, np.float32))  # as if the weights had diverged
    images = np.full((2, 8, 32, 32, 3), 100.0, np.float32)
    labels = np.tile(np.eye(8, dtype=np.float32), (2, 1, 1))
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    run = training.TrainEpoch(model, strategy, cfg, None, jit=False)
    with pytest.raises(config.UserError, match=r"training loss became nan in epoch 1/1 \(head\), step 1: lower the learning rate"):
        run(dataset, 2, "epoch 1/1 (head)")


def test_too_little_disk(tiny, monkeypatch):
    import shutil
    import train

    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(config.UserError, match="MB free at .*checkpoints need about"):
        train.main(as_set_args(tiny_config(tiny, "num_epochs=1", "fine_tune_epochs=0")))


# ---- the commit point: a kill at any step leaves one run's consistent files (issue 12, items 7, 9, 10, 11)


class Killed(BaseException):
    """Stands for kill -9 at a chosen line: nothing of ours catches it (files written so far stay as they are)."""


def _digest(weights) -> str:
    import hashlib
    return hashlib.sha256(b"".join(np.asarray(w).tobytes() for w in weights)).hexdigest()


def _snapshot(*folders: Path) -> dict[str, str]:
    from support import snapshot as snap
    return {f"{folder.name}/{k}": v for folder in folders for k, v in snap(folder).items()}


@pytest.fixture
def trained_weights(monkeypatch):
    """{epoch: digest of the weights as trained in that epoch} (the latest run that trained it)."""
    from emotion import checkpoints
    digests = {}
    save_epoch = checkpoints.RunFiles.save_epoch

    def recording(self, model, epoch, improved, best_model):
        digests[epoch] = _digest(w.numpy() for w in model.weights)
        return save_epoch(self, model, epoch, improved, best_model)

    monkeypatch.setattr(checkpoints.RunFiles, "save_epoch", recording)
    return digests


def _published_digest(path: Path) -> str:
    return _digest(_weights(path))


def test_a_kill_before_or_after_the_commit_leaves_one_consistent_run(tiny, trained_weights, monkeypatch, capsys):
    from emotion import checkpoints
    import train

    args = as_set_args(tiny_config(tiny, "num_epochs=2", "fine_tune_epochs=0", SGD))
    models, ckpt = tiny / "models", tiny / "models" / "checkpoints"
    log_path = tiny / "performance" / "training_log.csv"
    save_epoch, commit = checkpoints.RunFiles.save_epoch, checkpoints.RunFiles.commit

    # 1. Killed after epoch 2's checkpoint and best/last models are written, before state.json.
    def save_then_die(self, model, epoch, improved, best_model):
        names = save_epoch(self, model, epoch, improved, best_model)
        if epoch == 2:
            raise Killed
        return names
    monkeypatch.setattr(checkpoints.RunFiles, "save_epoch", save_then_die)
    with pytest.raises(Killed):
        train.main(args)
    assert json.loads((ckpt / "state.json").read_text())["epoch"] == 1
    assert [r["epoch"] for r in _read_log(log_path)] == ["1"]
    assert _published_digest(models / "model.h5") == _published_digest(models / "model_last.h5") == trained_weights[1]

    # 2. Killed right after state.json of epoch 2, before the models and the log are published. Stale temp files
    # of killed saves lie about (the PID of a process that has ended).
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = [ckpt / f".epoch_002.tmp-{dead}.keras", models / f".model_last.tmp-{dead}.h5",
             tiny / "performance" / f".training_log.tmp-{dead}.csv"]
    for path in stale:
        path.write_bytes(b"half-written")

    def commit_then_die(self, state):
        commit(self, state)
        if state["epoch"] == 2:
            raise Killed
    monkeypatch.setattr(checkpoints.RunFiles, "save_epoch", save_epoch)
    monkeypatch.setattr(checkpoints.RunFiles, "commit", commit_then_die)
    trained_weights.clear()
    monkeypatch.setattr(checkpoints.RunFiles, "save_epoch",
                        lambda self, model, epoch, *a: trained_weights.__setitem__(
                            epoch, _digest(w.numpy() for w in model.weights)) or save_epoch(self, model, epoch, *a))
    with pytest.raises(Killed):
        train.main(args)
    assert not any(p.exists() for p in stale)
    assert "resuming head from epoch 1" in capsys.readouterr().out

    # 3. Run again: nothing to train; what the commit says is published.
    monkeypatch.setattr(checkpoints.RunFiles, "commit", commit)
    assert train.main(args) == 0
    assert "nothing left to do" in capsys.readouterr().out
    state = json.loads((ckpt / "state.json").read_text())
    rows = _read_log(log_path)
    assert [r["epoch"] for r in rows] == ["1", "2"] and rows == [{k: str(v) for k, v in r.items()} for r in state["rows"]]
    best_epoch = max(range(2), key=lambda i: (float(rows[i]["val_macro_f1"]), -i)) + 1  # the first best
    assert state["best_epoch"] == best_epoch
    assert _published_digest(models / "model_last.h5") == trained_weights[2]
    # model.h5 is the committed best epoch, calibrated as train.py's last step: T (a constant of the Rescaling
    # layer, not a weight) is all that differs, so the weights are the epoch's.
    from emotion import model as model_lib, temperature
    published = model_lib.load_model(models / "model.h5")
    assert temperature.temperature_of(published) > 0
    temperature.set_temperature(published, 1.0)
    assert _digest(w.numpy() for w in published.weights) == (trained_weights[2] if best_epoch == 2 else
                                                             _published_digest(ckpt / "best_001.h5"))
    assert sorted(p.name for p in ckpt.iterdir()) == sorted({"state.json", "epoch_002.keras", "last_002.h5",
                                                             f"best_{best_epoch:03d}.h5"})


def _fail_epoch_2(tiny, monkeypatch, inject) -> tuple[dict, dict, str]:
    """Train 2 epochs with `inject` installed; returns (files after epoch 1's commit, files after the failure,
    the UserError's message)."""
    from emotion import checkpoints
    import train

    after_epoch_1 = {}
    prune = checkpoints.RunFiles.prune

    def snapshot_after(self, state):
        prune(self, state)
        if state["epoch"] == 1:
            after_epoch_1.update(_snapshot(tiny / "models", tiny / "performance"))
    monkeypatch.setattr(checkpoints.RunFiles, "prune", snapshot_after)
    inject()
    with pytest.raises(config.UserError) as failure:
        train.main(as_set_args(tiny_config(tiny, "num_epochs=2", "fine_tune_epochs=0", SGD)))
    return after_epoch_1, _snapshot(tiny / "models", tiny / "performance"), str(failure.value)


def test_a_full_disk_during_a_save_keeps_the_last_epoch(tiny, monkeypatch, capsys):
    import errno

    import keras

    from emotion import checkpoints

    save = keras.Model.save

    def full_disk(model, path, *args, **kwargs):
        if "last_002" in str(path):  # the second file of epoch 2: the first one must go too
            Path(path).write_bytes(b"half a model")
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(model, path, *args, **kwargs)

    before, after, message = _fail_epoch_2(tiny, monkeypatch,
                                           lambda: monkeypatch.setattr(keras.Model, "save", full_disk))
    assert message.startswith("disk full while saving epoch 2") and "run the same command again" in message
    assert after == before  # byte for byte epoch 1's files, and nothing else
    assert "models/checkpoints/epoch_001.keras" in after

    # The disk estimate holds the real files: two checkpoints and three models at the peak (SGD: one slot per
    # weight; Adam's two: test_the_disk_estimate_holds_on_a_real_small_disk).
    params = int(re.search(r"([\d,]+) parameters", capsys.readouterr().out)[1].replace(",", ""))
    keras_file, h5 = checkpoints.estimate_bytes(params, "sgd")
    real_keras = (tiny / "models" / "checkpoints" / "epoch_001.keras").stat().st_size
    real_h5 = (tiny / "models" / "checkpoints" / "last_001.h5").stat().st_size
    assert real_keras <= keras_file <= real_keras * 1.05 and real_h5 <= h5 <= real_h5 * 1.05
    assert checkpoints.peak_bytes(params, "sgd", False) >= 2 * real_keras + 3 * real_h5


def test_nan_validation_loss_stops_and_saves_nothing_of_that_epoch(tiny, monkeypatch):
    from emotion import training

    predict = training.predict_probs
    calls = []

    def diverged(model, dataset, *args, **kwargs):
        y, probs = predict(model, dataset, *args, **kwargs)
        calls.append(1)
        return y, (np.full_like(probs, np.nan) if len(calls) == 2 else probs)

    before, after, message = _fail_epoch_2(tiny, monkeypatch,
                                           lambda: monkeypatch.setattr(training, "predict_probs", diverged))
    assert message.startswith("validation loss became nan after epoch 2/2 (head)") and "lower the learning rate" in message
    assert after == before


# ---- --restart and output folders


def test_restart_never_deletes_a_folder_that_is_not_ours(tiny):
    import train

    keep = tiny / "keep"
    (keep / "sub").mkdir(parents=True)
    (keep / "precious.txt").write_text("x\n")
    with pytest.raises(config.UserError, match=r"--restart deletes only train.py's own files, but checkpoint_dir "
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
    with pytest.raises(config.UserError, match=rf"{key} .* is not writable .*--set {key}=PATH"):
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
    from emotion import checkpoints
    from emotion import model as model_lib
    import train

    flags = ["num_epochs=2", "fine_tune_epochs=0"]
    params = model_lib.build_model(config.load_config(None, tiny_config(tiny, *flags))).count_params()
    peak = checkpoints.peak_bytes(params, "adam", cross_device=False)

    short = small_disk(peak - (8 << 20))
    with pytest.raises(config.UserError, match=rf"MB free at {short}/checkpoints; checkpoints need about"):
        train.main(as_set_args(tiny_config(tiny, *flags, f"model_save_path={short}/model.h5",
                                           f"checkpoint_dir={short}/checkpoints")))
    assert not any(p.is_file() for p in short.rglob("*"))

    disk = small_disk(peak)
    assert train.main(as_set_args(tiny_config(tiny, *flags, f"model_save_path={disk}/model.h5",
                                              f"checkpoint_dir={disk}/checkpoints"))) == 0
    assert json.loads((disk / "checkpoints" / "state.json").read_text())["epoch"] == 2
