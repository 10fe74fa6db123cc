"""File helpers: an inter-process lock (parallel sweep jobs share one dataset and one
MLflow store), atomic writes (nothing half-written is left) and content digests."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def file_lock(path: str | Path):
    """Hold an exclusive lock on ``path`` (created if needed) for the ``with`` block."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_digest(path: Path) -> str:
    """SHA-256 of the file's bytes, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint (or any ``torch.save`` file) read with ``weights_only=True`` onto the CPU:
    tensors, numbers, strings and containers only, so no pickled code ever runs. Raises a
    one-line ``CheckpointError`` naming the file when it is missing, unreadable, or holds anything
    else (a pickled object: a planted payload, or a checkpoint written by other code)."""
    import pickle
    import re

    import torch

    from lithovae.errors import CheckpointError

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch names a refused global: "... unsupported GLOBAL posix.system whose module ..."
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if found:
            raise CheckpointError(f"{path}: not a safe checkpoint: it holds pickled {found.group(1)}, which would "
                             f"run code when loaded; refusing it (only tensors and plain data are read)") from None
        raise CheckpointError(f"{path}: not a loadable safe checkpoint ({_first_sentence(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - a truncated, foreign or corrupt file
        raise CheckpointError(f"{path}: not a loadable checkpoint ({type(exc).__name__}: {_first_sentence(exc)})") from None


def _first_sentence(exc: BaseException) -> str:
    """The informative line of a torch.load error, cut at its first sentence."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for i, line in enumerate(lines[:-1]):
        if line.endswith("WeightsUnpickler error:"):
            return lines[i + 1]
    return lines[0].split(". ")[0] if lines else type(exc).__name__
