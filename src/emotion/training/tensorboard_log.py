"""TensorBoard logs of a training run, committed epoch by epoch like training_log.csv.

    tb = TensorBoardLog(perf_dir / "tensorboard", run_name)   # one folder per run: <run>/train, <run>/validation
    tb.write_hparams(cfg)                      # once: the run's settings, for the HParams dashboard
    tb.write_epoch(row, EpochLog(...), steps)  # each epoch, before its commit (state.json)
    tb.prune(committed_epochs)                 # at start: event files of epochs that were never committed go

    tensorboard --logdir performance/tensorboard

The layout is Keras' TensorBoard callback's: <run>/train and <run>/validation hold the same tags (epoch_loss,
epoch_accuracy, epoch_macro_f1), so each chart shows both curves; train also has epoch_learning_rate and
batch_loss (every step, at the global step), validation epoch_confusion_matrix (an image). Each epoch is one
event file of its own, named after the epoch (events.out.tfevents.epoch_0003.emotion), written whole before
the epoch's commit. A kill before the commit leaves a file for an epoch the resumed run trains again: prune
removes it first, so a resumed run continues the same curves with no step twice.
"""
from __future__ import annotations

import dataclasses
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from emotion.common import plots

SPLITS = ("train", "validation")
_EPOCH_FILE = re.compile(r"^events\.out\.tfevents\.epoch_(\d{4,})\.emotion$")
HPARAMS_FILE = "events.out.tfevents.0000_hparams.emotion"
_TEMP_PREFIX = ".tb-tmp-"  # a write in progress (see _write_file); one left by a kill is removed by prune
# the recipe keys shown as hyperparameters (scalars and strings: what the HParams dashboard can compare)
HPARAM_KEYS = ("weights", "dense_units", "dropout", "optimizer", "lr_schedule", "learning_rate", "num_epochs",
               "fine_tune_epochs", "fine_tune_learning_rate", "fine_tune_blocks", "train_batch_size",
               "label_smoothing", "class_weighting", "mixed_precision", "seed")


@dataclasses.dataclass
class EpochLog:
    """What TensorBoard shows of an epoch beyond its training_log.csv row."""
    step_losses: list[float]      # each training step's mean loss
    val_confusion: np.ndarray     # [C, C] counts on the val split, rows = true class


def run_name(model_path: Path, fingerprint: str) -> str:
    """<model stem>-<config fingerprint[:8]>: a resumed run (same config) writes into the same folder."""
    return f"{Path(model_path).stem}-{fingerprint[:8]}"


class TensorBoardLog:
    def __init__(self, root: Path, run: str, class_names: list[str]):
        self.dir = Path(root) / run
        self.class_names = list(class_names)

    def prune(self, committed_epochs: int) -> None:
        """Remove the event files of epochs after the last committed one, and the temporary folders of writes a
        kill interrupted (train.py's own names only)."""
        import shutil
        for folder in (self.dir, *(self.dir / split for split in SPLITS)):
            if not folder.is_dir():
                continue
            for entry in folder.iterdir():
                if entry.is_symlink():
                    continue
                found = _EPOCH_FILE.match(entry.name)
                if found and int(found.group(1)) > committed_epochs:
                    entry.unlink()
                elif entry.name.startswith(_TEMP_PREFIX) and entry.is_dir():
                    shutil.rmtree(entry)

    def write_hparams(self, cfg, metrics=("epoch_loss", "epoch_accuracy", "epoch_macro_f1")) -> None:
        """The run's hyperparameters and the metrics they are compared by (once per run folder)."""
        if (self.dir / HPARAMS_FILE).exists():
            return
        from tensorboard.plugins.hparams import api as hp

        values = {k: _hparam_value(cfg[k]) for k in HPARAM_KEYS if k in cfg}
        config_metrics = [hp.Metric(tag, group=split, display_name=f"{split} {tag[6:]}")
                          for split in SPLITS for tag in metrics]

        def write(tf):
            hp.hparams_config(hparams=[hp.HParam(k) for k in values], metrics=config_metrics)
            hp.hparams(values, trial_id=self.dir.name)
        self._write_file(self.dir / HPARAMS_FILE, write)

    def write_epoch(self, row: dict, log: EpochLog, steps_per_epoch: int) -> None:
        """The epoch's scalars (as in its training_log.csv row), step losses and val confusion matrix."""
        epoch = int(row["epoch"])
        name = f"events.out.tfevents.epoch_{epoch:04d}.emotion"

        def train(tf):
            for tag, key in (("epoch_loss", "loss"), ("epoch_accuracy", "accuracy"), ("epoch_macro_f1", "macro_f1"),
                             ("epoch_learning_rate", "learning_rate")):
                tf.summary.scalar(tag, float(row[key]), step=epoch)
            first = (epoch - 1) * steps_per_epoch
            for i, loss in enumerate(log.step_losses):
                tf.summary.scalar("batch_loss", float(loss), step=first + i + 1)

        def validation(tf):
            for tag, key in (("epoch_loss", "val_loss"), ("epoch_accuracy", "val_accuracy"),
                             ("epoch_macro_f1", "val_macro_f1")):
                tf.summary.scalar(tag, float(row[key]), step=epoch)
            tf.summary.image("epoch_confusion_matrix", self._confusion_image(log.val_confusion, epoch)[None],
                             step=epoch)

        self._write_file(self.dir / "train" / name, train)
        self._write_file(self.dir / "validation" / name, validation)

    def _confusion_image(self, counts: np.ndarray, epoch: int) -> np.ndarray:
        """The confusion matrix drawn as a uint8 RGB image [H, W, 3] (recall per row, counts written in)."""
        plt = plots.pyplot()
        counts = np.asarray(counts)
        rows = counts.sum(axis=1, keepdims=True)
        recall = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
        fig, ax = plt.subplots(figsize=(6, 5), dpi=80)
        ax.imshow(recall, cmap="Blues", vmin=0, vmax=1)
        ticks = range(len(self.class_names))
        ax.set_xticks(ticks, self.class_names, rotation=45, ha="right")
        ax.set_yticks(ticks, self.class_names)
        for (i, j), n in np.ndenumerate(counts):
            ax.text(j, i, str(n), ha="center", va="center", color="white" if recall[i, j] > 0.5 else "black")
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"val confusion, epoch {epoch} (colour: share of the row)")
        fig.tight_layout()
        fig.canvas.draw()
        image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
        plt.close(fig)
        return image

    @staticmethod
    def _write_file(dest: Path, write) -> None:
        """Run write(tf) under a summary writer of a temporary folder beside dest, then rename the one event file
        it made to dest: a reader never sees a half-written epoch."""
        import tensorflow as tf
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=_TEMP_PREFIX, dir=dest.parent) as tmp:
            writer = tf.summary.create_file_writer(tmp)
            with writer.as_default():
                write(tf)
            writer.close()
            (made,) = [p for p in Path(tmp).iterdir() if "tfevents" in p.name]
            os.replace(made, dest)


def _hparam_value(value):
    if isinstance(value, (bool, int, float, str)):
        return value
    return "null" if value is None else str(value)
