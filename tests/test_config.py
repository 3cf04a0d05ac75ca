"""config.py and cli.py: every key validated, overrides typed, one-line errors, fast --help."""
from __future__ import annotations

import codecs
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO, link_organized, run_script

from emotion.common import config, errors


def test_default_config_loads_and_matches_schema():
    cfg = config.load_config()
    assert set(cfg) == set(config.SCHEMA)
    assert cfg.class_names == ["anger", "contempt", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    assert cfg.input_shape == [96, 96, 3]
    assert cfg.weights in ("imagenet", None) or Path(cfg.weights).is_absolute()
    assert isinstance(cfg.learning_rate, float)
    # Relative paths resolve against the config file's folder (the repo root here).
    assert cfg.data_path == str(REPO / "data")
    assert cfg.model_save_path == str(REPO / "models" / "emotion_detection_model.h5")


def test_every_key_has_a_comment_in_config_yaml():
    for line in (REPO / "config.yaml").read_text().splitlines():
        if re.match(r"^\w+:", line):
            assert "#" in line, f"config.yaml line without a comment: {line}"


@pytest.mark.parametrize("text,expected", [
    ("1e-3", 1e-3), ("3E-4", 3e-4), ("1.0e-5", 1e-5), ("42", 42), ("true", True), ("null", None), ("[1, 2]", [1, 2]),
])
def test_yaml_reads_scientific_floats(text, expected):
    value = config.parse_yaml(text)
    assert value == expected and type(value) is type(expected)


def test_overrides_keep_types_and_resolve_paths(tmp_path):
    cfg_file = tmp_path / "sub" / "my.yaml"
    cfg_file.parent.mkdir()
    cfg_file.write_text((REPO / "config.yaml").read_text())
    cfg = config.load_config(cfg_file, ["learning_rate=1e-4", "train_batch_size=8", "weights=null",
                                        "data_path=elsewhere", "num_epochs=0"])
    assert cfg.learning_rate == pytest.approx(1e-4)
    assert cfg.train_batch_size == 8 and cfg.weights is None and cfg.num_epochs == 0
    assert cfg.data_path == str(tmp_path / "sub" / "elsewhere")
    assert cfg.model_save_path == str(tmp_path / "sub" / "models" / "emotion_detection_model.h5")
    cfg = config.load_config(cfg_file, ["weights=my_weights.h5"])
    assert cfg.weights == str(tmp_path / "sub" / "my_weights.h5")


@pytest.mark.parametrize("override,pattern", [
    ("learning_rat=0.1", r"unknown config key 'learning_rat'.*did you mean 'learning_rate'"),
    ("train_bach_size=4", r"did you mean 'train_batch_size'"),
    ("train_batch_size=abc", r"'train_batch_size' must be an integer from 1 to 65536, got 'abc'"),
    ("train_batch_size=0", r"'train_batch_size' must be an integer from 1 to"),
    ("seed=-1", r"'seed' must be an integer from 0 to 2146483647, got -1 \(from --set seed=-1\)"),
    ("seed=99999999999999999999", r"'seed' must be an integer from 0 to 2146483647, got 99999999999999999999"),
    ("seed=2147483647", r"'seed' must be an integer from 0 to 2146483647"),
    ("num_epochs=100001", r"'num_epochs' must be an integer from 0 to 100000"),
    ("fine_tune_epochs=-1", r"'fine_tune_epochs' must be an integer from 0 to 100000"),
    ("shuffle_buffer=9223372036854775808", r"'shuffle_buffer' must be an integer from 1 to 2147483647"),
    ("cache_max_mb=2147483648", r"'cache_max_mb' must be an integer from 0 to 2147483647"),
    ("class_names={a: 1, a: 2}", r"--set class_names: key 'a' appears twice \(line 1\)"),
    ("train_batch_size=2.5", r"'train_batch_size' must be an integer"),
    ("learning_rate=-1", r"'learning_rate' must be a number > 0"),
    ("learning_rate=fast", r"'learning_rate' must be a number"),
    ("augment_flip=maybe", r"'augment_flip' must be true or false"),
    ("input_shape=[96, 96]", r"'input_shape' must be \[height, width, 3\]"),
    ("class_names=[a, a]", r"'class_names' must be a list of at least 2 distinct"),
    ("monitor=val_f1", r"'monitor' must be one of val_macro_f1 \| val_accuracy \| val_loss"),
    ("noequals", r"--set takes KEY=VALUE"),
])
def test_bad_overrides_name_the_key(override, pattern):
    with pytest.raises(errors.ConfigError, match=pattern) as info:
        config.load_config(None, [override])
    assert "\n" not in str(info.value)
    assert info.value.code == 2


def test_bad_config_files(tmp_path):
    with pytest.raises(errors.ConfigError, match="config file not found"):
        config.load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data_path: [unclosed\n")
    with pytest.raises(errors.ConfigError, match="not valid YAML"):
        config.load_config(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text((REPO / "config.yaml").read_text().replace("num_epochs:", "num_epoch:"))
    with pytest.raises(errors.ConfigError, match=r"unknown config key 'num_epoch' in .*typo.yaml \(did you mean 'num_epochs'"):
        config.load_config(typo)
    partial = tmp_path / "partial.yaml"
    partial.write_text("seed: 1\n")
    with pytest.raises(errors.ConfigError, match="lacks key"):
        config.load_config(partial)


def test_largest_seed_and_epochs_still_fit_int32():
    """The bounds are what training needs: seed + epoch (+ the augmentation layers' seed + 0..4) <= 2**31 - 1."""
    cfg = config.load_config(None, [f"seed={config.SEED_MAX}", f"num_epochs={config.MAX_EPOCHS}",
                                    f"fine_tune_epochs={config.MAX_EPOCHS}"])
    assert cfg.seed + cfg.num_epochs + cfg.fine_tune_epochs + 5 <= 2 ** 31 - 1
    assert config.load_config(None, ["seed=0"]).seed == 0


def _config_text() -> str:
    return (REPO / "config.yaml").read_text(encoding="utf-8")


TWICE_LINE = len(_config_text().splitlines()) + 1  # a "seed: 7" line appended to config.yaml


@pytest.mark.parametrize("name,make,pattern", [
    ("notepad.yaml", lambda p: p.write_bytes(_config_text().encode("utf-16")),  # BOM + UTF-16-LE, as Notepad
     r"is UTF-16 text: save it as UTF-8"),
    ("utf16be.yaml", lambda p: p.write_bytes(codecs.BOM_UTF16_BE + _config_text().encode("utf-16-be")),
     r"is UTF-16 text: save it as UTF-8"),
    ("garbage.yaml", lambda p: p.write_bytes(bytes(range(256)) * 8), r"is not (UTF-8 text|a text file)"),
    ("latin1.yaml", lambda p: p.write_bytes("data_path: ./donn\xe9es\n".encode("latin-1")),
     r"is not UTF-8 text \(byte 17 cannot be read\): pass --config PATH to a YAML file saved as UTF-8"),
    ("nul.yaml", lambda p: p.write_bytes(b"seed: 1\x00\n"), r"is not a text file \(it holds NUL bytes"),
    ("utf16-no-bom.yaml", lambda p: p.write_bytes(_config_text().encode("utf-16-le")),
     r"is not a text file \(it holds NUL bytes: binary, or UTF-16 without a BOM\): pass --config PATH"),
    ("bell.yaml", lambda p: p.write_text("seed: \x07\n"), r"is not valid YAML: special characters are not allowed"),
    ("folder.yaml", lambda p: p.mkdir(), r"is a folder: pass --config PATH to a YAML file"),
    ("fifo.yaml", lambda p: os.mkfifo(p), r"is not a regular file \(a pipe, socket or device\)"),
    ("twice.yaml", lambda p: p.write_text(_config_text() + "seed: 7\n"),
     rf"key 'seed' appears twice \(lines 10 and {TWICE_LINE}\): keep one"),
])
def test_unreadable_config_files_are_one_line(tmp_path, name, make, pattern):
    path = tmp_path / name
    make(path)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(errors.ConfigError, match=pattern) as info:
        config.load_config(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and info.value.code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written beside it


def test_yaml_merge_keys_still_work(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text(_config_text().replace("seed: 42", "base: &b {x: 1}\nseed: {<<: *b, y: 2}"))
    with pytest.raises(errors.ConfigError, match=r"unknown config key 'base'"):  # parsed, then checked
        config.load_config(path)


def test_utf8_bom_is_fine(tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes(codecs.BOM_UTF8 + _config_text().encode("utf-8"))
    cfg, default = config.load_config(path), config.load_config()
    assert cfg.data_path == str(tmp_path / "data")  # relative to the file, as always
    assert {k: v for k, v in cfg.items() if not config.SCHEMA[k].is_path} == \
        {k: v for k, v in default.items() if not config.SCHEMA[k].is_path}


def test_duplicate_keys_refused_at_any_depth(tmp_path):
    path = tmp_path / "nested.yaml"
    path.write_text(_config_text().replace("seed: 42", "seed: {a: 1,\n  a: 2}"))
    with pytest.raises(errors.ConfigError, match=r"nested.yaml: key 'a' appears twice \(lines 10 and 11\)"):
        config.load_config(path)
    path.write_text(_config_text().replace("seed: 42", "seed: 42\n'seed': 43"))  # same key, quoted
    with pytest.raises(errors.ConfigError, match=r"key 'seed' appears twice \(lines 10 and 11\)"):
        config.load_config(path)


# Every script of src/ (the modules with a __main__ block).
SCRIPTS = sorted(p.name for p in (REPO / "src").glob("*.py") if "\nif __name__ == \"__main__\":" in p.read_text())


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_imports_no_heavy_library(script):
    """--help answers before TensorFlow (4-8 s to import), Keras or OpenCV is loaded: checked exactly, from
    Python's own import log, not with a clock (a busy machine would make a timed test flaky)."""
    proc = run_script(script, "--help", env={"PYTHONPROFILEIMPORTTIME": "1"}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "--config" in proc.stdout and "usage:" in proc.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert imported, "PYTHONPROFILEIMPORTTIME logged nothing"
    heavy = {m for m in imported if m.split(".")[0] in ("tensorflow", "keras", "cv2", "matplotlib", "kagglehub")}
    assert not heavy, f"{script} --help imported {sorted(heavy)[:5]}: import them after parsing the arguments"


# The arguments a script cannot run without, so that the config is what fails.
REQUIRED_ARGS = {"predict.py": ["--image_path", "photo.jpg"], "inference.py": ["-v", "clip.avi"]}


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_reject_bad_config_in_one_line(script):
    proc = run_script(script, *REQUIRED_ARGS.get(script, []), "--set", "learning_rat=0.1", timeout=30)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == ["error: unknown config key 'learning_rat' in --set learning_rat=0.1 (did you mean 'learning_rate'?)"]


@pytest.mark.parametrize("make,args,expected", [
    (lambda p: p.write_bytes(_config_text().encode("utf-16")), [],
     "error: config file {path} is UTF-16 text: save it as UTF-8 (in Notepad: Save as, Encoding UTF-8)"),
    (lambda p: p.write_text(_config_text() + "seed: 7\n"), [],
     "error: config file {path}: key 'seed' appears twice (lines 10 and %d): keep one" % TWICE_LINE),
    (lambda p: p.write_text(_config_text()), ["--set", "seed=-1"],
     "error: config key 'seed' must be an integer from 0 to 2146483647, got -1 (from --set seed=-1)"),
    (lambda p: os.mkfifo(p), [],
     "error: config file {path} is not a regular file (a pipe, socket or device): pass --config PATH to a YAML file"),
])
def test_script_reports_a_bad_config_file_in_one_line(tmp_path, make, args, expected):
    path = tmp_path / "my.yaml"
    make(path)
    proc = run_script("evaluate.py", "--config", str(path), *args, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [expected.format(path=path)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my.yaml"]


def _run_without_tf_log_level(script: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    """run_script sets TF_CPP_MIN_LOG_LEVEL=2; these tests need the user's environment without it."""
    return run_script(script, *args, env={"TF_CPP_MIN_LOG_LEVEL": None, **env}, timeout=120)


@pytest.fixture
def broken_model_run(tmp_path):
    """evaluate.py arguments that fail after TensorFlow has loaded: real test images, a model file that is
    not a model."""
    link_organized(tmp_path / "data", per_class=1, splits=("test",))
    model = tmp_path / "model.h5"
    model.write_bytes(b"not an HDF5 file\n" * 64)
    return ["--set", f"data_path={tmp_path / 'data'}", "--set", f"model_save_path={model}",
            "--set", f"performance_dir={tmp_path / 'performance'}"], model


def test_error_after_tensorflow_loaded_is_the_only_line(broken_model_run, tmp_path):
    args, model = broken_model_run
    proc = _run_without_tf_log_level("evaluate.py", *args)
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot load the model {model}:"), proc.stderr
    assert not (tmp_path / "performance").exists()


def test_users_tf_log_level_shows_tensorflow_logging_error_still_last(broken_model_run):
    args, model = broken_model_run
    proc = _run_without_tf_log_level("evaluate.py", *args, TF_CPP_MIN_LOG_LEVEL="0")
    lines = proc.stderr.splitlines()
    assert proc.returncode == 1 and len(lines) > 1, proc.stderr  # TensorFlow's own lines are back
    assert lines[-1].startswith(f"error: cannot load the model {model}:")


def test_verbose_shows_tensorflow_logging_error_still_last(broken_model_run):
    args, model = broken_model_run
    proc = _run_without_tf_log_level("evaluate.py", "--verbose", *args)
    lines = proc.stderr.splitlines()
    assert proc.returncode == 1 and len(lines) > 1, proc.stderr  # TensorFlow's own lines are back
    assert any("tensorflow" in line or "absl" in line for line in lines[:-1]), proc.stderr
    assert lines[-1].startswith(f"error: cannot load the model {model}:")


@pytest.mark.parametrize("verbose", [False, True])
def test_the_tf_js_converter_s_ydf_advert_is_hidden_unless_verbose(verbose):
    """tensorflowjs's converter imports tensorflow_decision_forests, which prints an advert for ydf to stderr."""
    code = ("from emotion.common import console\n"
            f"console.quiet_tensorflow()\nif {verbose}: console.verbose_tensorflow()\n"
            "import tensorflowjs.converters.converter\nprint('imported')")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 0 and proc.stdout == "imported\n", proc.stderr
    assert ("successor of TensorFlow Decision Forests" in proc.stderr) == verbose, proc.stderr
    assert (proc.stderr == "") != verbose, proc.stderr


def test_error_line_comes_after_buffered_stdout():
    """stdout into a pipe is block-buffered: without a flush, what a script printed before failing would land
    after its error line when both streams go to one pipe (`2>&1 | tee log`)."""
    code = ("from emotion.common import cli, errors\n"
            "def main(argv):\n    print('working on it')\n    raise errors.UserError('it went wrong')\n"
            "cli.run(main)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # a user's default
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=60, env=env)
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == ["working on it", "error: it went wrong"]


def test_a_model_s_classes_must_match_in_count_and_in_training_order(tmp_path):
    """The same class names in another order would label every answer wrongly and silently: refused when the
    model's training config (<stem>.config.yaml, written by train.py) lies beside it."""
    from support import CLASS_NAMES
    model = tmp_path / "model.h5"
    swapped = [CLASS_NAMES[1], CLASS_NAMES[0], *CLASS_NAMES[2:]]
    config.check_model_classes(8, swapped, model)  # no training config beside it: the count only
    (tmp_path / "model.config.yaml").write_text(f"class_names: [{', '.join(CLASS_NAMES)}]\nseed: 1\n")
    config.check_model_classes(8, CLASS_NAMES, model)
    with pytest.raises(errors.UserError) as exc:
        config.check_model_classes(8, swapped, model, "evaluate with the config it was trained with")
    assert str(exc.value) == (f"the model {model} was trained with class_names {CLASS_NAMES} (model.config.yaml) "
                              f"but config key class_names lists {swapped}: evaluate with the config it was "
                              f"trained with")
    with pytest.raises(errors.UserError, match="predicts 7 classes but config key class_names lists 8"):
        config.check_model_classes(7, CLASS_NAMES, model)


def test_evaluate_refuses_class_names_in_another_order_than_training(tmp_path):
    """evaluate.py --set class_names=[contempt,anger,...] on a model trained with anger first: one line, no
    metrics or card written under swapped names."""
    from support import CLASS_NAMES, as_set_args, link_organized, snapshot, tiny_config, tiny_model

    import evaluate
    from emotion.model import network
    link_organized(tmp_path / "data", per_class=1, splits=("test",))
    network.save_model_atomic(tiny_model((32, 32, 3)), tmp_path / "models" / "model.h5")
    trained = config.load_config(None, tiny_config(tmp_path))
    (tmp_path / "models" / "model.config.yaml").write_text(trained.to_yaml())
    swapped = [CLASS_NAMES[1], CLASS_NAMES[0], *CLASS_NAMES[2:]]
    before = snapshot(tmp_path)
    with pytest.raises(errors.UserError, match=r"was trained with class_names \['anger', 'contempt'"):
        evaluate.main(as_set_args(tiny_config(tmp_path, f"class_names=[{', '.join(swapped)}]")))
    assert snapshot(tmp_path) == before


def test_dense_units_beyond_what_memory_takes_is_a_config_line_not_an_out_of_memory_traceback():
    """train.py --dry-run --set dense_units=2000000000 built the model and died in ResourceExhaustedError."""
    proc = run_script("train.py", "--dry-run", "--set", "dense_units=2000000000", timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: config key 'dense_units' must be an integer from 0 to {config.MAX_DENSE_UNITS}, got 2000000000 "
        f"(from --set dense_units=2000000000)")


def test_an_out_of_memory_while_building_the_head_names_the_setting(tmp_path, monkeypatch):
    """Within the bound, a machine may still lack the memory: one line naming dense_units, not a traceback."""
    import keras
    import tensorflow as tf
    from support import tiny_config

    from emotion.model import network

    def out_of_memory(*args, **kwargs):
        raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with shape[2048,60000]")
    monkeypatch.setattr(keras.layers, "Dense", out_of_memory)
    cfg = config.load_config(None, tiny_config(tmp_path, "dense_units=60000"))
    with pytest.raises(errors.UserError) as exc:
        network.build_model(cfg)
    assert str(exc.value) == ("not enough memory for the head's 60000 dense units (config key dense_units): lower "
                              "it (0 puts the softmax on the pooled features)")


@pytest.mark.parametrize("script,allocate,says", [
    ("train.py", "tf.reduce_sum(tf.ones((2 ** 22, 2 ** 20)))", "lower --set train_batch_size=N or --set val_batch_size=N"),
    ("predict.py", "bytearray(2 ** 50)", "lower --batch-size N"),
])
def test_a_real_out_of_memory_is_one_line_naming_the_settings(script, allocate, says, tmp_path):
    """Issue 18, T-4's cause beyond dense_units: any out-of-memory (TensorFlow's, a 16 TB tensor here, or
    Python's MemoryError) inside a script is one line naming the settings that set its memory, exit code 1."""
    tf_import = "import tensorflow as tf\n" if "tf." in allocate else ""   # predict's case needs no TensorFlow: 8 s less
    code = (f"import runpy, sys\n{tf_import}from emotion.common import cli\n"
            f"module = runpy.run_path({str(REPO / 'src' / script)!r})\n"
            f"cli.run(lambda argv: {allocate}, memory=module['MEMORY'])\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: out of memory (") and says in line and "/job:" not in line, line
    assert "OOM when allocating tensor with shape[4194304,1048576]" in line or "(MemoryError)" in line


def test_a_batch_size_no_machine_can_take_is_a_config_line():
    with pytest.raises(errors.ConfigError, match=r"'train_batch_size' must be an integer from 1 to 65536"):
        config.load_config(None, ["train_batch_size=100000000000"])
