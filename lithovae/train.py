"""python -m lithovae.train [experiment=PRESET] [model=...] [beta=...] [mask=...] [alpha=...]

Builds (or reuses) the dataset, trains the composed model, evaluates it on the
test boreholes with latent means, writes ``metrics.json`` in the run dir and
logs everything to MLflow. Returns ``ari_best`` (the sweep objective).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from lithovae import config as config_schema  # registers the train schema
from lithovae.cli import EXIT_USER_ERROR, RunInterrupted, exits_cleanly

log = logging.getLogger("lithovae")


SIDE_BY_SIDE = ["ari_best", "best_k", "best_method", "ari_kmeans_k12", "ari_gmm_k12"]
SINGLE = ["ari_gain", "n_test", "silhouette", "r2_mean", "active_dims", "auc_pooled", "balanced_accuracy"]


def _cell(value) -> str:
    if isinstance(value, float):
        return "null" if not math.isfinite(value) else f"{value:.4f}"
    return "null" if value is None else str(value)


def summary_table(metrics: dict, dataset: str, synthetic: bool) -> str:
    """The end-of-run table: which weights were scored, and each clustering score beside the
    same score on the raw input features."""
    note = " (SYNTHETIC data, not a real-data result)" if synthetic else ""
    lines = [f"test metrics on {dataset}{note}"]
    if "evaluated_epoch" in metrics:
        lines.append(f"scored weights: {metrics['evaluated_checkpoint']}, epoch {metrics['evaluated_epoch']} "
                     f"(0-based; {metrics['epochs_trained']} trained), global step "
                     f"{metrics['evaluated_global_step']}, checkpoint policy {metrics['checkpoint_policy']}")
    lines += ["-" * 56, f"{'':<28}{'latent':>14}{'raw features':>14}"]
    for k in SIDE_BY_SIDE:
        if k in metrics:
            lines.append(f"{k:<28}{_cell(metrics[k]):>14}{_cell(metrics.get('baseline_' + k)):>14}")
    keys = SINGLE + sorted(k for k in metrics if k.startswith("imputation_r2_"))
    for k in keys:
        if k in metrics:
            lines.append(f"{k:<28}{_cell(metrics[k]):>14}")
    return "\n".join(lines)


def train(cfg: DictConfig, logger=None, callbacks: tuple = ()) -> dict:
    """Train and evaluate one run; returns its metrics. ``logger`` replaces the configured one;
    ``callbacks`` are added to the trainer's. Raises :class:`lithovae.errors.LithovaeError` for
    bad input and :class:`lithovae.cli.RunInterrupted` on SIGTERM/SIGINT; never exits."""
    from lithovae import tracking
    from lithovae.cli import signals_interrupt

    if logger is None:
        logger = _configured_logger(cfg)
    with signals_interrupt(), tracking.tracked_run(logger, cfg, _early_tags(cfg)):
        return _train(cfg, logger, callbacks)


def _configured_logger(cfg: DictConfig):
    """The configured logger, or None if its own config is broken (validation then names the key)."""
    from hydra.utils import instantiate

    try:
        config_schema.check_target(cfg.logger, "logger")
        return instantiate(cfg.logger)
    except config_schema.ConfigError:
        return None


def _early_tags(cfg: DictConfig) -> dict:
    from lithovae import tracking

    model = str(cfg.model.get("_target_", "")) if isinstance(cfg.get("model"), DictConfig) else ""
    return {"preset": cfg.get("preset") or "none", "model": model.rsplit(".", 1)[-1],
            "git_commit": tracking.git_commit(), **tracking.job_tags()}


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


def build_run(cfg: DictConfig, logger, datamodules: dict | None = None) -> RunParts:
    """Validate ``cfg``, seed, build (or reuse) the dataset, the data module and the training
    plan, bind the checkpoint policy. ``datamodules`` caches data modules by their options, so
    the members of an ensemble that share data share one module."""
    config_schema.validate(cfg)
    import pytorch_lightning as pl
    import torch
    from hydra.utils import instantiate

    from lithovae import tracking
    from lithovae.data.datamodule import LithoDataModule
    from lithovae.evaluation.scoring import split_eval_options
    from lithovae.plan import TrainingPlan

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
        dm = LithoDataModule(dataset_path, seed=cfg.seed, transforms=source.transforms, **dm_options)
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
    policy = instantiate(cfg.checkpoint).bind(run_dir / "checkpoints")
    return RunParts(cfg, logger, run_dir, source, Path(dataset_path), dm, plan, policy,
                    score_options, figure_options)


def run_tags(parts: RunParts) -> dict:
    from lithovae.files import file_digest

    return {"dataset": parts.source.name, "dataset_checksum": file_digest(parts.dataset_path)[:16],
            "synthetic": str(parts.source.synthetic), "checkpoint_policy": parts.policy.name}


def track_run(parts: RunParts, tags: dict) -> None:
    """The run's tags, and its dataset as an MLflow dataset input (name, checksum, file)."""
    from lithovae import tracking

    tracking.set_tags(parts.logger, tags)
    tracking.log_dataset(parts.logger, parts.source.name, tags["dataset_checksum"], parts.dataset_path)


def _train(cfg: DictConfig, logger, extra_callbacks) -> dict:
    from hydra.utils import instantiate
    from pytorch_lightning.callbacks import EarlyStopping, TQDMProgressBar

    from lithovae import tracking
    from lithovae.checkpointing import EpochEndCheckpoint
    from lithovae.cli import RunInterrupted
    from lithovae.files import load_checkpoint

    resumed = _resume_state(cfg.ckpt_path)
    parts = build_run(cfg, logger)
    ckpt_dir = parts.ckpt_dir
    callbacks = [parts.policy, EpochEndCheckpoint(ckpt_dir), *extra_callbacks]
    if cfg.trainer.get("enable_progress_bar", True):
        callbacks.append(TQDMProgressBar(refresh_rate=1))  # a step is a chunk of 32 mini-batches
    if cfg.early_stopping.enabled:
        callbacks.append(EarlyStopping(monitor="val/loss", mode="min", patience=cfg.early_stopping.patience))
    trainer = instantiate(cfg.trainer, logger=logger if logger is not None else False,
                          callbacks=callbacks, default_root_dir=str(parts.run_dir))

    tags = run_tags(parts)
    if resumed is not None:
        tags.update({"resumed_from_checkpoint": str(cfg.ckpt_path),
                     "resumed_after_epoch": str(resumed["epoch"]),
                     "resumed_from_run": str(resumed.get("mlflow_run_id"))})
        tracking.mark_superseded(logger, resumed.get("mlflow_run_id"), tracking.run_id(logger))
    track_run(parts, tags)
    try:
        trainer.fit(parts.plan, datamodule=parts.dm, ckpt_path=cfg.ckpt_path, weights_only=True)
    except RunInterrupted as exc:
        last = ckpt_dir / "last.ckpt"
        done = (f"{last} holds epoch {load_checkpoint(last)['epoch']} (0-based): resume with "
                f"ckpt_path={last}") if last.exists() else "no epoch finished, nothing to resume"
        raise RunInterrupted(exc.signum, done) from None
    final_losses = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("train/", "val/"))}
    return score_run(parts, epochs_trained=trainer.current_epoch, final_losses=final_losses,
                     is_global_zero=trainer.is_global_zero)


def score_run(parts: RunParts, *, epochs_trained: int, final_losses: dict, is_global_zero: bool = True,
              clustering=None) -> dict:
    """Score the weights the checkpoint policy chose, read back from disk; write metrics.json,
    tables and figures, log them. ``clustering``: this run's clustering, already computed (an
    ensemble clusters all its members in one batched pass)."""
    from lithovae import tracking
    from lithovae.checkpointing import checkpoint_record
    from lithovae.data.splits import label_entropy
    from lithovae.evaluation.scoring import evaluate
    from lithovae.files import load_checkpoint

    cfg, logger, dm, plan, run_dir = parts.cfg, parts.logger, parts.dm, parts.plan, parts.run_dir
    selected = parts.policy.selected()
    state = load_checkpoint(selected)
    plan.load_state_dict(state["state_dict"])
    tracking.log_artifacts(logger, [selected])  # kept even if evaluation fails
    model = plan.model.cpu()
    extra = {} if clustering is None else {"clustering": clustering}
    metrics, arrays = evaluate(model, dm.tensors["test"], dm.feature_names, mask=plan.mask,
                               seed=cfg.seed, baseline_cache_dir=cfg.paths.data_dir, scaler=dm.scaler,
                               group_names=dm.encoding.vocabulary("group"), **parts.score_options, **extra)
    metrics.update(checkpoint_record(selected, state, parts.policy))
    metrics.update({"dataset": parts.source.name, "synthetic": parts.source.synthetic,
                    "preset": cfg.preset, "epochs_trained": epochs_trained,
                    "n_train": dm.stats["n_train"], "n_val": dm.stats["n_val"],
                    **{k: dm.stats[k] for k in ("n_train_labeled", "train_time") if k in dm.stats},
                    "train_entropy": label_entropy(dm.frames["train"]["principal"].dropna()),
                    "test_entropy": label_entropy(dm.frames["test"]["principal"].dropna()),
                    "latent_dim": int(getattr(model, "latent_dim", 0)),
                    "final_losses": final_losses})
    if is_global_zero:
        files = _guarded("cluster tables", lambda: _write_cluster_tables(run_dir, metrics, arrays, dm, model), [])
        files += _guarded("diagnostic tables", lambda: _write_diagnostic_tables(run_dir, metrics, dm), [])
        bundle = _write_predictor(parts, model, arrays, metrics)
        files += _write_run_files(run_dir, cfg, metrics, dm)  # metrics.json before figures
        tracking.log_test_metrics(logger, metrics)
        tracking.log_artifacts(logger, files)
        if bundle is not None and cfg.export.mlflow_model and tracking.run_id(logger) is not None:
            from lithovae.prediction.mlflow_model import log_model

            log_model(logger, bundle, cfg.export.register_as)
        class_names = dm.encoding.vocabulary(model.class_target_name())
        if parts.figure_options["figures"]:
            figures = _write_figures(run_dir, arrays, dm, class_names, plan.history_frame(),
                                     parts.figure_options, cfg.seed)
            tracking.log_artifacts(logger, figures, folder="figures")
        print(summary_table(metrics, parts.source.name, parts.source.synthetic))
        print(f"run dir: {run_dir}")
    return metrics


def _resume_state(ckpt_path) -> dict | None:
    """The resumed checkpoint's epoch and MLflow run (None for a fresh run)."""
    if ckpt_path is None:
        return None
    from lithovae.files import load_checkpoint

    path = Path(ckpt_path)
    if not path.is_file():
        raise config_schema.ConfigError(f"ckpt_path: no checkpoint file at {path}")
    state = load_checkpoint(path)
    if state.get("lithovae", {}).get("ensemble"):
        raise config_schema.ConfigError(
            f"ckpt_path: {path} was written by the ensemble launcher: it holds weights but no optimizer "
            "state, so it can be evaluated (python -m lithovae.evaluate) but not resumed")
    return {"epoch": state.get("epoch"), "mlflow_run_id": state.get("lithovae", {}).get("mlflow_run_id")}


def _guarded(what: str, step, default):
    """Run one optional output step; a failure is a one-line warning, never a lost run."""
    try:
        return step()
    except Exception as exc:  # noqa: BLE001 - any failure of an optional output
        from lithovae.cli import one_line

        log.warning("%s not written: %s", what, one_line(exc))
        return default


def _write_cluster_tables(run_dir: Path, metrics: dict, arrays: dict, dm, model) -> list[Path]:
    """Per-cluster statistics of the best clustering (clusters.csv) and the expert-hierarchy
    check, twice: ``hierarchy_ari_test`` on the centroids of the lithologies of the test split
    (``hierarchy_ari``, as before, is this one) and ``hierarchy_ari_all`` on those of every
    lithology of the reference hierarchy in the dataset, from the latent means of all splits
    (the seed's protocol: 139 centroids); ``hierarchy_n_lithologies_{test,all}`` count them."""
    import numpy as np

    from lithovae.data import reference
    from lithovae.evaluation.clusters import cluster_table, hierarchy_check
    from lithovae.evaluation.scoring import latent_means

    group_of = reference.lithology_groups()
    principal = dm.frames["test"]["principal"].to_numpy()
    ari, n = hierarchy_check(arrays["mu"], principal, group_of)
    metrics.update({"hierarchy_ari": ari, "hierarchy_ari_test": ari, "hierarchy_n_lithologies_test": n})
    splits = [s for s in ("train", "val", "test") if s in dm.tensors]
    mu_all = [arrays["mu"] if s == "test"
              else latent_means(model, dm.tensors[s]["x"], dm.tensors[s]["observed"]) for s in splits]
    names_all = [dm.frames[s]["principal"].to_numpy() for s in splits]
    ari, n = hierarchy_check(np.concatenate(mu_all), np.concatenate(names_all), group_of)
    metrics.update({"hierarchy_ari_all": ari, "hierarchy_n_lithologies_all": n})
    if arrays["assignment"] is None:
        return []
    path = run_dir / "clusters.csv"
    cluster_table(arrays["assignment"], principal).to_csv(path)
    return [path]


def _write_predictor(parts: RunParts, model, arrays: dict, metrics: dict) -> Path | None:
    """The run's predictor bundle (``<run dir>/predictor/``: what ``lithovae.predict`` and the
    MLflow model load), from the scored weights and clustering."""
    from lithovae.prediction.bundle import write_bundle

    return write_bundle(parts.run_dir, cfg=parts.cfg, dm=parts.dm, model=model,
                        clustering=arrays["clustering"], assignment=arrays["assignment"], metrics=metrics,
                        source=parts.source, score_options=parts.score_options)


def _write_diagnostic_tables(run_dir: Path, metrics: dict, dm) -> list[Path]:
    """feature_errors.csv (R², MAE, RMSE per feature, scaled and original units) and
    group_diagnostics.csv (per expert group: rows, reconstruction error, latent coherence,
    classifier accuracy): the seeds' tables, from the metrics."""
    from lithovae.evaluation.scoring import diagnostic_tables

    paths = []
    for name, table in diagnostic_tables(metrics, dm.feature_names).items():
        paths.append(run_dir / f"{name}.csv")
        table.to_csv(paths[-1], index=False)
    return paths


def _check_log_boreholes(boreholes: list[str], dm) -> None:
    """Fail before training when a requested depth-log borehole is not a test borehole."""
    test = set(dm.frames["test"]["borehole_id"].astype(str))
    for bh in boreholes:
        if str(bh) not in test:
            raise config_schema.ConfigError(
                f"eval.log_boreholes: '{bh}' is not a test borehole of this split "
                f"(test boreholes include {sorted(test)[:5]})")


def _write_figures(run_dir: Path, arrays: dict, dm, class_names: list[str], history, options: dict,
                   seed: int) -> list[Path]:
    from lithovae.evaluation.figures import write_all

    test = dm.tensors["test"]
    written = write_all({
        "mu": arrays["mu"], "assignment": arrays["assignment"], "recon": arrays["recon"],
        "logits": arrays["logits"], "target": arrays["target"], "x": test["x"].numpy(),
        "observed": test["observed"].numpy(), "feature_names": dm.feature_names, "frame": dm.frames["test"],
        "scaler": dm.scaler, "class_names": class_names, "history": history,
        "borehole_ids": options["log_boreholes"]}, run_dir / "figures",
        umap_sample=options["umap_sample"], umap_top_n=options["umap_top_n"], seed=seed)
    return list(written.values())


def _write_run_files(run_dir: Path, cfg: DictConfig, metrics: dict, dm) -> list[Path]:
    from lithovae.results import to_json, write_text

    files = {
        "metrics.json": to_json(metrics),
        "config.yaml": OmegaConf.to_yaml(cfg, resolve=True),
        "label_encoding.json": json.dumps(dm.encoding.to_dict(), indent=1),
        "split.json": json.dumps({"boreholes": dm.split_boreholes, "stats": dm.stats}, indent=1),
    }
    paths = [write_text(run_dir / name, text) for name, text in files.items()]
    dm.scaler.save(run_dir / "scaler.json")
    paths.append(run_dir / "scaler.json")
    return paths


# train as the command line runs it: one `error:` line and exit code 2 (143/130 when stopped)
run = exits_cleanly(train)


def _in_optuna_search() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig

        return "optuna" in str(HydraConfig.get().sweeper.get("_target_", "")).lower()
    except ValueError:
        return False


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Train; return ``cfg.optimized_metric`` (the objective of a sweeper)."""
    import sys

    from lithovae.cli import one_line
    from lithovae.errors import LithovaeError
    from lithovae.sweeps import in_multirun, mark_failed

    if _in_optuna_search():
        metrics = train(cfg)  # the sweeper records a raising trial as FAIL and goes on
    elif in_multirun():
        try:
            metrics = train(cfg)
        except LithovaeError as exc:
            # one bad value fails its own job (FAILED MLflow run); the others run
            print(f"error: {one_line(exc)}", file=sys.stderr)
            mark_failed(cfg.paths.run_dir, EXIT_USER_ERROR)
            return float("nan")
        except RunInterrupted as exc:  # a stopped job stops the sweep
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(exc.exit_code)
    else:
        metrics = run(cfg)
    value = metrics.get(cfg.optimized_metric)
    if value is None and cfg.optimized_metric not in metrics:
        print(f"error: optimized_metric: '{cfg.optimized_metric}' is not a metric of this run", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    return float(value) if value is not None else float("nan")


if __name__ == "__main__":
    main()
