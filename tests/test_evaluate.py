"""evaluate.py on tiny real data: every output written and equal to scikit-learn's numbers, TTA, bad inputs."""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm
from support import CLASS_NAMES, as_set_args, keras_probs, link_organized, run_script, tiny_config

from emotion.common import config, errors

PER_CLASS = 3
pytestmark = pytest.mark.filterwarnings("ignore:The y_prob values do not sum to one")


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """Tiny test/val splits, a saved random-init 32x32 model, and one plain evaluation of the test split."""
    import evaluate
    from emotion.model import network as model_lib

    tmp = tmp_path_factory.mktemp("evaluate")
    link_organized(tmp / "data", per_class=PER_CLASS, splits=("test", "val"))
    overrides = tiny_config(tmp, "test_batch_size=10")  # 24 images: batches of 10, 10 and 4
    cfg = config.load_config(None, overrides)
    model = model_lib.build_model(cfg)
    model_lib.save_model_atomic(model, cfg.model_save_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert evaluate.main(as_set_args(overrides)) == 0
    return {"tmp": tmp, "overrides": overrides, "cfg": cfg, "model": model_lib.load_model(cfg.model_save_path),
            "summary": json.loads(out.getvalue().strip().splitlines()[-1])}


def _predictions(path: Path):
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and list(rows[0])[:3] == ["path", "true_class", "predicted_class"]
    assert list(rows[0])[3:] == [f"prob_{c}" for c in CLASS_NAMES]
    y = np.array([CLASS_NAMES.index(r["true_class"]) for r in rows])
    probs = np.array([[float(r[f"prob_{c}"]) for c in CLASS_NAMES] for r in rows])
    pred = np.array([CLASS_NAMES.index(r["predicted_class"]) for r in rows])
    return [r["path"] for r in rows], y, pred, probs


def _model_probs(model, paths, input_shape, flip=False) -> np.ndarray:
    """The model's own output on these files, decoded the way the project decodes them."""
    from emotion.data import decoding
    images = np.stack([decoding.decode_uint8(Path(p).read_bytes(), input_shape).numpy()
                       for p in paths]).astype(np.float32)
    if flip:
        images = images[:, :, ::-1, :]
    return keras_probs(model, images)


def _sklearn_metrics(y, probs) -> dict:
    pred = probs.argmax(axis=1)
    labels = np.arange(len(CLASS_NAMES))
    out = {"accuracy": skm.accuracy_score(y, pred), "balanced_accuracy": skm.balanced_accuracy_score(y, pred),
           "top2_accuracy": skm.top_k_accuracy_score(y, probs, k=2, labels=labels),
           # Keras' convention, which the project's loss follows: probabilities clipped at 1e-7
           # (a random-init model puts less than that on some true classes; scikit-learn clips at 2e-16).
           "loss": skm.log_loss(y, np.clip(probs, 1e-7, 1.0), labels=labels), "num_images": len(y)}
    for avg in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(y, pred, labels=labels, average=avg, zero_division=0)
        out |= {f"{avg}_precision": p, f"{avg}_recall": r, f"{avg}_f1": f}
    return out


def test_every_output_written_and_right(evaluated):
    perf = evaluated["tmp"] / "performance"
    cfg = evaluated["cfg"]
    paths, y, pred, probs = _predictions(perf / "predictions.csv")

    # One row per image of the split, each with its own true class, probabilities summing to 1.
    n = PER_CLASS * len(CLASS_NAMES)
    assert len(paths) == n and len(set(paths)) == n
    assert all(Path(p).parent.name == CLASS_NAMES[t] for p, t in zip(paths, y))
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert np.array_equal(pred, probs.argmax(axis=1))
    # The probabilities are the model's own on those very files (so the rows are not shuffled).
    assert np.allclose(probs, _model_probs(evaluated["model"], paths, cfg.input_shape), atol=1e-5, rtol=0)

    # Metrics, in JSON and in text, equal scikit-learn's computed independently from predictions.csv.
    expected = _sklearn_metrics(y, probs)
    saved = json.loads((perf / "evaluation_metrics.json").read_text())
    text = dict(line.split(": ", 1) for line in (perf / "evaluation_metrics.txt").read_text().splitlines())
    for key, value in expected.items():
        assert saved[key] == pytest.approx(value, abs=2e-6), key
        assert float(text[key]) == pytest.approx(value, abs=3e-6), key
    assert saved["model"] == text["model"] == cfg.model_save_path
    assert len(saved["model_sha256"]) == 64 and text["model_sha256"] == saved["model_sha256"]
    import hashlib
    assert saved["model_sha256"] == hashlib.sha256(Path(cfg.model_save_path).read_bytes()).hexdigest()
    assert saved["split"] == "test" and saved["tta"] is False and saved["images_per_s"] > 0
    summary = evaluated["summary"]
    assert summary["accuracy"] == pytest.approx(expected["accuracy"]) and summary["num_images"] == n
    assert summary["macro_f1"] == pytest.approx(expected["macro_f1"], abs=1e-6)

    with (perf / "detailed_report.csv").open(newline="") as f:
        report = list(csv.DictReader(f))
    assert [r["class"] for r in report] == CLASS_NAMES
    assert sum(int(r["support"]) for r in report) == n
    p, r, f1, s = skm.precision_recall_fscore_support(y, pred, labels=np.arange(8), zero_division=0)
    assert np.allclose([float(r_["f1"]) for r_ in report], f1, atol=1e-6)
    assert np.allclose([float(r_["recall"]) for r_ in report], r, atol=1e-6)

    import cv2
    for name, min_size in (("confusion_matrix.png", (600, 1500)), ("confident_mistakes.png", (250, 250)),
                           ("confident_mistakes_gradcam.png", (250, 250))):
        data = (perf / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.shape[0] >= min_size[0] and image.shape[1] >= min_size[1], name
        assert image.std() > 10, f"{name} looks blank"
    # the Grad-CAM figure shows the same mistakes in the same grid
    shapes = [cv2.imread(str(perf / n)).shape for n in ("confident_mistakes.png", "confident_mistakes_gradcam.png")]
    assert shapes[0] == shapes[1]
    assert not list(perf.glob(".*tmp*")), "temp files left behind"


def test_both_mistakes_figures_draw_the_same_mistakes_in_one_grid(evaluated, tmp_path, monkeypatch):
    """confident_mistakes.png and confident_mistakes_gradcam.png: one rule (the MAX_MISTAKES wrong predictions
    made with the highest confidence, most confident first) and one grid (explanations.mistakes_grid); without
    mistakes, both say so and Grad-CAM does not run."""
    from emotion.evaluation import evaluator, explanations
    paths, y, _, probs = _predictions(evaluated["tmp"] / "performance" / "predictions.csv")
    drawn, real = {}, explanations.mistakes_grid

    def spy(y, probs, class_names, path, pictures, title, k=explanations.MAX_MISTAKES):
        def recorded(shown):
            drawn[path.name] = [int(i) for i in shown]
            return title(shown)
        return real(y, probs, class_names, path, pictures, recorded, k)

    def both(probs):
        drawn.clear()
        evaluator.plot_mistakes(paths, y, probs, CLASS_NAMES, tmp_path / "confident_mistakes.png")
        explanations.plot_mistake_maps(evaluated["model"], paths, y, probs, CLASS_NAMES,
                                       tmp_path / "confident_mistakes_gradcam.png")
        assert all((tmp_path / name).is_file() for name in ("confident_mistakes.png", "confident_mistakes_gradcam.png"))
        return drawn

    monkeypatch.setattr(explanations, "mistakes_grid", spy)
    wrong = [i for i in range(len(y)) if probs[i].argmax() != y[i]]
    expected = sorted(wrong, key=lambda i: -probs[i].max())[:16]
    assert explanations.MAX_MISTAKES == 16 and len(expected) == min(16, len(wrong)) > 0
    assert both(probs) == {"confident_mistakes.png": expected, "confident_mistakes_gradcam.png": expected}
    monkeypatch.setattr(explanations.gradcam, "heatmaps", lambda *a, **k: pytest.fail("Grad-CAM ran without mistakes"))
    assert both(np.eye(len(CLASS_NAMES))[y]) == {"confident_mistakes.png": [], "confident_mistakes_gradcam.png": []}


def test_tta_on_val_split_averages_the_flip(evaluated, capsys):
    import evaluate
    tmp, model, cfg = evaluated["tmp"], evaluated["model"], evaluated["cfg"]
    perf = tmp / "performance_tta"
    args = as_set_args(evaluated["overrides"] + [f"performance_dir={perf}"])
    assert evaluate.main([*args, "--tta", "--split", "val", "--max-images-per-class", "2"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["tta"] is True and summary["split"] == "val" and summary["num_images"] == 16

    paths, y, _, probs = _predictions(perf / "predictions.csv")
    assert len(paths) == 16 and all(Path(p).parts[-3] == "val" for p in paths)
    plain = _model_probs(model, paths, cfg.input_shape)
    flipped = _model_probs(model, paths, cfg.input_shape, flip=True)
    assert np.allclose(probs, (plain + flipped) / 2, atol=1e-5, rtol=0)
    assert np.abs(probs - plain).max() > 1e-4, "TTA did not change the probabilities"
    saved = json.loads((perf / "evaluation_metrics.json").read_text())
    assert saved["tta"] is True and saved["num_images"] == 16
    assert saved["accuracy"] == pytest.approx(_sklearn_metrics(y, probs)["accuracy"])


def test_dry_run_writes_nothing(evaluated, capsys):
    import evaluate
    perf = evaluated["tmp"] / "performance_dry"
    args = as_set_args(evaluated["overrides"] + [f"performance_dir={perf}"])
    assert evaluate.main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out.strip().splitlines()[-1])["num_images"] == PER_CLASS * len(CLASS_NAMES)
    assert "would write" in out and not perf.exists()


def test_missing_test_folder_is_one_line(evaluated, tmp_path):
    import evaluate
    args = as_set_args(evaluated["overrides"] + [f"data_path={tmp_path / 'nothing'}"])
    with pytest.raises(errors.UserError) as err:
        evaluate.main(args)
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "nothing" / "test") in message and "organize_data.py" in message


def test_missing_model_is_one_line(tmp_path):
    link_organized(tmp_path / "data", per_class=1, splits=("test",))
    missing = tmp_path / "models" / "none.h5"
    proc = run_script("evaluate.py", *as_set_args(tiny_config(tmp_path, f"model_save_path={missing}")), timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert lines[-1].startswith("error: ") and str(missing) in lines[-1] and "train.py" in lines[-1], proc.stderr
    assert not (tmp_path / "performance").exists()


def test_read_only_performance_dir_fails_before_any_work(read_only_folder, tmp_path, capsys):
    """The check comes first: a missing model and data would otherwise be reported, after loading TensorFlow."""
    import evaluate
    perf = read_only_folder / "performance"
    with pytest.raises(errors.UserError, match=r"performance_dir .*read-only/performance is not writable .*"
                                               r"--set performance_dir=PATH"):
        evaluate.main(as_set_args(tiny_config(tmp_path, f"performance_dir={perf}")))
    assert capsys.readouterr().out == "" and list(read_only_folder.iterdir()) == []


def test_a_model_of_another_class_count_is_one_line(evaluated):
    """The 8-class model against a config listing 7 classes: the class-count check every command shares (the
    data's 8 class folders would be refused first through evaluate.main, so match_model is called itself)."""
    from emotion.evaluation import evaluator
    seven = config.Config(evaluated["cfg"], class_names=CLASS_NAMES[:7])
    with pytest.raises(errors.UserError) as err:
        evaluator.match_model(seven, evaluated["model"], Path("models/model.h5"))
    assert str(err.value) == ("the model models/model.h5 predicts 8 classes but config key class_names lists 7: "
                              "evaluate with the config it was trained with")
    assert evaluator.match_model(evaluated["cfg"], evaluated["model"], Path("m.h5")).class_names == CLASS_NAMES


def test_an_interrupted_evaluation_leaves_the_previous_files_and_card_whole(evaluated, tmp_path, monkeypatch):
    """Issue 18 D-7: evaluate.py --split val killed on the way left val metrics beside the test run's figures and
    card. The files and the card are one staged set: interrupted after the metrics were written, every file of
    the test run (card included) is byte-identical and no temporary file is left; the next run replaces all."""
    import evaluate
    from emotion.evaluation import calibration_figures
    model = tmp_path / "models" / "model.h5"
    model.parent.mkdir()
    shutil.copy(evaluated["cfg"].model_save_path, model)
    perf = tmp_path / "performance"
    args = as_set_args(evaluated["overrides"] + [f"performance_dir={perf}", f"model_save_path={model}"])
    with contextlib.redirect_stdout(io.StringIO()):
        assert evaluate.main(args) == 0
    tree = lambda: {p.relative_to(tmp_path).as_posix(): p.read_bytes() for p in sorted(tmp_path.rglob("*"))
                    if p.is_file()}
    before = tree()
    assert len(before) == 9 + 2 + 1  # OUTPUTS, the card's two files, the model

    def interrupted(*a, **k):
        assert (perf / ".evaluation_metrics.tmp-{}.json".format(os.getpid())).is_file()  # written, not published
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(calibration_figures, "plot_coverage", interrupted)
        with pytest.raises(KeyboardInterrupt), contextlib.redirect_stdout(io.StringIO()):
            evaluate.main([*args, "--split", "val", "--max-images-per-class", "2"])
    assert tree() == before
    with contextlib.redirect_stdout(io.StringIO()):
        assert evaluate.main([*args, "--split", "val", "--max-images-per-class", "2"]) == 0
    after = tree()
    assert sorted(after) == sorted(before) and all(after[k] != before[k] for k in before if k != "models/model.h5")
    assert json.loads(after["performance/evaluation_metrics.json"])["split"] == "val"
    assert set(json.loads(after["models/model.card.json"])["metrics"]) == {"test", "val"}
