"""Command-line behaviour, used by the entry points only: a user error (a
:class:`lithovae.errors.LithovaeError`) becomes one ``error:`` line and exit code 2, an
interrupted run exit code 128 + signal. The library raises; it never exits."""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import signal
import sys
import threading
from pathlib import Path

from lithovae.errors import LithovaeError

# not at the top: hydra.errors is imported inside the handler that needs it: the entry points'
# start-up stays light

EXIT_USER_ERROR = 2


class RunInterrupted(BaseException):
    """SIGTERM (how SLURM preempts) or SIGINT (Ctrl-C) arrived. A BaseException, like
    KeyboardInterrupt, so no ``except Exception`` swallows it; the exit code is 128 + signal."""

    def __init__(self, signum: int, detail: str = ""):
        self.signum = signum
        self.signame = signal.Signals(signum).name
        self.detail = detail
        super().__init__(f"interrupted by {self.signame}" + (f"; {detail}" if detail else ""))

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextlib.contextmanager
def signals_interrupt():
    """Within the block, SIGTERM and SIGINT raise :class:`RunInterrupted` (Lightning then stops
    the trainer and keeps its own SIGTERM notice). Outside the main thread this is a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise RunInterrupted(signum)

    # a signal ignored by whoever started us (SIGINT of a background job) stays ignored
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)
                if signal.getsignal(sig) is not signal.SIG_IGN}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# a full disk, a quota, a read-only or forbidden folder: the machine's state, not a bug
FILE_SYSTEM_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES,
                                errno.EPERM, errno.EISDIR, errno.ENOTDIR, errno.ENAMETOOLONG})
# the temporary names of lithovae.files.atomic_write (.NAME.XXXXXXXX.tmp) and
# checkpointing.save_atomically (.NAME.tmp): a message names the file being written
_TEMPORARY = re.compile(r"^\.(?P<name>.+?)(\.[a-z0-9_]{8})?\.tmp$")


def file_system_error(exc: OSError) -> str:
    """``<file>: <reason> (<ERRNO>)``, naming the file written, not its temporary name."""

    name = errno.errorcode.get(exc.errno, str(exc.errno))
    reason = exc.strerror or os.strerror(exc.errno)
    if exc.filename is None:
        return f"{reason} ({name})"
    path = Path(os.fsdecode(exc.filename))
    found = _TEMPORARY.match(path.name)
    return f"{path.with_name(found['name']) if found else path}: {reason} ({name})"


def user_error(exc: BaseException) -> str | None:
    """The one-line message for a user error, or None for a bug (which keeps its traceback)."""
    from hydra.errors import InstantiationException

    while isinstance(exc, InstantiationException) and exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, OSError) and exc.errno in FILE_SYSTEM_ERRNOS:
        return file_system_error(exc)
    if isinstance(exc, (LithovaeError, FileNotFoundError)):
        return str(exc).splitlines()[0]
    if isinstance(exc, InstantiationException):
        return str(exc).replace("\n", " ")
    return None


def exits_cleanly(fn, on_user_error=None):
    """Run ``fn``; print user errors as ``error: ...`` on stderr and exit 2 (128 + signal
    for an interrupted run). ``on_user_error(message)`` runs first (e.g. to mark the run's
    folder with the reason)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RunInterrupted as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(exc.exit_code)
        except Exception as exc:  # noqa: BLE001 - classified below
            message = user_error(exc)
            if message is None:
                raise
            if on_user_error is not None:
                on_user_error(message)
            print(f"error: {message}", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)

    return wrapper


def one_line(exc: BaseException) -> str:
    """The user-error line, or the exception's type and first line for a bug."""
    message = user_error(exc) if isinstance(exc, Exception) else None
    if message is None:
        first = (str(exc).strip().splitlines() or [""])[0]
        message = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return message
