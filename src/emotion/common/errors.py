"""The one channel for a user's mistakes, and the exit codes every script ends with.

    raise UserError(f"no trained model at {path}: run python src/train.py first")   # 'error: ...', exit 1
    raise ConfigError("config key 'epochs' must be ...")                              # exit 2
    raise UserError(f"cannot read {path}: {first_line(exc)}") from None

cli.run turns a UserError into one 'error: ...' line (never a traceback) and its `code`. Nothing here imports
anything of the project's, so every module can raise these.
"""
from __future__ import annotations

EXIT_USER_ERROR = 1        # bad input: a file, a folder, a model that does not fit
EXIT_CONFIG = 2            # bad config key or value, bad command-line arguments (argparse's own code)
EXIT_WEIGHTS_DOWNLOAD = 3  # train.py could not download the ImageNet weights (pipeline.py then falls back)
EXIT_INTERRUPTED = 130     # Ctrl-C, as a shell reports SIGINT


class UserError(Exception):
    """A mistake the user can fix: printed as one line, never as a traceback. `code` is the exit code."""

    code = EXIT_USER_ERROR


class ConfigError(UserError):
    """A wrong config file, key or value (--config, --set): exit code 2, as argparse gives bad arguments."""

    code = EXIT_CONFIG


def first_line(exc: BaseException) -> str:
    """The first line of exc's message (at most 200 characters), for one-line errors."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
