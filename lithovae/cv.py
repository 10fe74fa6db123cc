"""python -m lithovae.cv experiment=v2_6_7 cv.folds=5: entropy-balanced K-fold CV.

Each fold's test set is one fold of boreholes from the study's greedy
entropy-balanced allocation (validation is carved from the other boreholes).
Each fold is a child MLflow run; the parent run logs the mean and std of every
metric and the per-fold table (like the study's v2.6.7 CV table).
"""

from __future__ import annotations

import math
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from lithovae import config as config_schema  # registers the train schema
from lithovae.cli import exits_cleanly

FOLD_COLUMNS = ["fold", "train_samples", "test_samples", "train_entropy", "test_entropy",
                "collapsed_dims", "effective_dim", "best_k", "best_ari", "best_sil"]


def fold_row(fold: int, m: dict) -> dict:
    return {"fold": fold, "train_samples": m["n_train"], "test_samples": m["n_test"],
            "train_entropy": m["train_entropy"], "test_entropy": m["test_entropy"],
            "collapsed_dims": m["latent_dim"] - m["active_dims"], "effective_dim": m["active_dims"],
            "best_k": m["best_k"], "best_ari": m["ari_best"], "best_sil": m["silhouette"]}


def summarise(per_fold: list[dict]) -> dict[str, float]:
    """Mean and std (population, as numpy) of every numeric metric over folds."""
    import numpy as np

    keys = [k for k, v in per_fold[0].items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)]
    out = {}
    for k in keys:
        values = np.array([f.get(k, math.nan) for f in per_fold], dtype=float)
        if np.isfinite(values).any():
            out[f"{k}_mean"] = float(np.nanmean(values))
            out[f"{k}_std"] = float(np.nanstd(values))
    return out


@exits_cleanly
def run_cv(cfg: DictConfig) -> dict:
    import pandas as pd
    from pytorch_lightning.loggers import MLFlowLogger

    from lithovae import tracking
    from lithovae.train import train

    config_schema.validate(cfg)
    folds = int(cfg.cv.folds)
    if folds < 2:
        raise config_schema.ConfigError(f"cv.folds: need at least 2 folds, got {folds}")
    root = Path(cfg.paths.run_dir)
    parent = None
    if cfg.logger.get("_target_", "").endswith("mlflow_logger"):
        parent = tracking.mlflow_logger("lithovae-cv", cfg.logger.tracking_dir,
                                        run_name=f"{cfg.preset or 'run'}-cv{folds}")
    tags = {"preset": cfg.preset or "none", "cv_folds": str(folds), "git_commit": tracking.git_commit()}
    with tracking.tracked_run(parent, cfg, tags):
        per_fold, rows = [], []
        for fold in range(folds):
            print(f"[lithovae.cv] fold {fold + 1}/{folds}")
            fold_cfg = cfg.copy()
            OmegaConf.set_struct(fold_cfg, False)
            fold_cfg.datamodule.n_folds, fold_cfg.datamodule.fold = folds, fold
            fold_cfg.paths.run_dir = str(root / f"fold{fold}")
            child = None
            if parent is not None:
                run = parent.experiment.create_run(parent.experiment_id, run_name=f"fold{fold}",
                                                   tags={"mlflow.parentRunId": parent.run_id})
                child = MLFlowLogger(experiment_name="lithovae-cv", run_id=run.info.run_id,
                                     tracking_uri=parent._tracking_uri)
            metrics = train(fold_cfg, logger=child)
            per_fold.append(metrics)
            rows.append(fold_row(fold + 1, metrics))
        table = pd.DataFrame(rows, columns=FOLD_COLUMNS)
        summary = summarise(per_fold)
        root.mkdir(parents=True, exist_ok=True)
        table.to_csv(root / "cv_folds.csv", index=False)
        pd.Series(summary).to_json(root / "cv_summary.json", indent=1)
        if parent is not None:
            parent.log_metrics({f"cv/{k}": v for k, v in summary.items()})
            tracking.log_artifacts(parent, [root / "cv_folds.csv", root / "cv_summary.json"])
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print(f"ari_best = {summary['ari_best_mean']:.3f} ± {summary['ari_best_std']:.3f} over {folds} folds"
              + (" (SYNTHETIC data)" if per_fold[0].get("synthetic") else ""))
        return {"folds": table, "summary": summary}


@hydra.main(version_base="1.3", config_path="../conf", config_name="cv")
def main(cfg: DictConfig) -> None:
    run_cv(cfg)


if __name__ == "__main__":
    main()
