"""outputs.py: a run's outputs published together; what a killed run leaves is finished or removed by the next."""
from __future__ import annotations

import json
import os
import subprocess

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
