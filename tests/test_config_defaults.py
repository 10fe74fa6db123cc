"""Every default is written once, in the YAML under ``lithovae/conf``.

- a preset (``conf/experiment/*.yaml``) sets only what differs from what it composes;
- the dataclass schema (``lithovae/config.py``) carries types, not values;
- the constructors built from the config restate no value of the YAML: every key a
  ``model``/``beta``/``mask``/``alpha``/``data``/``checkpoint`` YAML sets is a required
  keyword of its ``_target_`` (no Python default);
- every YAML of those groups composes and builds.

Presets, group options (data sources, models, schedules, ...) are discovered by glob: a new
YAML is checked without editing this file.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import get_object, instantiate
from omegaconf import MISSING, DictConfig, OmegaConf

import lithovae.config as config_module
from lithovae.config import TrainConfig, validate
from lithovae.data.builder import BuildOptions
from lithovae.data.datamodule import LithoDataModule
from lithovae.evaluation.scoring import raw_feature_baseline, score_model, split_eval_options
from lithovae.evaluation.metrics import clustering_scores
from lithovae.models.base import DataSpec
from tests.conftest import CONF_DIR

CONF = Path(CONF_DIR)
PRESETS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
DATA_WITH_BUILD = sorted(p.stem for p in (CONF / "data").glob("*.yaml") if "build" in OmegaConf.load(p))
# the groups whose YAML is a ``_target_`` node the code builds (trainer and logger: library classes)
TARGET_GROUPS = ("model", "beta", "mask", "alpha", "data", "checkpoint")
GROUP_OPTIONS = [(group, p.stem) for group in TARGET_GROUPS for p in sorted((CONF / group).glob("*.yaml"))]
_ABSENT = object()


def _compose(overrides: list[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def _leaves(node, prefix: str = ""):
    """(dotted key, value) of every leaf of a plain dict; lists and empty dicts are leaves."""
    for key, value in node.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _lookup(node, key: str):
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _ABSENT
        node = node[part]
    return node


def _same(a, b) -> bool:
    """Equal and of the same type (1 is not 1.0, nor True): what a YAML dump would show."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _preset(name: str) -> tuple[list[str], dict]:
    """A preset's group choices (as overrides) and its body (without defaults and preset)."""
    body = OmegaConf.to_container(OmegaConf.load(CONF / "experiment" / f"{name}.yaml"), resolve=False)
    choices = []
    for entry in body.pop("defaults", []):
        (group, option), = entry.items()
        choices.append(f"{group.removeprefix('override ').lstrip('/')}={option}")
    body.pop("preset", None)
    return choices, body


def _restated(choices: list[str], body: dict) -> list[str]:
    """The leaves of ``body`` equal to what the config composes without them: train.yaml
    with the preset's own group choices."""
    base = OmegaConf.to_container(_compose(choices), resolve=False)
    return [f"{key}: {value!r}" for key, value in _leaves(body) if _same(_lookup(base, key), value)]


# -- (1) presets set only what differs ---------------------------------------------------------

@pytest.mark.parametrize("name", PRESETS)
def test_a_preset_restates_no_value_it_composes(name):
    choices, body = _preset(name)
    restated = _restated(choices, body)
    assert not restated, (f"conf/experiment/{name}.yaml sets values it gets anyway from "
                          f"train.yaml and {choices}: {restated}; remove them (and cite them "
                          f"in the preset's header comment)")


def test_the_preset_check_finds_a_restated_value():
    choices, body = _preset("v2_6_7")
    body = {**body, "trainer": {"max_epochs": _compose(choices).trainer.max_epochs}}
    assert _restated(choices, body) == ["trainer.max_epochs: 100"]


@pytest.mark.parametrize("name", PRESETS)
def test_a_preset_composes_to_its_choices_plus_its_body(name):
    """The body is applied on top of the group choices (nothing else in the preset)."""
    choices, body = _preset(name)
    composed = OmegaConf.to_container(_compose([f"experiment={name}"]), resolve=False)
    for key, value in _leaves(body):
        assert _same(_lookup(composed, key), value), key
    assert composed["preset"] == name


# -- (2) no YAML value restated in Python ------------------------------------------------------

def _schema_classes() -> dict[type, str]:
    """Each dataclass of the schema and its dotted place in the train config ("" for the root)."""
    places: dict[type, str] = {}

    def walk(cls, prefix):
        places[cls] = prefix
        for f in dataclasses.fields(cls):
            if isinstance(f.type, str):
                annotation = inspect.get_annotations(cls, eval_str=True)[f.name]
            else:
                annotation = f.type
            if dataclasses.is_dataclass(annotation):
                walk(annotation, f"{prefix}{f.name}.")
    walk(TrainConfig, "")
    return places


def _raw_yaml_keys() -> set[str]:
    """The dotted keys train.yaml and the default eval/paths groups write themselves."""
    keys = {k for k, _ in _leaves(OmegaConf.to_container(OmegaConf.load(CONF / "train.yaml")))}
    for group in ("eval", "paths"):
        node = OmegaConf.to_container(OmegaConf.load(CONF / group / "default.yaml"))
        keys |= {f"{group}.{k}" for k, _ in _leaves(node)}
    return keys


def test_every_schema_dataclass_is_reached_from_the_train_config():
    declared = {obj for _, obj in inspect.getmembers(config_module, dataclasses.is_dataclass)
                if inspect.isclass(obj) and obj.__module__ == config_module.__name__}
    assert declared == set(_schema_classes())


@pytest.mark.parametrize("cls, prefix", list(_schema_classes().items()),
                         ids=lambda v: v.__name__ if isinstance(v, type) else v or "root")
def test_the_schema_carries_types_not_values(cls, prefix):
    written = _raw_yaml_keys()
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if f.default_factory is not dataclasses.MISSING:
            assert dataclasses.is_dataclass(f.default_factory), f"{key}: a value in the schema"
            continue
        if f.default is None:  # a node no YAML writes (study: set by conf/study/*)
            assert key not in written and not any(k.startswith(f"{key}.") for k in written), \
                f"{key}: None in the schema, a value in the YAML"
            continue
        assert f.default == MISSING, f"{key}: default {f.default!r} in the schema; write it in the YAML"


def _config_defaults(defaults: dict, names) -> list[str]:
    """Parameters of a constructor that the YAML sets and that still have a Python default."""
    return [f"{name}={p.default!r}" for name, p in names.items()
            if name in defaults and p.default is not inspect.Parameter.empty]


def test_the_data_module_restates_no_datamodule_default():
    cfg = OmegaConf.to_container(_compose([]), resolve=False)
    params = inspect.signature(LithoDataModule.__init__).parameters
    yaml_values = {**cfg["datamodule"], "seed": cfg["seed"]}
    assert set(cfg["datamodule"]) <= set(params)
    assert not _config_defaults(yaml_values, params), "set in lithovae/conf/train.yaml"


@pytest.mark.parametrize("data", DATA_WITH_BUILD)
def test_build_options_restate_no_data_build_default(data):
    cfg = OmegaConf.to_container(_compose([f"data={data}"]), resolve=False)
    params = inspect.signature(BuildOptions).parameters
    yaml_values = {**cfg["data"]["build"], **({"encoding": cfg["data"]["encoding"]}
                                              if "encoding" in cfg["data"] else {})}
    assert set(cfg["data"]["build"]) <= set(params)
    assert not _config_defaults(yaml_values, params), f"set in lithovae/conf/data/{data}.yaml"


@pytest.mark.parametrize("function", [score_model, raw_feature_baseline], ids=lambda f: f.__name__)
def test_evaluation_restates_no_eval_default(function):
    cfg = OmegaConf.to_container(_compose([]), resolve=False)
    params = inspect.signature(function).parameters
    scores, _ = split_eval_options(cfg["eval"])
    if function is score_model:  # score_model() takes every scoring option (**score_options)
        assert set(scores) <= set(params)
    restated = _config_defaults({**scores, "seed": cfg["seed"]}, params)
    assert not restated, "set in lithovae/conf/eval/default.yaml (seed: train.yaml)"


def test_the_k_list_has_no_python_default():
    assert inspect.signature(clustering_scores).parameters["ks"].default is inspect.Parameter.empty


def _target_parameters(target) -> dict[str, inspect.Parameter]:
    """The keywords a ``_target_`` class accepts: its ``__init__``'s, then, while a signature
    takes ``**kwargs`` (e.g. a VAE variant's ``**vae_kwargs``), those of the classes above it."""
    params: dict[str, inspect.Parameter] = {}
    for owner in [c for c in inspect.getmro(target) if "__init__" in vars(c)]:
        signature = inspect.signature(owner.__init__)
        for name, p in signature.parameters.items():
            if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                params.setdefault(name, p)
        if not any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
            break
    return params


def _signature_restates(target, keys) -> list[str]:
    """The ``keys`` (set by a YAML) that ``target`` does not take as a required keyword."""
    params = _target_parameters(target)
    problems = []
    for key in keys:
        p = params.get(key)
        if p is None:
            problems.append(f"{key}: not a parameter")
        elif p.default is not inspect.Parameter.empty:
            problems.append(f"{key}={p.default!r}: a Python default")
        elif p.kind is not p.KEYWORD_ONLY:
            problems.append(f"{key}: not keyword-only")
    return problems


def _group_node(group: str, option: str) -> dict:
    """The composed ``group`` node of ``conf/<group>/<option>.yaml`` (its defaults list applied)."""
    return OmegaConf.to_container(_compose([f"{group}={option}"])[group], resolve=False)


@pytest.mark.parametrize("group, option", GROUP_OPTIONS, ids=lambda v: v)
def test_no_target_restates_a_value_its_yaml_sets(group, option):
    node = _group_node(group, option)
    keys = [k for k in node if not k.startswith("_")]
    restated = _signature_restates(get_object(node["_target_"]), keys)
    assert not restated, (f"{node['_target_']}: set in lithovae/conf/{group}/{option}.yaml, so a "
                          f"required keyword without a default: {restated}")


def test_the_signature_check_finds_a_restated_default():
    class Base:
        def __init__(self, data, *, width: int, depth: int = 2):
            pass

    class Variant(Base):
        def __init__(self, data, size: int, *, gain: float = 0.5, **base_kwargs):
            super().__init__(data, **base_kwargs)

    assert _signature_restates(Variant, ["width", "depth", "size", "gain", "colour"]) == [
        "depth=2: a Python default", "size: not keyword-only", "gain=0.5: a Python default",
        "colour: not a parameter"]
    assert _signature_restates(Variant, ["width"]) == []


def test_build_options_take_data_encoding_without_a_default():
    encoding = inspect.signature(BuildOptions.from_config).parameters["encoding"]
    assert encoding.default is inspect.Parameter.empty and encoding.kind is encoding.KEYWORD_ONLY


# -- (3) every model YAML composes and builds ---------------------------------------------------

SPEC = DataSpec(6, ("GRA", "MS", "NGR", "R", "G", "B"), 139, 14, tuple(range(1, 140)), tuple(range(1, 15)))


@pytest.mark.parametrize("model", MODELS)
def test_every_model_yaml_composes_and_builds(model):
    cfg = _compose([f"model={model}"])
    validate(cfg)
    built = instantiate(cfg.model, _partial_=True, _convert_="all")(data=SPEC)
    assert sum(p.numel() for p in built.parameters()) > 0


@pytest.mark.parametrize("group, option", [(g, o) for g, o in GROUP_OPTIONS if g != "model"],
                         ids=lambda v: v)
def test_every_other_target_yaml_composes_and_builds(group, option):
    """The YAML alone gives every required keyword (a ``???`` path gets a placeholder; the
    sources read nothing when built)."""
    cfg = _compose([f"{group}={option}"])
    validate(cfg)
    node = cfg[group]
    for key in node:
        if OmegaConf.is_missing(node, key):
            node[key] = "placeholder"
    built = instantiate(node, _convert_="all")
    assert type(built).__name__ == node["_target_"].rsplit(".", 1)[1]


def test_the_training_plan_takes_every_optimiser_and_schedule_value_from_the_config():
    from lithovae.plan import TrainingPlan, make_adam

    for fn in (TrainingPlan.__init__, make_adam):
        defaults = {n: p.default for n, p in inspect.signature(fn).parameters.items()
                    if p.default is not inspect.Parameter.empty}
        assert not defaults, f"{fn.__qualname__} restates config values as defaults: {defaults}"
