"""src/export.py without the module model of test_export.py: the command line, bad inputs, the export without the
TF.js converter, and BatchNorm folding on a fresh model. (A module of its own, so that pytest-xdist runs these
beside test_export.py's long export instead of after it.)"""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from no_tfjs import env_without_tfjs
from support import (YOLO_SAMPLE, as_set_args, keras_probs, link_organized, random_batchnorm_model, require, run_script,
                     tfjs_fused_bias_ranks, tiny_config)

import export
from emotion.model import conversion
from emotion.serving import exporting

ALL = exporting.DEFAULT_FORMATS  # what --formats all and no --formats mean


def test_formats_are_parsed_as_the_help_says():
    """--formats LIST: comma-separated, any order, duplicates and spaces ignored, written in canonical order;
    "all" (and no --formats) is the default set; an unknown name is a usage error naming the choices."""
    assert export.parse_args([]).formats == ALL
    assert export.parse_args(["--formats", "all"]).formats == ALL
    assert export.parse_args(["--formats", "tfjs_uint8, saved_model,tfjs_uint8"]).formats == ["saved_model",
                                                                                            "tfjs_uint8"]
    assert export.parse_args(["--formats", "tfjs_float16"]).formats == ["tfjs_float16"]
    for bad in ("tflite", ","):
        with pytest.raises(ValueError, match="choose from saved_model, tflite_float32"):
            exporting.parse_formats(bad)
    result = run_script("export.py", "--formats", "saved_model,onnx", timeout=120)
    assert result.returncode == 2 and "unknown format(s) onnx; choose from saved_model" in result.stderr


def test_missing_model_is_one_line(tmp_path):
    result = run_script("export.py", *as_set_args(tiny_config(tmp_path)), timeout=120)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(tmp_path / "models" / "model.h5") in lines[0] and "python src/train.py" in lines[0]


def test_read_only_output_folders_are_refused_before_the_model_loads(tmp_path, read_only_folder):
    """The model file is a stand-in: the refusal must come before it is read (and before TensorFlow loads)."""
    model = tmp_path / "models" / "model.h5"
    model.parent.mkdir()
    model.write_bytes(b"not read")
    for args, expected in (
            (["--output", str(read_only_folder / "export")],
             f"error: --output folder {read_only_folder / 'export'} is not writable"),
            (["--set", f"performance_dir={read_only_folder / 'performance'}", "--output", str(tmp_path / "out")],
             f"error: performance_dir {read_only_folder / 'performance'} is not writable")):
        result = run_script("export.py", *as_set_args(tiny_config(tmp_path)), *args, timeout=120)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith(expected), result.stderr
        assert list(read_only_folder.iterdir()) == [] and not (tmp_path / "out").exists()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["models", "read-only"]

TFJS_MISSING = ("the TF.js converter is not installed "
                "(pip install -r requirements-tfjs.txt; Linux, macOS or WSL)")


def test_without_the_tfjs_converter_the_other_formats_are_exported(tmp_path):
    """tensorflowjs is an optional extra: without it (import blocked in the subprocess), the TF.js formats asked
    for are skipped with one line saying why and how to get them, and the others are exported and reported."""
    require(YOLO_SAMPLE)
    from emotion.common.config import load_config
    from emotion.model import network as model_lib
    overrides = tiny_config(tmp_path)
    cfg = load_config(None, overrides)
    link_organized(tmp_path / "data", per_class=1, splits=("val",))
    model_lib.save_model_atomic(random_batchnorm_model(cfg), cfg.model_save_path)
    out = tmp_path / "out"
    result = run_script("export.py", *as_set_args(overrides), "--output", str(out), "--latency-runs", "1",
                        "--formats", "saved_model,tfjs_float32,tfjs_uint8", "--no-browser",
                        env=env_without_tfjs(tmp_path / "no_tfjs"), timeout=900)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line for line in lines if "TF.js" in line] == [f"skipped tfjs_float32, tfjs_uint8: {TFJS_MISSING}"]
    assert any(line.startswith("exporting ") and line.endswith(f" as saved_model to {out}") for line in lines)
    assert json.loads(lines[-1])["formats"] == ["saved_model"]
    assert sorted(p.name for p in out.iterdir()) == ["saved_model"]
    with open(tmp_path / "performance" / "export_report.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["format"] == "saved_model" and row["within_threshold"] == "True"
    assert float(row["max_abs_prob_diff_vs_keras"]) <= 1e-4 and 0 <= float(row["val_accuracy"]) <= 1


def test_tfjs_formats_only_without_the_converter_is_one_line(tmp_path):
    """Nothing left to export: one error line before the model is read (a stand-in file) and nothing written."""
    model = tmp_path / "models" / "model.h5"
    model.parent.mkdir()
    model.write_bytes(b"not read")
    result = run_script("export.py", *as_set_args(tiny_config(tmp_path)), "--output", str(tmp_path / "out"),
                        "--formats", "tfjs_uint8", env=env_without_tfjs(tmp_path / "no_tfjs"), timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: cannot export tfjs_uint8: {TFJS_MISSING}"]
    assert not (tmp_path / "out").exists() and not (tmp_path / "performance").exists()

def test_fold_batch_norms_on_an_untrained_model_built_in_this_process(tmp_path):
    """Two traps of a fresh model: the clone renames the backbone's nested input layer (the model was not loaded
    from a file), and every folded bias is zero, which the converter's constant folding would remove, fusing
    the residual Add in as a rank-4 conv bias that TF.js's WASM backend rejects (bench_web.py's random init)."""
    from emotion.common.config import load_config
    from emotion.model import network as model_lib
    model = model_lib.build_model(load_config(None, ["weights=null"]))
    x = np.random.default_rng(0).uniform(0, 255, (4, *model.input_shape[1:])).astype(np.float32)
    folded, count = conversion.fold_batch_norms(model)
    assert count == 53
    np.testing.assert_allclose(keras_probs(folded, x), keras_probs(model, x), atol=1e-5)
    exporting.convert_tfjs(conversion.export_saved_model(folded, tmp_path / "saved"), tmp_path / "tfjs", "uint8")
    assert tfjs_fused_bias_ranks(tmp_path / "tfjs" / "model.json") == {1: 53}


def test_fold_batch_norms_folds_only_a_batch_norm_that_alone_reads_its_convolution():
    """The rule, read from Keras's public graph (functional get_config()'s inbound nodes, a Sequential's order):
    folded where a BatchNormalization is called once on a biased Conv2D's output that nothing else reads, inside
    nested models and Sequentials too; not where the convolution has another reader (a layer or the model's
    output), no bias, or more than one call. The output stays the model's."""
    import keras

    def conv(name, **kwargs):
        return keras.layers.Conv2D(4, 3, padding="same", name=name, **kwargs)

    def bn(name):
        return keras.layers.BatchNormalization(name=name)

    keras.utils.set_random_seed(0)
    inner_in = keras.Input((8, 8, 4))
    inner = keras.Model(inner_in, bn("inner_bn")(conv("inner_conv")(inner_in)), name="inner")
    sequential = keras.Sequential([keras.Input((8, 8, 4)), conv("seq_conv"), bn("seq_bn"),
                                   conv("seq_conv_nobias", use_bias=False), bn("seq_bn_nobias")], name="seq")
    inputs = keras.Input((8, 8, 3))
    x = bn("fold_bn")(conv("fold_conv")(inputs))
    read_twice = conv("read_twice_conv")(x)
    x = keras.layers.Add()([bn("read_twice_bn")(read_twice), read_twice])
    x = sequential(inner(x))
    shared = conv("shared_conv")
    x = bn("shared_bn")(shared(x))
    x = shared(x)
    output_conv = conv("output_conv")(x)
    model = keras.Model(inputs, [bn("output_bn")(output_conv), output_conv])
    rng = np.random.default_rng(0)
    for layer in model.layers + inner.layers + sequential.layers:  # batch norms that change their input
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([rng.uniform(0.5, 2, 4).astype(np.float32) for _ in range(4)])

    folds = conversion._foldable(model)
    assert sorted(conv.name for conv in folds.values()) == ["fold_conv", "inner_conv", "seq_conv"], (
        f"fold_batch_norms found {sorted(conv.name for conv in folds.values())}: has Keras changed the functional "
        f"get_config() format (layers' inbound_nodes, keras_history) that conversion._layer_graphs reads?")
    folded, count = conversion.fold_batch_norms(model)
    assert count == 3
    x = np.random.default_rng(1).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    for got, expected in zip(folded(x), model(x)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-4, atol=1e-3)


# ---- the export's files are one set


def _tiny_export_setup(tmp_path, seed: int = 0) -> list[str]:
    """A small model file and an 8-image val split in tmp_path; export.py's arguments for it (no browser)."""
    from support import tiny_model

    from emotion.model import network
    link_organized(tmp_path / "data", per_class=1, splits=("val",))
    network.save_model_atomic(tiny_model((32, 32, 3), seed=seed), tmp_path / "models" / "model.h5")
    return ["--formats", "saved_model,tflite_float32", "--latency-runs", "1", *as_set_args(tiny_config(tmp_path))]


def test_an_export_never_replaces_a_folder_it_did_not_write(tmp_path):
    """--output DIR where DIR/saved_model is a user's folder: refused before any work, the folder untouched."""
    from support import snapshot

    from emotion.common.errors import UserError
    args = _tiny_export_setup(tmp_path)
    mine = tmp_path / "mine" / "saved_model"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("a user's notes")
    before = snapshot(tmp_path / "mine")
    with pytest.raises(UserError) as exc:
        export.main(["--output", str(tmp_path / "mine"), *args])
    assert str(exc.value) == (f"{mine} was not written by this project (it has no .written-by-emotion-recognition "
                              f"file): move it away or choose another output folder; nothing was written")
    assert snapshot(tmp_path / "mine") == before


def test_an_export_killed_midway_leaves_the_previous_set_whole(tmp_path, monkeypatch, capsys):
    """A retrained model's export that fails after its SavedModel was written publishes nothing: the folder and
    the report still describe the previous model, with no temporary file left; the next export replaces all."""
    from support import snapshot, tiny_model

    from emotion.model import network
    args = _tiny_export_setup(tmp_path)
    assert export.main(args) == 0
    out, report = tmp_path / "models" / "export", tmp_path / "performance" / exporting.REPORT_NAME
    first = snapshot(out), report.read_bytes()

    network.save_model_atomic(tiny_model((32, 32, 3), seed=1), tmp_path / "models" / "model.h5")  # retrained

    def killed(*_args, **_kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(exporting, "_export_tflite", killed)  # after the new SavedModel is written
    with pytest.raises(KeyboardInterrupt):
        export.main(args)
    assert (snapshot(out), report.read_bytes()) == first

    monkeypatch.undo()
    assert export.main(args) == 0
    assert snapshot(out) != first[0] and report.read_bytes() != first[1]
    assert sorted(p.name for p in out.iterdir()) == ["emotion_float32.tflite", "saved_model"]  # no temp, no journal
    assert (out / "saved_model" / ".written-by-emotion-recognition").is_file()  # a later export may replace it
