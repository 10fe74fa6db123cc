"""python -m lithovae.train [experiment=PRESET] [model=...] [beta=...] [mask=...] [alpha=...]

Builds (or reuses) the dataset, trains the composed model, evaluates it on the
test boreholes with latent means, writes ``metrics.json`` in the run dir and
logs everything to MLflow. Returns ``ari_best`` (the sweep objective).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from lithovae import config as config_schema  # registers the train schema
from lithovae.cli import exits_cleanly


def summary_table(metrics: dict, dataset: str, synthetic: bool) -> str:
    keys = ["n_test", "ari_best", "best_k", "best_method", "ari_kmeans_k12", "ari_gmm_k12",
            "silhouette", "r2_mean", "active_dims", "auc_pooled", "balanced_accuracy"]
    keys += sorted(k for k in metrics if k.startswith("imputation_r2_"))
    note = " (SYNTHETIC data, not a real-data result)" if synthetic else ""
    lines = [f"test metrics on {dataset}{note}", "-" * 44]
    for k in keys:
        if k in metrics:
            v = metrics[k]
            text = f"{v:.4f}" if isinstance(v, float) and not math.isnan(v) else str(v)
            lines.append(f"{k:<28}{text:>16}")
    return "\n".join(lines)


def _jsonable(value):
    """NaN (an undefined metric) becomes null: metrics.json stays strict JSON."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


@exits_cleanly
def train(cfg: DictConfig, logger=None) -> dict:
    """Train and evaluate one run; ``logger`` replaces the configured one (CV child runs)."""
    config_schema.validate(cfg)
    import pytorch_lightning as pl
    import torch
    from hydra.utils import instantiate
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar

    from lithovae import tracking
    from lithovae.data.datamodule import LithoDataModule
    from lithovae.files import file_digest
    from lithovae.evaluation.evaluate import evaluate, split_eval_options
    from lithovae.plan import EpochHistory, TrainingPlan

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
    dm = LithoDataModule(dataset_path, seed=cfg.seed, transforms=source.transforms,
                         **OmegaConf.to_container(cfg.datamodule))
    dm.setup()
    score_options, figure_options = split_eval_options(OmegaConf.to_container(cfg.eval))
    _check_log_boreholes(figure_options["log_boreholes"], dm)
    spec = dm.data_spec()
    model = instantiate(cfg.model, _partial_=True, _convert_="all")(data=spec)
    mask = instantiate(cfg.mask, _convert_="all")
    plan = TrainingPlan(model, instantiate(cfg.beta, _convert_="all"), mask,
                        instantiate(cfg.alpha, _convert_="all"), lr=cfg.optimizer.lr,
                        weight_decay=cfg.optimizer.weight_decay,
                        reduce_on_plateau=cfg.lr_scheduler.reduce_on_plateau,
                        plateau_patience=cfg.lr_scheduler.patience,
                        plateau_factor=cfg.lr_scheduler.factor, seed=cfg.seed)

    from lithovae.data.splits import label_entropy

    logger = logger if logger is not None else instantiate(cfg.logger)
    history = EpochHistory()
    checkpoint = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor="val/loss",
                                 mode="min", save_top_k=1, save_last=True)
    callbacks = [checkpoint, history]
    if cfg.trainer.get("enable_progress_bar", True):
        callbacks.append(TQDMProgressBar(refresh_rate=20))  # redrawing every step costs more than a step
    if cfg.early_stopping.enabled:
        callbacks.append(EarlyStopping(monitor="val/loss", mode="min", patience=cfg.early_stopping.patience))
    trainer = instantiate(cfg.trainer, logger=logger if logger is not None else False,
                          callbacks=callbacks, default_root_dir=str(run_dir))

    tags = {"preset": cfg.preset or "none", "dataset": source.name,
            "dataset_checksum": file_digest(dataset_path)[:16], "synthetic": str(source.synthetic),
            "model": cfg.model._target_.rsplit(".", 1)[-1], "git_commit": tracking.git_commit(),
            **tracking.job_tags()}
    with tracking.tracked_run(logger, cfg, tags):
        trainer.fit(plan, datamodule=dm, ckpt_path=cfg.ckpt_path)
        if checkpoint.best_model_path:
            state = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=False)
            plan.load_state_dict(state["state_dict"])
        model.cpu()
        metrics, arrays = evaluate(model, dm.tensors["test"], dm.feature_names, mask=plan.mask,
                                   seed=cfg.seed, **score_options)
        metrics.update({"dataset": source.name, "synthetic": source.synthetic,
                        "preset": cfg.preset, "epochs_trained": trainer.current_epoch,
                        "n_train": dm.stats["n_train"], "n_val": dm.stats["n_val"],
                        "train_entropy": label_entropy(dm.frames["train"]["principal"].dropna()),
                        "test_entropy": label_entropy(dm.frames["test"]["principal"].dropna()),
                        "latent_dim": int(getattr(model, "latent_dim", 0)),
                        "final_losses": {k: float(v) for k, v in trainer.callback_metrics.items()
                                         if k.startswith(("train/", "val/"))}})
        if trainer.is_global_zero:
            files = _write_cluster_tables(run_dir, metrics, arrays, dm)  # adds hierarchy_ari
            files += _write_run_files(run_dir, cfg, metrics, dm)
            class_names = dm.encoding.vocabulary(model.class_target_name())
            figures = (_write_figures(run_dir, arrays, dm, class_names, history.frame(), figure_options, cfg.seed)
                       if figure_options["figures"] else [])
            tracking.log_test_metrics(logger, metrics)
            tracking.log_artifacts(logger, files + [Path(checkpoint.best_model_path or "")])
            tracking.log_artifacts(logger, figures, folder="figures")
            print(summary_table(metrics, source.name, source.synthetic))
            print(f"run dir: {run_dir}")
        return metrics


def _write_cluster_tables(run_dir: Path, metrics: dict, arrays: dict, dm) -> list[Path]:
    """Per-cluster statistics of the best clustering and the expert-hierarchy check."""
    from lithovae.data import reference
    from lithovae.evaluation.clusters import cluster_table, hierarchy_ari

    if arrays["assignment"] is None:
        return []
    principal = dm.frames["test"]["principal"].to_numpy()
    path = run_dir / "clusters.csv"
    cluster_table(arrays["assignment"], principal).to_csv(path)
    metrics["hierarchy_ari"] = hierarchy_ari(arrays["mu"], principal, reference.lithology_groups())
    return [path]


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
    files = {
        "metrics.json": json.dumps(_jsonable(metrics), indent=1, allow_nan=False),
        "config.yaml": OmegaConf.to_yaml(cfg, resolve=True),
        "label_encoding.json": json.dumps(dm.encoding.to_dict(), indent=1),
        "split.json": json.dumps({"boreholes": dm.split_boreholes, "stats": dm.stats}, indent=1),
    }
    paths = []
    for name, text in files.items():
        (run_dir / name).write_text(text)
        paths.append(run_dir / name)
    dm.scaler.save(run_dir / "scaler.json")
    paths.append(run_dir / "scaler.json")
    return paths


def _in_optuna_search() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig

        return "optuna" in str(HydraConfig.get().sweeper.get("_target_", "")).lower()
    except ValueError:
        return False


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Train; return ``cfg.optimized_metric`` (the objective of a sweeper)."""
    try:
        metrics = train(cfg)
    except SystemExit as exc:
        if not _in_optuna_search():
            raise
        # the sweeper records a raising job as a FAIL trial and goes on (max_failure_rate);
        # a SystemExit would end the whole search instead
        raise RuntimeError(f"trial failed with exit code {exc.code} (message above)") from None
    value = metrics.get(cfg.optimized_metric)
    if value is None and cfg.optimized_metric not in metrics:
        raise config_schema.ConfigError(f"optimized_metric: '{cfg.optimized_metric}' is not a metric of this run")
    return float(value) if value is not None else float("nan")


if __name__ == "__main__":
    main()
