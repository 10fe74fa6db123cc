"""Structured configs: a dataclass schema for the fixed parts of the train config,
a signature check for every ``_target_`` node and a table of option ranges
(:data:`RANGES`), so a misspelt key, a wrong type or an out-of-range value fails
at start, before any data is built, with a one-line message naming the key."""

from __future__ import annotations

import inspect
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from lithovae.checks import integer_at_least, non_negative_number, probability
from lithovae.errors import ConfigError  # re-exported: lithovae.config.ConfigError




# The schema carries types only: every value, default included, is written once, in the
# YAML (lithovae/conf/train.yaml, conf/eval/default.yaml, conf/paths/default.yaml). A
# field left MISSING here and unset in the YAML fails at composition.
@dataclass
class DataModuleConfig:
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
    lr: float = MISSING
    weight_decay: float = MISSING


@dataclass
class LRSchedulerConfig:
    reduce_on_plateau: bool = MISSING
    patience: int = MISSING
    factor: float = MISSING


@dataclass
class EarlyStoppingConfig:
    enabled: bool = MISSING
    patience: int = MISSING


@dataclass
class BootstrapConfig:
    resamples: int = MISSING
    level: float = MISSING


@dataclass
class EvalConfig:
    k: list[int] = MISSING
    n_init: int = MISSING
    gmm: bool = MISSING
    silhouette_samples: int = MISSING
    max_fit_samples: Optional[int] = MISSING
    train_fit_samples: Optional[int] = MISSING
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    backend: str = MISSING
    figures: bool = MISSING
    umap_sample: int = MISSING
    umap_top_n: int = MISSING
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
    replicates: Optional[int] = None  # set by conf/study/replicates.yaml: how many seeds it sweeps
    eval: EvalConfig = field(default_factory=EvalConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    datamodule: DataModuleConfig = field(default_factory=DataModuleConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    lr_scheduler: LRSchedulerConfig = field(default_factory=LRSchedulerConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    task_name: str = MISSING
    preset: Optional[str] = MISSING
    seed: int = MISSING
    threads: int = MISSING
    optimized_metric: str = MISSING
    ckpt_path: Optional[str] = MISSING


def register() -> None:
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)


register()

# keys the code passes itself when building these groups
INJECTED = {"model": {"data"}, "trainer": {"logger", "callbacks", "default_root_dir"}}
TARGET_GROUPS = ("data", "model", "beta", "mask", "alpha", "trainer", "logger", "checkpoint")
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
        if name.startswith("_") or OmegaConf.is_missing(node, name):
            continue  # a "???" value is reported by the target itself (e.g. data.raw_dir)
        if (name not in params and not open_ended) or name in injected:
            known = sorted(p for p in params if p not in injected)
            raise ConfigError(f"{key}.{name}: unknown key for {target} (known: {', '.join(known)})")
        value = node[name]
        if not isinstance(value, (DictConfig, ListConfig)) and name in hints:
            _check_value(f"{key}.{name}", value, hints[name])


# -- option ranges ---------------------------------------------------------------------------
# A check gets the dotted key and the value and raises ValueError with a message that
# starts with "<key>: "; validate() turns it into a ConfigError.
Check = Callable[[str, Any], None]


def at_least(minimum: int) -> Check:
    """An integer >= ``minimum``."""
    def check(key: str, value) -> None:
        integer_at_least(f"{key}:", value, minimum)
    return check


def between(minimum: int, maximum: int) -> Check:
    """An integer in [``minimum``, ``maximum``]."""
    def check(key: str, value) -> None:
        try:
            integer_at_least(f"{key}:", value, minimum)
            ok = value <= maximum
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"{key}: must be an integer in [{minimum}, {maximum}], got {value!r}")
    return check


def non_negative(key: str, value) -> None:
    """A finite number >= 0."""
    non_negative_number(f"{key}:", value)


def positive(key: str, value) -> None:
    """A finite number > 0."""
    if non_negative_number(f"{key}:", value) == 0:
        raise ValueError(f"{key}: must be a finite number > 0, got {value!r}")


def dropout(key: str, value) -> None:
    """A probability in [0, 1)."""
    probability(f"{key}:", value, allow_one=False)


def unit_interval(key: str, value) -> None:
    """A probability in [0, 1]."""
    probability(f"{key}:", value, allow_one=True)


def _positive_fraction(key: str, value, allow_one: bool) -> None:
    """A number in (0, 1), or (0, 1] with ``allow_one``: a factor that must shrink, never zero."""
    try:
        ok = probability(f"{key}:", value, allow_one=allow_one) > 0
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{key}: must be in (0, 1{']' if allow_one else ')'}, got {value!r}")


def open_unit_interval(key: str, value) -> None:
    _positive_fraction(key, value, allow_one=False)


def half_open_unit_interval(key: str, value) -> None:
    _positive_fraction(key, value, allow_one=True)


def seed(key: str, value) -> None:
    """A seed numpy accepts: an integer in [0, 2**32 - 1]."""
    integer_at_least(f"{key}:", value, 0)
    if value > 2**32 - 1:
        raise ValueError(f"{key}: must be an integer <= {2**32 - 1}, got {value!r}")


def one_of(*choices) -> Check:
    """One of ``choices``."""
    def check_choice(key: str, value) -> None:
        if value not in choices:
            raise ValueError(f"{key}: must be one of {list(choices)}, got {value!r}")
    return check_choice


def validation_score(key: str, value) -> None:
    """A metric of the validation boreholes (``val_*``): what a sweeper or a search maximises
    must never be a test score, or its best trial's test score estimates nothing."""
    if not isinstance(value, str) or not value.startswith("val_"):
        raise ValueError(f"{key}: must be a validation score (val_ari_selected, val_ari_inductive): "
                         f"{value!r} is scored on the test boreholes")


def optional(check: Check) -> Check:
    """null, or what ``check`` accepts."""
    def check_optional(key: str, value) -> None:
        if value is not None:
            try:
                check(key, value)
            except ValueError as exc:
                raise ValueError(str(exc).replace(": must be ", ": must be null or ", 1)) from None
    return check_optional


def each(check: Check, *, non_empty: bool = False) -> Check:
    """A list whose every entry passes ``check`` (a bad entry is named ``key[i]``)."""
    def check_each(key: str, value) -> None:
        if not isinstance(value, (list, tuple)) or (non_empty and not value):
            kind = "a non-empty list" if non_empty else "a list"
            raise ValueError(f"{key}: must be {kind}, got {value!r}")
        for i, item in enumerate(value):
            check(f"{key}[{i}]", item)
    return check_each


def split_fractions(key: str, value) -> None:
    """train/val/test fractions: three numbers >= 0 summing to 1 (as borehole_split wants)."""
    ok = isinstance(value, (list, tuple)) and len(value) == 3
    if ok:
        try:
            numbers = [non_negative_number(key, v) for v in value]
        except ValueError:
            ok = False
        else:
            ok = abs(sum(numbers) - 1) <= 1e-6
    if not ok:
        raise ValueError(f"{key}: must be three numbers >= 0 summing to 1, got {value!r}")


# Maxima: a larger value cannot fit in memory (checked before anything is built, where it
# would otherwise fail after training). The arithmetic, for the worst case each allows:
# latent size d: the evaluation's full-covariance GMM indexes the d(d+1)/2 covariance entries
# (two int64 each) and holds sum(eval.k) d x d float64 matrices: at 1024, 8 MB and
# 57 * 1024^2 * 8 B = 0.5 GB for the default k; at 100 000 the index pairs alone are 80 GB.
MAX_LATENT_DIM = 1024
# hidden width w: a w x w layer trains with four float32 copies (weight, gradient, Adam's two
# moments): 4096^2 * 16 B = 268 MB per layer, 134 MB of activations per 8192-row batch.
MAX_WIDTH = 4096
# clusters, mixture components, pseudo-inputs K: the GMM's feature sums are sum(k) x
# (d(d+3)/2 + 1) float64 (1000 components at d = 64: 17 MB; at d = 1024: 4.2 GB); a VampPrior
# batch is B x K x d floats (512 x 1000 x 1024 x 4 B = 2 GB).
MAX_CLUSTERS = 1000
# context c: each bin becomes (2c + 1) x F float64 values, F <= 12 features: at 32, 6.2 KB per
# bin, 1.5 GB for the 240 K bins of LILY (the predictor expands new tables the same way, and
# predictor.json's context is checked against this too).
MAX_CONTEXT = 32
# bootstrap resamples: the counts are [resamples, boreholes] and every score is [resamples]; each
# 1000 add about 0.3 s on the default test set (benchmarks/bench_eval.py)
MAX_RESAMPLES = 100_000

# dotted key -> check; keys absent from a config (another model, beta schedule, ...) are skipped
RANGES: dict[str, Check] = {
    "seed": seed,
    "threads": at_least(1),
    "replicates": optional(at_least(1)),  # study=replicates: seeds 0..replicates-1
    "optimized_metric": validation_score,
    # trainer (Lightning: max_epochs -1 would train forever)
    "trainer.max_epochs": at_least(1),
    "trainer.log_every_n_steps": at_least(1),
    # data
    "data.seed": seed,
    "data.build.bin_size": positive,
    "data.build.depth_tolerance": non_negative,
    "datamodule.batch_size": at_least(2),  # BatchNorm needs two rows
    "datamodule.eval_batch_size": at_least(1),
    "datamodule.steps_per_batch": at_least(1),
    "datamodule.fractions": split_fractions,
    "datamodule.context": between(0, MAX_CONTEXT),
    "datamodule.n_folds": optional(at_least(2)),
    "datamodule.fold": optional(at_least(0)),
    "datamodule.split": one_of("random_boreholes", "entropy_balanced"),  # lithovae.data.splits.SPLIT_KINDS
    "datamodule.label_fraction": half_open_unit_interval,
    "datamodule.label_unit": one_of("borehole", "bin"),  # lithovae.data.datamodule.LABEL_UNITS
    # model (each key applies to the models that have it)
    "model.latent_dim": between(1, MAX_LATENT_DIM),
    "model.hidden": each(between(1, MAX_WIDTH)),
    "model.dropout": dropout,
    "model.classifier_hidden": each(between(1, MAX_WIDTH)),
    "model.classifier_dropout": dropout,
    "model.branch_hidden": each(between(1, MAX_WIDTH)),
    "model.fusion_hidden": each(between(1, MAX_WIDTH)),
    "model.decoder_hidden": each(between(1, MAX_WIDTH)),
    "model.vae_epochs": at_least(0),
    "model.n_components": between(1, MAX_CLUSTERS),
    "model.init_epoch": at_least(0),
    "model.n_pseudo_inputs": between(1, MAX_CLUSTERS),
    "model.n_clusters": between(2, MAX_CLUSTERS),
    "model.refresh_every": at_least(1),
    "model.gamma": non_negative,
    "model.temperature": positive,
    "model.seed": seed,
    "model.reduction": one_of("mean", "sum"),  # lithovae.models.hybrid.REDUCTIONS
    # beta schedule, masking, classification weight
    "beta.value": non_negative,
    "beta.start": non_negative,
    "beta.end": non_negative,
    "beta.epochs": at_least(1),
    "beta.period": at_least(1),
    "beta.ratio": half_open_unit_interval,
    "mask.prob": unit_interval,  # and the strategy's own limit: see _class_checks
    "mask.masked_weight": non_negative,
    "alpha.value": non_negative,
    "alpha.base": non_negative,
    # optimisation
    "optimizer.lr": positive,
    "optimizer.weight_decay": non_negative,
    "lr_scheduler.patience": at_least(0),
    "lr_scheduler.factor": open_unit_interval,
    "early_stopping.patience": at_least(0),
    # evaluation
    "eval.k": each(between(2, MAX_CLUSTERS), non_empty=True),
    "eval.n_init": at_least(1),
    "eval.silhouette_samples": at_least(2),
    "eval.max_fit_samples": optional(at_least(1)),
    "eval.train_fit_samples": optional(at_least(1)),
    "eval.bootstrap.resamples": between(0, MAX_RESAMPLES),
    "eval.bootstrap.level": open_unit_interval,
    "eval.backend": one_of("torch", "sklearn"),  # lithovae.evaluation.metrics.BACKENDS
    "eval.umap_sample": at_least(1),
    "eval.umap_top_n": at_least(1),
    "checkpoint.every_n_epochs": at_least(1),
    "checkpoint.k": between(2, MAX_CLUSTERS),
    "checkpoint.n_init": at_least(1),
    "checkpoint.max_rows": at_least(2),
}

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


def _class_checks(cfg: DictConfig) -> dict[str, Check]:
    """Limits a group's class states itself, so the class and this check share one definition:
    ``mask.prob`` may be 1 only where the strategy says so (``PROB_ALLOWS_ONE``: BlockMask hides
    one instrument, RandomMask would hide every feature and leave the encoder nothing)."""
    from hydra.utils import get_object

    target = _lookup(cfg, "mask._target_")
    try:
        allow_one = getattr(get_object(str(target)), "PROB_ALLOWS_ONE", None) if target is not _ABSENT else None
    except Exception:  # noqa: BLE001 - a bad target is check_target's to report
        allow_one = None
    return {} if allow_one is None else {"mask.prob": unit_interval if allow_one else dropout}


def check_ranges(cfg: DictConfig, ranges: dict[str, Check] = RANGES) -> None:
    """Every key of ``ranges`` that ``cfg`` sets must pass its check."""
    if ranges is RANGES:  # the table's bounds first, then a class's own, narrower ones
        ranges = [*RANGES.items(), *_class_checks(cfg).items()]
    else:
        ranges = ranges.items()
    for key, check in ranges:
        value = _lookup(cfg, key)
        if value is _ABSENT:
            continue
        try:
            check(key, value)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    fold, n_folds = _lookup(cfg, "datamodule.fold"), _lookup(cfg, "datamodule.n_folds")
    if n_folds not in (None, _ABSENT) and fold not in (None, _ABSENT) and fold >= n_folds:
        raise ConfigError(f"datamodule.fold: must be < datamodule.n_folds ({n_folds}), got {fold!r}")


def validate(cfg: DictConfig) -> None:
    from lithovae.untrusted import check_config  # first: check_target imports the targets
    check_config(cfg, "", allow_interpolation=True, error=ConfigError)
    for group in TARGET_GROUPS:
        node = cfg.get(group)
        if isinstance(node, DictConfig) and "_target_" in node:
            check_target(node, group)
    check_ranges(cfg)
