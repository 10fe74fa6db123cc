"""One run's lifecycle, apart from the command line: build -> fit -> score -> outputs -> tracking.

:func:`train` runs it end to end (``python -m lithovae.train`` parses the command line and calls
it). The ensemble launcher (:mod:`lithovae.ensemble.group`) uses the same parts: it builds each
member with :func:`build_run`, opens its MLflow run with :func:`configured_logger`,
:func:`early_tags`, :func:`run_tags` and :func:`track_run`, trains the members together, and
scores each with :func:`score_run`.

After scoring, the run's outputs are written by a list of steps, each a callable of the
:class:`ScoredRun`: :data:`OUTPUT_STEPS` by default, extended by ``train(cfg, outputs=[...])``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ProgressBar
from pytorch_lightning.utilities import rank_zero_only

from lithovae import config as config_schema  # registers the train schema
from lithovae import progress, tracking
from lithovae.checkpointing import EpochEndCheckpoint, PolicyCheckpoint, checkpoint_record, take_over
from lithovae.cli import FILE_SYSTEM_ERRNOS, RunInterrupted, one_line, signals_interrupt
from lithovae.console import progress_callback, quiet_third_party
from lithovae.data.datamodule import LithoDataModule
from lithovae.data.splits import label_entropy, saved_assignment
from lithovae.errors import CheckpointError
from lithovae.evaluation.clusters import cluster_table
from lithovae.evaluation.comparisons import MIN_BOOTSTRAP_BOREHOLES, verdict_line
from lithovae.evaluation.background import Background, second_core
from lithovae.evaluation.figures import clustered_figures, prepare_figures, unclustered_figures, write_all
from lithovae.evaluation.scoring import (BACKGROUND_TEST_ROWS, diagnostic_tables, hierarchy_inputs, model_outputs,
                                        score_model, split_eval_options, start_baseline,
                                        cluster_test_latents)
from lithovae.evaluation.well_log import dataset_units, manifest_beside, training_scales
from lithovae.files import atomic_write, check_fits, file_digest, load_checkpoint
from lithovae.plan import EarlyStop, TrainingPlan
from lithovae.prediction.bundle import write_bundle
from lithovae.results import to_json, write_text
from lithovae.training_rules import EarlyStopping
from lithovae.untrusted import check_config, load_config

log = logging.getLogger("lithovae")


# -- the MLflow run ------------------------------------------------------------------------------

def configured_logger(cfg: DictConfig):
    """The configured logger, or None if its own config is broken (validation then names the key)."""
    try:
        check_config(cfg, "", allow_interpolation=True, error=config_schema.ConfigError)  # first: nothing foreign is built
        config_schema.check_target(cfg.logger, "logger")
        return instantiate(cfg.logger)
    except config_schema.ConfigError:
        return None


def early_tags(cfg: DictConfig) -> dict:
    """The tags a run has from its start, before anything is built: preset, model, commit, job."""
    model = str(cfg.model.get("_target_", "")) if isinstance(cfg.get("model"), DictConfig) else ""
    return {"preset": cfg.get("preset") or "none", "model": model.rsplit(".", 1)[-1],
            "git_commit": tracking.git_commit(), **tracking.job_tags()}


# -- build ---------------------------------------------------------------------------------------

@dataclass
class RunParts:
    """One run's pieces before training: what both the single-run trainer and the ensemble
    launcher build, train and then score the same way (:func:`score_run`)."""

    cfg: DictConfig
    logger: Any
    run_dir: Path
    source: Any
    dataset_path: Path
    dm: Any
    plan: Any
    policy: Any
    score_options: dict
    figure_options: dict

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"


def build_run(cfg: DictConfig, logger, datamodules: dict | None = None, resumed: dict | None = None) -> RunParts:
    """Validate ``cfg``, seed, build (or reuse) the dataset, the data module and the training
    plan, bind the checkpoint policy, and write what scores and resumes the run (config, scaler,
    label encoding, split) before any training. ``datamodules`` caches data modules by their
    options, so the members of an ensemble that share data share one module. ``resumed``: the
    checkpoint a resume starts from (:func:`resume_state`), which must fit the plan."""
    config_schema.validate(cfg)
    torch.set_num_threads(cfg.threads)
    if "spawn" in str(cfg.trainer.get("strategy", "")):
        # tensors reach spawned ranks through files, not passed file descriptors (several
        # views of one storage would pass one descriptor twice: CPython gh-87308)
        torch.multiprocessing.set_sharing_strategy("file_system")
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    run_dir = Path(cfg.paths.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    source = instantiate(cfg.data, _convert_="all")
    dataset_path, _ = source.prepare(cfg.paths.data_dir)
    dm_options = OmegaConf.to_container(cfg.datamodule)
    key = json.dumps([str(dataset_path), cfg.seed, source.transforms, dm_options], sort_keys=True, default=str)
    dm = (datamodules or {}).get(key)
    if dm is None:
        # a resume keeps the stopped run's boreholes in each part, whatever the data gained since
        assignment = resumed.get("assignment") if resumed is not None else None
        dm = LithoDataModule(dataset_path, seed=cfg.seed, transforms=source.transforms,
                             assignment=assignment, **dm_options)
        dm.setup()
        if datamodules is not None:
            datamodules[key] = dm
    score_options, figure_options = split_eval_options(OmegaConf.to_container(cfg.eval))
    _check_log_boreholes(figure_options["log_boreholes"], dm)
    spec = dm.data_spec()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)  # the same initial weights, data cached or not
    model = instantiate(cfg.model, _partial_=True, _convert_="all")(data=spec)
    mask = instantiate(cfg.mask, _convert_="all")
    plan = TrainingPlan(model, instantiate(cfg.beta, _convert_="all"), mask,
                        instantiate(cfg.alpha, _convert_="all"), lr=cfg.optimizer.lr,
                        weight_decay=cfg.optimizer.weight_decay,
                        reduce_on_plateau=cfg.lr_scheduler.reduce_on_plateau,
                        plateau_patience=cfg.lr_scheduler.patience,
                        plateau_factor=cfg.lr_scheduler.factor, seed=cfg.seed)
    plan.mlflow_run_id = tracking.run_id(logger)
    if resumed is not None:
        check_fits(plan.state_dict(), resumed["state"]["state_dict"],
                   f"ckpt_path: {resumed['path']} does not fit this run's model")
    policy = instantiate(cfg.checkpoint).bind(run_dir / "checkpoints")
    _write_setup_files(run_dir, cfg, dm)
    return RunParts(cfg, logger, run_dir, source, Path(dataset_path), dm, plan, policy,
                    score_options, figure_options)


def _check_log_boreholes(boreholes: list[str], dm) -> None:
    """Fail before training when a requested depth-log borehole is not a test borehole."""
    test = set(dm.frames["test"]["borehole_id"].astype(str))
    for bh in boreholes:
        if str(bh) not in test:
            raise config_schema.ConfigError(
                f"eval.log_boreholes: '{bh}' is not a test borehole of this split "
                f"(test boreholes include {sorted(test)[:5]})")


RUN_FILES = ("config.yaml", "label_encoding.json", "split.json", "scaler.json")  # before training


def _write_setup_files(run_dir: Path, cfg: DictConfig, dm) -> None:
    """What scores and resumes the run (``evaluate run_dir=``, ``ckpt_path=``), on disk before
    training starts, so a run killed in any phase keeps it (rank 0 writes)."""
    if rank_zero_only.rank != 0:
        return
    files = {
        "config.yaml": OmegaConf.to_yaml(cfg, resolve=True),
        "label_encoding.json": json.dumps(dm.encoding.to_dict(), indent=1),
        "split.json": _split_file(dm),
    }
    for name, text in files.items():
        write_text(run_dir / name, text)
    dm.scaler.save(run_dir / "scaler.json")


def _split_file(dm) -> str:
    return json.dumps({"boreholes": dm.split_boreholes, "stats": dm.stats}, indent=1)


def run_tags(parts: RunParts) -> dict:
    return {"dataset": parts.source.name, "dataset_checksum": file_digest(parts.dataset_path)[:16],
            "synthetic": str(parts.source.synthetic), "checkpoint_policy": parts.policy.name}


def track_run(parts: RunParts, tags: dict) -> None:
    """The run's tags, and its dataset as an MLflow dataset input (name, checksum, file)."""
    tracking.set_tags(parts.logger, tags)
    tracking.name_with_dataset(parts.logger, parts.source.name)
    tracking.log_dataset(parts.logger, parts.source.name, tags["dataset_checksum"], parts.dataset_path)


# -- fit -----------------------------------------------------------------------------------------

def train(cfg: DictConfig, logger=None, callbacks: tuple = (), outputs: Sequence[OutputStep] = ()) -> dict:
    """Train and evaluate one run; returns its metrics. ``logger`` replaces the configured one;
    ``callbacks`` are added to the trainer's; ``outputs`` run after :data:`OUTPUT_STEPS`.
    Raises :class:`lithovae.errors.LithovaeError` for bad input and
    :class:`lithovae.cli.RunInterrupted` on SIGTERM/SIGINT; never exits."""
    quiet_third_party()
    with signals_interrupt():  # from the start: a preemption while the logger connects is not lost
        if logger is None:
            logger = configured_logger(cfg)
        with tracking.tracked_run(logger, cfg, early_tags(cfg)):
            return _fit_and_score(cfg, logger, callbacks, outputs)


def _fit_and_score(cfg: DictConfig, logger, extra_callbacks, outputs) -> dict:
    resumed = resume_state(cfg.ckpt_path, cfg)
    parts = build_run(cfg, logger, resumed=resumed)
    ckpt_dir = parts.ckpt_dir
    if resumed is not None:  # the stopped run's checkpoints, in this run's folder
        take_over(resumed["path"], ckpt_dir, parts.policy, resumed["state"])
    callbacks = [PolicyCheckpoint(parts.policy), EpochEndCheckpoint(ckpt_dir), *extra_callbacks]
    shown = progress_callback(cfg.trainer.get("max_epochs")) if cfg.trainer.get("enable_progress_bar", True) \
        else None  # the bar on a terminal, epoch lines elsewhere
    callbacks += [shown] if shown is not None else []
    if cfg.early_stopping.enabled:
        callbacks.append(EarlyStop(EarlyStopping(patience=cfg.early_stopping.patience)))
    trainer = instantiate(cfg.trainer, logger=logger if logger is not None else False,
                          callbacks=callbacks, default_root_dir=str(parts.run_dir),
                          enable_progress_bar=isinstance(shown, ProgressBar))

    tags = run_tags(parts)
    if resumed is not None:
        tags.update({"resumed_from_checkpoint": str(cfg.ckpt_path),
                     "resumed_after_epoch": str(resumed["epoch"]),
                     "resumed_from_run": str(resumed.get("mlflow_run_id"))})
        tracking.mark_superseded(logger, resumed.get("mlflow_run_id"), tracking.run_id(logger))
    track_run(parts, tags)
    if resumed is not None and resumed["complete"]:
        return _score_complete(parts, resumed, outputs)
    with contextlib.closing(start_ahead(parts, trainer.world_size)) as ahead:
        try:
            trainer.fit(parts.plan, datamodule=parts.dm, ckpt_path=cfg.ckpt_path, weights_only=True)
        except RunInterrupted as exc:
            last = ckpt_dir / "last.ckpt"
            done = (f"{last} holds epoch {load_checkpoint(last)['epoch']} (0-based): resume with "
                    f"ckpt_path={last}") if last.exists() else "no epoch finished, nothing to resume"
            raise RunInterrupted(exc.signum, done) from None
        final_losses = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("train/", "val/"))}
        with _scoring_stops(parts):
            return score_run(parts, epochs_trained=trainer.current_epoch, final_losses=final_losses,
                             is_global_zero=trainer.is_global_zero, outputs=outputs, ahead=ahead)


@dataclass
class Ahead:
    """Work a run starts on its second core before its scoring needs it (the training uses one
    thread, ``threads: 1``): the raw-feature baseline, which needs the data only, while it trains;
    and processes that import (and compile) what the test clusterings and the figures need, then
    wait for their inputs (:meth:`Background.waiting`). Each changes when its work is done, never
    what: the same functions, the same thread count, computed here where a process fails."""

    baseline: Any = None
    test_clusters: Any = None
    figures: Any = None
    clustered_figures: Any = None  # the figures that show the clustering, drawn while the run logs

    def close(self) -> None:
        for job in (self.baseline, self.test_clusters, self.figures, self.clustered_figures):
            if job is not None:
                job.close()


def start_ahead(parts: RunParts, world_size: int) -> Ahead:
    """:class:`Ahead` for a single-process run with a large test set (from
    :data:`BACKGROUND_TEST_ROWS` rows, where a second process saves more than it costs) and a
    second CPU; nothing ahead otherwise (tests; DDP, where each rank would start its own; a job
    given one CPU, where the work would slow the training by as much as it saves)."""
    dm = parts.dm
    if world_size != 1 or len(dm.tensors["test"]["x"]) < BACKGROUND_TEST_ROWS or not second_core():
        return Ahead()
    held_out = {part: dm.tensors[part] for part in ("val", "train")}
    return Ahead(
        baseline=start_baseline(dm.tensors["test"], held_out, cache_dir=parts.cfg.paths.data_dir, seed=parts.cfg.seed,
                                **parts.score_options),
        test_clusters=Background.waiting(cluster_test_latents),  # imports what it needs meanwhile
        figures=Background.waiting(unclustered_figures, prepare=prepare_figures)
        if parts.figure_options["figures"] else None,
        clustered_figures=Background.waiting(clustered_figures) if parts.figure_options["figures"] else None)


def _score_complete(parts: RunParts, resumed: dict, outputs) -> dict:
    """A resume with no epoch left to train (killed while scoring): score at once, with the
    stopped run's training curves and final losses, read from its checkpoint."""
    state = resumed["state"]
    parts.plan.on_load_checkpoint(state)
    record = training_record(state)
    print(f"{resumed['path']}: training already complete (epoch {resumed['epoch']}, 0-based): scoring it")
    with _scoring_stops(parts):
        return score_run(parts, epochs_trained=record["epochs_trained"], final_losses=record["final_losses"],
                         outputs=outputs)


@contextlib.contextmanager
def _scoring_stops(parts: RunParts):
    """A run stopped while scoring says how to finish it: its training is complete."""
    try:
        yield
    except RunInterrupted as exc:
        last = parts.ckpt_dir / "last.ckpt"
        raise RunInterrupted(exc.signum, f"stopped while scoring, training complete: score it with "
                                         f"python -m lithovae.evaluate run_dir={parts.run_dir}, or resume "
                                         f"with ckpt_path={last}") from None


# -- resume --------------------------------------------------------------------------------------

def resume_state(ckpt_path, cfg: DictConfig | None = None) -> dict | None:
    """The checkpoint a resume starts from (None for a fresh run): its state, epoch, MLflow run,
    and whether its training is complete. Faults are one line before any work: a file that is
    not a training checkpoint and, given the run's ``cfg``, a saved config of the stopped run
    that differs where a resume must not (:func:`_check_same_run`) or ``trainer.max_epochs``
    below the checkpoint's epochs."""
    if ckpt_path is None:
        return None
    path = Path(ckpt_path)
    if not path.is_file():
        raise config_schema.ConfigError(f"ckpt_path: no checkpoint file at {path}")
    state = load_checkpoint(path)  # weights_only: nothing in it runs
    origin = state.get("lithovae") if isinstance(state.get("lithovae"), dict) else {}
    if origin.get("ensemble"):
        raise config_schema.ConfigError(
            f"ckpt_path: {path} was written by the ensemble launcher: it holds weights but no optimizer "
            "state, so it can be evaluated (python -m lithovae.evaluate) but not resumed")
    if not isinstance(state.get("epoch"), int) or not isinstance(state.get("state_dict"), dict) \
            or "optimizer_states" not in state:
        raise CheckpointError(f"ckpt_path: {path} is not a training checkpoint (no epoch, weights or optimizer "
                              "state): resume from a run's checkpoints/last.ckpt")
    trained = state["epoch"] + 1
    if cfg is not None:
        _check_same_run(cfg, path)
    max_epochs = cfg.trainer.get("max_epochs") if cfg is not None else trained
    if not isinstance(max_epochs, int) or max_epochs < 1:
        max_epochs = trained  # not a valid value: the config's validation names it
    elif max_epochs < trained:
        raise config_schema.ConfigError(
            f"trainer.max_epochs: {max_epochs} is below the {trained} epochs {path} already holds (epoch "
            f"{state['epoch']}, 0-based): resume with trainer.max_epochs >= {trained}")
    return {"path": path, "state": state, "epoch": state["epoch"], "mlflow_run_id": origin.get("mlflow_run_id"),
            "assignment": saved_assignment(path.resolve().parent.parent / "split.json"),
            "complete": trained >= max_epochs or bool(origin.get("stopped_early"))}


# what a resume must share with the stopped run: the model, and what decides the data, its
# features and its split (a resume with other boreholes in test would score seen data)
RESUME_KEYS = ("model", "seed", "data._target_", "data.scale", "data.seed", "data.build", "data.features",
               "data.label", "data.group", "data.label_names", "data.groups", "data.borehole", "data.depth",
               "data.bin_size",
               *(f"datamodule.{k}" for k in ("fractions", "split", "n_folds", "fold", "label_fraction",
                                             "label_unit", "standardize", "context", "engineered",
                                             "impute_rgb")))


def _saved_config(run_dir: Path):
    """The stopped run's saved config (``config.yaml``, else ``.hydra/config.yaml``), read as
    untrusted input (:func:`lithovae.untrusted.load_config`: a foreign ``_target_`` at any depth
    is refused in one line), and its path; None when the checkpoint lies outside a run."""
    found = None
    for name, unresolved in (("config.yaml", False), (".hydra/config.yaml", True)):
        path = run_dir / name
        if path.is_file():  # both are checked: a planted file refuses the run folder whole
            cfg = load_config(path, allow_interpolation=unresolved)
            found = found or (cfg, path)
    return found


def _flat(node, prefix: str = "") -> dict:
    out = {}
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{name}."))
        else:
            out[name] = value
    return out


def _check_same_run(cfg: DictConfig, ckpt_path: Path) -> None:
    """Refuse, in one line naming each key and both values, a resume whose config differs from
    the stopped run's (its run dir is the checkpoint's grandparent) in :data:`RESUME_KEYS`. Keys
    that only one side has (added since), or that the saved file leaves unresolved, are not
    compared."""
    found = _saved_config(ckpt_path.resolve().parent.parent)
    if found is None:
        return
    saved_cfg, saved_path = found
    tops = sorted({k.split(".")[0] for k in RESUME_KEYS})
    saved = _flat(OmegaConf.to_container(saved_cfg, resolve=False))
    current = _flat(OmegaConf.to_container(OmegaConf.masked_copy(cfg, tops), resolve=True))
    differences = []
    for key, new in current.items():
        old = saved.get(key, new)
        if not any(key == k or key.startswith(k + ".") for k in RESUME_KEYS) or (
                isinstance(old, str) and "${" in old):
            continue
        if old != new:
            differences.append(f"{key}: the stopped run used {old!r}, this run {new!r}")
    if differences:
        more = f" (and {len(differences) - 3} more)" if len(differences) > 3 else ""
        raise config_schema.ConfigError(
            f"ckpt_path: {ckpt_path} cannot resume with this config ({saved_path} differs): "
            + "; ".join(differences[:3]) + more)


# -- score ---------------------------------------------------------------------------------------

def training_record(state: dict) -> dict:
    """What a run's checkpoint (its last one: every epoch's curves) says of its training: the
    epochs trained, the last epoch's losses and the MLflow run that trained it."""
    history = state.get("history") or [{}]
    origin = state.get("lithovae") if isinstance(state.get("lithovae"), dict) else {}
    return {"epochs_trained": int(state["epoch"]) + 1,
            "final_losses": {k: float(v) for k, v in history[-1].items() if k.startswith(("train/", "val/"))},
            "mlflow_run_id": origin.get("mlflow_run_id")}


def data_record(dm, scored: Sequence[str]) -> dict:
    """What metrics.json says of the data: the rows of the training and validation parts, the
    labeled training rows, the training wall time (where the data module has one), and the
    label entropy of the training part and of the scored parts (``test_entropy``, as ``n_test``
    counts the scored rows)."""
    scored_labels = pd.concat([dm.frames[p]["principal"] for p in scored]).dropna()
    return {"n_train": dm.stats["n_train"], "n_val": dm.stats["n_val"],
            **{k: dm.stats[k] for k in ("n_train_labeled", "train_time") if k in dm.stats},
            "train_entropy": label_entropy(dm.frames["train"]["principal"].dropna()),
            "test_entropy": label_entropy(scored_labels)}


def score_run(parts: RunParts, *, epochs_trained: int, final_losses: dict, is_global_zero: bool = True,
              clustering=None, outputs: Sequence[OutputStep] = (), ahead: Ahead | None = None) -> dict:
    """Score the weights the checkpoint policy chose, read back from disk; then (rank 0) run
    :data:`OUTPUT_STEPS` and ``outputs``: metrics.json, tables, the predictor, figures, MLflow.
    ``clustering``: this run's clustering, already computed (an ensemble clusters all its
    members in one batched pass); ``ahead``: the work :func:`start_ahead` started."""
    with progress.phases("after training"):
        scored = _score(parts, epochs_trained=epochs_trained, final_losses=final_losses, clustering=clustering,
                        ahead=ahead or Ahead())
        if is_global_zero:
            for step in (*OUTPUT_STEPS, *outputs):
                step(scored)
    return scored.metrics


def _score(parts: RunParts, *, epochs_trained: int, final_losses: dict, clustering, ahead: Ahead) -> ScoredRun:
    cfg, logger, dm, plan = parts.cfg, parts.logger, parts.dm, parts.plan
    selected = parts.policy.selected()
    state = load_checkpoint(selected)
    plan.load_state_dict(state["state_dict"])
    tracking.log_artifacts(logger, [selected])  # kept even if evaluation fails
    model = plan.model.cpu()
    extra = {} if clustering is None else {"clustering": clustering}
    test = dm.tensors["test"]
    with progress.step("scoring the test boreholes"):
        outputs = model_outputs(model, test, test["observed"])
        # what the figures draw but the clustering: gathered once (the axis scales read every training bin)
        drawn = figure_inputs(parts, model, {**outputs, "target": model.class_target(test).numpy()}) \
            if parts.figure_options["figures"] else None
        if ahead.figures is not None:  # drawn meanwhile: the figures that show no clustering
            ahead.figures.submit(drawn, parts.run_dir / "figures", parts.figure_options["umap_sample"], cfg.seed,
                                 parts.source.synthetic)
        metrics, arrays = score_model(model, test, dm.feature_names, mask=plan.mask, outputs=outputs,
                                      baseline_job=ahead.baseline, test_job=ahead.test_clusters,
                                      seed=cfg.seed, baseline_cache_dir=cfg.paths.data_dir, scaler=dm.scaler,
                                      group_names=dm.encoding.vocabulary("group"),
                                      held_out={part: dm.tensors[part] for part in ("val", "train")},
                                      boreholes=dm.frames["test"]["borehole_id"].to_numpy(),
                                      hierarchy=hierarchy_inputs(dm, ["test"]), **parts.score_options, **extra)
    metrics.update(checkpoint_record(selected, state, parts.policy))
    metrics.update({"dataset": parts.source.name, "synthetic": parts.source.synthetic,
                    "preset": cfg.preset, "epochs_trained": epochs_trained, **data_record(dm, ["test"]),
                    "latent_dim": int(getattr(model, "latent_dim", 0)),
                    "seed": int(cfg.seed), "mlflow_run_id": tracking.run_id(logger),
                    "final_losses": final_losses})
    if ahead.clustered_figures is not None:  # drawn while the run writes its bundle and MLflow model
        ahead.clustered_figures.submit({**drawn, "assignment": shown_assignment(arrays)},
                                       parts.run_dir / "figures", parts.source.synthetic)
    return ScoredRun(parts, model, metrics, arrays, figure_inputs=drawn, figures_drawn_meanwhile=ahead.figures,
                     clustered_figures_meanwhile=ahead.clustered_figures)


# -- outputs -------------------------------------------------------------------------------------

@dataclass
class ScoredRun:
    """A scored run, as each output step reads it: its parts, the scored model, its metrics
    (a step may add to them before ``write_metrics`` writes metrics.json) and the arrays behind
    them (:func:`lithovae.evaluation.scoring.score_model`)."""

    parts: RunParts
    model: Any
    metrics: dict
    arrays: dict
    files: list[Path] = field(default_factory=list)  # written so far: logged with metrics.json
    bundle: Path | None = None  # the predictor bundle, once written
    figure_inputs: dict | None = None  # figure_inputs(): what write_figures draws but the clustering
    figures_drawn_meanwhile: Any = None  # unclustered_figures, started while scoring (Ahead.figures)
    clustered_figures_meanwhile: Any = None  # clustered_figures, started once scored (Ahead.clustered_figures)


OutputStep = Callable[[ScoredRun], None]


def _guarded(what: str, step, default):
    """Run one optional output step; a failure is a one-line warning, never a lost run. A full
    disk or read-only folder is not such a failure: it fails the run (every later write would)."""
    try:
        return step()
    except Exception as exc:  # noqa: BLE001 - any failure of an optional output
        if isinstance(exc, OSError) and exc.errno in FILE_SYSTEM_ERRNOS:
            raise
        log.warning("%s not written: %s", what, one_line(exc))
        return default


def shown_assignment(arrays: dict):
    """The test clustering the run's tables and figures show: the one chosen on the validation
    boreholes (``ari_selected``), else, without a validation part, the test-label oracle's."""
    return arrays["selected_assignment"] if arrays.get("selected_assignment") is not None else arrays["assignment"]


def _write_cluster_table(run: ScoredRun) -> list[Path]:
    """Per-cluster statistics of the shown clustering (clusters.csv, :func:`shown_assignment`)."""
    assignment = shown_assignment(run.arrays)
    if assignment is None:
        return []
    path = run.parts.run_dir / "clusters.csv"
    table = cluster_table(assignment, run.parts.dm.frames["test"]["principal"].to_numpy())
    atomic_write(path, table.to_csv)
    return [path]


def _write_diagnostic_tables(run: ScoredRun) -> list[Path]:
    """feature_errors.csv (R², MAE, RMSE per feature, scaled and original units) and
    group_diagnostics.csv (per expert group: rows, reconstruction error, latent coherence,
    classifier accuracy): the seeds' tables, from the metrics."""
    paths = []
    for name, table in diagnostic_tables(run.metrics, run.parts.dm.feature_names).items():
        paths.append(run.parts.run_dir / f"{name}.csv")
        atomic_write(paths[-1], lambda tmp, table=table: table.to_csv(tmp, index=False))
    return paths


def write_tables(run: ScoredRun) -> None:
    with progress.step("cluster and diagnostic tables"):
        run.files += _guarded("cluster tables", lambda: _write_cluster_table(run), [])
        run.files += _guarded("diagnostic tables", lambda: _write_diagnostic_tables(run), [])


def write_predictor(run: ScoredRun) -> None:
    """The run's predictor bundle (``<run dir>/predictor/``: what ``lithovae.predict`` and the
    MLflow model load), from the scored weights and the inductive clusterer (fitted on the
    training boreholes, chosen on the validation ones: ``ari_inductive``)."""
    p = run.parts
    with progress.step("predictor bundle"):
        run.bundle = write_bundle(p.run_dir, cfg=p.cfg, dm=p.dm, model=run.model,
                                  clusterer=run.arrays["inductive_clusterer"],
                                  assignment=run.arrays["inductive_assignment"], metrics=run.metrics,
                                  source=p.source, score_options=p.score_options)


def write_metrics(run: ScoredRun) -> None:
    """metrics.json, and split.json again with the fit's statistics (its ``train_time``); with
    the other setup files and the tables so far, logged to MLflow with the metrics."""
    p = run.parts
    with progress.step("metrics to files and MLflow"):
        write_text(p.run_dir / "split.json", _split_file(p.dm))
        write_text(p.run_dir / "metrics.json", to_json(run.metrics))
        run.files += [p.run_dir / "metrics.json", *(p.run_dir / name for name in RUN_FILES)]
        tracking.log_test_metrics(p.logger, run.metrics)
        tracking.log_artifacts(p.logger, run.files)


def log_mlflow_model(run: ScoredRun) -> None:
    """The predictor bundle as an MLflow model of the run (``export.mlflow_model``)."""
    p = run.parts
    if run.bundle is None or not p.cfg.export.mlflow_model or tracking.run_id(p.logger) is None:
        return
    # not at the top: mlflow.pyfunc takes seconds to import, and only this step needs it
    from lithovae.prediction.mlflow_model import log_model

    with progress.step("MLflow model"):
        log_model(p.logger, run.bundle, p.cfg.export.register_as)


def write_figures(run: ScoredRun) -> None:
    """The run's figures (``<run dir>/figures/``); with synthetic data, each says its data are."""
    p, arrays = run.parts, run.arrays
    if not p.figure_options["figures"]:
        return
    with progress.step("figures"):
        written = write_all({**run.figure_inputs, "assignment": shown_assignment(arrays)},
                            p.run_dir / "figures", umap_sample=p.figure_options["umap_sample"],
                            umap_top_n=p.figure_options["umap_top_n"], seed=p.cfg.seed, synthetic=p.source.synthetic,
                            unclustered=run.figures_drawn_meanwhile, clustered=run.clustered_figures_meanwhile)
        tracking.log_artifacts(p.logger, list(written.values()), folder="figures")


def figure_inputs(parts: RunParts, model, arrays: dict) -> dict:
    """What :func:`lithovae.evaluation.figures.write_all` draws of a scored run, but its clustering:
    the test rows, their model outputs (``arrays``: mu, recon, logits, target) and the history."""
    dm, test = parts.dm, parts.dm.tensors["test"]
    units, depth_unit = dataset_units(manifest_beside(dm.dataset_path))
    return {"base_features": dm.base_features, "units": units, "depth_unit": depth_unit,
            "scales": training_scales(dm), "mu": arrays["mu"], "recon": arrays["recon"],
            "logits": arrays["logits"], "target": arrays["target"], "x": test["x"].numpy(),
            "observed": test["observed"].numpy(), "feature_names": dm.feature_names, "frame": dm.frames["test"],
            "scaler": dm.scaler, "class_names": dm.encoding.vocabulary(model.class_target_name()),
            "history": parts.plan.history_frame(), "borehole_ids": parts.figure_options["log_boreholes"]}


def show_summary(run: ScoredRun) -> None:
    """The end-of-run table on the console and as the MLflow run's description, and where the
    run's folder and MLflow page are."""
    p = run.parts
    table = summary_table(run.metrics, p.source.name, p.source.synthetic)
    tracking.describe_run(p.logger, run_description(run.metrics, table, p.source.synthetic, p.run_dir))
    print(table)
    print(f"run dir: {p.run_dir}")
    for line in tracking.where_to_look(p.logger):
        print(line)


# the steps after scoring, in order (each reads what the ones before it left in the ScoredRun)
OUTPUT_STEPS: tuple[OutputStep, ...] = (write_tables, write_predictor, write_metrics, log_mlflow_model,
                                        write_figures, show_summary)


# -- the end-of-run table ------------------------------------------------------------------------

# (row label, key) with the raw features' score beside the latent one
SIDE_BY_SIDE = [("ari_selected", "ari_selected"), ("  chosen on validation", None),
                ("ari_inductive", "ari_inductive"), ("  fitted on training", None),
                ("ari_best (test-label oracle)", "ari_best"), ("ari_kmeans_k12", "ari_kmeans_k12"),
                ("ari_gmm_k12", "ari_gmm_k12")]
SINGLE = ["ari_gain", "ari_inductive_gain", "n_test", "n_test_labeled", "silhouette", "r2_mean", "active_dims",
          "auc_macro", "auc_micro", "balanced_accuracy", "n_classes_scored", "auc_pooled"]


def _cell(value) -> str:
    if isinstance(value, float):
        return "null" if not math.isfinite(value) else f"{value:.4f}"
    return "null" if value is None else str(value)


def _with_interval(metrics: dict, key: str) -> str:
    """``0.1860 [0.1520, 0.2210]``: the score and its bootstrap interval, where it has one."""
    cell = _cell(metrics.get(key))
    low, high = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
    if low is None and high is None:
        return cell
    return f"{cell} [{_cell(low)}, {_cell(high)}]"


def _choice(metrics: dict, prefix: str, kind: str) -> str:
    method, k = metrics.get(f"{prefix}{kind}_method"), metrics.get(f"{prefix}{kind}_k")
    return "null" if method is None else f"{method} k={k}"


def summary_table(metrics: dict, dataset: str, synthetic: bool) -> str:
    """The end-of-run table: which weights were scored, each clustering score beside the same
    score on the raw input features, the headline scores with their intervals, and whether the
    latent space beats the raw features beyond the interval."""
    note = " (SYNTHETIC data, not a real-data result)" if synthetic else ""
    lines = [f"test metrics on {dataset}{note}"]
    if "evaluated_epoch" in metrics:
        lines.append(f"scored weights: {metrics['evaluated_checkpoint']}, epoch {metrics['evaluated_epoch']} "
                     f"(0-based; {metrics['epochs_trained']} trained), global step "
                     f"{metrics['evaluated_global_step']}, checkpoint policy {metrics['checkpoint_policy']}")
    if metrics.get("bootstrap_resamples"):
        lines.append(f"[low, high]: {metrics['bootstrap_level']:.0%} interval over {metrics['bootstrap_resamples']} "
                     f"resamples of the {metrics['bootstrap_boreholes']} test boreholes")
    width = 34
    lines += ["-" * (width + 2 * 26), f"{'':<{width}}{'latent':>26}{'raw features':>26}"]
    for label, key in SIDE_BY_SIDE:
        if key is None:
            kind = "selected" if "validation" in label else "inductive"
            if f"{kind}_method" in metrics:
                lines.append(f"{label:<{width}}{_choice(metrics, '', kind):>26}"
                             f"{_choice(metrics, 'baseline_', kind):>26}")
        elif key in metrics:
            lines.append(f"{label:<{width}}{_with_interval(metrics, key):>26}"
                         f"{_with_interval(metrics, 'baseline_' + key):>26}")
    keys = SINGLE + sorted(k for k in metrics if k.startswith("imputation_r2_") and not k.endswith(("_low", "_high")))
    for k in keys:
        if k in metrics:
            lines.append(f"{k:<{width}}{_with_interval(metrics, k):>26}")
    if "ari_gain_ci_low" in metrics and metrics["bootstrap_boreholes"] < MIN_BOOTSTRAP_BOREHOLES:
        lines.append(f"verdict: none: {metrics['bootstrap_boreholes']} test boreholes are too few for a borehole "
                     f"bootstrap (at least {MIN_BOOTSTRAP_BOREHOLES}); ari_gain {metrics['ari_gain']:+.3f} is one "
                     "draw, its interval a rough guide")
    elif "ari_gain_ci_low" in metrics:
        over = f"{metrics['bootstrap_boreholes']} test boreholes"
        lines.append(verdict_line("the latent space", "the raw features", "ari_gain", metrics["ari_gain"],
                                  metrics["ari_gain_ci_low"], metrics["ari_gain_ci_high"],
                                  metrics["bootstrap_level"], over))
    return "\n".join(lines)


def run_description(metrics: dict, table: str, synthetic: bool, run_dir) -> str:
    """The MLflow run's description: the headline first (what its page shows before "Show more"),
    then the whole end-of-run table."""
    verdicts = [line for line in table.splitlines() if line.startswith("verdict")]
    headline = [("**SYNTHETIC data: not a real-data result.** " if synthetic else "")
                + f"Test boreholes: ari_selected {_with_interval(metrics, 'ari_selected')} against "
                f"{_with_interval(metrics, 'baseline_ari_selected')} on the raw features; "
                f"r2_mean {_with_interval(metrics, 'r2_mean')}.", *verdicts]
    return "\n\n".join([*headline, f"```\n{table}\n```", f"run dir: `{run_dir}`"])
