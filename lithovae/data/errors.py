"""The data layer's user-facing error (re-exported by the builder)."""

from __future__ import annotations

from lithovae.errors import DataError as BuildError  # the data layer's name for DataError

__all__ = ["BuildError"]
