"""Shared fixtures: where the real data lies, and how to run a script as a user would."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SHARED_DATA_DIR", REPO.parent / "shared"))
YOLO_SAMPLE = SHARED / "data" / "affectnet-yolo-sample" / "YOLO_format"
FACES_GRAY = SHARED / "data" / "faces-grayscale-350"
VIDEOS = SHARED / "videos"


def require(path: Path) -> Path:
    """Skip the calling test, with the reason, when a piece of ../shared is absent."""
    if not path.exists():
        pytest.skip(f"real data not found at {path} (see ../shared/README.md)")
    return path


@pytest.fixture
def yolo_sample() -> Path:
    """The read-only Kaggle YOLO_format sample; never modify it (link or copy it first)."""
    return require(YOLO_SAMPLE)


def run_script(script: str, *args: str, cwd: Path | None = None, timeout: float = 600,
               env: dict | None = None) -> subprocess.CompletedProcess:
    """Run src/<script> with this interpreter; returns the CompletedProcess (text output)."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run([sys.executable, str(REPO / "src" / script), *args], cwd=cwd or REPO,
                          capture_output=True, text=True, timeout=timeout, env=full_env)
