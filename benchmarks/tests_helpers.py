"""The tests' helpers for the benchmarks, loaded by file path (tests/ is not a package, and nothing here edits
sys.path): the same data locations (../shared), model builders and synthetic images as the tests.

    from tests_helpers import browser, group_photo, support
    support.YOLO_SAMPLE, support.link_organized(...), group_photo.group_photo(...), browser.write_y4m(...)
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"


def load(name: str):
    """tests/<name>.py as the module `name` (once per process: a second load returns the same module)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, TESTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


support = load("support")
group_photo = load("group_photo")
browser = load("browser")
