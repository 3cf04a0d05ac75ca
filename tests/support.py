"""What tests and benchmarks share (a plain module: fixtures live in conftest.py, which imports from here).

    from support import YOLO_SAMPLE, require, run_script, tiny_config, as_set_args, keras_probs

Where the real data lies (../shared, or SHARED_DATA_DIR), how to run a script as a user would, small real
datasets linked from the sample, and small models whose outputs are worth comparing (random BatchNorm
statistics, a head whose probabilities spread, a tiny model of the project's kind that converts in seconds).
Nothing here imports TensorFlow, Keras or pytest at import time (benchmarks import it without pytest).
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SHARED_DATA_DIR", REPO.parent / "shared"))
YOLO_SAMPLE = SHARED / "data" / "affectnet-yolo-sample" / "YOLO_format"
FACES_GRAY = SHARED / "data" / "faces-grayscale-350"
VIDEOS = SHARED / "videos"


def require(path: Path) -> Path:
    """Skip the calling test, with the reason, when a piece of ../shared is absent."""
    if not path.exists():
        import pytest
        pytest.skip(f"real data not found at {path} (see ../shared/README.md)")
    return path


def run_script(script: str, *args: str, cwd: Path | None = None, timeout: float = 600,
               env: dict | None = None) -> subprocess.CompletedProcess:
    """Run src/<script> with this interpreter; returns the CompletedProcess (text output). A None value in
    env unsets that variable (TF_CPP_MIN_LOG_LEVEL=None: the user's default, TensorFlow's logging hidden)."""
    merged = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    full_env = {k: v for k, v in merged.items() if v is not None}
    return subprocess.run([sys.executable, str(REPO / "src" / script), *args], cwd=cwd or REPO,
                          capture_output=True, text=True, timeout=timeout, env=full_env)


CLASS_NAMES = ["anger", "contempt", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
SPLITS = {"train": "train", "valid": "val", "test": "test"}


def link_organized(dest: Path, per_class: int | None = None, splits=("train", "val", "test")) -> Path:
    """Hard-link the real sample into dest/<split>/<class>/ (the layout organize_data.py makes),
    at most `per_class` images per class; independent of organize_data.py, so tests of other stages
    do not depend on it. Returns dest."""
    root = require(YOLO_SAMPLE)
    for src_split, split in SPLITS.items():
        if split not in splits:
            continue
        taken = {c: 0 for c in CLASS_NAMES}
        for image in sorted((root / src_split / "images").iterdir()):
            label = root / src_split / "labels" / f"{image.stem}.txt"
            cls = CLASS_NAMES[int(label.read_text().split()[0])]
            if per_class is not None and taken[cls] >= per_class:
                continue
            target = dest / split / cls / image.name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(image, target)
            taken[cls] += 1
    return dest


def tiny_config(tmp_path: Path, *overrides: str) -> list[str]:
    """--set overrides for a fast run entirely inside tmp_path (random init, 32x32 inputs, small batches)."""
    return [f"data_path={tmp_path / 'data'}", f"model_save_path={tmp_path / 'models' / 'model.h5'}",
            f"checkpoint_dir={tmp_path / 'models' / 'checkpoints'}", f"performance_dir={tmp_path / 'performance'}",
            f"results_dir={tmp_path / 'results'}", "weights=null", "input_shape=[32, 32, 3]",
            "train_batch_size=8", "val_batch_size=16", "test_batch_size=16", "dense_units=16",
            *overrides]


def as_set_args(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def random_batchnorm_model(cfg, seed: int = 0):
    """build_model(cfg) with random BatchNorm statistics in the backbone: a fresh model's are 0/1, so folding
    or converting them would go untested (a trained model's are not). Imports Keras: call it in a fixture."""
    import keras
    import numpy as np

    from emotion.model import network as model_lib
    model = model_lib.build_model(cfg)
    rng = np.random.default_rng(seed)
    for layer in model_lib.backbone(model).layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.1, beta.shape),
                               rng.normal(0, 0.1, mean.shape), rng.uniform(0.5, 1.5, var.shape)])
    return model


def spread_head(model, calibration_images, logit_std: float = 3.0, seed: int = 0):
    """Re-draw the logits layer ("logits", before the temperature and the softmax; in a model of the kind saved
    before temperature scaling, the softmax layer "probabilities") of `model` in place so that its outputs SPREAD: its logits,
    centred on `calibration_images` (RGB [N, H, W, 3], e.g. face crops), vary by about `logit_std` between
    images. A fresh model's probabilities lie within a few hundredths of 1/8 for every input, so "returns a
    constant", "ignores its input" or an RGB/BGR swap would pass a check at 1e-2; with this head the same
    mistakes move probabilities by tenths. Returns the model."""
    import keras
    import numpy as np

    head = model.get_layer("logits" if any(layer.name == "logits" for layer in model.layers) else "probabilities")
    pooled = keras.Model(model.input, head.input)
    features = pooled(np.asarray(calibration_images, np.float32), training=False).numpy().astype(np.float64)
    mean = features.mean(axis=0)
    kernel = np.random.default_rng(seed).normal(0, 1, head.kernel.shape)
    # Orthogonal to the features' mean, so the logits carry no large common part (float32 rounding of a
    # large part cancelled by the bias would make TFLite and Keras differ far more than on a real model).
    unit = mean / np.linalg.norm(mean)
    kernel -= np.outer(unit, unit @ kernel)
    kernel *= logit_std / ((features - mean) @ kernel).std()
    head.set_weights([kernel.astype(np.float32), (-mean @ kernel).astype(np.float32)])
    return model


def spread_model(cfg, calibration_images, logit_std: float = 3.0, seed: int = 0):
    """build_model(cfg) with spread_head. Imports Keras: call it in a fixture."""
    from emotion.model import network as model_lib
    return spread_head(model_lib.build_model(cfg), calibration_images, logit_std, seed)


def megamind_face_crops(count: int = 12, size=(96, 96)):
    """RGB face crops (recognizer's framing) from every 5th frame of Megamind.avi, BlazeFace boxes; skips the
    calling test when the clip or BlazeFace is absent."""
    import cv2
    import numpy as np
    import pytest

    from emotion.data import faces
    require(VIDEOS / "Megamind.avi")
    if faces.blazeface_model_path() is None:
        pytest.skip(f"BlazeFace model not installed ({faces.BLAZEFACE_INSTALL})")
    detector = faces.FaceDetector("blazeface")
    cap = cv2.VideoCapture(str(VIDEOS / "Megamind.avi"))
    crops, index = [], 0
    while len(crops) < count:
        ok, frame = cap.read()
        if not ok:
            break
        if index % 5 == 0:
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            crops += [faces.crop_face(rgb, f.box, size=size) for f in detector.detect(rgb)]
        index += 1
    cap.release()
    return np.stack(crops[:count])


def keras_probs(model, images):
    """The Keras model's probabilities on images (any dtype; fed as float32), in inference mode: numpy [N, 8]."""
    import numpy as np
    return np.asarray(model(np.asarray(images, np.float32), training=False))


def tiny_model(shape=(32, 32, 3), seed: int = 0):
    """A model of the project's kind (image in, the preprocessing convolution, conv + BatchNorm with non-trivial statistics,
    8-way softmax named "probabilities") that converts to TFLite in seconds. Imports Keras."""
    import keras
    import numpy as np

    from emotion.model import preprocess
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=tuple(shape), name="image")
    x = preprocess.apply(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, name="conv")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Rescaling(1 / 50)(x)  # moderate logits: a saturated softmax would hide errors
    x = keras.layers.Dense(8, activation="softmax", name="probabilities")(x)
    model = keras.Model(inputs, x)
    bn = model.get_layer("bn")  # non-trivial statistics, so that folding them into the conv is tested
    rng = np.random.default_rng(seed)
    bn.moving_mean.assign(rng.normal(0, 5, 8).astype(np.float32))
    bn.moving_variance.assign(rng.uniform(0.5, 4, 8).astype(np.float32))
    return model


def save_random_model(folder: Path, *overrides: str):
    """build_model (random init, 96x96 unless overridden) saved as folder/model.h5: (cfg, keras model, its
    --set overrides). Imports Keras."""
    from emotion.common import config
    from emotion.model import network as model_lib
    overrides = ["weights=null", "input_shape=[96, 96, 3]", f"model_save_path={Path(folder) / 'model.h5'}",
                 *overrides]
    cfg = config.load_config(None, overrides)
    model = model_lib.build_model(cfg)
    model_lib.save_model_atomic(model, cfg.model_save_path)
    return cfg, model, overrides


def keras_augmenter(cfg):
    """augmentation.augment_batch's augmentation as Keras layers: a reference for tests and benchmarks
    (make_dataset uses the faster augment_batch). Imports Keras.

    Random training augmentation from the augment_* config keys, seeded from cfg.seed; None if all are off.
    Applied to whole float batches [B, H, W, 3] in 0..255 (per-image random draws) with training=True:
        aug = keras_augmenter(cfg);  images = aug(images, training=True)
    Each layer gets its own seed (seed, seed+1, ...) so their draws are independent. The output stays in
    0..255: geometric layers fill by reflection, contrast is clipped. The layers compute in float32 even
    under a mixed-precision global policy (the model casts its inputs itself). Each layer resamples the
    batch (several times slower than augment_batch), and the layers' random state advances per call, so
    their output depends on call order: in a parallel map it would not be repeatable.
    """
    import keras

    seed = int(cfg["seed"])
    layers = []
    if cfg["augment_flip"]:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed + len(layers), dtype="float32", name="flip"))
    if cfg["augment_rotation"] > 0:
        layers.append(keras.layers.RandomRotation(cfg["augment_rotation"], fill_mode="reflect",
                                                  seed=seed + len(layers), dtype="float32", name="rotation"))
    if cfg["augment_shift"] > 0:
        layers.append(keras.layers.RandomTranslation(cfg["augment_shift"], cfg["augment_shift"], fill_mode="reflect",
                                                     seed=seed + len(layers), dtype="float32", name="shift"))
    if cfg["augment_zoom"] > 0:
        layers.append(keras.layers.RandomZoom(cfg["augment_zoom"], fill_mode="reflect",
                                              seed=seed + len(layers), dtype="float32", name="zoom"))
    if cfg["augment_contrast"] > 0:
        layers.append(keras.layers.RandomContrast(cfg["augment_contrast"], value_range=(0, 255),
                                                  seed=seed + len(layers), dtype="float32", name="contrast"))
    if not layers:
        return None
    return keras.Sequential(layers, name="augmenter")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def snapshot_folders(*folders: Path) -> dict[str, str]:
    """snapshot() of several folders in one dict, each path prefixed with its folder's name."""
    return {f"{folder.name}/{k}": v for folder in folders for k, v in snapshot(folder).items()}


def read_csv(path: Path) -> list[dict]:
    """A CSV file's rows as dicts (every value a string)."""
    import csv
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f))


def snapshot(folder: Path) -> dict[str, str]:
    """{relative path: sha256 of a file, 'dir' for a folder, 'link -> target' for a symlink} of everything."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_symlink():
            out[rel] = f"link -> {p.readlink()}"
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


PLAIN_KERAS = """import sys, numpy as np, keras
model = keras.models.load_model(sys.argv[1], safe_mode=True)
assert not any(name == "emotion" or name.startswith("emotion.") for name in sys.modules), "the project was imported"
np.save(sys.argv[3], np.asarray(model(np.load(sys.argv[2]), training=False)))
"""


def plain_keras_probs(model_path: Path, images, scratch: Path):
    """The probabilities of the model file on images, loaded by plain keras.models.load_model(safe_mode=True)
    in a fresh Python that cannot import this project: isolated mode (-I: no PYTHONPATH, no script folder on
    sys.path), run from `scratch`. Fails the calling test with the subprocess's error when it cannot load."""
    import numpy as np
    scratch.mkdir(parents=True, exist_ok=True)
    np.save(scratch / "images.npy", np.asarray(images, np.float32))
    proc = subprocess.run([sys.executable, "-I", "-c", PLAIN_KERAS, str(Path(model_path).resolve()),
                           str(scratch / "images.npy"), str(scratch / "probs.npy")], cwd=scratch,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0, f"plain keras.models.load_model failed:\n{proc.stderr[-3000:]}"
    return np.load(scratch / "probs.npy")


def tensorboard_scalars(run_dir: Path) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """{split: {tag: [(step, value), ...]}} of the scalar summaries under run_dir/<split>, read back with
    TensorBoard's own event reader (images are listed with the value None)."""
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.util import tensor_util
    out = {}
    for split in sorted(p.name for p in Path(run_dir).iterdir() if p.is_dir()):
        acc = event_accumulator.EventAccumulator(str(Path(run_dir) / split),
                                                 size_guidance={event_accumulator.TENSORS: 0})
        acc.Reload()
        out[split] = {}
        for tag in acc.Tags()["tensors"]:
            values = []
            for event in acc.Tensors(tag):
                array = tensor_util.make_ndarray(event.tensor_proto)
                values.append((event.step, float(array) if array.ndim == 0 else None))
            out[split][tag] = values
    return out


def tfjs_fused_bias_ranks(model_json: Path) -> dict[int, int]:
    """{rank: count} of the bias argument of every fused convolution in a TF.js graph model.json (weights only;
    a bias computed by another node counts under its rank when known, else -1): what TF.js's WASM backend
    accepts (rank 1) in what export wrote."""
    import json

    from emotion.model import tfjs_graph
    return tfjs_graph.fused_bias_ranks(json.loads(Path(model_json).read_text(encoding="utf-8")))


def tflite_op_counts(tflite) -> dict[str, int]:
    """{op name: count} of a .tflite model's main graph (bytes or a file path), most frequent first, to check
    what a conversion made; "DELEGATE" counts the XNNPACK partitions (1: the whole graph runs in XNNPACK).
    Uses the interpreter's private _get_ops_details (no public API lists the ops), so it lives here, not in
    src/; the interpreter is the one classifier.py runs."""
    from collections import Counter

    from emotion.runtime import classifier
    interpreter = classifier._interpreter(tflite, num_threads=1)  # tensors allocated: the delegate applied
    return dict(Counter(op["op_name"] for op in interpreter._get_ops_details()).most_common())


def count_to_rgb(monkeypatch) -> list[tuple[int, ...]]:
    """Wrap faces.to_rgb, in faces and in every loaded module that imported it by name, with a counter: returns
    the list to which each call appends the shape of the image it was given (a test's monkeypatch undoes it)."""
    import sys

    from emotion.data import faces
    original = faces.to_rgb
    calls: list[tuple[int, ...]] = []

    def counting(image):
        calls.append(tuple(getattr(image, "shape", ())))
        return original(image)

    for module in list(sys.modules.values()):
        # the module's own namespace, not getattr: that would wake lazy modules (TensorFlow's) up
        if getattr(module, "__dict__", {}).get("to_rgb") is original:
            monkeypatch.setattr(module, "to_rgb", counting)
    return calls
