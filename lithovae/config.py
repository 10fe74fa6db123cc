"""Structured configs: a dataclass schema for the fixed parts of the train config,
and a signature check for every ``_target_`` node, so a misspelt key or a wrong
type fails at start with a message naming it."""

from __future__ import annotations

import inspect
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig


class ConfigError(ValueError):
    pass


@dataclass
class DataModuleConfig:
    batch_size: int = 512
    eval_batch_size: int = 8192
    fractions: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])
    n_folds: Optional[int] = None
    fold: Optional[int] = None
    standardize: bool = True
    context: int = 0
    engineered: bool = False
    impute_rgb: bool = False
    steps_per_batch: int = 8
    keep_on_device: bool = True


@dataclass
class OptimizerConfig:
    lr: float = 1e-3
    weight_decay: float = 0.0


@dataclass
class LRSchedulerConfig:
    reduce_on_plateau: bool = False
    patience: int = 5
    factor: float = 0.5


@dataclass
class EarlyStoppingConfig:
    enabled: bool = False
    patience: int = 10


@dataclass
class EvalConfig:
    k: list[int] = field(default_factory=lambda: [10, 12, 15, 20])
    n_init: int = 10
    gmm: bool = True
    silhouette_samples: int = 10000
    max_fit_samples: Optional[int] = None
    figures: bool = True
    umap_sample: int = 20000
    umap_top_n: int = 12
    log_boreholes: list[str] = field(default_factory=list)


@dataclass
class CVConfig:
    folds: int = 5


@dataclass
class PathsConfig:
    root_dir: str = MISSING
    output_dir: str = MISSING
    data_dir: str = MISSING
    mlflow_dir: str = MISSING
    run_dir: str = MISSING


@dataclass
class TrainConfig:
    data: Any = MISSING
    model: Any = MISSING
    beta: Any = MISSING
    mask: Any = MISSING
    alpha: Any = MISSING
    trainer: Any = MISSING
    logger: Any = MISSING
    eval: EvalConfig = field(default_factory=EvalConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    datamodule: DataModuleConfig = field(default_factory=DataModuleConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    lr_scheduler: LRSchedulerConfig = field(default_factory=LRSchedulerConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    cv: CVConfig = field(default_factory=CVConfig)
    task_name: str = "train"
    preset: Optional[str] = None
    seed: int = 0
    threads: int = 1
    optimized_metric: str = "ari_best"
    ckpt_path: Optional[str] = None


def register() -> None:
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)


register()

# keys the code passes itself when building these groups
INJECTED = {"model": {"data"}, "trainer": {"logger", "callbacks", "default_root_dir"}}
TARGET_GROUPS = ("data", "model", "beta", "mask", "alpha", "trainer", "logger")
_SIMPLE = {int: (int,), float: (int, float), bool: (bool,), str: (str,)}


def _check_value(key: str, value, annotation) -> None:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None:
            return
        if len(options) == 1:
            annotation = options[0]
        else:
            return
    if value is None or annotation not in _SIMPLE:
        return
    ok = isinstance(value, _SIMPLE[annotation]) and not (annotation in (int, float) and isinstance(value, bool))
    if not ok:
        raise ConfigError(f"{key}: expected {annotation.__name__}, got {value!r}")


def _parameters(obj) -> tuple[dict[str, inspect.Parameter], dict, bool]:
    """Parameters (and type hints) a target accepts, following ``**kwargs`` up the class
    hierarchy; the bool says whether any key at all is accepted."""
    classes = [c for c in inspect.getmro(obj) if "__init__" in vars(c)] if inspect.isclass(obj) else [obj]
    params: dict[str, inspect.Parameter] = {}
    hints: dict = {}
    for owner in classes:
        fn = owner.__init__ if inspect.isclass(owner) else owner
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            return params, hints, True
        try:
            hints = {**typing.get_type_hints(fn), **hints}
        except Exception:  # noqa: BLE001 - unresolvable annotations: skip type checks
            pass
        for name, p in sig.parameters.items():
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and name != "self":
                params.setdefault(name, p)
        if not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
            return params, hints, False
        if owner is object or not inspect.isclass(obj):
            break
    return params, hints, True


def check_target(node: DictConfig, key: str) -> None:
    """Every key of a ``_target_`` node must be a parameter of the target, of the right type."""
    from hydra.utils import get_object

    target = node.get("_target_")
    try:
        obj = get_object(target)
    except Exception:  # noqa: BLE001 - any import failure means a bad target
        raise ConfigError(f"{key}._target_: cannot import '{target}'") from None
    params, hints, open_ended = _parameters(obj)
    injected = INJECTED.get(key, set())
    for name in node:
        if name.startswith("_"):
            continue
        if (name not in params and not open_ended) or name in injected:
            known = sorted(p for p in params if p not in injected)
            raise ConfigError(f"{key}.{name}: unknown key for {target} (known: {', '.join(known)})")
        value = node[name]
        if not isinstance(value, (DictConfig, ListConfig)) and name in hints:
            _check_value(f"{key}.{name}", value, hints[name])


def validate(cfg: DictConfig) -> None:
    for group in TARGET_GROUPS:
        node = cfg.get(group)
        if isinstance(node, DictConfig) and "_target_" in node:
            check_target(node, group)
