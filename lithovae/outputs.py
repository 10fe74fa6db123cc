"""Where a command writes, checked before it does any work: an output never replaces or lands
inside one of the command's inputs (its data, the prepared datasets, the run or predictor
bundle it reads), an existing output file is replaced only when asked, and an output that cannot
be written (a read-only folder, a file where a folder is needed) is named first."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from lithovae.errors import ConfigError


def _real(path) -> Path:
    """The absolute path with every symbolic link of its existing part followed."""
    return Path(os.path.abspath(os.path.expanduser(str(path)))).resolve()


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _same_file(a: Path, b: Path) -> bool:
    """One file under two names: equal paths, or a hard link."""
    if a == b:
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # either does not exist
        return False


def refuse_inputs(files: list[Path], folders: list[Path], inputs: list[tuple[str, Path | None, bool | None]],
                  key: str = "out", hint: str = "choose another place for the output") -> None:
    """Raise a one-line ConfigError naming ``key`` when an output of ``files`` (written as they
    are) or ``folders`` (written into) is one of the ``inputs``, lies inside an input folder, or
    holds an input file. ``inputs``: (what it is, its path, True for a folder (everything in it
    is an input, whether it exists yet or not), False for a file, None: whichever it is)."""
    readable = []
    for what, path, is_folder in inputs:
        if path is not None and str(path):
            real = _real(path)
            readable.append((what, real, real.is_dir() if is_folder is None else is_folder, path))
    for target in [*files, *folders]:
        real = _real(target)
        target_is_folder = target in folders
        for what, source, source_is_folder, given in readable:
            if source_is_folder:
                clash, how = _within(real, source), "lies inside"
            elif target_is_folder:
                clash, how = _within(source, real), "holds"
            else:
                clash, how = _same_file(real, source), "is"
            if clash:
                raise ConfigError(f"{key}: {target} {how} {what} {given}, which this command reads: {hint}")


def check_evaluation_output(run_dir: Path, out: Path, source, weights: str) -> None:
    """``lithovae.evaluate`` writes ``out/metrics.json`` (``out`` = ``<run>/evaluations/<data>-<split>``):
    refused when that is, or holds, one of its inputs (``data.path``: a table named
    metrics.json placed there, or a LAS folder around it; a ``weights=`` file), and when the
    run's ``evaluations`` is a symbolic link out of the run (a run directory from elsewhere
    must not write outside itself)."""
    if not _within(_real(out), _real(run_dir)):
        raise ConfigError(f"run_dir: {out} leads out of the run directory {run_dir} (a symbolic link): "
                          "evaluate writes only inside the run")
    checkpoint = None if weights in ("scored", "best", "last") else Path(weights)
    refuse_inputs([out / "metrics.json"], [out],
                  [("data.path", getattr(source, "path", None), None),
                   ("data.raw_dir", getattr(source, "raw_dir", None), True), ("weights", checkpoint, False)],
                  key="run_dir", hint="evaluate writes there: move the input elsewhere")


def refuse_unwritable(files: list[Path], folders: list[Path], overwrite: bool, key: str = "out",
                      option: str = "overwrite") -> None:
    """Raise a one-line ConfigError naming ``key`` when an output file exists (unless
    ``overwrite``) or is read-only, is a folder; when an output folder is a file; or when the
    folder it would be made in is read-only or not a folder."""
    for path in files:
        if path.is_dir():
            raise ConfigError(f"{key}: {path} is a folder, not a file")
        if path.exists():
            if not overwrite:
                raise ConfigError(f"{key}: {path} already exists: set {option}=true to replace it")
            if not _writable(path):
                raise ConfigError(f"{key}: {path} is read-only")
        _writable_folder(path.parent, key)
    for folder in folders:
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"{key}: {folder} is a file, not a folder")
        _writable_folder(folder, key)


def _writable(path: Path) -> bool:
    """Writable by this user, and not marked read-only (root may write anything: a path without
    any write permission still says 'leave me alone')."""
    return os.access(path, os.W_OK) and bool(path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _writable_folder(folder: Path, key: str) -> None:
    """``folder``, or the nearest part of it that exists, is a folder this user may write in."""
    existing = Path(os.path.abspath(folder))
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink():  # a dangling link: creating the folder would fail
            raise ConfigError(f"{key}: {existing} is a broken symbolic link")
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{key}: {existing} is a file, not a folder")
    if not (_writable(existing) and os.access(existing, os.X_OK)):
        inside = "" if existing == Path(os.path.abspath(folder)) else f": cannot make {folder} in it"
        raise ConfigError(f"{key}: {existing} is read-only{inside}")
