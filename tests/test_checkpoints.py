"""checkpoints.RunFiles without TensorFlow: what --restart may delete, stale temps, damaged state, publishing."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support import snapshot

from emotion.common import atomic
from emotion.common.errors import UserError
from emotion.training import checkpoints

FINGERPRINT = "f" * 16


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _run_files(tmp_path: Path) -> checkpoints.RunFiles:
    models = tmp_path / "models"
    return checkpoints.RunFiles(models / "checkpoints", models / "model.h5", models / "model_last.h5",
                                tmp_path / "performance" / "training_log.csv")


def _row(epoch: int, **changes) -> dict:
    row = {"epoch": epoch, "phase": "head", "loss": 2.5, "accuracy": 0.25, "val_loss": 2.4, "val_accuracy": 0.25,
           "val_macro_f1": 0.1, "learning_rate": "0.001", "images_per_s": 30.0, "seconds": 1.0}
    return {**row, **changes}


def _committed(run: checkpoints.RunFiles, epochs: int = 2) -> dict:
    """A finished run's checkpoint folder as train.py leaves it (small stand-in files), committed."""
    run.dir.mkdir(parents=True)
    (run.dir / f"epoch_{epochs:03d}.keras").write_bytes(b"checkpoint %d" % epochs)
    (run.dir / f"last_{epochs:03d}.h5").write_bytes(b"last %d" % epochs)
    (run.dir / "best_001.h5").write_bytes(b"best 1")
    state = {"epoch": epochs, "checkpoint": f"epoch_{epochs:03d}.keras", "last_model": f"last_{epochs:03d}.h5",
             "best_model": "best_001.h5", "best": 0.1, "best_epoch": 1, "fingerprint": FINGERPRINT,
             "rows": [_row(e) for e in range(1, epochs + 1)], "random_states": {}}
    run.commit(state)
    return state


# ---- --restart


def test_restart_refuses_a_folder_with_other_files_and_deletes_nothing(tmp_path):
    keep = tmp_path / "keep"
    (keep / "sub").mkdir(parents=True)
    (keep / "precious.txt").write_text("x\n")
    (keep / "state.json").write_text("{}")  # ours by name, but the folder is not ours alone
    (keep / "link.h5").symlink_to(keep / "precious.txt")
    before = snapshot(keep)
    run = checkpoints.RunFiles(keep, tmp_path / "m.h5", tmp_path / "m_last.h5", tmp_path / "log.csv")
    with pytest.raises(UserError, match=r"--restart deletes only train.py's own files, but checkpoint_dir .*keep "
                                        r"also holds link.h5, precious.txt, sub: move them away"):
        run.clear()
    assert snapshot(keep) == before


def test_restart_deletes_only_own_files(tmp_path):
    run = _run_files(tmp_path)
    _committed(run)
    dead = _dead_pid()
    (run.dir / f".epoch_003.tmp-{dead}.keras").write_bytes(b"half a checkpoint")
    run.clear()
    assert run.dir.is_dir() and list(run.dir.iterdir()) == []


def test_restart_keeps_published_models_in_the_same_folder(tmp_path):
    """checkpoint_dir and model_save_path in one folder: the published model is train.py's too, and it stays."""
    models = tmp_path / "models"
    run = checkpoints.RunFiles(models, models / "model.h5", models / "model_last.h5", tmp_path / "log.csv")
    _committed(run)
    run.publish(json.loads(run.state_path.read_text()))
    run.clear({"model.h5", "model_last.h5"})
    assert sorted(p.name for p in models.iterdir()) == ["model.h5", "model_last.h5"]
    assert (models / "model.h5").read_bytes() == b"best 1"


def test_restart_refuses_while_another_process_writes_there(tmp_path):
    run = _run_files(tmp_path)
    _committed(run)
    live = run.dir / f".epoch_003.tmp-{atomic.os.getppid()}.keras"
    live.write_bytes(b"being written")
    before = snapshot(run.dir)
    with pytest.raises(UserError, match="another process is writing .epoch_003"):
        run.clear()
    assert snapshot(run.dir) == before


# ---- stale temps of killed writers (item 9)


def test_stale_temps_of_dead_processes_are_removed_and_nothing_else(tmp_path):
    run = _run_files(tmp_path)
    _committed(run)
    models, perf = run.best_path.parent, run.log_path.parent
    perf.mkdir()
    dead, alive = _dead_pid(), atomic.os.getppid()
    stale = [run.dir / f".epoch_002.tmp-{dead}.keras", models / f".model_last.tmp-{dead}.h5",
             models / f".model.tmp-{dead}.h5", perf / f".training_log.tmp-{dead}.csv"]
    kept = [run.dir / f".epoch_002.tmp-{alive}.keras",   # a live writer's
            models / f".notes.tmp-{dead}.txt",              # not a name train.py writes
            run.dir / "precious.txt", models / "model.h5"]
    for p in stale + kept:
        p.write_bytes(b"x")
    before = {p: p.read_bytes() for p in kept}
    removed = run.remove_stale_temps({models: {"model.h5", "model_last.h5"}, perf: {"training_log.csv"}})
    assert sorted(removed) == sorted(stale)
    assert not any(p.exists() for p in stale)
    assert {p: p.read_bytes() for p in kept} == before


# ---- damaged state: one line that says what to do


def test_truncated_state_json(tmp_path):
    run = _run_files(tmp_path)
    _committed(run)
    text = run.state_path.read_text()
    run.state_path.write_text(text[: len(text) // 2])
    with pytest.raises(UserError, match=r"state.json is damaged \(not JSON: .*\): pass --restart"):
        run.load_state(FINGERPRINT)


def test_missing_checkpoint_named_by_state(tmp_path):
    run = _run_files(tmp_path)
    _committed(run)
    (run.dir / "last_002.h5").unlink()
    with pytest.raises(UserError, match=r"last_002.h5, named by .*state.json, is missing: pass --restart"):
        run.load_state(FINGERPRINT)


def test_non_numeric_log_row(tmp_path):
    run = _run_files(tmp_path)
    state = _committed(run)
    state["rows"][1]["loss"] = "lots"
    run.commit(state)
    with pytest.raises(UserError, match=r"damaged \(log row 2: loss 'lots' is not a number\): pass --restart"):
        run.load_state(FINGERPRINT)


def test_non_numeric_row_in_the_csv_of_an_older_state(tmp_path):
    """state.json files written before it held the log rows: the rows come from training_log.csv."""
    run = _run_files(tmp_path)
    state = _committed(run)
    del state["rows"], state["last_model"], state["best_model"]
    run.commit(state)
    run.log_path.parent.mkdir(parents=True)
    run.log_path.write_text(checkpoints.log_text([_row(1), _row(2, val_loss="oops")]))
    with pytest.raises(UserError, match=r"training_log.csv is damaged \(log row 2: val_loss 'oops' is not a "
                                        r"number\): pass --restart"):
        run.load_state(FINGERPRINT)
    run.log_path.write_text(checkpoints.log_text([_row(1), _row(2), _row(3)]))  # a row never committed
    assert [r["epoch"] for r in run.load_state(FINGERPRINT)["rows"]] == ["1", "2"]


def test_a_state_from_before_the_train_macro_f1_column_resumes(tmp_path):
    """Rows committed before training_log.csv had `macro_f1` (the train split's) load, and publish with it empty."""
    run = _run_files(tmp_path)
    _committed(run)  # _row has no macro_f1
    state = run.load_state(FINGERPRINT)
    run.publish(state)
    assert run.log_path.read_text().splitlines()[1].split(",")[checkpoints.LOG_FIELDS.index("macro_f1")] == ""
    state["rows"][0]["macro_f1"] = "high"
    run.commit(state)
    with pytest.raises(UserError, match=r"log row 1: macro_f1 'high' is not a number"):
        run.load_state(FINGERPRINT)


def test_state_of_another_config(tmp_path):
    run = _run_files(tmp_path)
    _committed(run)
    with pytest.raises(UserError, match="another config: pass --restart"):
        run.load_state("0" * 16)


# ---- publishing: what a kill between the commit and the publication leaves is completed


def test_publish_repairs_and_prune_keeps_what_state_names(tmp_path):
    run = _run_files(tmp_path)
    state = _committed(run)
    (run.dir / "epoch_001.keras").write_bytes(b"an older epoch")
    (run.dir / "best_003.h5").write_bytes(b"an uncommitted epoch")
    run.best_path.write_bytes(b"a best model from before the commit")
    run.log_path.parent.mkdir(parents=True)
    run.log_path.write_text("epoch,loss\n1,not a number\n")
    state = run.load_state(FINGERPRINT)
    run.publish(state)
    run.prune(state)
    assert run.best_path.read_bytes() == b"best 1" and run.last_path.read_bytes() == b"last 2"
    assert run.log_path.read_text() == checkpoints.log_text(state["rows"])
    assert sorted(p.name for p in run.dir.iterdir()) == ["best_001.h5", "epoch_002.keras", "last_002.h5",
                                                          "state.json"]
    assert sorted(p.name for p in run.best_path.parent.iterdir()) == ["checkpoints", "model.h5", "model_last.h5"]
    assert json.loads(run.state_path.read_text()) == state


# ---- the disk peak (item 10)


def test_peak_counts_two_checkpoints_and_three_models():
    keras_file, h5 = checkpoints.estimate_bytes(1000, "adam")
    assert keras_file > 4 * 3000 and h5 > 4000
    assert checkpoints.peak_bytes(1000, "adam", cross_device=False) == 2 * keras_file + 3 * h5
    assert checkpoints.peak_bytes(1000, "sgd", cross_device=True) == 2 * checkpoints.estimate_bytes(1000, "sgd")[0] \
        + 6 * h5
