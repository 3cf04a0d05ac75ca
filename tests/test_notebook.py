"""notebooks/data_analysis.ipynb: executed on an organized copy of the real sample, checked on its content.

The notebook is executed in memory (never written back), with AFFECTNET_DATA_DIR pointing at tmp_path,
so the committed file keeps its outputs cleared.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from pathlib import Path

import pytest
from support import REPO, SPLITS, link_organized

from emotion.common import config

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = REPO / "notebooks" / "data_analysis.ipynb"
EXPECTED_PER_CLASS = {"train": 600, "val": 150, "test": 40}
CELL_TIMEOUT = 120


def _organize(source: Path, data_dir: Path, class_names: list[str]) -> None:
    """The organized layout, made the way a user makes it when organize_data.py exists."""
    if (REPO / "src" / "organize_data.py").exists():
        from emotion.data import organize

        organize.organize(source, data_dir, class_names, mode="link")
    else:
        link_organized(data_dir)


def _cross_split_duplicates(source: Path) -> int:
    """Distinct image contents found in more than one split of the raw download."""
    splits_of = defaultdict(set)
    for src_split in SPLITS:
        for image in (source / src_split / "images").iterdir():
            splits_of[hashlib.md5(image.read_bytes()).hexdigest()].add(src_split)
    return sum(len(s) > 1 for s in splits_of.values())


def _execute(nb, data_dir: Path, monkeypatch) -> None:
    monkeypatch.setenv("AFFECTNET_DATA_DIR", str(data_dir))  # the kernel inherits this process's environment
    monkeypatch.delenv("MPLBACKEND", raising=False)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3", allow_errors=True,
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()


def _errors(nb) -> list[str]:
    return [f"cell {i} ({cell.source.splitlines()[0] if cell.source else ''!r}): {out.ename}: {out.evalue}"
            for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
            for out in cell.outputs if out.output_type == "error"]


def _tagged(nb, tag: str):
    cells = [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"expected one cell tagged {tag!r}, found {len(cells)}"
    return cells[0]


def _has_png(cell) -> bool:
    return any("image/png" in out.get("data", {}) for out in cell.outputs)


def test_committed_notebook_has_no_outputs():
    """Outputs would embed AffectNet images, which may not be redistributed."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.outputs or c.execution_count is not None)]
    assert not dirty, f"clear the outputs of cells {dirty} before committing"
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert not re.search(r"^\s*(import|from)\s+(tensorflow|keras)\b", code, re.M), \
        "the notebook must not import TensorFlow (slow, and not needed)"


def test_notebook_on_real_sample(yolo_sample, tmp_path, monkeypatch):
    class_names = config.load_config().class_names
    data_dir = tmp_path / "data"
    _organize(yolo_sample, data_dir, class_names)

    nb = nbformat.read(NOTEBOOK, as_version=4)
    _execute(nb, data_dir, monkeypatch)
    assert not _errors(nb), "\n".join(_errors(nb))

    text = "".join(out.get("text", "") for out in _tagged(nb, "summary").outputs if out.output_type == "stream")
    lines = [line for line in text.splitlines() if line.startswith("{")]
    assert lines, f"no JSON summary printed by the last cell: {text!r}"
    summary = json.loads(lines[-1])

    assert summary["counts"] == {split: {c: n for c in class_names} for split, n in EXPECTED_PER_CLASS.items()}
    assert summary["totals"] == {"train": 4800, "val": 1200, "test": 320}
    assert sum(summary["unclassified"].values()) == 0
    assert summary["image_sizes"] == {"96x96": 6320}
    assert set(summary["extensions"]) == {".jpg", ".png"}

    expected_dups = _cross_split_duplicates(yolo_sample)
    assert expected_dups > 0, "the sample is known to share images between splits"
    assert summary["cross_split_duplicates"] == expected_dups
    assert sum(summary["cross_split_pairs"].values()) >= expected_dups

    assert _has_png(_tagged(nb, "class-counts-plot")), "the class-count bar chart produced no image"
    assert _has_png(_tagged(nb, "sample-grid")), "the sample grid produced no image"


def test_notebook_says_what_to_do_without_data(tmp_path, monkeypatch):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    setup = _tagged(nb, "setup")
    nb.cells = [setup]
    _execute(nb, tmp_path / "missing", monkeypatch)
    errors = [out for out in setup.outputs if out.output_type == "error"]
    assert len(errors) == 1
    assert "run python src/organize_data.py first" in errors[0].evalue
    assert len(errors[0].traceback) == 1, "expected one readable line, not a traceback"
