"""Shared command-line behaviour: user errors become one line and a non-zero exit."""

from __future__ import annotations

import functools
import sys

EXIT_USER_ERROR = 2


def user_error(exc: BaseException) -> str | None:
    """The one-line message for a user error, or None for a bug (which keeps its traceback)."""
    from hydra.errors import InstantiationException

    from lithovae.data.errors import BuildError

    while isinstance(exc, InstantiationException) and exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, (BuildError, FileNotFoundError)):
        return str(exc)
    if isinstance(exc, InstantiationException):
        return str(exc).replace("\n", " ")
    from lithovae.config import ConfigError

    if isinstance(exc, ConfigError):
        return str(exc).splitlines()[0]
    return None


def exits_cleanly(fn):
    """Run ``fn``; print user errors as ``error: ...`` on stderr and exit 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - classified below
            message = user_error(exc)
            if message is None:
                raise
            print(f"error: {message}", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)

    return wrapper
