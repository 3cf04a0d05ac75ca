"""Per-face latency of the classifier paths, their agreement with Keras, and (with a trained model) their accuracy.

    python benchmarks/bench_classifier.py                                  # random-init 96x96 ResNet50
    python benchmarks/bench_classifier.py --model models/emotion_detection_model.h5 --data data
                                                                           # + accuracy of each path on data/val

All in one process, one after the other, alternated over --rounds so that every path sees the same load on
a shared machine:
  * ms per face at batch 1 (median of --calls calls after warm-up) and at batch 8 (per face): model.predict
    (the naive way), a compiled tf.function (KerasClassifier), TFLite float32 with 1 and 2 XNNPACK threads,
    float16, dynamic (int8 weights) and int8 (full integer, calibrated on real faces);
  * the largest |probability difference| against Keras model(x, training=False) and the top-1 agreement,
    on 64 real AffectNet faces (random pixels when ../shared is absent);
  * conversion seconds, file sizes, the start of a cached from_model_file, the automatic thread choice.
Accuracy (top-1 on the organized val split) needs a trained model: --model PATH with --data DIR (the
organized data folder holding val/, or a split folder of class folders); otherwise it says so.
Prints one JSON line; "ours" is float32 at the thread count that was faster in this run (on a shared machine
2 threads win only while the other processes leave the cores idle). Target: <= 10 ms per face at
batch 1 with float32 within 1e-4 of Keras.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from tests_helpers import support

REPO = Path(__file__).resolve().parent.parent

QUANTIZED = ("float16", "dynamic", "int8")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", metavar="PATH", help="a trained .h5 model (default: random-init ResNet50, 96x96)")
    p.add_argument("--data", metavar="DIR", help="with --model: organized data folder (its val/) or a split folder")
    p.add_argument("--calls", type=int, default=50, help="timed calls per path at batch 1 (batch 8: a fifth)")
    p.add_argument("--rounds", type=int, default=3, help="alternated timing rounds")
    p.add_argument("--calibration", type=int, default=200, metavar="N",
                   help="int8: real faces used for calibration (from train/ beside the evaluated split when present)")
    p.add_argument("--max-images-per-class", type=int, default=None, metavar="N", help="accuracy on fewer images")
    return p.parse_args()


def load_faces(folder: Path, n: int, shape) -> np.ndarray | None:
    """The first n images of a folder (recursively, sorted) as uint8 [n, H, W, 3] RGB, or None."""
    from PIL import Image
    if not folder.is_dir():
        return None
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:n]
    if not files:
        return None
    return np.stack([np.asarray(Image.open(f).convert("RGB").resize((shape[1], shape[0]))) for f in files])


def split_folder(data: Path) -> Path:
    return data / "val" if (data / "val").is_dir() else data


def calibration_faces(args, shape) -> tuple[np.ndarray, str]:
    """Faces for int8 calibration, never from the split the accuracy is measured on when avoidable."""
    YOLO_SAMPLE = support.YOLO_SAMPLE
    if args.data:
        split = split_folder(Path(args.data))
        for other in (split.parent / "train", split.parent / "test"):
            faces = _balanced(other, args.calibration, shape)
            if faces is not None:
                return faces, str(other)
        return _balanced(split, args.calibration, shape), f"{split} (the evaluated split: no train/ beside it)"
    faces = load_faces(YOLO_SAMPLE / "train" / "images", args.calibration, shape)
    if faces is not None:
        return faces, str(YOLO_SAMPLE / "train" / "images")
    return np.random.default_rng(1).uniform(0, 255, (16, *shape)).astype(np.uint8), "random pixels"


def _balanced(split: Path, n: int, shape) -> np.ndarray | None:
    """n faces taken evenly over the class folders of an organized split."""
    if not split.is_dir():
        return None
    classes = sorted(p for p in split.iterdir() if p.is_dir())
    if not classes:
        return load_faces(split, n, shape)
    parts = [load_faces(c, max(1, n // len(classes)), shape) for c in classes]
    parts = [p for p in parts if p is not None]
    return np.concatenate(parts) if parts else None


def timed(fn, calls: int) -> list[float]:
    out = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def accuracy(args, model, classifiers: dict) -> dict | str:
    if not args.model or not args.data:
        return ("needs a trained model and its data: --model PATH --data DIR (a random-init model has no accuracy "
                "to lose)")
    from emotion.common import config
    from emotion.data import datasets
    from emotion.training import trainer
    cfg = config.load_config(None)
    cfg = config.Config(cfg, input_shape=[int(d) for d in model.input_shape[1:]])
    split = split_folder(Path(args.data))
    ds, info = datasets.make_dataset(split, cfg, training=False, batch_size=64, limit_per_class=args.max_images_per_class,
                               cache=False)
    labels, images = [], []
    for x, y in ds:
        images.append(x.numpy().astype(np.uint8))  # whole values 0..255 (the pipeline rounds them)
        labels.append(y.numpy())
    x, y = np.concatenate(images), np.concatenate(labels)
    probs = {"keras": trainer.predict_probs(model, ds)[1]}
    for name, clf in classifiers.items():
        probs[name] = clf.predict(x)
    acc = {name: round(float(np.mean(p.argmax(1) == y)), 4) for name, p in probs.items()}
    return {"split": str(split), "num_images": int(len(y)), "top1": acc,
            "drop_vs_keras": {n: round(acc["keras"] - a, 4) for n, a in acc.items() if n != "keras"},
            "agreement_with_keras": {n: round(float(np.mean(p.argmax(1) == probs["keras"].argmax(1))), 4)
                                     for n, p in probs.items() if n != "keras"}}


def main() -> None:
    args = parse_args()
    if bool(args.model) != bool(args.data) and args.data:
        raise SystemExit("--data needs --model (a trained model to measure the accuracy of)")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tmp = Path(tempfile.mkdtemp(prefix="bench_classifier_"))
    try:
        print(json.dumps(run(args, tmp)), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args, tmp: Path) -> dict:
    load_start = os.getloadavg()[0]
    from emotion.common import config
    from emotion.model import conversion
    from emotion.model import network as model_lib
    from emotion.runtime import classifier
    YOLO_SAMPLE = support.YOLO_SAMPLE

    if args.model:
        model_path = Path(args.model)
        model = model_lib.load_model(model_path)
        what = str(model_path)
    else:
        model = model_lib.build_model(config.load_config(None, ["weights=null"]))
        model_path = tmp / "model.h5"
        model_lib.save_model_atomic(model, model_path)
        what = "random-init ResNet50 (weights null)"
    shape = tuple(int(d) for d in model.input_shape[1:])

    faces = load_faces(YOLO_SAMPLE / "valid" / "images", 64, shape)
    faces_what = "64 real AffectNet valid faces"
    if faces is None:
        faces = np.random.default_rng(0).uniform(0, 255, (64, *shape)).astype(np.uint8)
        faces_what = "64 random-pixel images (../shared absent)"
    reference = model(faces.astype(np.float32), training=False).numpy()
    calib, calib_from = calibration_faces(args, shape)

    # conversions: float32 through the cache (as load_classifier does), then the quantized ones
    conversion_s, sizes, sources = {}, {}, {}
    start = time.perf_counter()
    auto = classifier.EmotionClassifier.from_model_file(model_path, cache_dir=tmp / "cache")
    conversion_s["float32"] = round(time.perf_counter() - start, 1)  # conversion + auto thread choice
    sources["float32"] = auto.path
    start = time.perf_counter()
    cached = classifier.EmotionClassifier.from_model_file(model_path, num_threads=1, cache_dir=tmp / "cache")
    cached_start_s = round(time.perf_counter() - start, 2)
    assert not cached.converted
    del cached
    for q in QUANTIZED:
        start = time.perf_counter()
        data = conversion.to_tflite(model, q, calib.astype(np.float32) if q == "int8" else None)
        conversion_s[q] = round(time.perf_counter() - start, 1)
        sources[q] = tmp / f"{q}.tflite"
        sources[q].write_bytes(data)
    sizes = {q: round(p.stat().st_size / 2**20, 1) for q, p in sources.items()}
    ops = support.tflite_op_counts(sources["float32"])

    clfs = {f"{q}_t{n}": classifier.EmotionClassifier(sources[q], num_threads=n)
            for q in ("float32", "float16", "dynamic", "int8") for n in (1, 2)}
    keras_clf = classifier.KerasClassifier(model)
    one, eight = faces[:1], faces[:8]
    paths_b1 = {"keras_predict": lambda: model.predict(one.astype(np.float32), verbose=0),
                "keras_compiled": lambda: keras_clf.predict(one)}
    paths_b8 = {"keras_predict": lambda: model.predict(eight.astype(np.float32), verbose=0),
                "keras_compiled": lambda: keras_clf.predict(eight)}
    for name, clf in clfs.items():
        paths_b1[name] = lambda clf=clf: clf.predict(one)
        paths_b8[name] = lambda clf=clf: clf.predict(eight)
    for fn in [*paths_b1.values(), *paths_b8.values()]:  # warm-up: traces, first invokes, batch interpreters
        for _ in range(3):
            fn()
    per_round = max(1, args.calls // args.rounds)
    samples_b1 = {k: [] for k in paths_b1}
    samples_b8 = {k: [] for k in paths_b8}
    for _ in range(args.rounds):
        for name, fn in paths_b1.items():
            samples_b1[name] += timed(fn, per_round)
        for name, fn in paths_b8.items():
            samples_b8[name] += [t / 8 for t in timed(fn, max(1, per_round // 5))]
    ms_b1 = {k: round(float(np.median(v)) * 1000, 2) for k, v in samples_b1.items()}
    ms_b1_p10 = {k: round(float(np.percentile(v, 10)) * 1000, 2) for k, v in samples_b1.items()}
    ms_b8 = {k: round(float(np.median(v)) * 1000, 2) for k, v in samples_b8.items()}

    diff, agree = {}, {}
    outputs = {"keras_compiled": keras_clf.predict(faces), **{k: c.predict(faces) for k, c in clfs.items()}}
    for name, probs in outputs.items():
        diff[name] = float(f"{np.abs(probs - reference).max():.3g}")
        agree[name] = round(float(np.mean(probs.argmax(1) == reference.argmax(1))), 4)

    ours = min(("float32_t1", "float32_t2"), key=ms_b1.get)  # the thread count that was faster in this run
    return {
        "benchmark": "classifier", "model": what, "input": list(shape), "faces": faces_what,
        "cores": classifier.available_cores(), "loadavg_1min": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "ms_per_face_batch1": ms_b1, "ms_per_face_batch1_p10": ms_b1_p10, "ms_per_face_batch8": ms_b8,
        "max_abs_diff_vs_keras": diff, "top1_agreement_vs_keras": agree,
        "auto_threads": {"chosen": auto.num_threads, "calibration_ms": auto.thread_timings,
                         "note": "timed once at construction: follows the load at that moment"},
        "ours": ours, "ours_ms": ms_b1[ours],
        "ratio_naive_over_ours": round(ms_b1["keras_predict"] / ms_b1[ours], 2),
        "ratio_compiled_over_ours": round(ms_b1["keras_compiled"] / ms_b1[ours], 2),
        "target_10ms_float32_met": bool(ms_b1[ours] <= 10.0),
        "float32_within_1e-4": bool(max(diff["float32_t1"], diff["float32_t2"]) <= 1e-4),
        "conversion_s": conversion_s, "cached_start_s": cached_start_s, "tflite_mb": sizes,
        "float32_ops": ops, "int8_calibration": f"{len(calib)} faces from {calib_from}",
        "accuracy": accuracy(args, model, {k: clfs[f"{k}_t1"] for k in ("float32", "float16", "dynamic", "int8")}),
    }


if __name__ == "__main__":
    main()
