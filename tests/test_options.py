"""Option ranges, declared beside what they check (lithovae.checks: a class's ``OPTIONS``, a
structured config's field metadata): an out-of-range value fails at start, before any data is
built, with one ``error:`` line naming the key and exit code 2; the class's constructor refuses
it with the same message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from lithovae.checks import declared_options
from lithovae.config import FOREIGN_TARGET_OPTIONS, ConfigError, TrainConfig, _parameters, validate
from lithovae.data.builder import BuildOptions
from lithovae.data.datamodule import LithoDataModule
from lithovae.masking import RandomMask
from lithovae.spec import DataSpec
from lithovae.train import run, train
from lithovae.untrusted import group_targets
from tests.conftest import CONF_DIR, compose_train

STUDIES = sorted(p.stem for p in (Path(CONF_DIR) / "study").glob("*.yaml"))
PRESETS = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))

# (overrides, the key the error line must name)
BAD = [
    (["trainer.max_epochs=-1"], "trainer.max_epochs"),
    (["trainer.max_epochs=0"], "trainer.max_epochs"),
    (["trainer.log_every_n_steps=0"], "trainer.log_every_n_steps"),
    (["datamodule.batch_size=0"], "datamodule.batch_size"),
    (["datamodule.batch_size=1"], "datamodule.batch_size"),
    (["datamodule.eval_batch_size=0"], "datamodule.eval_batch_size"),
    (["datamodule.steps_per_batch=0"], "datamodule.steps_per_batch"),
    (["datamodule.context=-1"], "datamodule.context"),
    (["datamodule.fractions=[0.8,0.15,0.15]"], "datamodule.fractions"),
    (["datamodule.fractions=[1.2,-0.1,-0.1]"], "datamodule.fractions"),
    (["datamodule.fractions=[0.5,0.5]"], "datamodule.fractions"),
    (["datamodule.n_folds=1", "datamodule.fold=0"], "datamodule.n_folds"),
    (["datamodule.n_folds=3", "datamodule.fold=3"], "datamodule.fold"),
    (["datamodule.n_folds=3", "datamodule.fold=-1"], "datamodule.fold"),
    (["data.build.bin_size=0"], "data.build.bin_size"),
    (["data.build.depth_tolerance=-0.1"], "data.build.depth_tolerance"),
    (["data.seed=-1"], "data.seed"),
    (["seed=-1"], "seed"),
    (["threads=0"], "threads"),
    (["model.latent_dim=0"], "model.latent_dim"),
    (["model.hidden=[32,0]"], "model.hidden"),
    (["model.hidden=32"], "model.hidden"),
    (["model.dropout=1.0"], "model.dropout"),
    (["model.dropout=-0.1"], "model.dropout"),
    (["model=semisup", "model.classifier_hidden=[0]"], "model.classifier_hidden"),
    (["model=semisup", "model.classifier_dropout=1.0"], "model.classifier_dropout"),
    (["model=direct_classifier", "model.hidden=[64,-1]"], "model.hidden"),
    (["model=dual_encoder", "model.latent_dim=0"], "model.latent_dim"),
    (["model=dual_encoder", "model.branch_hidden=[16,0]"], "model.branch_hidden"),
    (["model=dual_encoder", "model.fusion_hidden=[0]"], "model.fusion_hidden"),
    (["model=dual_encoder", "model.decoder_hidden=[0,32]"], "model.decoder_hidden"),
    (["model=embedding_classifier", "model.vae_epochs=-1"], "model.vae_epochs"),
    (["model=vade", "model.n_components=0"], "model.n_components"),
    (["model=vade", "model.init_epoch=-1"], "model.init_epoch"),
    (["model=vampprior", "model.n_pseudo_inputs=0"], "model.n_pseudo_inputs"),
    (["model=contrastive", "model.n_clusters=1"], "model.n_clusters"),
    (["model=contrastive", "model.refresh_every=0"], "model.refresh_every"),
    (["model=contrastive", "model.temperature=0"], "model.temperature"),
    (["model=contrastive", "model.gamma=-1"], "model.gamma"),
    (["beta=fixed", "beta.value=-1"], "beta.value"),
    (["beta=anneal", "beta.start=-1"], "beta.start"),
    (["beta=anneal", "beta.end=-1"], "beta.end"),
    (["beta=anneal", "beta.epochs=0"], "beta.epochs"),
    (["beta=cyclical", "beta.period=0"], "beta.period"),
    (["beta=cyclical", "beta.ratio=0"], "beta.ratio"),
    (["mask=random", "mask.prob=1.5"], "mask.prob"),
    (["mask=random", "mask.masked_weight=-1"], "mask.masked_weight"),
    (["alpha=fixed", "alpha.value=-0.5"], "alpha.value"),
    (["alpha=adaptive", "alpha.base=-0.5"], "alpha.base"),
    (["optimizer.lr=0"], "optimizer.lr"),
    (["optimizer.lr=-0.001"], "optimizer.lr"),
    (["optimizer.weight_decay=-0.1"], "optimizer.weight_decay"),
    (["lr_scheduler.patience=-1"], "lr_scheduler.patience"),
    (["lr_scheduler.factor=1.0"], "lr_scheduler.factor"),
    (["lr_scheduler.factor=0"], "lr_scheduler.factor"),
    (["early_stopping.patience=-1"], "early_stopping.patience"),
    (["eval.n_init=0"], "eval.n_init"),
    (["eval.k=[1,12]"], "eval.k"),
    (["eval.k=[]"], "eval.k"),
    (["eval.silhouette_samples=1"], "eval.silhouette_samples"),
    (["eval.max_fit_samples=0"], "eval.max_fit_samples"),
    (["eval.umap_sample=0"], "eval.umap_sample"),
    (["eval.umap_top_n=0"], "eval.umap_top_n"),
    (["eval.train_fit_samples=0"], "eval.train_fit_samples"),
    (["eval.bootstrap.resamples=-1"], "eval.bootstrap.resamples"),
    (["eval.bootstrap.resamples=1000000"], "eval.bootstrap.resamples"),
    (["eval.bootstrap.level=1.0"], "eval.bootstrap.level"),
    (["eval.bootstrap.level=0"], "eval.bootstrap.level"),
    (["optimized_metric=ari_best"], "optimized_metric"),
    # the class's own, narrower limit (RandomMask: prob < 1, MaskStrategy: <= 1), and maxima
    # that cannot fit in memory
    (["mask=random", "mask.prob=1.0"], "mask.prob"),
    (["model.latent_dim=100000"], "model.latent_dim"),
    (["model.hidden=[100000,16]"], "model.hidden"),
    (["model=semisup", "model.classifier_hidden=[100000]"], "model.classifier_hidden"),
    (["model=dual_encoder", "model.decoder_hidden=[16,100000]"], "model.decoder_hidden"),
    (["datamodule.context=1000000000"], "datamodule.context"),
    (["eval.k=[12,100000]"], "eval.k"),
    (["model=vade", "model.n_components=100000"], "model.n_components"),
    (["model=vampprior", "model.n_pseudo_inputs=100000"], "model.n_pseudo_inputs"),
    (["model=contrastive", "model.n_clusters=100000"], "model.n_clusters"),
    (["checkpoint=val_ari", "checkpoint.k=100000"], "checkpoint.k"),
]


@pytest.fixture
def no_data_build(monkeypatch):
    """Building the dataset means validation let a bad value through: fail at once, rather
    than train (with trainer.max_epochs=-1, forever)."""
    from lithovae.data.sources import SyntheticSource

    def refuse(self, *args, **kwargs):
        raise AssertionError("the dataset build started: the bad option passed validation")

    monkeypatch.setattr(SyntheticSource, "prepare", refuse)


@pytest.mark.parametrize("overrides, key", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_an_out_of_range_option_fails_fast_naming_the_key(tmp_path, capsys, no_data_build, overrides, key):
    cfg = compose_train([*overrides, "logger=none"], tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        run(cfg)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: {key}"), lines[0]
    assert not (tmp_path / "data").exists()  # no dataset was built
    assert not (tmp_path / "run").exists()   # nor the run started


@pytest.mark.parametrize("overrides, message", [
    (["trainer.max_epochs=-1"], "trainer.max_epochs: must be an integer >= 1, got -1"),
    (["datamodule.batch_size=0"], "datamodule.batch_size: must be an integer >= 2, got 0"),
    (["eval.k=[1,12]"], "eval.k[0]: must be an integer in [2, 1000], got 1"),
    (["model.latent_dim=100000"], "model.latent_dim: must be an integer in [1, 1024], got 100000"),
    (["mask=random", "mask.prob=1.0"], "mask.prob: must be in [0, 1), got 1.0"),
    (["eval.max_fit_samples=0"], "eval.max_fit_samples: must be null or an integer >= 1, got 0"),
    (["optimizer.lr=0"], "optimizer.lr: must be a finite number > 0, got 0.0"),
    (["optimized_metric=ari_best"], "optimized_metric: must be a validation score (val_ari_selected, "
                                    "val_ari_inductive): 'ari_best' is scored on the test boreholes"),
    (["lr_scheduler.factor=1.0"], "lr_scheduler.factor: must be in (0, 1), got 1.0"),
    (["model.dropout=1.0"], "model.dropout: must be in [0, 1), got 1.0"),
    (["datamodule.fractions=[0.8,0.15,0.15]"],
     "datamodule.fractions: must be three numbers >= 0 summing to 1, got [0.8, 0.15, 0.15]"),
])
def test_the_messages_name_the_range(tmp_path, overrides, message):
    with pytest.raises(ConfigError) as error:
        validate(compose_train(overrides, tmp_path))
    assert str(error.value) == message


@pytest.mark.parametrize("overrides", [
    ["datamodule.batch_size=2", "datamodule.eval_batch_size=1", "datamodule.steps_per_batch=1"],
    ["trainer.max_epochs=1", "lr_scheduler.factor=0.99", "lr_scheduler.patience=0", "early_stopping.patience=0"],
    ["model.dropout=0.0", "model.hidden=[]", "model.latent_dim=1", "optimizer.weight_decay=0"],
    ["eval.k=[2]", "eval.n_init=1", "eval.silhouette_samples=2", "eval.max_fit_samples=null",
     "eval.max_fit_samples=1", "eval.umap_sample=1", "eval.umap_top_n=1"],
    ["eval.train_fit_samples=1", "eval.bootstrap.resamples=0", "eval.bootstrap.level=0.5",
     "optimized_metric=val_ari_inductive"],
    ["eval.train_fit_samples=null", "eval.bootstrap.resamples=100000", "eval.bootstrap.level=0.999"],
    ["datamodule.fractions=[1.0,0,0]", "datamodule.context=0", "threads=1"],
    ["datamodule.n_folds=2", "datamodule.fold=1", "seed=4294967295"],
    ["model=dual_encoder", "model.fusion_hidden=[]"],
    ["mask=block", "mask.prob=1.0"],
    ["mask=random", "mask.prob=0.999"],
    ["model.latent_dim=1024", "model.hidden=[4096,4096]", "datamodule.context=32", "eval.k=[2,1000]"],
    ["beta=cyclical", "beta.ratio=1.0"],
])
def test_boundary_values_are_accepted(tmp_path, overrides):
    validate(compose_train(overrides, tmp_path))


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_passes_the_checks(tmp_path, preset):
    validate(compose_train([f"experiment={preset}"], tmp_path))


@pytest.mark.parametrize("study", STUDIES)
def test_every_study_config_passes_the_checks(tmp_path, study):
    validate(compose_train([f"study={study}"], tmp_path))


def _keys(node, prefix="") -> set[str]:
    if not OmegaConf.is_dict(node):
        return {prefix}
    keys = {prefix} if prefix else set()
    for name in node:
        keys |= _keys(node._get_node(name), f"{prefix}.{name}" if prefix else str(name))
    return keys


def _declaring_classes() -> dict[str, type]:
    """Every class whose options a config sets: the packaged lithovae targets of every group,
    the data module, the data build options and the checks kept for Lightning's Trainer."""
    classes = {t: get_object(t) for targets in group_targets().values() for t in targets
               if t.startswith("lithovae.")}
    return {**classes, "LithoDataModule": LithoDataModule, "BuildOptions": BuildOptions,
            **{f"{group} (foreign)": owner for group, owner in FOREIGN_TARGET_OPTIONS.items()}}


def test_every_declared_option_is_an_option_of_its_class():
    """A misspelt name in OPTIONS would silently check nothing: each name a class declares is a
    parameter of it, or of a packaged class that inherits the declaration (MaskStrategy's)."""
    import dataclasses

    import pytorch_lightning as pl

    accepts: dict[type, set[str]] = {}
    for where, cls in _declaring_classes().items():
        if dataclasses.is_dataclass(cls):
            names = {f.name for f in dataclasses.fields(cls)}
        else:
            names = set(_parameters(pl.Trainer if "foreign" in where else cls)[0])
        for base in (cls.__mro__ if isinstance(cls, type) else [cls]):
            accepts.setdefault(base, set()).update(names)
    wrong = []
    for declaring, names in accepts.items():
        for name, _ in (declared_options(declaring) if "OPTIONS" in vars(declaring) else []):
            wrong += [f"{declaring.__qualname__}: {n}" for n in (name if isinstance(name, tuple) else (name,))
                      if n.split(".")[0] not in names]
    assert accepts and not wrong, wrong


def test_every_schema_check_is_declared_on_a_config_key(tmp_path):
    """Each structured config's declared checks name keys of the composed config."""
    keys = _keys(compose_train([], tmp_path)) | {"datamodule.n_folds", "datamodule.fold"}  # null by default
    keys |= {"replicates"}  # set by study=replicates only
    names = {name for name, _ in declared_options(TrainConfig)}
    assert names and names <= keys, sorted(names - keys)


def test_the_config_check_reads_the_class_declaration(tmp_path, monkeypatch):
    """The config has no ranges of its own for a target: change the class's and the config's change."""
    cfg = compose_train(["mask=random", "mask.prob=0.5"], tmp_path)
    validate(cfg)

    def at_most_a_quarter(key, value):
        if value > 0.25:
            raise ValueError(f"{key}: must be <= 0.25, got {value!r}")

    monkeypatch.setattr(RandomMask, "OPTIONS", {"prob": at_most_a_quarter})
    with pytest.raises(ConfigError, match=r"^mask\.prob: must be <= 0\.25, got 0\.5$"):
        validate(cfg)
    with pytest.raises(ValueError, match=r"^prob: must be <= 0\.25, got 0\.5$"):
        RandomMask(prob=0.5, masked_weight=0.0)


# the rows of BAD whose class checks its own options when built: its constructor must refuse the
# value with the config's message (the data's and the data module's keep their group's prefix)
BUILT = [(o, k) for o, k in BAD if k.split(".")[0] in ("model", "beta", "mask", "alpha", "datamodule", "data")]
SPEC = DataSpec(6, ("GRA", "MS", "NGR", "R", "G", "B"), 139, 14, (1,) * 139, (1,) * 14)


@pytest.fixture(scope="module")
def composed(tmp_path_factory):
    """compose_train, once per choice of config groups; the values are set on a copy."""
    tmp, cache = tmp_path_factory.mktemp("composed"), {}

    def compose_with(overrides):
        groups = tuple(o for o in overrides if "." not in o.split("=")[0])
        if groups not in cache:
            cache[groups] = compose_train(list(groups), tmp)
        cfg = cache[groups].copy()
        for override in overrides:
            key, value = override.split("=", 1)
            if "." in key:
                OmegaConf.update(cfg, key, yaml.safe_load(value), merge=False)
        return cfg
    return compose_with


def _build(node: DictConfig, **injected):
    """The node's target called with its options (as Hydra would, without Hydra's wrapping)."""
    options = OmegaConf.to_container(node, resolve=True)
    return get_object(options.pop("_target_"))(**options, **injected)


@pytest.mark.parametrize("overrides, key", BUILT, ids=[" ".join(o) for o, _ in BUILT])
def test_the_constructor_refuses_what_the_config_refuses(tmp_path, composed, overrides, key):
    cfg = composed(overrides)
    with pytest.raises(ConfigError) as config_error:
        validate(cfg)
    group = key.split(".")[0]
    with pytest.raises(ValueError) as built_error:
        if group == "datamodule":
            LithoDataModule(tmp_path / "unread.parquet", seed=0,
                            **OmegaConf.to_container(cfg.datamodule, resolve=True))
        else:
            _build(cfg[group], **({"data": SPEC} if group == "model" else {}))
    message = str(config_error.value)
    assert str(built_error.value) == (message if group in ("datamodule", "data") else message[len(group) + 1:])


@pytest.mark.slow  # over 15 s: `make test-slow`, which CI runs too
@pytest.mark.parametrize("overrides, line", [
    (["trainer.max_epochs=-1"], "error: trainer.max_epochs: must be an integer >= 1, got -1"),
    # the class's own limit (RandomMask raised a ValueError once training began)
    (["mask=random", "mask.prob=1.0"], "error: mask.prob: must be in [0, 1), got 1.0"),
    # a maximum (it trained, then failed allocating 80 GB)
    (["model.latent_dim=100000"], "error: model.latent_dim: must be an integer in [1, 1024], got 100000"),
], ids=["max_epochs", "mask.prob", "latent_dim"])
def test_the_command_line_exits_2_with_one_error_line(tmp_path, overrides, line):
    proc = subprocess.run([sys.executable, "-m", "lithovae.train", *overrides,
                           f"paths.root_dir={tmp_path}", "logger=none"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == [line], proc.stderr
    assert not (tmp_path / "outputs" / "data").exists()


def test_the_library_raises_a_typed_error_and_never_exits(tmp_path, no_data_build):
    with pytest.raises(ConfigError, match="trainer.max_epochs"):
        train(compose_train(["trainer.max_epochs=-1", "logger=none"], tmp_path))
