"""Training learns: on a few real images the loss falls, the weights move, the best model is the best epoch;
class weights and label smoothing reach the loss as their formulas say; the optimizer is the one configured.

Each check compares with an independent reference (a fresh model, the log, evaluate.py, numpy formulas), so a
train step that never applies its gradients, an ignored class weight or a best model saved at the wrong epoch
fails here.
"""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from support import as_set_args, link_organized, tiny_config

from emotion.common import config

NO_AUGMENT = ["augment_flip=false", "augment_rotation=0.0", "augment_shift=0.0", "augment_zoom=0.0",
              "augment_contrast=0.0"]


@pytest.fixture(scope="module")
def overfit_run(tmp_path_factory):
    """Six epochs of Adam on 16 real images (2 per class), one full batch per step, no augmentation or dropout:
    a model that learns overfits them. monitor=val_loss, so the best epoch is the one with the lowest val loss."""
    from emotion.training import trainer

    tmp = tmp_path_factory.mktemp("overfit")
    link_organized(tmp / "data", per_class=2, splits=("train", "val"))
    overrides = tiny_config(tmp, "num_epochs=6", "fine_tune_epochs=0", "optimizer=adam", "lr_schedule=constant",
                            "learning_rate=1e-3", "train_batch_size=16", "label_smoothing=0.0",
                            "class_weighting=none", "dropout=0.0", "dense_units=0", "monitor=val_loss", *NO_AUGMENT)
    cfg = config.load_config(None, overrides)
    summary = trainer.train(cfg, log=lambda *a: None)
    with (tmp / "performance" / "training_log.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    return tmp, cfg, overrides, summary, rows


def test_training_loss_falls_on_a_few_real_images(overfit_run):
    _, _, _, summary, rows = overfit_run
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    losses = [float(r["loss"]) for r in rows]
    # The same 16 images in one batch every epoch: without updates the loss would stay where it started.
    assert losses[-1] < 0.5 * losses[0], losses
    assert min(losses[3:]) < 0.5 * min(losses[:2]), losses
    assert float(rows[-1]["accuracy"]) >= 0.75, rows[-1]


def test_trained_weights_move_away_from_a_fresh_model(overfit_run):
    from emotion.model import network as model_lib

    tmp, cfg, _, _, _ = overfit_run
    fresh = model_lib.build_model(cfg)  # seeded by cfg.seed: the weights training started from
    trained = model_lib.load_model(tmp / "models" / "model_last.h5")
    assert [w.name for w in fresh.trainable_weights] == [w.name for w in trained.trainable_weights]
    moved = [float(np.abs(a.numpy() - b.numpy()).max()) for a, b in zip(fresh.trainable_weights,
                                                                        trained.trainable_weights)]
    assert min(moved) > 0, "some trainable weights never changed"
    head = trained.get_layer("logits").kernel.numpy() - fresh.get_layer("logits").kernel.numpy()
    assert np.abs(head).max() > 1e-3


def _val_loss_by_evaluate(tmp, overrides, model_path) -> float:
    import evaluate

    out = tmp / f"eval-{model_path.stem}"
    assert evaluate.main(["--split", "val", *as_set_args(overrides + [f"model_save_path={model_path}",
                                                                    f"performance_dir={out}"])]) == 0
    return json.loads((out / "evaluation_metrics.json").read_text())["loss"]


def test_best_model_is_the_best_epoch_by_monitor(overfit_run):
    tmp, _, overrides, summary, rows = overfit_run
    val_losses = [float(r["val_loss"]) for r in rows]
    best_epoch = int(np.argmin(val_losses)) + 1
    assert summary["best_epoch"] == best_epoch and summary["monitor"] == "val_loss"
    # The saved files hold the weights of those epochs: evaluate.py's loss on val equals the logged one.
    best = _val_loss_by_evaluate(tmp, overrides, tmp / "models" / "model.h5")
    last = _val_loss_by_evaluate(tmp, overrides, tmp / "models" / "model_last.h5")
    assert best == pytest.approx(min(val_losses), abs=2e-4)
    assert last == pytest.approx(val_losses[-1], abs=2e-4)
    if best_epoch != len(rows):
        assert abs(best - last) > 1e-3  # the two files really are different epochs


# ------------------------------------------------------------------------------------------------
# The train step on a small model: what reaches the loss


def _small_model(n_classes=8, seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(n_classes, activation="softmax")])
    # Spread logits: per-example losses differ clearly from one another.
    model.layers[0].kernel.assign(np.random.default_rng(seed).normal(0, 2.0, (6, n_classes)).astype("float32"))
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    model.optimizer.build(model.trainable_variables)
    return model


def _batch(labels, seed=1):
    x = np.random.default_rng(seed).normal(0, 1, (len(labels), 6)).astype("float32")
    y = np.eye(8, dtype="float32")[labels]
    return x, y


def _reference_losses(model, x, y, smoothing):
    """Categorical cross-entropy with label smoothing, from its formula: y' = y (1 - e) + e / K."""
    probs = model(x).numpy().astype(np.float64)
    y_smooth = y * (1 - smoothing) + smoothing / y.shape[1]
    return -(y_smooth * np.log(probs)).sum(axis=1)


def _train_epoch(model, class_weight=None, smoothing=0.0):
    import tensorflow as tf

    from emotion.training import trainer
    cfg = config.load_config(None, [f"label_smoothing={smoothing}"])
    return trainer.TrainEpoch(model, tf.distribute.get_strategy(), cfg, class_weight, jit=False)


def test_class_weights_scale_each_example_loss():
    model = _small_model()
    labels = [0, 1, 2, 0, 3, 4, 0, 7]
    x, y = _batch(labels)
    reference = _reference_losses(model, x, y, 0.0)
    weights = {0: 0.0, 1: 2.0, 2: 1.0, 3: 0.5, 4: 1.0, 5: 1.0, 6: 1.0, 7: 3.0}
    _, loss_sum, _, count, _ = _train_epoch(model, weights).gradients(x, y)
    expected = sum(weights[c] * r for c, r in zip(labels, reference))
    assert float(count) == len(labels)
    assert float(loss_sum) == pytest.approx(expected, rel=1e-5)
    unweighted = float(_train_epoch(model).gradients(x, y)[1])
    assert unweighted == pytest.approx(reference.sum(), rel=1e-5)

    # A class weighted 0 contributes nothing: a batch of it alone moves no weight.
    x0, y0 = _batch([0, 0, 0])
    grads, loss0, _, _, _ = _train_epoch(model, weights).gradients(x0, y0)
    assert float(loss0) == 0.0
    assert all(float(np.abs(g.numpy()).max()) == 0.0 for g in grads)
    grads, _, _, _, _ = _train_epoch(model, {**weights, 0: 1.0}).gradients(x0, y0)
    assert max(float(np.abs(g.numpy()).max()) for g in grads) > 1e-3


@pytest.mark.parametrize("smoothing", [0.1, 0.3])
def test_label_smoothing_changes_the_loss_as_the_formula_says(smoothing):
    model = _small_model()
    labels = [0, 1, 2, 3, 4, 5, 6, 7]
    x, y = _batch(labels)
    loss_sum = float(_train_epoch(model, smoothing=smoothing).gradients(x, y)[1])
    assert loss_sum == pytest.approx(_reference_losses(model, x, y, smoothing).sum(), rel=1e-5)
    assert abs(loss_sum - _reference_losses(model, x, y, 0.0).sum()) > 0.1  # the smoothing is not a no-op


def test_train_epoch_applies_the_update():
    """One step of plain SGD(0.1) moves each weight by -0.1 x the mean gradient, computed here with a tape."""
    import tensorflow as tf

    model = _small_model()
    x, y = _batch([0, 1, 2, 3])
    before = [w.numpy().copy() for w in model.trainable_weights]
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(-tf.reduce_sum(y * tf.math.log(model(x)), axis=1))
    expected = [b - 0.1 * g.numpy() for b, g in zip(before, tape.gradient(loss, model.trainable_weights))]
    ds = tf.data.Dataset.from_tensors((x, y))
    _train_epoch(model)(ds, 1, "test")
    for got, want in zip(model.trainable_weights, expected):
        np.testing.assert_allclose(got.numpy(), want, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# Optimizers and schedules: what the config names


def _optimizer(*overrides, lr=1e-3, steps=100):
    from emotion.training import trainer
    return trainer.make_optimizer(config.load_config(None, list(overrides)), lr, steps)


def test_sgd_is_nesterov_momentum_0_9():
    import keras
    opt = _optimizer("optimizer=sgd", "lr_schedule=constant")
    assert type(opt) is keras.optimizers.SGD
    assert opt.momentum == 0.9 and opt.nesterov
    assert float(opt.learning_rate) == pytest.approx(1e-3)


def test_adamw_decays_weights_and_adam_does_not():
    import keras
    adamw = _optimizer("optimizer=adamw", "lr_schedule=constant")
    adam = _optimizer("optimizer=adam", "lr_schedule=constant")
    assert type(adamw) is keras.optimizers.AdamW and adamw.weight_decay == pytest.approx(1e-4)
    assert type(adam) is keras.optimizers.Adam and not adam.weight_decay


def test_cosine_schedule_decays_from_the_rate_to_alpha_over_the_phase():
    opt = _optimizer("optimizer=adam", "lr_schedule=cosine", lr=2e-3, steps=40)
    schedule = opt.learning_rate if callable(opt.learning_rate) else opt._learning_rate
    values = [float(schedule(s)) for s in (0, 10, 20, 40, 60)]
    assert values[0] == pytest.approx(2e-3)
    assert values[2] == pytest.approx(2e-3 * (0.01 + 0.99 * 0.5), rel=1e-5)  # half way: cosine at pi/2
    assert values[3] == pytest.approx(2e-3 * 0.01, rel=1e-5) and values[4] == pytest.approx(values[3])
    assert values[0] > values[1] > values[2] > values[3]
    constant = _optimizer("optimizer=adam", "lr_schedule=constant", lr=2e-3, steps=40)
    assert float(constant.learning_rate) == pytest.approx(2e-3)


def test_compile_model_uses_each_phase_rate_and_length():
    """Phase 1 decays learning_rate over steps x num_epochs, phase 2 fine_tune_learning_rate over its own."""
    from emotion.model import network as model_lib
    from emotion.training import trainer

    cfg = config.load_config(None, tiny_config(config.REPO_ROOT / "unused", "learning_rate=1e-3",
                                               "fine_tune_learning_rate=1e-5", "num_epochs=3",
                                               "fine_tune_epochs=2", "lr_schedule=cosine", "optimizer=sgd"))
    model = model_lib.build_model(cfg)
    for phase, lr, epochs in (("head", 1e-3, 3), ("fine_tune", 1e-5, 2)):
        trainer.compile_model(model, cfg, phase, steps_per_epoch=5)
        opt = model.optimizer
        schedule = opt._learning_rate
        assert float(schedule(0)) == pytest.approx(lr)
        assert float(schedule(5 * epochs)) == pytest.approx(lr * 0.01, rel=1e-5)
        assert float(schedule(5 * epochs - 1)) > lr * 0.01 * 1.0001
        assert opt.momentum == 0.9
        assert model.loss is None  # only the optimizer: TrainEpoch computes the loss (label smoothing included)


def test_seed_states_are_every_layer_s_seed_generators_nested_models_included():
    """What random_states saves and restore_random_states sets (dropout's masks, for an exact resume), found
    through public Keras (layer.variables beyond layer.weights): every SeedGenerator, none twice, nothing else."""
    import keras

    from emotion.model import network as model_lib
    from emotion.training import trainer

    model = model_lib.build_model(config.load_config(None, tiny_config(config.REPO_ROOT / "unused", "dropout=0.3")))
    head = model.get_layer("head_dropout")
    states = dict(trainer.seed_states(model))
    assert list(states) == ["head_dropout/0"] and states["head_dropout/0"] is head.seed_generator.state, (
        f"Keras changed where a layer keeps its SeedGenerator states (found {list(states)}): trainer.seed_states "
        f"must find them, or a resumed run is not the uninterrupted one")

    inner = keras.Sequential([keras.Input((6,)), keras.layers.GaussianNoise(0.1, name="noise"),
                              keras.layers.Dense(4, name="dense"), keras.layers.Dropout(0.5, name="inner_drop")])
    inputs = keras.Input((6,))
    nested = keras.Model(inputs, keras.layers.Dropout(0.5, name="outer_drop")(inner(inputs)))
    inner.trainable = False  # frozen: its weights move to non_trainable_weights, still not seed states
    states = dict(trainer.seed_states(nested))
    expected = {"noise/0": inner.get_layer("noise").seed_generator.state,
                "inner_drop/0": inner.get_layer("inner_drop").seed_generator.state,
                "outer_drop/0": nested.get_layer("outer_drop").seed_generator.state}
    assert states.keys() == expected.keys() and all(states[k] is v for k, v in expected.items()), (
        f"trainer.seed_states found {list(states)}, not the SeedGenerators {list(expected)}")
    saved = trainer.random_states(nested)
    trainer.restore_random_states(nested, {k: [7, 8] for k in saved})
    assert trainer.random_states(nested) == {k: [7, 8] for k in saved}
