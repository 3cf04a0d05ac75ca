"""config.py and cli.py: every key validated, overrides typed, one-line errors, fast --help."""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

import config
from conftest import REPO, run_script


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
    ("train_batch_size=abc", r"'train_batch_size' must be an integer >= 1, got 'abc'"),
    ("train_batch_size=0", r"'train_batch_size' must be an integer >= 1"),
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
    with pytest.raises(config.ConfigError, match=pattern) as info:
        config.load_config(None, [override])
    assert "\n" not in str(info.value)
    assert info.value.code == 2


def test_bad_config_files(tmp_path):
    with pytest.raises(config.ConfigError, match="config file not found"):
        config.load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data_path: [unclosed\n")
    with pytest.raises(config.ConfigError, match="not valid YAML"):
        config.load_config(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text((REPO / "config.yaml").read_text().replace("num_epochs:", "num_epoch:"))
    with pytest.raises(config.ConfigError, match=r"unknown config key 'num_epoch' in .*typo.yaml \(did you mean 'num_epochs'"):
        config.load_config(typo)
    partial = tmp_path / "partial.yaml"
    partial.write_text("seed: 1\n")
    with pytest.raises(config.ConfigError, match="lacks key"):
        config.load_config(partial)


# Every script of src/ (the modules with a __main__ block).
SCRIPTS = sorted(p.name for p in (REPO / "src").glob("*.py") if "\nif __name__ == \"__main__\":" in p.read_text())


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_is_fast(script):
    start = time.perf_counter()
    proc = run_script(script, "--help", timeout=30)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    assert "--config" in proc.stdout and "usage:" in proc.stdout
    assert elapsed < 1.0, f"{script} --help took {elapsed:.2f}s (import TensorFlow after parsing arguments)"


# The arguments a script cannot run without, so that the config is what fails.
REQUIRED_ARGS = {"predict.py": ["--image_path", "photo.jpg"], "inference.py": ["-v", "clip.avi"]}


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_reject_bad_config_in_one_line(script):
    proc = run_script(script, *REQUIRED_ARGS.get(script, []), "--set", "learning_rat=0.1", timeout=30)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == ["error: unknown config key 'learning_rat' in --set learning_rat=0.1 (did you mean 'learning_rate'?)"]
