"""The library's user-facing errors. Each message is one line naming the file, column, option
or key; the command-line entry points print it as ``error: ...`` and exit 2 (``lithovae.cli``).
The library itself never exits."""

from __future__ import annotations


class LithovaeError(ValueError):
    """Bad input from the user: a config value, a data file, a checkpoint, a run directory."""


class ConfigError(LithovaeError):
    """A config key or value: unknown, of the wrong type, or out of its range."""


class DataError(LithovaeError):
    """Bad input data or data options: the message names the file, column or key."""


class CheckpointError(LithovaeError):
    """A checkpoint or pretrained-weights file that is missing, corrupt, unsafe or does not fit."""


class RunDirError(LithovaeError):
    """A directory that is not a complete lithovae run."""
