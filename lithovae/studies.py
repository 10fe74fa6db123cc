"""Studies as Hydra multiruns: ``python -m lithovae.train -m study=NAME [overrides]``.

A study config (``lithovae/conf/study/NAME.yaml``) sets the sweep (``hydra.sweeper.params``) and
describes its summary (``study.*``), so every launcher runs it unchanged: basic, joblib, SLURM.
:class:`StudySummary`, a Hydra callback, opens the study's MLflow parent run when the multirun
starts (each job's run is its child) and, when it ends, writes ``summary.csv``, the figure and,
for ``study=cv``, the fold table with the mean and std of every metric, into the sweep
directory and onto the parent run.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

# published_results.csv metric -> our metrics.json key
PUBLISHED_METRICS = {"ari_k10": "ari_kmeans_k10", "ari_k12": "ari_kmeans_k12", "ari_k15": "ari_kmeans_k15",
                     "ari_k20": "ari_kmeans_k20", "silhouette_k10": "silhouette"}
IGNORED_OVERRIDES = ("paths.", "hydra.", "hydra/")


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


def history_table(summary: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """Each preset's metrics beside the study's published values for that variant."""
    rows = []
    for _, ours in summary.iterrows():
        variant = re.sub(r"(?<=\d)_(?=\d)", ".", ours["run"])  # preset v2_6_7 is variant v2.6.7
        pub = published[published["variant"] == variant]
        for _, p in (pub.iterrows() if len(pub) else [(None, None)]):
            metric = p["metric"] if p is not None else "ari_best"
            key = PUBLISHED_METRICS.get(metric, metric)
            rows.append({"preset": ours["run"], "dataset": ours["dataset"], "metric": metric,
                         "ours": ours.get(key), "published": None if p is None else p["value"],
                         "published_std": None if p is None else p["std"],
                         "published_protocol": None if p is None else p["protocol"]})
    return pd.DataFrame(rows)


def plot_study(spec, summary: pd.DataFrame, path: Path, dataset: str, synthetic: bool,
               published: pd.DataFrame | None = None, history: pd.DataFrame | None = None) -> Path:
    """One panel per metric: ours against the grid coordinate (or per preset), with the
    ``published`` curve (grid studies) or the ``history`` table's published values."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = spec.get("panels", ["ari_best"]) + spec.get("extra", [])
    ncols = 3 if len(panels) > 3 else len(panels)
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.3 * nrows), squeeze=False)
    for ax, metric in zip(axes.flat, panels):
        values = pd.to_numeric(summary.get(metric), errors="coerce") if metric in summary else None
        if spec.get("x"):
            x = summary[spec["x"]]
            if values is not None:
                ax.plot(x, values, "o-", ms=3, label=f"ours ({dataset})")
            if published is not None and "mask_prob" in published and f"r2_{metric[3:].lower()}" in published:
                curve = published.sort_values("mask_prob")  # the file is not in mask order
                ax.plot(curve["mask_prob"], curve[f"r2_{metric[3:].lower()}"], "s--", ms=2,
                        color="grey", label="published (real LILY)")
            ax.set_xlabel(spec["x"])
        elif values is not None:
            ax.bar(range(len(summary)), values, label=f"ours ({dataset})")
            ax.set_xticks(range(len(summary)), summary["run"], rotation=60, ha="right", fontsize=7)
            if history is not None and metric == "ari_best":
                best = history[history["metric"].isin(["ari_best", "ari_k12"])].groupby("preset")["published"].first()
                ax.scatter([i for i, r in enumerate(summary["run"]) if r in best.index],
                           [best[r] for r in summary["run"] if r in best.index], color="black", marker="_",
                           s=200, label="published (real LILY)", zorder=3)
        ax.set_title(metric)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    note = "SYNTHETIC data: not a real-data result" if synthetic else "real data"
    fig.suptitle(f"{spec['name']} on {dataset} ({note})", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _parse(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def collect_jobs(sweep_dir: Path) -> pd.DataFrame:
    """One row per job of the sweep: its coordinates (the overrides that vary between jobs),
    a ``run`` label, ``status`` and every scalar of its ``metrics.json``."""
    jobs = []
    for job in sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)):
        overrides_file = job / ".hydra" / "overrides.yaml"
        if not overrides_file.exists():
            continue
        overrides = dict(_parse(o) for o in OmegaConf.load(overrides_file)
                         if not o.lstrip("+~").startswith(IGNORED_OVERRIDES))
        metrics_file = job / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
        jobs.append((int(job.name), overrides, metrics))
    if not jobs:
        return pd.DataFrame()
    keys = [k for k in jobs[0][1] if len({j[1].get(k) for j in jobs}) > 1]
    rows = []
    for num, overrides, metrics in jobs:
        coords = {k: _number(overrides.get(k)) for k in keys}
        label = "_".join(str(overrides.get(k)) for k in keys) or str(num)
        rows.append({"job": num, **coords, "run": label, "status": "FINISHED" if metrics else "FAILED",
                     **{k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}})
    return pd.DataFrame(rows)


def _number(text):
    try:
        return float(text) if any(c in str(text) for c in ".e") else int(text)
    except (TypeError, ValueError):
        return text


class StudySummary(Callback):
    """Writes a study's summary when its multirun ends (a no-op for plain sweeps). Every
    multirun that logs to an MLflow server first checks that the server answers."""

    def __init__(self):
        self.parent = None

    def on_multirun_start(self, config, **kwargs) -> None:
        from lithovae import tracking

        if str(config.logger.get("_target_", "")).endswith("mlflow_logger"):
            _check_tracking_server(config)
        study = config.get("study")
        if not study:
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if str(config.logger.get("_target_", "")).endswith("mlflow_logger"):
            name = tracking.sweep_experiment_name(config.logger.experiment_name, sweep_dir)
            self.parent = tracking.mlflow_logger(name, config.logger.tracking_dir, run_name=f"{study.name}-summary",
                                                 sweep_suffix=False, tracking_uri=config.logger.get("tracking_uri"))
            tags = {"study": study.name, "overrides": " ".join(config.hydra.overrides.task)[:5000],
                    "git_commit": tracking.git_commit()}
            tracking.start_run(self.parent, OmegaConf.create({"study": OmegaConf.to_container(study)}), tags)
            (sweep_dir / tracking.PARENT_RUN_FILE).write_text(self.parent.run_id)

    def on_multirun_end(self, config, **kwargs) -> None:
        study = config.get("study")
        if not study:
            return
        from lithovae import tracking
        from lithovae.cli import one_line

        try:
            files, metrics = write_summary(study, Path(config.hydra.sweep.dir))
        except Exception as exc:  # noqa: BLE001 - reported in one line; the jobs' runs are kept
            tracking.end_run(self.parent, "FAILED", {"error": one_line(exc)})
            print(f"error: study {study.name}: summary not written: {one_line(exc)}", file=sys.stderr)
            sys.exit(2)
        tracking.log_test_metrics(self.parent, metrics, prefix="")  # already named cv/...
        tracking.log_artifacts(self.parent, files)
        tracking.end_run(self.parent, "FINISHED")
        for f in files:
            print(f)


def _check_tracking_server(config) -> None:
    """An unreachable tracking server (logger.tracking_uri or MLFLOW_TRACKING_URI) stops the
    multirun before any job starts: one ``error:`` line and exit 2, as a single run does."""
    from lithovae import tracking
    from lithovae.cli import EXIT_USER_ERROR, one_line
    from lithovae.errors import LithovaeError

    try:
        tracking.check_remote_store(config.logger.get("tracking_uri"))
    except LithovaeError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


def write_summary(study, sweep_dir: Path) -> tuple[list[Path], dict]:
    """summary.csv, the figure, the history table (published values) and, for CV, the fold
    table and mean/std; returns the files and the parent run's metrics."""
    from lithovae.data import reference

    summary = collect_jobs(sweep_dir)
    finished = summary[summary["status"] == "FINISHED"] if len(summary) else summary
    if finished.empty:
        raise ValueError(f"no job of {sweep_dir} finished")
    dataset, synthetic = finished["dataset"].iloc[0], bool(finished["synthetic"].iloc[0])
    files = [sweep_dir / "summary.csv"]
    summary.to_csv(files[0], index=False)
    metrics: dict = {}
    published = reference.read(study.published) if study.get("published") else None
    history = None
    if published is not None and "variant" in published:
        history = history_table(finished.assign(run=finished["run"].astype(str)), published)
        files.append(sweep_dir / "history.csv")
        history.to_csv(files[-1], index=False)
    if study.get("folds"):
        per_fold = [json.loads((sweep_dir / str(j) / "metrics.json").read_text()) for j in finished["job"]]
        table = pd.DataFrame([fold_row(i + 1, f) for i, f in enumerate(per_fold)], columns=FOLD_COLUMNS)
        metrics = {f"cv/{k}": v for k, v in summarise(per_fold).items()}
        files.append(sweep_dir / "cv_folds.csv")
        table.to_csv(files[-1], index=False)
        files.append(sweep_dir / "cv_summary.json")
        files[-1].write_text(json.dumps({k.removeprefix("cv/"): v for k, v in metrics.items()}, indent=1))
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print(f"ari_best = {metrics['cv/ari_best_mean']:.3f} ± {metrics['cv/ari_best_std']:.3f} over "
              f"{len(per_fold)} folds" + (" (SYNTHETIC data)" if synthetic else ""))
    if study.get("panels"):
        spec = OmegaConf.to_container(study)
        files.append(plot_study(spec, finished, sweep_dir / f"{study.name}.png", dataset, synthetic,
                                published, history))
    print(f"[study {study.name}] {len(finished)}/{len(summary)} jobs finished on {dataset}"
          + (" (SYNTHETIC data)" if synthetic else ""))
    return files, metrics
