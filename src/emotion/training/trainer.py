"""The training loop behind train.py: two phases, per-epoch validation, checkpoints, resume, logs.

Usage:
    summary = train(cfg, max_images_per_class=None, restart=False, dry_run=False)

Each epoch runs TrainEpoch (a distributed step loop) on a dataset seeded with `seed + epoch`, so a resumed run sees the
same data order and augmentation as an uninterrupted one; the checkpoint restores the weights, the optimizer
(its step included) and the state of every Keras SeedGenerator (dropout), so that with deterministic ops
(tf.config.experimental.enable_op_determinism) a resumed run is bit for bit the uninterrupted one.
After every epoch, on the chief only (checkpoints.RunFiles):
  1. the checkpoint (model + optimizer), the last model and, when it improved, the best model are written
     under epoch-numbered names in checkpoint_dir,
  2. state.json is replaced, naming them and holding the log rows and random states (the commit point),
  3. model_save_path, <model>_last.h5 and training_log.csv are published from them, older epochs deleted.
A kill before 2 resumes from the previous epoch; a kill after it is completed at the next start.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from emotion.common import atomic, paths, plots
from emotion.common.config import Config, trained_config_path
from emotion.common.errors import UserError, first_line
from emotion.data import datasets, scanning
from emotion.evaluation import card
from emotion.evaluation.metrics import classification_metrics, confusion_matrix, macro_f1_from_confusion
from emotion.model import network as model_lib
from emotion.model.network import predict_probs
from emotion.training import calibration_step, checkpoints, tensorboard_log

# Keys that change what is trained; a checkpoint made under other values cannot be resumed.
RESUME_KEYS = ["class_names", "input_shape", "weights", "dense_units", "dropout", "learning_rate", "num_epochs",
               "fine_tune_epochs", "fine_tune_learning_rate", "fine_tune_blocks", "optimizer", "lr_schedule",
               "label_smoothing", "train_batch_size", "seed", "augment_flip", "augment_rotation",
               "augment_shift", "augment_zoom", "augment_contrast", "class_weighting", "mixed_precision"]


# ------------------------------------------------------------------------------------------------
# Set-up: devices, distribution, precision


def has_gpu() -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


def resolve_switch(value: str) -> bool:
    """auto -> on with a GPU, off on a CPU (measured: bfloat16 and XLA slow ResNet50 training on this CPU)."""
    return has_gpu() if value == "auto" else value == "on"


def make_strategy(name: str) -> tf.distribute.Strategy:
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise UserError("strategy multi_worker needs the TF_CONFIG environment variable on every worker "
                            "(see README, 'Several machines')")
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief() -> bool:
    """The one worker that writes files: task 'chief', or worker 0 when the cluster names no chief."""
    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    task = tf_config.get("task", {})
    if not task:
        return True
    if task.get("type") == "chief":
        return True
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0 and "chief" not in tf_config.get("cluster", {})


# ------------------------------------------------------------------------------------------------
# Compile


def make_optimizer(cfg: Config, learning_rate: float, steps: int) -> keras.optimizers.Optimizer:
    lr = learning_rate
    if cfg.lr_schedule == "cosine" and steps > 0:
        lr = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps, alpha=0.01)
    if cfg.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=0.9, nesterov=True)
    if cfg.optimizer == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=1e-4)
    return keras.optimizers.Adam(lr)


def compile_model(model: keras.Model, cfg: Config, phase: str, steps_per_epoch: int) -> None:
    """Set the phase's trainable layers and attach a fresh optimizer for the phase, built over its trainable
    variables (the ones the phase's TrainEpoch updates), hence one compile per phase.

    Only the optimizer is compiled in: TrainEpoch computes the loss itself. The optimizer (and its state) is
    saved with every checkpoint and the dropout states in state.json: a resumed run continues exactly.
    """
    model_lib.set_phase(model, phase, cfg)
    if phase == "head":
        lr, epochs = cfg.learning_rate, cfg.num_epochs
    else:
        lr, epochs = cfg.fine_tune_learning_rate, cfg.fine_tune_epochs
    model.compile(optimizer=make_optimizer(cfg, lr, steps_per_epoch * epochs))
    model.optimizer.build(model.trainable_variables)  # variables must exist before a distributed step


def current_lr(model: keras.Model) -> float:
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


# ------------------------------------------------------------------------------------------------
# Progress and failure checks


class TrainEpoch:
    """One epoch of distributed training: forward, backward and update on every replica.

    The project's only training loop (it never calls Keras's Model.fit, which does not run under
    MultiWorkerMirroredStrategy, keras-team/keras#20585): one code path serves every strategy. The loss is
    categorical cross-entropy with cfg.label_smoothing, each example's loss scaled by its class's weight, averaged
    over the global batch. jit compiles the gradient computation with XLA (the update stays outside, where the
    strategy aggregates gradients).

        run = TrainEpoch(model, strategy, cfg, class_weight, jit=False)
        result = run(dataset, steps, "epoch 1/10 (head)")   # EpochResult: loss, accuracy, confusion, ...
    """

    def __init__(self, model: keras.Model, strategy: tf.distribute.Strategy, cfg: Config,
                 class_weight: dict[int, float] | None, jit: bool):
        self.model, self.strategy = model, strategy
        n = self.num_classes = len(cfg.class_names)
        weights = [class_weight.get(i, 1.0) for i in range(n)] if class_weight else [1.0] * n
        self.class_weights = tf.constant(weights, tf.float32)
        self.loss_fn = keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing, reduction=None)
        self.gradients = tf.function(self._gradients, jit_compile=jit)
        self.step = None

    def _gradients(self, x, y):
        model = self.model
        with tf.GradientTape() as tape:
            probs = model(x, training=True)
            per_example = self.loss_fn(y, probs) * tf.gather(self.class_weights, tf.argmax(y, axis=1))
            loss = tf.nn.compute_average_loss(per_example)  # mean over the global batch
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
            scaled = model.optimizer.scale_loss(loss)  # loss scaling under mixed_float16, else identity
        grads = tape.gradient(scaled, model.trainable_variables)
        truth, predicted = tf.argmax(y, 1), tf.argmax(probs, 1)
        correct = tf.reduce_sum(tf.cast(tf.equal(predicted, truth), tf.float32))
        confusion = tf.math.confusion_matrix(truth, predicted, num_classes=self.num_classes, dtype=tf.float32)
        return grads, tf.reduce_sum(per_example), correct, tf.cast(tf.shape(y)[0], tf.float32), confusion

    def _replica_step(self, x, y):
        grads, loss_sum, correct, count, confusion = self.gradients(x, y)
        self.model.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
        return loss_sum, correct, count, confusion

    def _make_step(self, element_spec):
        def step(x, y):
            outputs = self.strategy.run(self._replica_step, args=(x, y))
            return [self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for v in outputs]
        # One trace for every batch size (the last batch of an epoch is smaller).
        return tf.function(step, input_signature=list(element_spec))

    def __call__(self, dataset: tf.data.Dataset, steps: int, label: str) -> "EpochResult":
        from tqdm import tqdm

        dist = self.strategy.experimental_distribute_dataset(dataset)
        if self.step is None:
            self.step = self._make_step(dist.element_spec)
        totals, confusion, step_losses = np.zeros(3), np.zeros((self.num_classes,) * 2), []
        bar = tqdm(total=steps, desc=label, unit="step", leave=False, file=sys.stderr,
                   disable=not sys.stderr.isatty(), dynamic_ncols=True)
        report_every = max(1, steps // 10)  # without a terminal, a plain progress line every 10%
        start = time.perf_counter()
        with bar:
            for i, (x, y) in enumerate(dist):
                *sums, batch_confusion = self.step(x, y)
                batch = np.array([float(v) for v in sums])
                if not math.isfinite(batch[0]):
                    raise UserError(f"training loss became {batch[0]} in {label}, step {i + 1}: lower the "
                                    f"learning rate (now {current_lr(self.model):.2g}) or check the images")
                totals += batch
                confusion += batch_confusion.numpy()
                step_losses.append(batch[0] / batch[2])
                bar.set_postfix(loss=f"{totals[0] / totals[2]:.3f}", acc=f"{totals[1] / totals[2]:.3f}",
                                refresh=False)
                bar.update(1)
                if bar.disable and (i + 1) % report_every == 0 and i + 1 < steps:
                    elapsed = time.perf_counter() - start
                    eta = elapsed / (i + 1) * (steps - i - 1)
                    print(f"  {label}: step {i + 1}/{steps}, loss {totals[0] / totals[2]:.4f}, "
                          f"acc {totals[1] / totals[2]:.4f}, {totals[2] / elapsed:.1f} img/s, "
                          f"ETA {eta / 60:.1f} min", file=sys.stderr, flush=True)
        if totals[2] == 0:
            raise UserError(f"no training images could be read in {label}")
        return EpochResult(totals[0] / totals[2], totals[1] / totals[2], confusion.astype(np.int64), step_losses)


@dataclasses.dataclass
class EpochResult:
    """What one epoch of training measured: mean loss and accuracy over its images, the confusion matrix of
    its predictions (rows: true class; made during training, so with dropout and augmentation), and each
    step's mean loss (TensorBoard's per-step curve)."""
    loss: float
    accuracy: float
    confusion: np.ndarray
    step_losses: list[float]

    @property
    def macro_f1(self) -> float:
        return macro_f1_from_confusion(self.confusion)


def monitor_value(cfg: Config, val: dict) -> float:
    """Higher is better for every monitor (val_loss is negated)."""
    key = cfg.monitor.removeprefix("val_")
    key = {"macro_f1": "macro_f1", "accuracy": "accuracy", "loss": "loss"}[key]
    return -val[key] if key == "loss" else val[key]


# ------------------------------------------------------------------------------------------------
# Files


def config_fingerprint(cfg: Config, max_images_per_class) -> str:
    keys = {k: cfg[k] for k in RESUME_KEYS}
    keys["max_images_per_class"] = max_images_per_class
    return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:16]


PERFORMANCE_FILES = ("training_log.csv", "loss_accuracy_plot.png", "train_config.yaml", "versions.json")


def _config_copy(best_path: Path) -> Path:
    return trained_config_path(best_path)


def load_checkpoint(path: Path, compile: bool) -> keras.Model:
    """A checkpoint that state.json names; one line when it cannot be read."""
    try:
        return keras.models.load_model(path, compile=compile)
    except Exception as exc:  # Keras raises many kinds for a damaged zip/HDF5 file
        raise UserError(f"cannot load the checkpoint {path} ({first_line(exc)}): pass --restart to "
                        f"start over") from None


def last_model_path(cfg: Config) -> Path:
    best = Path(cfg.model_save_path)
    return best.with_name(f"{best.stem}_last{best.suffix}")


def random_states(model: keras.Model) -> dict[str, list[int]]:
    """The state of every Keras SeedGenerator in the model (dropout's masks): a .keras file does not save them."""
    return {key: [int(v) for v in keras.ops.convert_to_numpy(state.value)] for key, state in seed_states(model)}


def restore_random_states(model: keras.Model, states: dict[str, list[int]]) -> None:
    for key, state in seed_states(model):
        if key in states:
            state.assign(np.array(states[key], dtype=keras.backend.standardize_dtype(state.dtype)))


def seed_states(model: keras.Model):
    """(key, state variable) of every SeedGenerator of the model's layers, nested models' included; key
    "<layer name>/<i>", i counting the layer's own generators in order. A layer's generator states are what its
    `variables` ("all layer state, including random seeds") hold beyond its `weights` and its sublayers' variables."""
    for layer in model_lib.all_layers(model):
        others = {id(v) for v in layer.weights}
        others.update(id(v) for sub in getattr(layer, "layers", []) for v in sub.variables)
        for i, state in enumerate(v for v in layer.variables if id(v) not in others):
            yield f"{layer.name}/{i}", state


def library_versions() -> dict:
    import cv2
    import pandas
    import sklearn
    return {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__, "pandas": pandas.__version__, "scikit-learn": sklearn.__version__,
            "opencv": cv2.__version__, "platform": platform.platform(), "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "gpus": [d.name for d in tf.config.list_physical_devices("GPU")]}


def plot_history(rows: list[dict], path: Path) -> None:
    """loss_accuracy_plot.png: train/val loss and train/val accuracy (+ val macro-F1) per epoch."""
    plt = plots.pyplot()

    epochs = [int(r["epoch"]) for r in rows]
    col = lambda k: [float(r[k]) for r in rows]  # noqa: E731
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot(epochs, col("loss"), "o-", label="train loss")
    ax1.plot(epochs, col("val_loss"), "o-", label="val loss")
    ax1.set_xlabel("epoch"), ax1.set_ylabel("loss"), ax1.legend(), ax1.grid(alpha=0.3)
    ax2.plot(epochs, col("accuracy"), "o-", label="train accuracy")
    ax2.plot(epochs, col("val_accuracy"), "o-", label="val accuracy")
    ax2.plot(epochs, col("val_macro_f1"), "s--", label="val macro-F1")
    ax2.set_xlabel("epoch"), ax2.set_ylim(0, 1), ax2.legend(), ax2.grid(alpha=0.3)
    fine = [e for e, r in zip(epochs, rows) if r["phase"] == "fine_tune"]
    for ax in (ax1, ax2):
        if fine:
            ax.axvspan(min(fine) - 0.5, max(fine) + 0.5, color="grey", alpha=0.1, label="fine-tune")
    fig.suptitle("Training history")
    fig.tight_layout()
    plots.save(fig, path)


# ------------------------------------------------------------------------------------------------
# The loop


def phase_plan(cfg: Config) -> list[tuple[str, int]]:
    """[(phase, epochs)] in order, skipping phases with 0 epochs."""
    return [(p, n) for p, n in (("head", cfg.num_epochs), ("fine_tune", cfg.fine_tune_epochs)) if n > 0]


@dataclasses.dataclass
class TrainingRun:
    """What a run sets up once, before its first epoch: the data, the model, where its files go."""
    cfg: Config
    max_images_per_class: int | None
    strategy: tf.distribute.Strategy
    chief: bool
    jit: bool
    files: checkpoints.RunFiles
    best_path: Path
    last_path: Path
    perf_dir: Path
    ckpt_dir: Path
    batch: int
    class_weight: dict | None
    train_files: datasets.SplitFiles  # listed and checked once: every epoch's dataset feeds these
    train_info: datasets.DatasetInfo
    val_files: datasets.SplitFiles
    val_ds: tf.data.Dataset
    val_info: datasets.DatasetInfo
    plan: list[tuple[str, int]]
    model: keras.Model
    tensorboard: tensorboard_log.TensorBoardLog | None = None  # set by resume_state (its folder names the config)
    versions: dict | None = None  # library_versions(), set by resume_state (versions.json, the model card)

    @property
    def total_epochs(self) -> int:
        return sum(n for _, n in self.plan)

    def train_data(self, epoch: int):
        return epoch_dataset(self.cfg, epoch, self.batch, self.train_files)


def epoch_dataset(cfg: Config, epoch: int, batch: int, files: datasets.SplitFiles):
    """The training split for one epoch (augmentation seeded by seed + epoch), sharded by data."""
    seeded = Config(cfg, seed=cfg.seed + epoch)
    ds, info = datasets.make_dataset(files, seeded, training=True, batch_size=batch, one_hot=True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options), info


def train(cfg: Config, max_images_per_class: int | None = None, restart: bool = False,
          dry_run: bool = False, calibrate: bool = False, log=print) -> dict:
    """Train as configured; returns the summary printed as the final JSON line. calibrate: then fit the best
    model's temperature on val and write its model card (train.py's last step, calibration_step.after_training)."""
    run = prepare(cfg, max_images_per_class, log)
    if dry_run:
        return {"dry_run": True, "train_images": run.train_info.num_images, "val_images": run.val_info.num_images,
                "steps_per_epoch": run.train_info.steps_per_epoch, "epochs": run.total_epochs,
                "parameters": model_lib.count_params(run.model)[1]}
    if run.total_epochs == 0:
        raise UserError("nothing to train: num_epochs and fine_tune_epochs are both 0")
    done = None if restart or not run.chief else finished_state(run, calibrate)
    if done is not None:  # nothing is written, not even the config copies: a finished run changes nothing
        log(f"nothing left to do: {run.ckpt_dir} holds a finished run of {done['epoch']} epochs and its outputs "
            f"are in place, unchanged (--restart trains again)")
        return summarize(run, done, trained=False) | (
            {"temperature": card.read_card(run.best_path)["calibration"]["temperature"]} if calibrate else {})
    state = resume_state(run, restart)
    resumed_from = state["epoch"]  # epochs an earlier run finished; the model built by prepare has none
    if resumed_from >= run.total_epochs:
        log(f"nothing left to do: {run.ckpt_dir} holds a finished run of {resumed_from} epochs; completing "
            f"its outputs (--restart trains again)")
    epoch = 0  # global epochs finished
    for phase, phase_epochs in run.plan:
        if resumed_from < epoch + phase_epochs:
            state = train_phase(run, state, phase, epoch, phase_epochs, resumed_from, log)
        epoch += phase_epochs
    if run.chief and state["rows"]:
        plot_history(state["rows"], run.perf_dir / "loss_accuracy_plot.png")
    summary = summarize(run, state, trained=state["epoch"] > resumed_from)
    if calibrate and run.chief and summary["best_epoch"]:
        summary["temperature"] = calibration_step.after_training(run, summary, log)["temperature"]
    return summary


def finished_state(run: TrainingRun, calibrate: bool) -> dict | None:
    """The committed state of a finished run of this config whose outputs are all as it left them (the models,
    training_log.csv, and with `calibrate` the calibrated model and its card); None otherwise (also when a kill
    after the last commit or during the calibration left work to complete)."""
    state = run.files.load_state(config_fingerprint(run.cfg, run.max_images_per_class))
    if state is None or state["epoch"] < run.total_epochs or not run.files.published(state, best=not calibrate):
        return None
    return state if not calibrate or calibration_step.is_current(run.best_path, state) else None


def prepare(cfg: Config, max_images_per_class: int | None, log) -> TrainingRun:
    """Set the precision and strategy, check the output folders, build the datasets and the model; log both."""
    mixed, jit = resolve_switch(cfg.mixed_precision), resolve_switch(cfg.xla)
    if mixed:
        keras.mixed_precision.set_global_policy("mixed_float16" if has_gpu() else "mixed_bfloat16")
    strategy = make_strategy(cfg.strategy)
    chief = is_chief()
    perf_dir, ckpt_dir = Path(cfg.performance_dir), Path(cfg.checkpoint_dir)
    best_path, last_path = Path(cfg.model_save_path), last_model_path(cfg)
    if chief:  # before any work: a folder that cannot be written fails now, not after the first epoch
        for folder, key in ((best_path.parent, "model_save_path"), (ckpt_dir, "checkpoint_dir"),
                            (perf_dir, "performance_dir")):
            paths.check_writable(folder, key)
    train_files = datasets.read_split(Path(cfg.data_path) / "train", cfg, max_images_per_class)
    val_files = datasets.read_split(Path(cfg.data_path) / "val", cfg, max_images_per_class)
    class_weight = (scanning.compute_class_weights(train_files.class_counts(), cfg.class_names)
                    if cfg.class_weighting == "auto" else None)  # the images trained on, after any limit
    replicas = strategy.num_replicas_in_sync
    batch = cfg.train_batch_size * replicas
    _, train_info = epoch_dataset(cfg, 0, batch, train_files)
    val_ds, val_info = datasets.make_dataset(val_files, cfg, training=False)
    with strategy.scope():
        model = model_lib.build_model(cfg)
    run = TrainingRun(cfg, max_images_per_class, strategy, chief, jit,
                      checkpoints.RunFiles(ckpt_dir, best_path, last_path, perf_dir / "training_log.csv"),
                      best_path, last_path, perf_dir, ckpt_dir, batch, class_weight,
                      train_files, train_info, val_files, val_ds, val_info, phase_plan(cfg), model)
    steps = train_info.steps_per_epoch
    log(f"data: {run.train_info.num_images} train images ({steps} steps of {run.batch}), {val_info.num_images} "
        f"val images; skipped unreadable: {run.train_info.num_skipped + val_info.num_skipped}")
    log(f"model: ResNet50 ({'pretrained: ' + str(cfg.weights) if cfg.weights else 'random init'}), "
        f"{model_lib.count_params(model)[1]:,} parameters; plan: "
        + ", ".join(f"{p} {n} epochs" for p, n in run.plan)
        + f"; strategy {cfg.strategy} ({replicas} replica{'s' if replicas > 1 else ''}), "
          f"mixed precision {'on' if mixed else 'off'}, XLA {'on' if jit else 'off'}")
    return run


def resume_state(run: TrainingRun, restart: bool) -> dict:
    """The committed state of an earlier run of this config (or a fresh one), with what a kill after its last
    commit left undone completed; the run's config and versions written beside its outputs."""
    files, best_path, perf_dir = run.files, run.best_path, run.perf_dir
    if run.chief:
        files.remove_stale_temps({best_path.parent: {best_path.name, run.last_path.name,
                                                     _config_copy(best_path).name},
                                  perf_dir: {*PERFORMANCE_FILES}})
        if restart:
            own_outputs = {best_path: best_path.name, run.last_path: run.last_path.name,
                           _config_copy(best_path): _config_copy(best_path).name,
                           **{perf_dir / name: name for name in PERFORMANCE_FILES}}
            files.clear({name for path, name in own_outputs.items()
                         if path.parent.resolve() == run.ckpt_dir.resolve()})
    fingerprint = config_fingerprint(run.cfg, run.max_images_per_class)
    saved = None if restart else files.load_state(fingerprint)
    state = saved or {"epoch": 0, "best": None, "best_epoch": None, "checkpoint": None, "last_model": None,
                      "best_model": None, "rows": [], "random_states": {}}
    state["fingerprint"] = fingerprint
    run.tensorboard = tensorboard_log.TensorBoardLog(perf_dir / "tensorboard", tensorboard_log.run_name(
        best_path, fingerprint), run.cfg.class_names)
    run.versions = library_versions()
    if run.chief:
        run.tensorboard.prune(state["epoch"])  # an epoch written but never committed is trained again
        run.tensorboard.write_hparams(run.cfg)
        if saved:
            files.publish(saved)
            files.prune(saved)
        files.check_disk(model_lib.count_params(run.model)[1], run.cfg.optimizer)
        perf_dir.mkdir(parents=True, exist_ok=True)
        atomic.write_text(perf_dir / "train_config.yaml", run.cfg.to_yaml())
        atomic.write_text(_config_copy(best_path), run.cfg.to_yaml())
        atomic.write_text(perf_dir / "versions.json", json.dumps(run.versions, indent=2) + "\n")
    return state


def phase_model(run: TrainingRun, state: dict, phase: str, phase_start: int, resumed_from: int, log) -> keras.Model:
    """The model compiled for `phase`: the one in memory, or the checkpoint of the earlier run this one resumes
    (`resumed_from` epochs; inside the phase: model and optimizer as saved; at its start: the weights only),
    with its dropout states."""
    steps = run.train_info.steps_per_epoch
    checkpoint = run.ckpt_dir / state["checkpoint"] if state["checkpoint"] else None
    with run.strategy.scope():
        model = run.model
        if resumed_from > phase_start:
            model = load_checkpoint(checkpoint, compile=True)
            log(f"resuming {phase} from epoch {resumed_from} ({checkpoint})")
        else:
            if resumed_from == phase_start > 0:
                model = load_checkpoint(checkpoint, compile=False)
                log(f"resuming at the start of {phase} from epoch {resumed_from}")
            compile_model(model, run.cfg, phase, steps)
        if resumed_from >= max(phase_start, 1):  # loaded from the checkpoint: its dropout states too
            restore_random_states(model, state.get("random_states", {}))
    return model


def train_phase(run: TrainingRun, state: dict, phase: str, phase_start: int, phase_epochs: int,
                resumed_from: int, log) -> dict:
    """Train the epochs of one phase that are not done yet; each epoch's files are committed as it ends.
    Returns the state after the phase's last epoch."""
    model = run.model = phase_model(run, state, phase, phase_start, resumed_from, log)
    with run.strategy.scope():
        run_epoch = TrainEpoch(model, run.strategy, run.cfg, run.class_weight, run.jit)
    epoch = max(state["epoch"], phase_start)
    while epoch < phase_start + phase_epochs:
        label = f"epoch {epoch + 1}/{run.total_epochs} ({phase})"
        row, val, tb = train_epoch(run, run_epoch, epoch, phase, label)
        epoch += 1
        score = monitor_value(run.cfg, val)
        improved = state["best"] is None or score > state["best"]
        log(f"{label}: loss {row['loss']:.4f} acc {row['accuracy']:.4f} | val loss {row['val_loss']:.4f} "
            f"acc {row['val_accuracy']:.4f} macro-F1 {row['val_macro_f1']:.4f} | lr {row['learning_rate']} | "
            f"{row['images_per_s']} img/s{' | best so far, saved' if improved else ''}")
        names = run.files.save_epoch(model, epoch, improved, state["best_model"]) if run.chief else {}
        state = {**state, **names, "epoch": epoch, "rows": [*state["rows"], row],
                 "random_states": random_states(model)}
        if improved:
            state.update(best=score, best_epoch=epoch)
        if run.chief:
            run.tensorboard.write_epoch(row, tb, run.train_info.steps_per_epoch)  # before the commit: see prune
            run.files.commit(state)
            run.files.publish(state)
            run.files.prune(state)
    return state


def train_epoch(run: TrainingRun, run_epoch: TrainEpoch, epoch: int, phase: str,
                label: str) -> tuple[dict, dict, tensorboard_log.EpochLog]:
    """One epoch of training, then the val split: (the log row, the val metrics, what TensorBoard shows of it).
    A NaN val loss stops the run."""
    ds, info = run.train_data(epoch)
    lr = current_lr(run_epoch.model)
    start = time.perf_counter()
    result = run_epoch(ds, info.steps_per_epoch, label)
    seconds = time.perf_counter() - start
    y_val, p_val = predict_probs(run_epoch.model, run.val_ds)
    if not np.isfinite(p_val).all():
        raise UserError(f"validation loss became nan after {label}: the model diverged; lower the learning "
                        f"rate (now {lr:.2g}); nothing of this epoch was saved (the last finished epoch "
                        f"is kept)")
    val = classification_metrics(y_val, p_val, run.cfg.class_names)
    row = {"epoch": epoch + 1, "phase": phase, "loss": round(result.loss, 5), "accuracy": round(result.accuracy, 5),
           "macro_f1": round(result.macro_f1, 5), "val_loss": round(val["loss"], 5),
           "val_accuracy": round(val["accuracy"], 5), "val_macro_f1": round(val["macro_f1"], 5),
           "learning_rate": f"{lr:.3g}", "images_per_s": round(info.num_images / seconds, 2),
           "seconds": round(seconds, 1)}
    return row, val, tensorboard_log.EpochLog(result.step_losses, confusion_matrix(y_val, p_val.argmax(axis=1),
                                                                                   len(run.cfg.class_names)))


def summarize(run: TrainingRun, state: dict, trained: bool) -> dict:
    """The final JSON line: the best epoch's val figures, the data, the speed."""
    rows = state["rows"]
    best_row = next((r for r in rows if int(r["epoch"]) == state["best_epoch"]), rows[-1] if rows else {})
    return {"model": str(run.best_path), "best_epoch": state["best_epoch"], "monitor": run.cfg.monitor,
            "best_val_accuracy": float(best_row.get("val_accuracy", "nan")),
            "best_val_macro_f1": float(best_row.get("val_macro_f1", "nan")), "epochs": state["epoch"],
            "train_images": run.train_info.num_images, "val_images": run.val_info.num_images,
            "images_per_s": float(rows[-1]["images_per_s"]) if rows else None, "chief": run.chief,
            "train_seconds": round(sum(float(r["seconds"]) for r in rows), 1) if rows else None,
            # Sum of |trainable weights|: equal on every worker of a distributed run.
            "weights_checksum": (round(float(sum(np.abs(w.numpy()).sum() for w in run.model.trainable_weights)), 3)
                                 if trained else None)}
