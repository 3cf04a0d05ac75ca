"""outputs.py: a run's outputs published together; what a killed run leaves is finished or removed by the next."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from emotion.common import outputs
from emotion.common.errors import UserError


@pytest.fixture
def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _staged(folder):
    return outputs.Staged({"data": folder / "predictions.json", "labeled": folder / "labeled_images"},
                          journal_dir=folder, folders={"labeled"})


def _tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_publish_replaces_files_and_own_folder_together(tmp_path):
    first = _staged(tmp_path)
    first.prepare()
    first.tmp["data"].write_text("1")
    (first.tmp["labeled"] / "a.png").write_text("a")
    first.publish()
    assert _tree(tmp_path) == {"predictions.json": b"1", "labeled_images/a.png": b"a",
                               f"labeled_images/{outputs.MARKER}": (tmp_path / "labeled_images" / outputs.MARKER)
                               .read_bytes()}
    second = _staged(tmp_path)
    second.prepare()
    second.tmp["data"].write_text("2")
    (second.tmp["labeled"] / "b.png").write_text("b")
    second.discard()  # an aborted run: the first run's outputs stay
    assert sorted(_tree(tmp_path)) == ["labeled_images/.written-by-emotion-recognition", "labeled_images/a.png",
                                       "predictions.json"]
    third = _staged(tmp_path)
    third.prepare()
    third.tmp["data"].write_text("3")
    (third.tmp["labeled"] / "c.png").write_text("c")
    third.publish()
    assert sorted(_tree(tmp_path)) == ["labeled_images/.written-by-emotion-recognition", "labeled_images/c.png",
                                       "predictions.json"]
    assert (tmp_path / "predictions.json").read_text() == "3"


def test_a_publication_killed_half_way_is_finished_and_dead_temps_are_removed(tmp_path, dead_pid):
    old = _staged(tmp_path)
    old.prepare()
    old.tmp["data"].write_text("old")
    old.publish()
    # What a run killed between its two renames leaves: its journal, one output renamed, one not.
    tmp_data = tmp_path / f".predictions.tmp-{dead_pid}.json"
    tmp_labeled = tmp_path / f".labeled_images.tmp-{dead_pid}"
    tmp_labeled.mkdir()
    outputs.mark(tmp_labeled)
    (tmp_labeled / "new.png").write_text("new")
    tmp_data.write_text("new")
    (tmp_path / f".publish-{dead_pid}.json").write_text(json.dumps([[str(tmp_data), str(tmp_path / "predictions.json")],
                                                                    [str(tmp_labeled), str(tmp_path / "labeled_images")]]))
    os.replace(tmp_data, tmp_path / "predictions.json")
    # and the temporary output of another dead run, killed before it published
    (tmp_path / f".predictions.tmp-{dead_pid + 1_000_000}.json").write_text("partial")
    _staged(tmp_path).prepare()
    tree = _tree(tmp_path)
    ours = os.getpid()
    assert sorted(tree) == sorted(["labeled_images/.written-by-emotion-recognition", "labeled_images/new.png",
                                   "predictions.json", f".labeled_images.tmp-{ours}/.written-by-emotion-recognition"])
    assert tree["predictions.json"] == b"new"


def test_a_folder_the_project_did_not_write_is_never_replaced(tmp_path):
    labeled = tmp_path / "labeled_images"
    labeled.mkdir()
    (labeled / "holiday.jpg").write_bytes(b"mine")
    staged = _staged(tmp_path)
    with pytest.raises(UserError, match="was not written by this project"):
        staged.check()
    with pytest.raises(UserError, match="was not written by this project"):
        staged.prepare()
    assert _tree(tmp_path) == {"labeled_images/holiday.jpg": b"mine"}
    assert outputs.is_own_folder(labeled, legacy=lambda name: name.endswith(".jpg"))
    (tmp_path / "elsewhere").mkdir()
    outputs.mark(tmp_path / "elsewhere")
    labeled.rename(tmp_path / "mine")
    labeled.symlink_to(tmp_path / "elsewhere")  # a link to a marked folder: still not a folder we wrote here
    with pytest.raises(UserError, match="was not written by this project"):
        _staged(tmp_path).check()


def test_a_journal_renames_only_temporary_outputs_to_their_own_names(tmp_path, dead_pid):
    """A journal left in results_dir (damaged or hostile) cannot move other files about."""
    (tmp_path / "precious.txt").write_text("mine")
    (tmp_path / f".predictions.tmp-{dead_pid}.json").write_text("x")
    (tmp_path / f".publish-{dead_pid}.json").write_text(json.dumps(
        [[str(tmp_path / "precious.txt"), str(tmp_path / "predictions.json")],
         [str(tmp_path / f".predictions.tmp-{dead_pid}.json"), str(tmp_path / "elsewhere.json")]]))
    (tmp_path / f".publish-{dead_pid + 1_000_000}.json").write_text("{not json")
    _staged(tmp_path).prepare()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".labeled_images.tmp-{os.getpid()}", "precious.txt"]
    assert (tmp_path / "precious.txt").read_text() == "mine"


# ---- one run at a time per output set


def test_a_second_hold_on_an_output_is_refused_naming_the_holder(tmp_path):
    place = tmp_path / "results"
    (tmp_path / "alias").symlink_to(tmp_path)
    with outputs.exclusive(place, tmp_path / "models" / "model.h5"):
        for spelling in (place, tmp_path / "alias" / "results", tmp_path / "x" / ".." / "results"):
            with pytest.raises(UserError) as exc:
                with outputs.exclusive(tmp_path / "other", spelling):
                    pass
            assert str(exc.value) == (f"{os.path.abspath(spelling)} is in use by another run (process {os.getpid()}: "
                                      f"{' '.join(sys.argv)}): wait for it to end, or point this run at other "
                                      f"outputs; nothing was written")
        with outputs.exclusive(tmp_path / "other"):  # refused above, so not held
            pass
    with outputs.exclusive(place):  # released at the end of the block
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alias"]  # nothing written beside the outputs


def test_a_killed_holder_frees_its_outputs(tmp_path):
    """The lock is the operating system's: kill -9 of the run that held it frees it, no stale lock file."""
    code = ("import sys, time; from emotion.common import outputs\n"
            "with outputs.exclusive(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "results")], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(UserError, match=rf"in use by another run \(process {holder.pid}: -c "):
            with outputs.exclusive(tmp_path / "results"):
                pass
    finally:
        holder.kill()
        holder.wait()
    with outputs.exclusive(tmp_path / "results"):
        pass


def _script_cases(tmp_path: Path) -> dict[str, tuple[list[str], Path]]:
    """{script: (its arguments for a run that writes, the output place it must hold)}, in tmp_path."""
    from support import FACES_GRAY, VIDEOS, YOLO_SAMPLE, require, tiny_config
    overrides = [a for o in tiny_config(tmp_path) for a in ("--set", o)]
    models = tmp_path / "models"
    return {
        "organize_data": (["--source", str(require(YOLO_SAMPLE)), "--link", *overrides], tmp_path / "data"),
        "train": (overrides, tmp_path / "performance"),
        "calibrate": (overrides, models / "model.h5"),
        "evaluate": (overrides, tmp_path / "performance"),
        "export": (["--formats", "saved_model", *overrides], models / "export"),
        "predict": (["--image_path", str(require(FACES_GRAY) / "images" / "Allison_Janney_0001.jpg"), "--json",
                     *overrides], tmp_path / "results" / "photos"),  # predict.py's own folder
        "inference": (["-v", str(require(VIDEOS) / "Megamind.avi"), "--no-display", *overrides],
                      tmp_path / "results"),
        "web": (["--build-only", "--dist", str(tmp_path / "dist"), *overrides], tmp_path / "dist"),
    }


@pytest.mark.parametrize("script", ["organize_data", "train", "calibrate", "evaluate", "export", "predict",
                                    "inference", "web"])
def test_every_script_that_writes_refuses_outputs_another_run_holds(tmp_path, script):
    """Two runs on the same outputs would mix their files (a model from one, its card from the other): the
    second stops with one line before it writes anything (the first is this test, holding the place)."""
    import importlib

    from support import link_organized, snapshot
    args, place = _script_cases(tmp_path)[script]
    if script in ("calibrate", "export"):
        (tmp_path / "models").mkdir()
        (tmp_path / "models" / "model.h5").write_bytes(b"a model")  # their first check: the model is there
    if script == "export":
        link_organized(tmp_path / "data", per_class=1, splits=("val",))
    before = snapshot(tmp_path)
    module = importlib.import_module(script)
    with outputs.exclusive(place):
        with pytest.raises(UserError) as exc:
            module.main(args)
    assert str(exc.value).startswith(f"{place} is in use by another run (process {os.getpid()}: ")
    assert snapshot(tmp_path) == before


def test_a_lock_file_that_is_a_link_is_never_followed(tmp_path, monkeypatch):
    """The lock folder lies in the shared temporary folder: a link planted there must not make a run truncate a
    file it did not write."""
    monkeypatch.setattr(outputs.tempfile, "gettempdir", lambda: str(tmp_path))
    place = tmp_path / "results"
    victim = tmp_path / "notes.txt"
    victim.write_text("a user's notes")
    lock = outputs.lock_path(place)
    lock.parent.mkdir(mode=0o700)
    lock.symlink_to(victim)
    with pytest.raises(UserError, match=r"cannot open the lock of .*results .*: remove that file and run again"):
        with outputs.exclusive(place):
            pass
    assert victim.read_text() == "a user's notes"


def test_scripts_sharing_a_folder_never_write_the_same_name():
    """Issue 18's cause "scripts sharing file names" (D-8): in the folders several scripts write to, each name
    belongs to one script. performance_dir: train, evaluate, export; results_dir: inference and predict's
    own sub-folder."""
    from emotion.evaluation import evaluator
    from emotion.runtime import photos, video
    from emotion.serving import exporting
    from emotion.training import trainer

    performance = {"train": {*trainer.PERFORMANCE_FILES, "tensorboard"}, "evaluate": set(evaluator.OUTPUTS),
                   "export": {exporting.REPORT_NAME}}
    results = {"inference": {video.LOG_NAME, video.PREDICTIONS_NAME, video.LABELED_DIR, video.TRACKS_NAME,
                             video.TIMELINE_NAME, "test_out.avi"}, "predict": {photos.PHOTOS_DIR}}
    for folder in (performance, results):
        names = [name for script in folder.values() for name in script]
        assert len(names) == len(set(names)), folder
    assert {"predictions.json", "labeled_images"} <= results["inference"]  # what predict.py writes in photos/
