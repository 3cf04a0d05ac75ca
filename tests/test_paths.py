"""paths.py: the checks every script makes on the paths a user gives, before any work."""
from __future__ import annotations

import os

import pytest

from emotion.common import paths
from emotion.common.errors import UserError


def test_check_writable_accepts_a_new_folder_below_a_writable_one_and_leaves_nothing(tmp_path):
    paths.check_writable(tmp_path / "a" / "b", "results_dir")
    assert list(tmp_path.iterdir()) == []


def test_check_writable_refuses_a_read_only_folder(read_only_folder):
    with pytest.raises(UserError, match="results_dir .* is not writable"):
        paths.check_writable(read_only_folder / "out", "results_dir")
    assert list(read_only_folder.iterdir()) == []


def test_check_writable_refuses_a_path_below_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match="is not a folder"):
        paths.check_writable(tmp_path / "f" / "out", "results_dir")


def test_a_fifo_and_a_folder_are_not_regular_files(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    (tmp_path / "face.png").write_bytes(b"x")
    (tmp_path / "link.png").symlink_to(tmp_path / "face.png")
    assert [paths.is_regular_file(tmp_path / n) for n in ("pipe.png", ".", "face.png", "link.png", "gone.png")] == [
        False, False, True, True, False]


def test_same_file_by_path_by_symlink_and_by_hard_link(tmp_path):
    a = tmp_path / "a.avi"
    a.write_bytes(b"x")
    os.symlink(a, tmp_path / "s.avi")
    os.link(a, tmp_path / "h.avi")
    assert paths.same_file(a, tmp_path / "sub" / ".." / "a.avi")
    assert paths.same_file(a, tmp_path / "s.avi")
    assert paths.same_file(a, tmp_path / "h.avi")
    assert not paths.same_file(a, tmp_path / "other.avi")
