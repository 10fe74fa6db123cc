"""Structured configs: a dataclass schema for the fixed parts of the train config, a
signature check for every ``_target_`` node and the option ranges each part declares (in
the schema's field metadata here, in a target class's ``OPTIONS``: :mod:`lithovae.checks`),
so a misspelt key, a wrong type or an out-of-range value fails at start, before any data is
built, with a one-line message naming the key."""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, is_dataclass
from typing import Any, ClassVar, Optional

from hydra.core.config_store import ConfigStore
from hydra.utils import get_object
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from lithovae.checks import (MAX_CLUSTERS, MAX_CONTEXT, MAX_RESAMPLES, Check, at_least,  # noqa: F401 - MAX_CONTEXT re-exported
                             between, check_options, checked, each, non_negative, one_of,
                             open_unit_interval, optional, positive, random_seed)
from lithovae.errors import ConfigError, RunDirError  # ConfigError re-exported: lithovae.config.ConfigError
from lithovae.untrusted import TARGET_GROUPS, check_config, group_targets

# not at the top: the scorer's backend list (lithovae.evaluation.metrics loads scikit-learn)


def validation_score(key: str, value) -> None:
    """A metric of the validation boreholes (``val_*``): what a sweeper or a search maximises
    must never be a test score, or its best trial's test score estimates nothing."""
    if not isinstance(value, str) or not value.startswith("val_"):
        raise ValueError(f"{key}: must be a validation score (val_ari_selected, val_ari_inductive): "
                         f"{value!r} is scored on the test boreholes")


def eval_backend(key: str, value) -> None:
    """One of the scorer's backends."""
    from lithovae.evaluation.metrics import BACKENDS  # the scorer's own list (imported when checked)

    one_of(*BACKENDS)(key, value)


# The schema carries types and ranges only (checked(...): lithovae.checks): every value, default
# included, is written once, in the YAML (lithovae/conf/train.yaml, conf/eval/default.yaml,
# conf/paths/default.yaml). A field left MISSING here and unset in the YAML fails at composition.
@dataclass
class DataModuleConfig:
    OPTIONS_FROM: ClassVar[str] = "lithovae.data.datamodule.LithoDataModule"  # declares the ranges
    batch_size: int = MISSING
    eval_batch_size: int = MISSING
    fractions: list[float] = MISSING
    n_folds: Optional[int] = MISSING
    fold: Optional[int] = MISSING
    standardize: bool = MISSING
    context: int = MISSING
    engineered: bool = MISSING
    impute_rgb: bool = MISSING
    steps_per_batch: int = MISSING
    keep_on_device: bool = MISSING
    split: str = MISSING
    label_fraction: float = MISSING
    label_unit: str = MISSING


@dataclass
class OptimizerConfig:
    lr: float = checked(positive)
    weight_decay: float = checked(non_negative)


@dataclass
class LRSchedulerConfig:
    reduce_on_plateau: bool = MISSING
    patience: int = checked(at_least(0))
    factor: float = checked(open_unit_interval)


@dataclass
class EarlyStoppingConfig:
    enabled: bool = MISSING
    patience: int = checked(at_least(0))


@dataclass
class BootstrapConfig:
    resamples: int = checked(between(0, MAX_RESAMPLES))
    level: float = checked(open_unit_interval)


@dataclass
class EvalConfig:
    k: list[int] = checked(each(between(2, MAX_CLUSTERS), non_empty=True))
    n_init: int = checked(at_least(1))
    gmm: bool = MISSING
    silhouette_samples: int = checked(at_least(2))
    max_fit_samples: Optional[int] = checked(optional(at_least(1)))
    train_fit_samples: Optional[int] = checked(optional(at_least(1)))
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    backend: str = checked(eval_backend)
    figures: bool = MISSING
    umap_sample: int = checked(at_least(1))
    umap_top_n: int = checked(at_least(1))
    log_boreholes: list[str] = MISSING


@dataclass
class ExportConfig:
    mlflow_model: bool = MISSING
    register_as: Optional[str] = MISSING


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
    checkpoint: Any = MISSING
    study: Any = None  # set by conf/study/*: how the multirun's summary is drawn (no YAML value)
    replicates: Optional[int] = checked(optional(at_least(1)), default=None)  # set by conf/study/replicates.yaml: seeds 0..replicates-1
    eval: EvalConfig = field(default_factory=EvalConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    datamodule: DataModuleConfig = field(default_factory=DataModuleConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    lr_scheduler: LRSchedulerConfig = field(default_factory=LRSchedulerConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    task_name: str = MISSING
    preset: Optional[str] = MISSING
    seed: int = checked(random_seed)
    threads: int = checked(at_least(1))
    optimized_metric: str = checked(validation_score)
    ckpt_path: Optional[str] = MISSING


def register() -> None:
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)


register()

# keys the code passes itself when building these groups
INJECTED = {"model": {"data"}, "trainer": {"logger", "callbacks", "default_root_dir"}}
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


def _import_target(node: DictConfig, key: str):
    """The object a ``_target_`` names, imported (never called)."""
    target = node.get("_target_")
    try:
        return get_object(target)
    except Exception:  # noqa: BLE001 - any import failure means a bad target
        raise ConfigError(f"{key}._target_: cannot import '{target}'") from None


def check_target(node: DictConfig, key: str) -> None:
    """Every key of a ``_target_`` node must be a parameter of the target, of the right type."""
    target = node.get("_target_")
    params, hints, open_ended = _parameters(_import_target(node, key))
    injected = INJECTED.get(key, set())
    for name in node:
        if name.startswith("_") or OmegaConf.is_missing(node, name):
            continue  # a "???" value is reported by the target itself (e.g. data.raw_dir)
        if (name not in params and not open_ended) or name in injected:
            known = sorted(p for p in params if p not in injected)
            raise ConfigError(f"{key}.{name}: unknown key for {target} (known: {', '.join(known)})")
        value = node[name]
        if not isinstance(value, (DictConfig, ListConfig)) and name in hints:
            _check_value(f"{key}.{name}", value, hints[name])


# -- option ranges ---------------------------------------------------------------------------
# Each option's range is declared once, beside what it configures (lithovae.checks): a target's
# class in its ``OPTIONS``, a structured config above in its fields' metadata. A group whose
# target is not lithovae's declares its ranges here.
class TrainerOptions:
    """The trainer group builds Lightning's Trainer."""
    OPTIONS = {
        "max_epochs": at_least(1),  # -1 would train forever
        "log_every_n_steps": at_least(1),
    }


FOREIGN_TARGET_OPTIONS: dict[str, type] = {"trainer": TrainerOptions}


class _NodeValues(Mapping):
    """The options under ``prefix`` of a config, resolved, as :func:`check_options` reads them:
    a key that is absent or "???" (the target reports it itself) is not set."""

    def __init__(self, cfg: DictConfig, prefix: str):
        self.cfg, self.prefix = cfg, prefix

    def __getitem__(self, name: str):
        value = _lookup(self.cfg, self.prefix + name)
        if value is _ABSENT:
            raise KeyError(name)
        return value

    def __iter__(self):
        node = OmegaConf.select(self.cfg, self.prefix.rstrip("."), default=None) if self.prefix else self.cfg
        return iter(node if isinstance(node, DictConfig) else ())

    def __len__(self) -> int:
        return sum(1 for _ in self)


_ABSENT = object()


def _lookup(cfg: DictConfig, key: str):
    """The (resolved, plain) value at ``key``, or _ABSENT when the key is not set."""
    try:
        value = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=True)
    except MissingMandatoryValue:
        return _ABSENT
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{key}: {str(exc).splitlines()[0]}") from None
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=True)
    return value


def _option_owner(group: str, node: DictConfig):
    """The class whose ``OPTIONS`` the ``group`` node's values must pass: its ``_target_``, when it
    is a packaged lithovae option of that group (the allow-list of lithovae.untrusted: a target
    is imported, never built, and nothing else is imported); None for any other target, which
    check_target and the allow-list report."""
    target = node.get("_target_")
    if not isinstance(target, str) or not target.startswith("lithovae.") or target not in group_targets()[group]:
        return None
    return _import_target(node, group)


def _check_schema(cfg: DictConfig, schema: type, prefix: str) -> None:
    """The structured config ``schema`` at ``prefix``: its fields' checks, then its nested schemas'
    (a schema whose options its class declares names that class in ``OPTIONS_FROM``)."""
    owner = get_object(schema.OPTIONS_FROM) if getattr(schema, "OPTIONS_FROM", None) else schema
    check_options(owner, _NodeValues(cfg, prefix), prefix, ConfigError)
    for name, kind in typing.get_type_hints(schema).items():
        if is_dataclass(kind) and isinstance(OmegaConf.select(cfg, prefix + name, default=None), DictConfig):
            _check_schema(cfg, kind, f"{prefix}{name}.")


def check_ranges(cfg: DictConfig) -> None:
    """Every option that ``cfg`` sets, of the top level, the structured groups and the target
    groups, must pass the checks declared for it. A partial config (a saved model node) is
    checked for what it has."""
    _check_schema(cfg, TrainConfig, "")
    for group in TARGET_GROUPS:
        node = cfg.get(group)
        if not isinstance(node, DictConfig):
            continue
        values = _NodeValues(cfg, f"{group}.")
        if group in FOREIGN_TARGET_OPTIONS:
            check_options(FOREIGN_TARGET_OPTIONS[group], values, f"{group}.", ConfigError)
        owner = _option_owner(group, node) if "_target_" in node else None
        if owner is not None:
            check_options(owner, values, f"{group}.", ConfigError)


def validate(cfg: DictConfig) -> None:
    check_config(cfg, "", allow_interpolation=True, error=ConfigError)
    for group in TARGET_GROUPS:
        node = cfg.get(group)
        if isinstance(node, DictConfig) and "_target_" in node:
            check_target(node, group)
    check_ranges(cfg)


def check_saved_ranges(cfg: DictConfig, where: str) -> None:
    """The option checks of :func:`check_ranges` (maxima included) on a saved config, the
    error naming the file: a saved ``datamodule.context: 1000000000`` must not hang a reader."""
    try:
        check_ranges(cfg)
    except ConfigError as exc:
        raise RunDirError(f"{where}: {exc}") from None
