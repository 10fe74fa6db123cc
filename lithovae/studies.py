"""Studies as Hydra multiruns: ``python -m lithovae.train -m study=NAME [overrides]``.

A study config (``lithovae/conf/study/NAME.yaml``) sets the sweep (``hydra.sweeper.params``) and
describes its summary (``study.*``), so every launcher runs it unchanged: basic, joblib, SLURM.
:class:`StudySummary`, a Hydra callback, opens the study's MLflow parent run when the multirun
starts (each job's run is its child) and, when it ends, writes ``summary.csv``, the figure and,
for ``study=cv``, the fold table with the mean and std of every metric, into the sweep
directory and onto the parent run. With ``study.published`` (published_results.csv), each run's
metrics are put beside the published values that describe it (``history.csv``; a row's
``setting`` names the grid point it belongs to) and drawn in the figure; a study with a second
sweep axis (``study.series``) draws one line per value of it and writes the grid as a table.
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

# published_results.csv metric -> our metrics.json key: like with like, the published k-means
# scores at k (seed 001's table) against ours at the same k (``silhouette`` is of our best
# clustering, whatever its k and method)
PUBLISHED_METRICS = {"ari_k10": "ari_kmeans_k10", "ari_k12": "ari_kmeans_k12", "ari_k15": "ari_kmeans_k15",
                     "ari_k20": "ari_kmeans_k20", "silhouette_k10": "silhouette_kmeans_k10"}
IGNORED_OVERRIDES = ("paths.", "hydra.", "hydra/")


# the seeds' fold table (published_v2_6_7_cv_folds.csv), plus entropy_diff = |train - test|
FOLD_COLUMNS = ["fold", "train_samples", "test_samples", "train_entropy", "test_entropy",
                "train_entropy_diff", "test_entropy_diff", "entropy_diff", "train_time",
                "collapsed_dims", "effective_dim", "best_k", "best_ari", "best_sil"]


def fold_row(fold: int, m: dict, stats: dict | None = None) -> dict:
    """One fold's row: ``m`` is the job's metrics.json, ``stats`` its split.json stats (the whole
    dataset's label entropy ``entropy_all``; ``train_time`` where metrics.json lacks it). As in the
    seeds' table, ``train_entropy_diff``/``test_entropy_diff`` are each part's entropy against the
    whole set's (|train - all|, |test - all|); ``entropy_diff`` is |train - test|. ``train_time``:
    the run's training wall time in seconds (NaN where not recorded)."""
    stats = stats or {}
    entropy_all = stats.get("entropy_all", math.nan)
    return {"fold": fold, "train_samples": m["n_train"], "test_samples": m["n_test"],
            "train_entropy": m["train_entropy"], "test_entropy": m["test_entropy"],
            "train_entropy_diff": abs(m["train_entropy"] - entropy_all),
            "test_entropy_diff": abs(m["test_entropy"] - entropy_all),
            "entropy_diff": abs(m["train_entropy"] - m["test_entropy"]),
            "train_time": m.get("train_time", stats.get("train_time", math.nan)),
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


def settings_of(row) -> dict[str, str]:
    """The ``setting`` of a published_results.csv row: ``key=value;key=value`` -> a dict."""
    text = row.get("setting") if hasattr(row, "get") else None
    if not isinstance(text, str) or not text.strip():
        return {}
    return dict(part.strip().split("=", 1) for part in text.split(";") if part.strip())


def _same_value(ours, published: str) -> bool:
    try:
        return math.isclose(float(ours), float(published), rel_tol=1e-9, abs_tol=1e-12)
    except (TypeError, ValueError):
        return str(ours) == published


def _matches(ours, row) -> bool:
    """Whether a published row describes this run. A row without ``setting`` is the variant's
    own; a row with one (a point of a published grid, e.g. ``alpha.value=0.01``) matches when
    the run's value of every key it names is that value: the summary's column of that key
    (a sweep coordinate, or the job's resolved config), else the preset's own value, which
    the row's ``in_preset`` states."""
    for key, value in settings_of(row).items():
        ours_value = ours.get(key) if key in ours.index else None
        if ours_value is None or (isinstance(ours_value, float) and math.isnan(ours_value)):
            if str(row.get("in_preset")).strip().lower() != "true":
                return False
        elif not _same_value(ours_value, value):
            return False
    return True


def history_table(summary: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """Each run's metrics beside the study's published values for its variant (the run's
    ``preset`` from metrics.json, else its label: preset v2_6_7 is variant v2.6.7), those of
    the published rows that describe the run (see :func:`_matches`)."""
    rows = []
    for _, ours in summary.iterrows():
        preset = ours.get("preset") if isinstance(ours.get("preset"), str) else ours["run"]
        variant = re.sub(r"(?<=\d)_(?=\d)", ".", preset)  # preset v2_6_7 is variant v2.6.7
        pub = published[published["variant"] == variant]
        pub = pub[[_matches(ours, p) for _, p in pub.iterrows()]] if len(pub) else pub
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
            x_key, series = spec["x"], spec.get("series")
            if values is not None:
                # one line per value of the second sweep axis (``series``), if the study has one
                for value, part in (summary.groupby(series, sort=True) if series else [(None, summary)]):
                    part = part.sort_values(x_key)
                    label = f"ours ({dataset})" if series is None else f"ours, {series}={value}"
                    ax.plot(part[x_key], pd.to_numeric(part[metric], errors="coerce"), "o-", ms=3, label=label)
            if history is not None:  # published grid points (published_results.csv ``setting``)
                marks = _published_marks(history, metric, headline=False)
                at = summary.drop_duplicates("run").set_index("run")[x_key]
                points = sorted({(at[r], v) for r, v in marks.items() if r in at.index})
                if points:
                    ax.scatter(*zip(*points), color="black", marker="D", s=18, zorder=3,
                               label="published (real LILY)")
            if published is not None and "mask_prob" in published and f"r2_{metric[3:].lower()}" in published:
                curve = published.sort_values("mask_prob")  # the file is not in mask order
                ax.plot(curve["mask_prob"], curve[f"r2_{metric[3:].lower()}"], "s--", ms=2,
                        color="grey", label="published (real LILY)")
            ax.set_xlabel(spec["x"])
            if spec.get("xscale"):  # e.g. log for a grid over decades (alpha 0.01 to 2)
                ax.set_xscale(spec["xscale"])
        elif values is not None:
            ax.bar(range(len(summary)), values, label=f"ours ({dataset})")
            ax.set_xticks(range(len(summary)), summary["run"], rotation=60, ha="right", fontsize=7)
            best = None if history is None else _published_marks(history, metric, headline=True)
            if best is not None and len(best):
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


def _published_marks(history: pd.DataFrame, metric: str, headline: bool) -> pd.Series:
    """The first published value per run label (history's ``preset``) for the panel ``metric``:
    rows whose metric is ours ``metric`` (PUBLISHED_METRICS); with ``headline``, the ari_best
    panel also takes the published k=12 ARI, the seeds' headline where no best is given."""
    ours = history["metric"].map(lambda m: PUBLISHED_METRICS.get(m, m))
    keep = ours == metric
    if headline and metric == "ari_best":
        keep = history["metric"].isin(["ari_best", "ari_k12"])
    return history[keep].groupby("preset", sort=False)["published"].first().dropna()


def _with_config_values(summary: pd.DataFrame, sweep_dir: Path, keys) -> pd.DataFrame:
    """``summary`` plus a column per key of ``keys`` it lacks: each job's resolved value of the
    key in its ``.hydra/config.yaml`` (None where the job's config has no such key)."""
    keys = [k for k in keys if k not in summary.columns]
    if not keys or summary.empty:
        return summary
    columns: dict[str, list] = {k: [] for k in keys}
    for job in summary["job"]:
        path = sweep_dir / str(job) / ".hydra" / "config.yaml"
        cfg = OmegaConf.load(path) if path.exists() else OmegaConf.create()
        for key in keys:
            try:
                value = OmegaConf.select(cfg, key, default=None)
            except Exception:  # noqa: BLE001 - an unresolvable interpolation: unknown
                value = None
            columns[key].append(value if not OmegaConf.is_config(value) else None)
    return summary.assign(**columns)


def _split_stats(job_dir: Path) -> dict:
    """The data module's stats a job wrote in split.json ({} if none)."""
    path = job_dir / "split.json"
    return json.loads(path.read_text()).get("stats", {}) if path.exists() else {}


def grid_table(summary: pd.DataFrame, x: str, series: str, metrics: list[str]) -> pd.DataFrame:
    """A two-axis study as a table: one row per ``x``, a column ``<metric> @ <series>=<value>``
    for each metric and value of the second axis (the mean where jobs repeat a cell)."""
    metrics = [m for m in metrics if m in summary]
    frame = summary.assign(**{m: pd.to_numeric(summary[m], errors="coerce") for m in metrics})
    wide = frame.pivot_table(index=x, columns=series, values=metrics, aggfunc="mean")
    wide.columns = [f"{m} @ {series}={v}" for m, v in wide.columns]
    return wide.reset_index()


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
        # the keys of the published grid points, with each job's value (a sweep axis or its config)
        keys = sorted({k for _, row in published.iterrows() for k in settings_of(row)})
        runs = _with_config_values(finished.assign(run=finished["run"].astype(str)), sweep_dir, keys)
        history = history_table(runs, published)
        files.append(sweep_dir / "history.csv")
        history.to_csv(files[-1], index=False)
    if study.get("folds"):
        per_fold = [json.loads((sweep_dir / str(j) / "metrics.json").read_text()) for j in finished["job"]]
        stats = [_split_stats(sweep_dir / str(j)) for j in finished["job"]]
        table = pd.DataFrame([fold_row(i + 1, f, st) for i, (f, st) in enumerate(zip(per_fold, stats))],
                             columns=FOLD_COLUMNS)
        metrics = {f"cv/{k}": v for k, v in summarise(per_fold).items()}
        files.append(sweep_dir / "cv_folds.csv")
        table.to_csv(files[-1], index=False)
        files.append(sweep_dir / "cv_summary.json")
        files[-1].write_text(json.dumps({k.removeprefix("cv/"): v for k, v in metrics.items()}, indent=1))
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print(f"ari_best = {metrics['cv/ari_best_mean']:.3f} ± {metrics['cv/ari_best_std']:.3f} over "
              f"{len(per_fold)} folds" + (" (SYNTHETIC data)" if synthetic else ""))
    if study.get("x") and study.get("series"):
        grid = grid_table(finished, study.x, study.series, list(study.get("panels", [])))
        files.append(sweep_dir / f"{study.name}_grid.csv")
        grid.to_csv(files[-1], index=False)
        print(grid.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if study.get("panels"):
        spec = OmegaConf.to_container(study)
        files.append(plot_study(spec, finished, sweep_dir / f"{study.name}.png", dataset, synthetic,
                                published, history))
    print(f"[study {study.name}] {len(finished)}/{len(summary)} jobs finished on {dataset}"
          + (" (SYNTHETIC data)" if synthetic else ""))
    return files, metrics
