"""What every script shares on the command line: --config/--set/--verbose, one-line errors, exit codes.

Usage (in a script):
    def main(argv=None):
        parser = cli.parser(__doc__)
        args = parser.parse_args(argv)
        cfg = cli.load_config(args)           # exits 2 with one line on a bad config
        ...

    if __name__ == "__main__":
        cli.run(main)                         # UserError -> one 'error: ...' line and its exit code
        cli.run(main, memory=["--set train_batch_size=N"])   # an out-of-memory -> one line naming these

Nothing here imports TensorFlow, so `--help` stays fast; run() hides TensorFlow's start-up logging unless
--verbose (console.py says how). Exit codes (errors.py): 0 done, 1 bad input (UserError), 2 bad config or
arguments, 3 train.py could not download the ImageNet weights (pipeline.py then falls back), 130 interrupted.
"""
from __future__ import annotations

import argparse
import contextlib
import re
import sys
from typing import Callable, Sequence

from emotion.common import config, console
from emotion.common.errors import EXIT_INTERRUPTED, UserError, first_line


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
    """--verbose: undo console.quiet_tensorflow() while parsing, before any script imports TensorFlow."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=False, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, True)
        console.verbose_tensorflow()


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def int_range(minimum: int, maximum: int | None = None):
    """An argparse type for whole numbers in [minimum, maximum] (counts, indices, ports): a value the code
    cannot take is one usage line (exit 2), never an overflow deep inside a library."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value
    return parse


positive_int = int_range(1)
non_negative_int = int_range(0)
port_number = int_range(0, 65535)            # TCP ports; 0: any free one
device_index = int_range(0, 2 ** 31 - 1)     # OpenCV takes a C int


def load_config(args: argparse.Namespace) -> config.Config:
    return config.load_config(args.config, args.overrides)


def run(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None,
        memory: Sequence[str] = ()) -> None:
    """Call main(argv) and exit: a UserError becomes one 'error: ...' line and its exit code, the last line
    of the output (stdout is flushed first, so a pipe does not put buffered lines after it). An out-of-memory
    (MemoryError, TensorFlow's ResourceExhaustedError) is a UserError naming `memory`, the settings that set
    the script's memory (e.g. "--set train_batch_size=N")."""
    console.quiet_tensorflow()
    try:
        try:
            code = main(argv)
        except BaseException as exc:
            if is_out_of_memory(exc):
                raise out_of_memory(exc, memory) from None
            raise
    except UserError as exc:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        print(f"error: {exc}", file=sys.stderr, flush=True)
        code = exc.code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    sys.exit(code or 0)


def is_out_of_memory(exc: BaseException) -> bool:
    """MemoryError, or TensorFlow's ResourceExhaustedError (told by its class, so TensorFlow is not imported)."""
    return isinstance(exc, MemoryError) or any(c.__name__ == "ResourceExhaustedError" and
                                               c.__module__.startswith("tensorflow") for c in type(exc).__mro__)


def out_of_memory(exc: BaseException, settings: Sequence[str]) -> UserError:
    """The one line for an out-of-memory: what ran out, and which settings to lower."""
    what = first_line(exc) if str(exc).strip() else type(exc).__name__
    what = re.sub(r" on /job:.*$", "", re.sub(r"\{\{.*?\}\}\s*", "", what))  # TensorFlow's device and op names
    hint = (f"lower {' or '.join(settings)}" if settings else "close other programs or use a machine with more memory")
    return UserError(f"out of memory ({what}): {hint}")
