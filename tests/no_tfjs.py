"""A script run as on a machine without the TF.js converter (tensorflowjs, the optional extra of
requirements-tfjs.txt), without uninstalling it: `import tensorflowjs` fails exactly as when it is absent.

    proc = run_script("export.py", ..., env=env_without_tfjs(tmp_path / "no_tfjs"))
"""
from __future__ import annotations

from pathlib import Path

SITECUSTOMIZE = '''\
import sys


class _NoTensorflowjs:
    """First on the meta path: tensorflowjs and its submodules are not found."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "tensorflowjs":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NoTensorflowjs())
'''


def env_without_tfjs(folder: Path) -> dict:
    """Environment variables (for run_script's env) under which tensorflowjs cannot be imported: a
    sitecustomize.py in `folder` (made here) puts a blocker first on Python's meta path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
    return {"PYTHONPATH": str(folder)}
