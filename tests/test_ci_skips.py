"""Under CI=true a skipped test fails the run (tests/conftest.py), unless marked allow_skip with a reason; without
CI a skip stays a skip. Checked by running pytest on a small suite that uses this project's conftest."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from support import REPO

SUITE = '''
import pytest

def test_runs():
    pass

def test_prerequisite_missing():
    pytest.skip("Debian's chromium is not installed")

@pytest.fixture
def data():
    pytest.skip("real data not found at ../shared")

def test_data_missing(data):
    pass

@pytest.mark.allow_skip(reason="needs a GPU; CI machines have none")
def test_allowed():
    pytest.skip("no GPU")

@pytest.mark.xfail(reason="known", strict=False)
def test_known_failure():
    assert False
'''


def _run(tmp_path: Path, ci: str | None, module_skip: bool = False) -> tuple[int, str]:
    suite = tmp_path / ("module" if module_skip else "suite")
    suite.mkdir()
    for name in ("conftest.py", "support.py"):
        shutil.copyfile(REPO / "tests" / name, suite / name)
    if module_skip:
        (suite / "test_needs_a_module.py").write_text('import pytest\npytest.importorskip("no_such_module_here")\n'
                                                      'def test_x():\n    pass\n')
    else:
        (suite / "test_suite.py").write_text(SUITE)
    env = {k: v for k, v in os.environ.items() if k != "CI"} | ({"CI": ci} if ci is not None else {})
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", str(suite)],
                          cwd=suite, capture_output=True, text=True, timeout=120, env=env)
    return proc.returncode, proc.stdout


def _last_line_counts(out: str) -> dict[str, int]:
    last = out.strip().splitlines()[-1]
    return {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", last)}


def test_under_ci_a_skip_fails_unless_allowed(tmp_path):
    code, out = _run(tmp_path, "true")
    assert code == 1, out
    counts = _last_line_counts(out)
    # A skip in a test fails it; a skip in a fixture fails its set-up (an error).
    assert counts == {"failed": 1, "error": 1, "passed": 1, "skipped": 1, "xfailed": 1}, out
    assert "FAILED test_suite.py::test_prerequisite_missing" in out
    assert "skipped under CI=true, where every test must run: Debian's chromium is not installed" in out
    assert "FAILED test_suite.py::test_data_missing" in out or "ERROR test_suite.py::test_data_missing" in out
    assert "SKIPPED" in out and "no GPU" in out  # the allowed one


def test_under_ci_a_module_skipped_at_import_is_an_error(tmp_path):
    code, out = _run(tmp_path, "true", module_skip=True)
    assert code != 0, out
    assert "ERROR test_needs_a_module.py - test_needs_a_module.py skipped under CI=true" in out
    assert "no_such_module_here" in out


def test_without_ci_skips_stay_skips(tmp_path):
    code, out = _run(tmp_path, None)
    assert code == 0, out
    assert _last_line_counts(out) == {"passed": 1, "skipped": 3, "xfailed": 1}, out
    code, out = _run(tmp_path, None, module_skip=True)
    assert code == 5 and _last_line_counts(out) == {"skipped": 1}, out  # 5: no test collected, not a failure
