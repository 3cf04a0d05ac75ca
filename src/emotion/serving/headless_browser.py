"""The web page in headless Chromium (web/tools/browser.mjs, driven by playwright-core): how export.py
measures its TF.js formats through the page's own classify(), and what the browser tests drive.

    why = browser_missing()           # None when Debian's chromium, node and web/node_modules are here
    run = classify_in_browser(cfg, Path("models/export/tfjs_uint8"), images, Path("/tmp/work"))
    run["probs"], run["latency_ms"], run["backend"]         # float32 [N, C], batch-1 median ms, e.g. "wasm"
    result = run_browser("classify", url, images=[...])     # one scenario of browser.mjs, its JSON reply
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from emotion.serving import webpage

BROWSER_SCRIPT = webpage.WEB / "tools" / "browser.mjs"
CHROMIUM = Path("/usr/bin/chromium")


def browser_missing(node_modules: Path = webpage.NODE_MODULES) -> str | None:
    """Why the page cannot be run in headless Chromium here (None when it can)."""
    if not CHROMIUM.exists():
        return "Debian's chromium is not installed (apt-get install chromium chromium-driver)"
    if shutil.which("node") is None:
        return "node is not installed"
    if not (node_modules / "playwright-core").is_dir():
        return "web/node_modules is missing (npm ci --prefix web)"
    return None


def run_browser(scenario: str, url: str, timeout: float = 600, **options) -> dict:
    """Run one scenario of web/tools/browser.mjs (headless Chromium) and return the JSON object it prints."""
    import subprocess
    proc = subprocess.run(["node", str(BROWSER_SCRIPT), json.dumps({"scenario": scenario, "url": url, **options})],
                          capture_output=True, text=True, timeout=timeout, cwd=webpage.WEB)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"browser scenario {scenario} printed nothing: {(proc.stderr or proc.stdout)[-1000:]}")
    return json.loads(lines[-1])


def classify_in_browser(cfg, model_dir: Path, images, workdir: Path, latency_runs: int = 20,
                        node_modules: Path = webpage.NODE_MODULES) -> dict:
    """The page's classify() on each image as a whole face (uint8/float [N, H, W, 3] RGB at the model's input
    size, written as lossless PNGs), in headless Chromium on the backend the page picks. Returns
    {probs: float [N, C], latency_ms: batch-1 median, backend}. export.py fills the TF.js rows with it."""
    import cv2
    import numpy as np
    dist = workdir / "dist"
    webpage.build(cfg, model_dir, dist, node_modules)
    (dist / "images").mkdir()
    names = []
    for i, image in enumerate(np.asarray(images)):
        names.append(f"images/{i:05d}.png")
        cv2.imwrite(str(dist / names[-1]), np.ascontiguousarray(np.clip(image, 0, 255).astype(np.uint8)[:, :, ::-1]))
    with webpage.serving(dist) as url:
        result = run_browser("classify", url, images=names, detect=False, latencyRuns=latency_runs,
                             timeoutSeconds=600)
    if "error" in result:
        raise RuntimeError(result["error"].splitlines()[0])
    probs = np.array([[faces[0]["probabilities"][c] for c in cfg.class_names] for faces in result["faces"]],
                     np.float32)
    return {"probs": probs, "latency_ms": result["latencyMs"], "backend": result["ready"]["backend"]}
