"""Configs read back from files are untrusted: a run directory copied from a colleague, a
model pulled from a shared MLflow server. Hydra's ``instantiate`` builds whatever a
``_target_`` names, at any depth, so before anything is built from such a config,
:func:`check_config` walks all of it and refuses, in one line naming the file and the key:

- a ``_target_`` that no packaged option of its group builds (``lithovae/conf/<group>/*.yaml``);
- a ``_target_`` below the top node of a target group (``model.dropout._target_``), even an
  allowed one: lithovae's own options never nest them;
- Hydra's instantiate directives (``_partial_``, ``_args_``, ``_recursive_``, ``_convert_``):
  the code passes those itself;
- in saved files, any interpolation ``${...}``: they are written resolved, and a resolver
  would read the environment (``oc.env``) or build nodes the walk never saw (``oc.create``).
"""

from __future__ import annotations

import functools
import json
import math
import re
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from lithovae.errors import LithovaeError, RunDirError

# not at the top: numpy, the scaler and the label encoding are imported inside their loaders:
# checking a config needs none

# the groups of the train config whose node is built with instantiate
TARGET_GROUPS = ("data", "model", "beta", "mask", "alpha", "trainer", "logger", "checkpoint")

CONF_DIR = Path(__file__).parent / "conf"
DIRECTIVES = ("_partial_", "_args_", "_recursive_", "_convert_")
# resolvers the composed train config may use (the packaged YAML's); others are refused, as
# oc.create and oc.decode would build config nodes that no check has seen
SAFE_RESOLVERS = frozenset({"oc.env", "oc.select", "hydra", "now"})
_RESOLVER = re.compile(r"\$\{\s*([A-Za-z_][\w.]*)\s*:")


@functools.cache
def group_targets() -> dict[str, frozenset[str]]:
    """Per target group, the ``_target_`` of every packaged option of that group, read from the
    YAML (so a new variant's file extends it): the top node of ``conf/<group>/*.yaml``, or a
    group's node in any other file (an experiment). Hydra's own groups (``conf/hydra``,
    ``conf/hparams_search``) are built by Hydra and are not among them."""
    found: dict[str, set[str]] = {group: set() for group in TARGET_GROUPS}
    for path in sorted(CONF_DIR.rglob("*.yaml")):
        parts = path.relative_to(CONF_DIR).parts
        if parts[0] in ("hydra", "hparams_search"):
            continue
        node = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        if not isinstance(node, dict):
            continue
        if len(parts) > 1 and parts[0] in found and isinstance(node.get("_target_"), str):
            found[parts[0]].add(node["_target_"])
        for group in TARGET_GROUPS:
            sub = node.get(group)
            if isinstance(sub, dict) and isinstance(sub.get("_target_"), str):
                found[group].add(sub["_target_"])
    return {group: frozenset(targets) for group, targets in found.items()}


def _allowed_targets() -> frozenset[str]:
    return frozenset().union(*group_targets().values())


def __getattr__(name: str):
    if name == "ALLOWED_TARGETS":  # computed on first use from the packaged YAML (cached)
        return _allowed_targets()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _plain(node):
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=False, throw_on_missing=False)
    return node


def check_config(node, where: str, *, allow_interpolation: bool,
                 error: type[LithovaeError] = RunDirError) -> None:
    """Refuse (``error``, one line ``"<where>: <dotted.key>: ..."``) anything in ``node`` (a
    DictConfig, dict or list, walked at every depth) that would make ``instantiate`` build
    something other than a packaged option of a target group; see the module docstring.
    The top-level ``hydra`` key of a composed config (Hydra's own) is skipped."""
    prefix = f"{where}: " if where else ""
    groups = group_targets()

    def fail(key: str, why: str):
        raise error(f"{prefix}{key}: {why}")

    def walk(value, key: str, group: str | None) -> None:
        if isinstance(value, dict):
            for name, item in value.items():
                name = str(name)
                sub = f"{key}.{name}" if key else name
                if name == "_target_":
                    if group is None or key != group:
                        fail(sub, f"{item!r} is refused: only the top node of a group "
                                  f"({', '.join(TARGET_GROUPS)}) builds an object")
                    if not isinstance(item, str) or item not in groups[group]:
                        fail(sub, f"{item!r} is not one of lithovae's {group} options "
                                  f"(lithovae/conf/{group}/*.yaml); refusing to build it")
                elif name in DIRECTIVES:
                    fail(sub, f"the instantiate directive {name} is refused (lithovae sets it itself)")
                elif key == "" and name == "hydra" and allow_interpolation:
                    continue  # Hydra's own config, composed beside the train config
                else:
                    walk(item, sub, group if group else (name if key == "" and name in groups else None))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, f"{key}[{i}]", group)
        elif isinstance(value, str) and "${" in value:
            if not allow_interpolation:
                fail(key, f"interpolation {value[:80]!r} is refused (a saved config is written resolved)")
            unsafe = sorted(set(_RESOLVER.findall(value)) - SAFE_RESOLVERS)
            if unsafe:
                fail(key, f"resolver {unsafe[0]!r} is refused (allowed: {', '.join(sorted(SAFE_RESOLVERS))})")

    try:
        plain = _plain(node)
    except Exception as exc:  # noqa: BLE001 - a node OmegaConf cannot even convert
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise error(f"{prefix}not a readable config ({first})") from None
    walk(plain, "", None)


def load_config(path: str | Path, *, allow_interpolation: bool = False) -> DictConfig:
    """A run's saved config (``config.yaml``, ``.hydra/config.yaml``), checked by
    :func:`check_config` before anything can be built from it. A file that is missing, not
    YAML or not a mapping is one ``RunDirError`` line naming it. ``allow_interpolation``: for
    ``.hydra/config.yaml``, which Hydra writes unresolved (the packaged resolvers only)."""
    path = Path(path)
    if not path.is_file():
        raise RunDirError(f"{path}: not found")
    try:
        cfg = OmegaConf.load(path)
    except Exception as exc:  # noqa: BLE001 - YAML syntax, a duplicate key, bad encoding
        message = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise RunDirError(f"{path}: not a readable YAML config ({message})") from None
    if not isinstance(cfg, DictConfig):
        raise RunDirError(f"{path}: not a config (a YAML mapping expected, got a list)")
    check_config(cfg, str(path), allow_interpolation=allow_interpolation)
    return cfg


def load_run_config(run_dir: str | Path) -> DictConfig:
    """A run directory's ``config.yaml`` (written resolved: no interpolation), after checking
    every config file of the run: its ``.hydra/config.yaml`` too, when there is one (Hydra
    writes it unresolved; the packaged resolvers only), so a run folder with a planted file
    is refused whole, whichever file a reader (evaluate, resume) goes on to use."""
    run_dir = Path(run_dir)
    cfg = load_config(run_dir / "config.yaml")
    hydra_cfg = run_dir / ".hydra" / "config.yaml"
    if hydra_cfg.exists():
        load_config(hydra_cfg, allow_interpolation=True)
    return cfg


# -- plain JSON files of a run or bundle ---------------------------------------------------------
def read_json(path: str | Path) -> dict:
    """A JSON object from ``path``; missing, unreadable or not an object is one ``RunDirError``."""

    path = Path(path)
    if not path.is_file():
        raise RunDirError(f"{path}: not found")
    try:
        value = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise RunDirError(f"{path}: not valid JSON ({' '.join(str(exc).split())[:120]})") from None
    if not isinstance(value, dict):
        raise RunDirError(f"{path}: a JSON object expected, got {type(value).__name__}")
    return value


def string_list(value, where: str, *, non_empty: bool = True, unique: bool = True) -> list[str]:
    """``value`` as a list of strings (``where``: file and key, for the error)."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or (non_empty and not value):
        raise RunDirError(f"{where}: must be a {'non-empty ' if non_empty else ''}list of strings, "
                          f"got {str(value)[:80]}")
    if unique and len(set(value)) != len(value):
        duplicate = next(v for i, v in enumerate(value) if v in value[:i])
        raise RunDirError(f"{where}: {duplicate!r} appears twice")
    return list(value)


def number_list(value, where: str, length: int, *, allow_nan: bool = False, positive: bool = False):
    """``value`` as a float64 array of ``length`` numbers (null is NaN where ``allow_nan``)."""
    import numpy as np

    if not isinstance(value, list) or len(value) != length:
        got = f"{len(value)} entries" if isinstance(value, list) else type(value).__name__
        raise RunDirError(f"{where}: must be a list of {length} numbers, got {got}")
    for i, v in enumerate(value):
        number = isinstance(v, (int, float)) and not isinstance(v, bool)
        if v is None and allow_nan:
            continue
        if not number or (math.isnan(v) and not allow_nan) or math.isinf(v) or (positive and not v > 0):
            kind = "a finite number > 0" if positive else "a finite number" + (" or null" if allow_nan else "")
            raise RunDirError(f"{where}[{i}]: must be {kind}, got {v!r}")
    return np.asarray([np.nan if v is None else v for v in value], dtype=np.float64)


def load_scaler(path: str | Path):
    """A run's ``scaler.json``, every key checked (the error names the file and the key)."""
    from lithovae.data.scaler import TRANSFORMS, DistributionAwareScaler

    path = Path(path)
    state = read_json(path)
    names = string_list(state.get("feature_names"), f"{path}: feature_names")
    transforms = state.get("transforms")
    if not isinstance(transforms, dict) or set(transforms) - set(names):
        raise RunDirError(f"{path}: transforms: must map the scaler's features to transforms, got "
                          f"{str(transforms)[:80]}")
    for feature, name in transforms.items():
        if name not in TRANSFORMS:
            raise RunDirError(f"{path}: transforms.{feature}: unknown transform {name!r} "
                              f"(known: {', '.join(sorted(TRANSFORMS))})")
    if not isinstance(state.get("standardize"), bool):
        raise RunDirError(f"{path}: standardize: must be true or false, got {state.get('standardize')!r}")
    mean, scale = state.get("mean"), state.get("scale")
    scaler = DistributionAwareScaler(names, transforms, state["standardize"])
    if mean is None and scale is None:
        raise RunDirError(f"{path}: mean, scale: the scaler was never fitted")
    # a feature never observed in training has a NaN mean (its values stay missing)
    scaler.mean_ = number_list(mean, f"{path}: mean", len(names), allow_nan=True)
    scaler.scale_ = number_list(scale, f"{path}: scale", len(names), positive=True)
    return scaler


def load_label_encoding(path: str | Path):
    """A run's ``label_encoding.json``: ``classes`` and ``groups``, lists of distinct names
    (``groups`` empty for own data without groups)."""
    from lithovae.data.labels import LabelEncoding  # not datamodule: serving needs no Lightning

    path = Path(path)
    state = read_json(path)
    extra = sorted(set(state) - {"classes", "groups"})
    if extra:
        raise RunDirError(f"{path}: {extra[0]}: unknown key (known: classes, groups)")
    return LabelEncoding(classes=string_list(state.get("classes"), f"{path}: classes"),
                         # own data without data.groups have none
                         groups=string_list(state.get("groups"), f"{path}: groups", non_empty=False))
