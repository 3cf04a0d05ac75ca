"""What every script shares on the command line: --config/--set/--verbose, one-line errors, warnings.

Usage (in a script):
    def main(argv=None):
        parser = cli.parser(__doc__)
        args = parser.parse_args(argv)
        cfg = cli.load_config(args)           # exits 2 with one line on a bad config
        ...

    if __name__ == "__main__":
        cli.run(main)

    cli.warn("cannot open a window; running without one")   # "warning: ..." on stderr, every warning of ours

Nothing here imports TensorFlow, so `--help` stays fast.

TensorFlow's own logging: `import tensorflow` prints a dozen lines to stderr (CUDA plugin registration,
absl's "All log messages before absl::InitializeLog()", cuInit errors, CPU instruction hints), whatever
TF_CPP_MIN_LOG_LEVEL says for the absl ones. run() hides them unless the user asks: --verbose (every
script), or a TF_CPP_MIN_LOG_LEVEL they set (e.g. TF_CPP_MIN_LOG_LEVEL=0: everything, also what a crash
inside TensorFlow's import printed). So a script's `error: ...` line is the last line of its output and
easy to find. A script that starts another (pipeline.py) passes child_env() so the child decides alone.

Exit codes: 0 done, 1 bad input (UserError), 2 bad config or arguments, 130 interrupted, and
EXIT_WEIGHTS_DOWNLOAD (3): train.py could not download the ImageNet weights (pipeline.py then falls back).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.abc
import importlib.machinery
import os
import sys
from typing import Callable, Sequence

from . import config
from .config import UserError

EXIT_WEIGHTS_DOWNLOAD = 3
_quieted = {"log_level": False}  # whether quiet_tensorflow() set TF_CPP_MIN_LOG_LEVEL (not the user)


def parser(doc: str | None, **kwargs) -> argparse.ArgumentParser:
    """An ArgumentParser with --config and repeatable --set; defaults shown in --help."""
    p = argparse.ArgumentParser(
        description=(doc or "").strip().splitlines()[0] if doc else None,
        epilog="\n".join((doc or "").strip().splitlines()[1:]).strip() or None,
        formatter_class=_HelpFormatter,
        **kwargs,
    )
    p.add_argument("--config", default=str(config.DEFAULT_CONFIG_PATH), metavar="PATH",
                   help="configuration file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key for this run (repeatable; VALUE is YAML, e.g. --set weights=null)")
    p.add_argument("--verbose", action=_Verbose, help="show TensorFlow's own log lines (hidden by default)")
    return p


class _Verbose(argparse.Action):
    """--verbose: undo quiet_tensorflow() while parsing, before any script imports TensorFlow."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=False, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, True)
        verbose_tensorflow()


def warn(message: str) -> None:
    """Every warning of ours: one 'warning: ...' line on stderr (stdout flushed first, to keep the order)."""
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    print(f"warning: {message}", file=sys.stderr, flush=True)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def _int_at_least(minimum: int):
    """An argparse type for whole numbers >= minimum (counts, indices)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    return parse


positive_int = _int_at_least(1)
non_negative_int = _int_at_least(0)


def load_config(args: argparse.Namespace) -> config.Config:
    return config.load_config(args.config, args.overrides)


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
    """Runs the first import of each of _NOISY_IMPORTS (wherever it happens: keras, training.py, faces.py, the
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
        with cli.quiet_unless_verbose():
            flatbuffer = converter.convert()"""
    return quiet_stderr() if _quieted["log_level"] else contextlib.nullcontext()


def child_env() -> dict[str, str]:
    """os.environ for a script started by this one, less what quiet_tensorflow() set: the child quiets itself
    (or not, with --verbose) as if the user had started it."""
    env = dict(os.environ)
    if _quieted["log_level"]:
        env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return env


def run(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> None:
    """Call main(argv) and exit: a UserError becomes one 'error: ...' line and its exit code, the last line
    of the output (stdout is flushed first, so a pipe does not put buffered lines after it)."""
    quiet_tensorflow()
    try:
        code = main(argv)
    except UserError as exc:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        print(f"error: {exc}", file=sys.stderr, flush=True)
        code = exc.code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    sys.exit(code or 0)
