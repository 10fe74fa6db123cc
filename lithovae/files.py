"""File helpers: an inter-process lock (parallel sweep jobs share one dataset and one
MLflow store), atomic writes (nothing half-written is left) and content digests."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import pickle
import re
import tempfile
import zipfile
import zlib
from pathlib import Path

from lithovae.errors import CheckpointError

# not at the top: torch is imported inside the checkpoint functions: locks and atomic writes, used
# at start-up, need no torch


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


def umask() -> int:
    """The process's umask, read without changing it where Linux tells it (/proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (the only portable way to read it)
    os.umask(mask)
    return mask


def default_mode(directory: bool = False) -> int:
    """The mode plain ``open()`` (``mkdir()``) gives a new file (folder): 0666 (0777) less the umask."""
    return (0o777 if directory else 0o666) & ~umask()


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place, with
    the mode a plain ``open()`` would give it (mkstemp creates 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, default_mode())
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
    one-line ``CheckpointError`` naming the file when it is missing, unreadable, damaged
    (truncated, a bad CRC, non-finite or non-tensor weights) or holds anything else (a pickled
    object: a planted payload, or a checkpoint written by other code)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    _check_archive(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch names a refused global: "... unsupported GLOBAL posix.system whose module ..."
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if found:
            raise CheckpointError(f"{path}: not a safe checkpoint: it holds pickled {found.group(1)}, which would "
                             f"run code when loaded; refusing it (only tensors and plain data are read)") from None
        raise CheckpointError(f"{path}: not a loadable safe checkpoint ({_first_sentence(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - a truncated, foreign or corrupt file
        raise CheckpointError(f"{path}: not a loadable checkpoint ({type(exc).__name__}: {_first_sentence(exc)})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a checkpoint (it holds a {type(state).__name__}, not a dict)")
    _check_weights(state, path)
    return state


def _check_archive(path: Path) -> None:
    """torch's zip reader does not verify CRCs, so a garbled byte in tensor data would load as a
    wrong weight: check every member's CRC first (checkpoints are small)."""

    with open(path, "rb") as fh:
        if fh.read(4) != b"PK\x03\x04":
            return  # not a zip: torch.load says what it is
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError) as exc:
        raise CheckpointError(f"{path}: not a loadable checkpoint (damaged: truncated or not a complete "
                              f"zip archive: {_first_sentence(exc)})") from None
    if bad is not None:
        raise CheckpointError(f"{path}: damaged checkpoint: its member {bad} fails the CRC check (garbled bytes)")


def _check_weights(state: dict, path: Path) -> None:
    """A Lightning checkpoint's ``state_dict`` (or a bare state dict, as ``weights.pt``) holds
    only tensors, and only finite floating-point values: a NaN weight would score as NaN."""
    import torch

    weights = state.get("state_dict", state)
    if not isinstance(weights, dict):
        raise CheckpointError(f"{path}: damaged checkpoint: its state_dict is a {type(weights).__name__}, not a dict")
    for key, value in weights.items():
        if not isinstance(value, torch.Tensor):
            if weights is state:  # a whole checkpoint without a state_dict: the caller says what is missing
                return
            raise CheckpointError(f"{path}: damaged checkpoint: state_dict {key!r} is a {type(value).__name__}, "
                                  "not a tensor")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{path}: damaged checkpoint: {key} holds non-finite values (NaN or inf)")


def check_fits(own: dict, weights: dict, where: str) -> None:
    """Weights fit a model whose state dict is ``own``: the first key they disagree on
    (missing, unexpected, not a tensor, or another shape) is one ``CheckpointError`` starting
    with ``where`` and naming the key and both shapes (weights of another architecture or size)."""
    import torch

    for key, tensor in own.items():
        if key not in weights:
            raise CheckpointError(f"{where}: it has no {key} (the model's is {list(tensor.shape)}); "
                                  "a checkpoint of another architecture?")
        saved = weights[key]
        if not isinstance(saved, torch.Tensor):
            raise CheckpointError(f"{where}: {key} is a {type(saved).__name__}, not a tensor")
        # an empty buffer is filled in training (contrastive pseudo-labels): any length fits it
        if tuple(saved.shape) != tuple(tensor.shape) and tensor.numel() > 0:
            raise CheckpointError(f"{where}: {key} is {list(saved.shape)} in the file and "
                                  f"{list(tensor.shape)} in the model (another architecture or size)")
    extra = [key for key in weights if key not in own]
    if extra:
        raise CheckpointError(f"{where}: unexpected key {extra[0]} (a checkpoint of another architecture?)")


def fit_weights(model, weights: dict, path: str | Path) -> None:
    """``model.load_state_dict(weights)``, after :func:`check_fits`."""
    check_fits(model.state_dict(), weights, f"{path}: does not fit this model ({type(model).__name__})")
    model.load_state_dict(weights)


def _first_sentence(exc: BaseException) -> str:
    """The informative line of a torch.load error, cut at its first sentence."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for i, line in enumerate(lines[:-1]):
        if line.endswith("WeightsUnpickler error:"):
            return lines[i + 1]
    return lines[0].split(". ")[0] if lines else type(exc).__name__
