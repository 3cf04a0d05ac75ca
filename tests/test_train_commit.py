"""train.py's commit point and resume: kill -9 between epochs resumes bit for bit (TensorBoard's curves too), and a
kill, a full disk or a NaN at any step leaves one run's consistent files. (The other train.py tests are in
test_train.py: a module each, so that pytest-xdist's workers share them out.)"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from support import as_set_args, link_organized, read_csv, snapshot_folders, tensorboard_scalars, tiny_config

from emotion.common import errors

# For the tests about files, commits, disks and failures rather than the optimizer: SGD's update traces in a
# fraction of Adam's time (Adam: about 4 s more per phase on 2 cores). Adam itself: the exact resume test here,
# test_train_writes_every_output and test_learning.
SGD = "optimizer=sgd"


# A train.py run with deterministic ops (no hook in src/: the flag is set before train.main runs).
DETERMINISTIC_TRAIN = ("import sys, tensorflow as tf; tf.config.experimental.enable_op_determinism(); "
                       "from emotion.common import cli; import train; sys.argv[0] = 'train.py'; cli.run(train.main)")
COMPARED = ["epoch", "phase", "loss", "accuracy", "macro_f1", "val_loss", "val_accuracy", "val_macro_f1", "learning_rate"]


def _train_cmd(overrides: list[str]) -> list[str]:
    return [sys.executable, "-c", DETERMINISTIC_TRAIN, *as_set_args(overrides)]


def _env() -> dict:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def _weights(path: Path) -> list[np.ndarray]:
    from emotion.model.network import load_model
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
    expected = read_csv(tmp_path / "whole" / "performance" / "training_log.csv")
    rows = read_csv(killed / "performance" / "training_log.csv")
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


# ---- the commit point: a kill at any step leaves one run's consistent files


class Killed(BaseException):
    """Stands for kill -9 at a chosen line: nothing of ours catches it (files written so far stay as they are)."""


def _digest(weights) -> str:
    import hashlib
    return hashlib.sha256(b"".join(np.asarray(w).tobytes() for w in weights)).hexdigest()


@pytest.fixture
def trained_weights(monkeypatch):
    """{epoch: digest of the weights as trained in that epoch} (the latest run that trained it)."""
    from emotion.training import checkpoints
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
    import train
    from emotion.training import checkpoints

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
    assert [r["epoch"] for r in read_csv(log_path)] == ["1"]
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
    rows = read_csv(log_path)
    assert [r["epoch"] for r in rows] == ["1", "2"] and rows == [{k: str(v) for k, v in r.items()} for r in state["rows"]]
    best_epoch = max(range(2), key=lambda i: (float(rows[i]["val_macro_f1"]), -i)) + 1  # the first best
    assert state["best_epoch"] == best_epoch
    assert _published_digest(models / "model_last.h5") == trained_weights[2]
    # model.h5 is the committed best epoch, calibrated as train.py's last step: T (a constant of the Rescaling
    # layer, not a weight) is all that differs, so the weights are the epoch's.
    from emotion.model import network as model_lib
    from emotion.model import temperature
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
    import train
    from emotion.training import checkpoints

    after_epoch_1 = {}
    prune = checkpoints.RunFiles.prune

    def snapshot_after(self, state):
        prune(self, state)
        if state["epoch"] == 1:
            after_epoch_1.update(snapshot_folders(tiny / "models", tiny / "performance"))
    monkeypatch.setattr(checkpoints.RunFiles, "prune", snapshot_after)
    inject()
    with pytest.raises(errors.UserError) as failure:
        train.main(as_set_args(tiny_config(tiny, "num_epochs=2", "fine_tune_epochs=0", SGD)))
    return after_epoch_1, snapshot_folders(tiny / "models", tiny / "performance"), str(failure.value)


def test_a_full_disk_during_a_save_keeps_the_last_epoch(tiny, monkeypatch, capsys):
    import errno

    import keras

    from emotion.training import checkpoints

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
    from emotion.training import trainer

    predict = trainer.predict_probs
    calls = []

    def diverged(model, dataset, *args, **kwargs):
        y, probs = predict(model, dataset, *args, **kwargs)
        calls.append(1)
        return y, (np.full_like(probs, np.nan) if len(calls) == 2 else probs)

    before, after, message = _fail_epoch_2(tiny, monkeypatch,
                                           lambda: monkeypatch.setattr(trainer, "predict_probs", diverged))
    assert message.startswith("validation loss became nan after epoch 2/2 (head)") and "lower the learning rate" in message
    assert after == before
