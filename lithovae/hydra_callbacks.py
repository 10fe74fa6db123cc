"""Hydra callbacks that run before Hydra writes anything (``on_run_start``/``on_multirun_start``
come before the run or sweep directory, its ``.hydra/*.yaml``, ``multirun.yaml`` and the job's
log file).

- :class:`RefuseSecrets` (train, evaluate, predict): a password in any URI of the config, its
  overrides or ``MLFLOW_TRACKING_URI`` is one ``error:`` line and exit 2, before anything is on
  disk.
- :class:`FreshOutputDir` (train): every run and every multirun gets a directory of its own,
  claimed atomically, even when two start in the same second or are given the same
  ``hydra.run.dir``/``hydra.sweep.dir``: a directory in use gets a ``_1``, ``_2``... suffix, and
  the run says so in one line. A bad ``hydra/launcher=ensemble`` option is one line, exit 2,
  before the sweep directory is claimed.

They exit (``SystemExit`` passes through Hydra's callback loop and its error report, which catch
``Exception`` only); they import nothing heavy, so a refusal takes no more than composing.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, ListConfig, OmegaConf, read_write

from lithovae.cli import EXIT_USER_ERROR
from lithovae.errors import ConfigError
from lithovae.uri import ENV_URI, redacted

# not at the top: the launcher and the package version are imported inside the callbacks that use
# them: Hydra builds the callbacks before every job

_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\",\]\[}{]+")
MAX_SUFFIX = 10_000  # run_1 ... run_9999: beyond that the folder is not "the same second" any more


def _exit(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


# -- secrets --------------------------------------------------------------------------------

def _password_uri(text: str) -> str | None:
    """The first URI in ``text`` that holds a password, or None."""
    for found in _URI.finditer(text):
        try:
            if urlsplit(found.group(0)).password is not None:
                return found.group(0)
        except ValueError:  # an invalid port or netloc: not a URI that can log in
            continue
    return None


def _leaves(node, prefix: str = "", skip: tuple = ()):
    """(dotted key, string) for every string value under ``node`` (but the top-level keys in
    ``skip``): resolved where it resolves, else as written (a value interpolating a missing key
    still shows what the user typed)."""
    keys = [k for k in node.keys() if k not in skip] if isinstance(node, DictConfig) else range(len(node))
    for key in keys:
        name = f"{prefix}.{key}" if prefix and isinstance(node, DictConfig) else (
            f"{prefix}[{key}]" if prefix else str(key))
        try:
            value = node[key]
        except Exception:  # noqa: BLE001 - missing or unresolvable: what was written
            value = node._get_node(key)._value()
        if isinstance(value, (DictConfig, ListConfig)):
            yield from _leaves(value, name)
        elif isinstance(value, str):
            yield name, value


def password_in(config: DictConfig) -> tuple[str, str] | None:
    """(where, uri) of the first URI holding a password: in the config (the task's keys first,
    then Hydra's, which include the raw command-line overrides) or in ``MLFLOW_TRACKING_URI``."""
    hydra = _leaves(config.hydra, "hydra") if "hydra" in config else ()
    for name, text in [*_leaves(config, skip=("hydra",)), *hydra, (ENV_URI, os.environ.get(ENV_URI, ""))]:
        uri = _password_uri(text)
        if uri is not None:
            return name, uri
    return None


class RefuseSecrets(Callback):
    """No password reaches disk: one ``error:`` line and exit 2 before Hydra writes anything."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        refuse_secrets(config)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        refuse_secrets(config)


def refuse_secrets(config: DictConfig) -> None:
    found = password_in(config)
    if found is not None:
        where, uri = found
        _exit(f"{where}: '{redacted(uri)}' holds a password, and URIs end up in run files (.hydra/, "
              "config.yaml, MLflow params): drop it from the URI and set MLFLOW_TRACKING_USERNAME/"
              "MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN; PGPASSWORD or ~/.pgpass for PostgreSQL)")


# -- one run, one folder --------------------------------------------------------------------

def _take(path: Path, token: str | None) -> bool:
    """Claim ``path`` atomically. ``token`` None: create it (an existing one is taken). Else it
    may exist if empty, and the claim is the creation of ``path/token`` (Hydra's ``.hydra``,
    which only the run that owns the folder creates)."""
    try:
        if token is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.mkdir()
            return True
        path.mkdir(parents=True, exist_ok=True)
        if any(entry.name != token for entry in path.iterdir()):
            return False  # another program's files, or a run that wrote no .hydra
        (path / token).mkdir()
        return True
    except (FileExistsError, NotADirectoryError):
        return False


def claim_dir(wanted: str | Path, token: str | None = None) -> Path:
    """``wanted``, or the first free ``wanted_1``, ``wanted_2``... claimed atomically (so two
    processes never get the same one); absolute."""
    wanted = Path(os.path.abspath(wanted))
    for n in range(MAX_SUFFIX):
        path = wanted if n == 0 else wanted.with_name(f"{wanted.name}_{n}")
        if _take(path, token):
            return path
    raise ConfigError(f"{wanted}: it and {MAX_SUFFIX - 1} suffixed folders beside it are in use")


def _override(key: str, path: Path) -> str:
    """``key='path'`` as Hydra's override parser reads it back exactly (quotes and a trailing
    backslash escaped, ``${`` not interpolated)."""
    text = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", str(path))
    text = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, text).replace("${", "\\${")
    return f"{key}='{text}'"


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of ``path`` that does not exist yet (None: ``path`` exists)."""
    missing = None
    for folder in [path, *path.parents]:
        if folder.exists():
            return missing
        missing = folder
    return missing


def _remove_if_empty(path: Path, top: Path | None) -> None:
    """``path`` and its parents up to ``top`` (what the claim created), each only while empty:
    a multirun that stopped before its first job leaves no folder behind."""
    if top is None:
        return
    for folder in [path, *path.parents]:
        try:
            folder.rmdir()  # fails on a folder that holds anything
        except OSError:
            return
        if folder == top:
            return


def check_launcher(config: DictConfig) -> None:
    """The ensemble launcher's options, before the sweep starts (its constructor would fail
    inside Hydra's plugin loading, as a multi-line instantiation error); for the SLURM launcher,
    the cluster and the job it would submit (:func:`lithovae.slurm.check_cluster`)."""
    from lithovae import slurm

    launcher = OmegaConf.select(config, "hydra.launcher")
    if slurm.is_slurm_launcher(launcher):
        problem = slurm.check_cluster(launcher)
        if problem:
            _exit(problem)
        return
    if launcher is None or not str(launcher.get("_target_", "")).endswith("EnsembleLauncher"):
        return
    from lithovae.ensemble.launcher import check_options

    try:
        check_options(launcher.get("max_group_size"), launcher.get("threads"))
    except ConfigError as exc:
        _exit(str(exc))


class FreshOutputDir(Callback):
    """A run dir or sweep dir of this process's own, claimed before Hydra writes into it."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        wanted = str(config.hydra.run.dir)
        subdir = config.hydra.output_subdir
        path = self._claim(wanted, None if subdir is None else str(subdir), "hydra.run.dir", "run")
        with read_write(config.hydra.run):
            config.hydra.run.dir = str(path)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        check_launcher(config)
        wanted = str(config.hydra.sweep.dir)
        top = _first_missing(Path(os.path.abspath(wanted)).parent)
        path = self._claim(wanted, None, "hydra.sweep.dir", "multirun")
        with read_write(config.hydra):
            config.hydra.sweep.dir = str(path)
            # every job's config is composed again from these overrides (Hydra's
            # load_sweep_config): the claimed folder must be one of them
            config.hydra.overrides.hydra.append(_override("hydra.sweep.dir", path))
        atexit.register(_remove_if_empty, path, top or path)

    @staticmethod
    def _claim(wanted: str, token: str | None, key: str, what: str) -> Path:
        try:
            path = claim_dir(wanted, token)
        except ConfigError as exc:
            _exit(f"{key}: {exc}")
        except OSError as exc:
            _exit(f"{key}: cannot create {wanted}: {exc.strerror or exc}")
        if path != Path(os.path.abspath(wanted)):
            print(f"warning: {key} {wanted} is in use (another {what}'s files): this {what} writes to "
                  f"{path}", file=sys.stderr)
        return path
