"""TensorBoard logs (emotion/training/tensorboard_log.py): what an epoch writes reads back equal, epochs that were never
committed are pruned, and the train macro-F1 from the step loop's confusion matrix is scikit-learn's."""
from __future__ import annotations

import numpy as np
import pytest
from support import CLASS_NAMES, tensorboard_scalars


def _row(epoch: int) -> dict:
    return {"epoch": epoch, "phase": "head", "loss": 2.0 / epoch, "accuracy": 0.1 * epoch, "macro_f1": 0.05 * epoch,
            "val_loss": 2.5 / epoch, "val_accuracy": 0.12 * epoch, "val_macro_f1": 0.06 * epoch,
            "learning_rate": "0.001", "images_per_s": 10.0, "seconds": 1.0}


def test_an_epoch_reads_back_as_written_and_uncommitted_epochs_are_pruned(tmp_path):
    from emotion.training import tensorboard_log
    tb = tensorboard_log.TensorBoardLog(tmp_path, "run", CLASS_NAMES)
    confusion = np.arange(64).reshape(8, 8)
    for epoch in (1, 2):
        tb.write_epoch(_row(epoch), tensorboard_log.EpochLog([3.0 - epoch, 2.5 - epoch], confusion), 2)
    scalars = tensorboard_scalars(tmp_path / "run")
    assert scalars["train"]["epoch_loss"] == [(1, pytest.approx(2.0)), (2, pytest.approx(1.0))]
    assert scalars["validation"]["epoch_macro_f1"] == [(1, pytest.approx(0.06)), (2, pytest.approx(0.12))]
    assert scalars["train"]["batch_loss"] == [(1, 2.0), (2, 1.5), (3, 1.0), (4, 0.5)]  # global steps
    assert [s for s, _ in scalars["validation"]["epoch_confusion_matrix"]] == [1, 2]

    user_file = tmp_path / "run" / "train" / "my notes.txt"
    user_file.write_text("mine")
    interrupted = tmp_path / "run" / "validation" / ".tb-tmp-abc123"  # a write that a kill -9 cut short
    interrupted.mkdir()
    (interrupted / "events.out.tfevents.1.host").write_bytes(b"half")
    tb.prune(1)  # a kill after epoch 2's events but before its commit: the resumed run trains it again
    scalars = tensorboard_scalars(tmp_path / "run")
    assert [s for s, _ in scalars["train"]["epoch_loss"]] == [1] and [s for s, _ in scalars["train"]["batch_loss"]] == [1, 2]
    assert [s for s, _ in scalars["validation"]["epoch_loss"]] == [1]
    assert user_file.read_text() == "mine"  # only train.py's own event files are removed
    assert not interrupted.exists()
    assert sorted(p.name for p in (tmp_path / "run").rglob("*") if p.is_file()) == [
        "events.out.tfevents.epoch_0001.emotion", "events.out.tfevents.epoch_0001.emotion", "my notes.txt"]


def test_macro_f1_from_a_confusion_matrix_is_scikit_learns():
    from sklearn.metrics import f1_score

    from emotion.evaluation import metrics
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 7, 200)  # class 7 never occurs: F1 0, as scikit-learn's zero_division=0
    y_pred = np.where(rng.random(200) < 0.4, y_true, rng.integers(0, 8, 200))
    confusion = metrics.confusion_matrix(y_true, y_pred, 8)
    assert confusion.sum() == 200 and confusion[3, 3] == np.sum((y_true == 3) & (y_pred == 3))
    expected = f1_score(y_true, y_pred, labels=np.arange(8), average="macro", zero_division=0)
    assert metrics.macro_f1_from_confusion(confusion) == pytest.approx(expected, abs=1e-12)
