"""The data layer's user-facing error (re-exported by the builder)."""

from __future__ import annotations


class BuildError(ValueError):
    """Bad input data or data options: the message names the file, column or key."""
