"""The project's configuration: config.yaml, --config, and --set overrides, validated.

Usage:
    cfg = config.load_config("config.yaml", ["learning_rate=3e-4", "weights=null"])
    cfg.learning_rate      # 0.0003 (attribute access)
    cfg["data_path"]       # absolute path, resolved against the config file's folder

Every key of config.yaml is described once in SCHEMA below (type and allowed values); the values and
their comments live in config.yaml. A wrong key or value raises ConfigError with one line that names
the key (and, for a typo, the nearest valid key); scripts turn it into exit code 2 (see cli.py).
The same goes for a config file that is not UTF-8 text (UTF-16, binary), not a regular file (a folder, a
FIFO), or names a key twice, and for integers out of range (seed: 0 to SEED_MAX, so that seed + epoch
still fits the int32 that numpy and TensorFlow take).
"""
from __future__ import annotations

import codecs
import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from emotion.common import paths
from emotion.common.errors import ConfigError, UserError

REPO_ROOT = Path(__file__).resolve().parents[3]  # src/emotion/common/config.py -> the repository
DEFAULT_CONFIG_PATH = REPO_ROOT / "config.yaml"


class DuplicateKeyError(yaml.YAMLError):
    """The same key twice in one YAML mapping (PyYAML would silently keep the last)."""

    def __init__(self, key: Any, first_line: int, second_line: int):
        where = f"lines {first_line} and {second_line}" if first_line != second_line else f"line {first_line}"
        super().__init__(f"key '{key}' appears twice ({where}): keep one")
        self.key, self.first_line, self.second_line = key, first_line, second_line


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that reads 1e-3 as a float (YAML 1.1, and so PyYAML, wants 1.0e-3) and refuses a key given
    twice in one mapping (raises DuplicateKeyError) instead of keeping the last silently."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: *anchor' is resolved by flatten_mapping
                    continue
                key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
                try:
                    if key in seen:
                        raise DuplicateKeyError(key, seen[key], line)
                    seen[key] = line
                except TypeError:  # an unhashable key: SafeLoader reports it below
                    break
        return super().construct_mapping(node, deep=deep)


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*(?:\.\d*)?|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def parse_yaml(text: str) -> Any:
    """Parse YAML text with the float fix above (also used for --set values)."""
    return yaml.load(text, Loader=_YamlLoader)


# ---------------------------------------------------------------------------------------------
# Schema: one check per key. A check returns the (possibly converted) value or raises ValueError
# with the expectation ("an integer > 0").


@dataclass(frozen=True)
class Field:
    check: Callable[[Any], Any]
    is_path: bool = False


# Integers reach numpy and TensorFlow, which take at most int32 in places (seeds, shapes): bound every one.
INT_MAX = 2 ** 31 - 1
# Training seeds epoch e with seed + e (and augmentation layers with seed + 0..4), so both are bounded
# to keep every derived seed within INT_MAX.
MAX_EPOCHS = 100_000
# The head's hidden layer: 2048 x 65536 float32 weights are already 512 MB (and as much again for each optimizer
# slot); more is a typo or a unit mix-up, and would end in an out-of-memory traceback instead of this line.
MAX_DENSE_UNITS = 65_536
SEED_MAX = INT_MAX - 10 ** 6
# A batch of 65536 96x96 images is 7 GB of float32 input alone, and ResNet50's activations are about 30 times
# that: beyond it, a batch size is a typo. Within it, an out-of-memory is one line naming the keys (cli.run).
MAX_BATCH_SIZE = 65_536


def _int(min_value: int = 0, max_value: int = INT_MAX) -> Callable[[Any], int]:
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int) or not min_value <= v <= max_value:
            raise ValueError(f"an integer from {min_value} to {max_value}")
        return v
    return check


def _float(low: float, high: float, low_open: bool = False) -> Callable[[Any], float]:
    desc = f"a number {'>' if low_open else '>='} {low} and <= {high}"

    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(desc)
        v = float(v)
        if not (v > low if low_open else v >= low) or v > high or v != v:
            raise ValueError(desc)
        return v
    return check


def _bool(v):
    if not isinstance(v, bool):
        raise ValueError("true or false")
    return v


def _str(v):
    if not isinstance(v, str) or not v:
        raise ValueError("a non-empty string")
    return v


def _choice(*options: str) -> Callable[[Any], str]:
    def check(v):
        if v not in options:
            raise ValueError("one of " + " | ".join(options))
        return v
    return check


def _class_names(v):
    if (not isinstance(v, list) or len(v) < 2 or not all(isinstance(c, str) and c for c in v)
            or len(set(v)) != len(v) or any(c == "unclassified" or "/" in c for c in v)):
        raise ValueError("a list of at least 2 distinct class names (no '/', not 'unclassified')")
    return v


def _input_shape(v):
    if (not isinstance(v, list) or len(v) != 3 or not all(isinstance(d, int) and not isinstance(d, bool) for d in v)
            or v[2] != 3 or min(v[0], v[1]) < 32):
        raise ValueError("[height, width, 3] with height and width >= 32 (ResNet50 takes RGB)")
    return v


def _weights(v):
    if v is None or v == "imagenet":
        return v
    if not isinstance(v, str) or not v:
        raise ValueError("imagenet, null, or the path of a weights file")
    return v


SCHEMA: dict[str, Field] = {
    "data_path": Field(_str, is_path=True),
    "kaggle_dataset": Field(_str),
    "class_names": Field(_class_names),
    "input_shape": Field(_input_shape),
    "seed": Field(_int(0, SEED_MAX)),
    "train_batch_size": Field(_int(1, MAX_BATCH_SIZE)),
    "val_batch_size": Field(_int(1, MAX_BATCH_SIZE)),
    "test_batch_size": Field(_int(1, MAX_BATCH_SIZE)),
    "cache_max_mb": Field(_int(0)),
    "shuffle_buffer": Field(_int(1)),
    "augment_flip": Field(_bool),
    "augment_rotation": Field(_float(0.0, 0.5)),
    "augment_shift": Field(_float(0.0, 0.5)),
    "augment_zoom": Field(_float(0.0, 0.9)),
    "augment_contrast": Field(_float(0.0, 1.0)),
    "class_weighting": Field(_choice("auto", "none")),
    "weights": Field(_weights, is_path=True),
    "dense_units": Field(_int(0, MAX_DENSE_UNITS)),
    "dropout": Field(_float(0.0, 0.95)),
    "learning_rate": Field(_float(0.0, 10.0, low_open=True)),
    "num_epochs": Field(_int(0, MAX_EPOCHS)),
    "fine_tune_epochs": Field(_int(0, MAX_EPOCHS)),
    "fine_tune_learning_rate": Field(_float(0.0, 10.0, low_open=True)),
    "fine_tune_blocks": Field(_int(0)),
    "optimizer": Field(_choice("adam", "sgd", "adamw")),
    "lr_schedule": Field(_choice("cosine", "constant")),
    "label_smoothing": Field(_float(0.0, 0.5)),
    "monitor": Field(_choice("val_macro_f1", "val_accuracy", "val_loss")),
    "model_save_path": Field(_str, is_path=True),
    "checkpoint_dir": Field(_str, is_path=True),
    "performance_dir": Field(_str, is_path=True),
    "results_dir": Field(_str, is_path=True),
    "mixed_precision": Field(_choice("auto", "on", "off")),
    "xla": Field(_choice("auto", "on", "off")),
    "strategy": Field(_choice("default", "mirrored", "multi_worker")),
    "face_detector": Field(_choice("auto", "blazeface", "blazeface_full", "haar")),
    "face_min_score": Field(_float(0.0, 1.0)),
    "face_alignment": Field(_choice("none", "eyes")),
    "classifier_backend": Field(_choice("tflite", "keras")),
    "video_path": Field(_str, is_path=True),
    "smoothing": Field(_float(0.0, 0.99)),
    "labeled_frame_stride": Field(_int(0)),
    "min_confidence": Field(_float(0.0, 1.0)),
}


class Config(dict):
    """A validated configuration: a dict whose keys also read as attributes."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def to_yaml(self) -> str:
        """The resolved configuration as YAML (saved beside a trained model)."""
        return yaml.safe_dump(dict(self), sort_keys=False)


def _nearest(key: str) -> str:
    match = difflib.get_close_matches(key, SCHEMA, n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""


def _check_key(key: str, where: str) -> None:
    if key not in SCHEMA:
        raise ConfigError(f"unknown config key '{key}' in {where}{_nearest(key)}")


def _resolve_path(value: Any, base: Path) -> Any:
    if not isinstance(value, str) or value == "imagenet":
        return value
    path = Path(os.path.expanduser(value))
    return str(path if path.is_absolute() else (base / path).resolve())


def parse_override(text: str) -> tuple[str, Any]:
    """'key=value' -> (key, value parsed as YAML). Raises ConfigError on a malformed override."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set takes KEY=VALUE, got '{text}'")
    _check_key(key, f"--set {text}")
    try:
        value = parse_yaml(raw) if raw.strip() else None
    except DuplicateKeyError as exc:
        raise ConfigError(f"--set {key}: {exc}") from None
    except yaml.YAMLError:
        raise ConfigError(f"--set {key}: cannot read '{raw}' as a YAML value") from None
    return key, value


def _read_text(path: Path) -> str:
    """The text of a config file: a regular file (a FIFO would hang the reader), UTF-8 (a UTF-8 BOM is fine).
    Anything else is a ConfigError saying what to do."""

    if not path.exists():
        raise ConfigError(f"config file not found: {path} (pass --config PATH to an existing file)")
    if not paths.is_regular_file(path):
        kind = "a folder" if path.is_dir() else "not a regular file (a pipe, socket or device)"
        raise ConfigError(f"config file {path} is {kind}: pass --config PATH to a YAML file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ConfigError(f"config file {path} is UTF-16 text: save it as UTF-8 (in Notepad: Save as, "
                          "Encoding UTF-8)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start} cannot be read): "
                          "pass --config PATH to a YAML file saved as UTF-8") from None
    if "\0" in text:
        raise ConfigError(f"config file {path} is not a text file (it holds NUL bytes: binary, or UTF-16 "
                          "without a BOM): pass --config PATH to a YAML file saved as UTF-8")
    return text


def _parse_file(path: Path) -> dict:
    """The top-level mapping of a config file; ConfigError with the line for bad YAML or a key given twice."""
    text = _read_text(path)
    try:
        raw = parse_yaml(text)
    except DuplicateKeyError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    except yaml.reader.ReaderError as exc:  # a control character: no line number, but its position
        raise ConfigError(f"config file {path} is not valid YAML: {exc.reason} at character {exc.position}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {path}{where} is not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold 'key: value' lines")
    return raw


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read, override and validate a configuration file.

    path: the YAML file (default: config.yaml at the repository root).
    overrides: 'key=value' strings applied in order after the file.
    Relative paths (in the file and in overrides) resolve against the file's folder.
    """
    path = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    raw = _parse_file(path)

    values: dict[str, tuple[Any, str]] = {}
    for key, value in raw.items():
        _check_key(str(key), str(path))
        values[key] = (value, str(path))
    for text_override in overrides:
        key, value = parse_override(text_override)
        values[key] = (value, f"--set {text_override}")

    missing = [k for k in SCHEMA if k not in values]
    if missing:
        raise ConfigError(f"config file {path} lacks key '{missing[0]}' (copy it from {DEFAULT_CONFIG_PATH})")

    base = path.resolve().parent
    cfg = Config()
    for key, field in SCHEMA.items():
        value, where = values[key]
        try:
            value = field.check(value)
        except ValueError as exc:
            raise ConfigError(f"config key '{key}' must be {exc}, got {value!r} (from {where})") from None
        cfg[key] = _resolve_path(value, base) if field.is_path else value
    return cfg


def trained_config_path(model_path: str | os.PathLike) -> Path:
    """Where train.py keeps the config a model was trained with: <model stem>.config.yaml beside it."""
    return Path(model_path).with_suffix(".config.yaml")


def trained_setting(model_path: str | os.PathLike, key: str) -> Any:
    """The value of `key` in the config a model was trained with (trained_config_path); None when that file is
    missing or unreadable, or does not set the key (a model from elsewhere, or older)."""
    try:
        return yaml.safe_load(trained_config_path(model_path).read_text(encoding="utf-8")).get(key)
    except (OSError, ValueError, AttributeError, yaml.YAMLError):
        return None


def check_model_classes(n_out: int, class_names, model_path, remedy: str = "use the config it was trained with") -> None:
    """UserError unless a model predicting n_out classes matches config key class_names, in count and, when the
    model's training config lies beside it (trained_config_path), in order: the same names in another order
    would label every answer wrongly and silently. The one message every command gives, ending with `remedy`:
        check_model_classes(int(model.output_shape[-1]), cfg.class_names, path, "use the config it was trained with")
    """
    if int(n_out) != len(class_names):
        raise UserError(f"the model {model_path} predicts {n_out} classes but config key class_names lists "
                        f"{len(class_names)}: {remedy}")
    trained = trained_config_path(model_path)
    names = trained_setting(model_path, "class_names")  # None: a model from elsewhere, no record of its order
    if isinstance(names, list) and [str(n) for n in names] != [str(n) for n in class_names]:
        raise UserError(f"the model {model_path} was trained with class_names {names} ({trained.name}) but config "
                        f"key class_names lists {list(class_names)}: {remedy}")
