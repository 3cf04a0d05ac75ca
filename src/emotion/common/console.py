"""What the scripts print besides their results: our warnings, and TensorFlow's own logging kept out of the way.

    console.warn("cannot open a window; running without one")   # "warning: ..." on stderr, every warning of ours
    console.quiet_tensorflow()          # before anything imports TensorFlow (cli.run does it)
    with console.quiet_unless_verbose():
        flatbuffer = converter.convert()   # C++ logging past TF_CPP_MIN_LOG_LEVEL, hidden unless --verbose
    subprocess.run(cmd, env=console.child_env())   # a script started by a script decides alone

TensorFlow's own logging: `import tensorflow` prints a dozen lines to stderr (CUDA plugin registration,
absl's "All log messages before absl::InitializeLog()", cuInit errors, CPU instruction hints), whatever
TF_CPP_MIN_LOG_LEVEL says for the absl ones. cli.run() hides them unless the user asks: --verbose (every
script), or a TF_CPP_MIN_LOG_LEVEL they set (e.g. TF_CPP_MIN_LOG_LEVEL=0: everything, also what a crash
inside TensorFlow's import printed). So a script's `error: ...` line is the last line of its output and
easy to find. Nothing here imports TensorFlow.
"""
from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import os
import sys

_quieted = {"log_level": False}  # whether quiet_tensorflow() set TF_CPP_MIN_LOG_LEVEL (not the user)


def warn(message: str) -> None:
    """Every warning of ours: one 'warning: ...' line on stderr (stdout flushed first, to keep the order)."""
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    print(f"warning: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def quiet_stderr():
    """Silence C-level stderr (file descriptor 2) for the block: native libraries write there directly,
    past sys.stderr (TFLite's 'INFO: Created TensorFlow Lite XNNPACK delegate', TensorFlow's import noise)."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


# Imports whose start-up lines quiet_tensorflow() hides: TensorFlow's, and the ydf advertisement that
# tensorflow_decision_forests prints to stderr when tensorflowjs's converter imports it.
_NOISY_IMPORTS = ("tensorflow", "tensorflow_decision_forests")


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Runs the first import of each of _NOISY_IMPORTS (wherever it happens: keras, trainer.py, faces.py, the
    TF.js converter) under quiet_stderr, then sets absl's Python logging to errors only. Removes itself once
    all are imported."""

    def __init__(self):
        self.waiting = {name for name in _NOISY_IMPORTS if name not in sys.modules}

    def find_spec(self, name, path=None, target=None):
        if name not in self.waiting:
            return None
        self.waiting.discard(name)
        if not self.waiting:
            sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _QuietLoader(spec.loader)
        return spec


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        # The module keeps the real loader (importlib.resources and friends look at it).
        module.__loader__ = module.__spec__.loader = self._loader
        with quiet_stderr():
            self._loader.exec_module(module)
        with contextlib.suppress(ImportError):
            from absl import logging as absl_logging
            absl_logging.set_verbosity(absl_logging.ERROR)


def quiet_tensorflow() -> None:
    """Hide TensorFlow's start-up logging (see the module docstring) unless the user set
    TF_CPP_MIN_LOG_LEVEL; a no-op once TensorFlow is imported. Call before anything imports it."""
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ or "tensorflow" in sys.modules:
        return
    # 3: C++ errors too ("failed call to cuInit" on every CPU-only run); real failures raise in Python.
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    _quieted["log_level"] = True
    if not any(isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowImport())


def verbose_tensorflow() -> None:
    """Undo quiet_tensorflow() (what --verbose does): TensorFlow logs as it would without this module."""
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _QuietTensorFlowImport)]
    if _quieted["log_level"]:
        os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
        _quieted["log_level"] = False


def quiet_unless_verbose():
    """A context that hides stderr (quiet_stderr) while TensorFlow's logging is hidden, for C++ code that logs
    past TF_CPP_MIN_LOG_LEVEL (the TFLite and TF.js converters); a no-op with --verbose or the user's own
    TF_CPP_MIN_LOG_LEVEL. Errors still arrive as Python exceptions.
        with console.quiet_unless_verbose():
            flatbuffer = converter.convert()"""
    return quiet_stderr() if _quieted["log_level"] else contextlib.nullcontext()


def child_env() -> dict[str, str]:
    """os.environ for a script started by this one, less what quiet_tensorflow() set: the child quiets itself
    (or not, with --verbose) as if the user had started it."""
    env = dict(os.environ)
    if _quieted["log_level"]:
        env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return env
