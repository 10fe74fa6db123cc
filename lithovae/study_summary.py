"""Studies as Hydra multiruns: ``python -m lithovae.train -m study=NAME [overrides]``.

A study config (``lithovae/conf/study/NAME.yaml``) sets the sweep (``hydra.sweeper.params``) and
describes its summary (``study.*``), so every launcher runs it unchanged: basic, joblib, SLURM,
ensemble. :class:`StudySummary`, a Hydra callback, opens the study's MLflow parent run when the
multirun starts (each job's run is its child) and, when it ends, writes into the sweep directory
and onto the parent run:

- ``summary.csv``: one row per job (its ``run_id``: the job's MLflow run id, ``seed``, ``label``:
  its swept values, ``point``, ``status`` and every scalar of its metrics.json);
- ``points.csv``: one row per point of the study. Jobs that differ only in ``seed`` (and
  ``datamodule.fold``) are replicates of one point: per metric the mean, std and 95% t-interval
  over them (``<metric>_mean/_std/_ci_low/_ci_high``, ``n_replicates``; with one replicate the
  run's own bootstrap interval over test boreholes, ``interval`` says which), the verdict of the
  paired gains over the raw features (``ari_gain_verdict``, ``ari_inductive_gain_verdict``) and,
  with ``study.reference``, each point's paired difference from the reference point
  (``<metric>_vs_ref_mean/_ci_low/_ci_high/_verdict``, over shared seeds and folds);
- the figure (mean and interval per point, the raw features' band on ARI panels, published
  values beside ours), for ``study=cv`` the fold table, and with ``study.published``
  (published_results.csv) ``history.csv``: each point beside the published values that describe
  it (a row's ``setting`` names the grid point it belongs to), flagged where the published value
  lies outside our interval; a study with a second sweep axis (``study.series``) draws one line
  per value of it and writes the grid as a table.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from lithovae.checks import integer_at_least
from lithovae.cli import EXIT_USER_ERROR, one_line
from lithovae.errors import DataError, LithovaeError
from lithovae.evaluation.comparisons import HEADLINE, LEVEL, mean_interval, paired_difference, verdict, verdict_line
from lithovae.evaluation.style import metadata
from lithovae.files import atomic_write

# not at the top: matplotlib and the reference data are imported inside the functions that draw and
# table: the summary callback loads with every multirun

# published_results.csv metric -> our metrics.json key: like with like, the published k-means
# scores at k (seed 001's table) against ours at the same k (``silhouette`` is of our best
# clustering, whatever its k and method)
PUBLISHED_METRICS = {"ari_k10": "ari_kmeans_k10", "ari_k12": "ari_kmeans_k12", "ari_k15": "ari_kmeans_k15",
                     "ari_k20": "ari_kmeans_k20", "silhouette_k10": "silhouette_kmeans_k10"}
IGNORED_OVERRIDES = ("paths.", "hydra.", "hydra/")
# jobs that differ only in these are replicates of one point; runs are paired by them
REPLICATE_KEYS = ("seed", "datamodule.fold")
NO_FOLD = -1  # the fold of a run that is not a CV fold, in pairing keys
GAINS = ("ari_gain", "ari_inductive_gain")  # latent - raw features, paired within each run
COMPARED = ("ari_selected", "r2_mean")  # each point against the study's reference point
ORACLE = "ari_best"  # the best (method, k) chosen on the test labels: the published tables' kind
INTERVAL_KEYS = ("mean", "std", "ci_low", "ci_high")
MLFLOW_BATCH = 500  # parent-run metrics per call (MLflow takes at most 1000 per batch)


# the seeds' fold table (published_v2_6_7_cv_folds.csv), plus entropy_diff = |train - test| and
# the fold's selected ARI, the raw features' and the paired gain
FOLD_COLUMNS = ["fold", "train_samples", "test_samples", "train_entropy", "test_entropy",
                "train_entropy_diff", "test_entropy_diff", "entropy_diff", "train_time",
                "collapsed_dims", "effective_dim", "best_k", "best_ari", "best_sil",
                "ari_selected", "baseline_ari_selected", "ari_gain"]
FOLD_MEANS = ("ari_selected", "baseline_ari_selected", "ari_gain", "best_ari")  # the console's last line


def fold_row(fold: int, m: dict, stats: dict | None = None) -> dict:
    """One fold's row: ``m`` is the job's metrics.json, ``stats`` its split.json stats (the whole
    dataset's label entropy ``entropy_all``; ``train_time`` where metrics.json lacks it). As in the
    seeds' table, ``train_entropy_diff``/``test_entropy_diff`` are each part's entropy against the
    whole set's (|train - all|, |test - all|); ``entropy_diff`` is |train - test|. ``train_time``:
    the run's training wall time in seconds (NaN where not recorded). ``ari_selected``,
    ``baseline_ari_selected`` and ``ari_gain``: NaN where the run did not record them."""
    stats = stats or {}
    entropy_all = stats.get("entropy_all", math.nan)
    return {"fold": fold, "train_samples": m["n_train"], "test_samples": m["n_test"],
            "train_entropy": m["train_entropy"], "test_entropy": m["test_entropy"],
            "train_entropy_diff": abs(m["train_entropy"] - entropy_all),
            "test_entropy_diff": abs(m["test_entropy"] - entropy_all),
            "entropy_diff": abs(m["train_entropy"] - m["test_entropy"]),
            "train_time": m.get("train_time", stats.get("train_time", math.nan)),
            "collapsed_dims": m["latent_dim"] - m["active_dims"], "effective_dim": m["active_dims"],
            "best_k": m["best_k"], "best_ari": m["ari_best"], "best_sil": m["silhouette"],
            **{k: _float(m.get(k)) for k in ("ari_selected", "baseline_ari_selected", "ari_gain")}}


def summarise(per_fold: list[dict]) -> dict[str, float]:
    """Mean and std (population, as numpy) of every numeric metric over folds."""
    keys = [k for k, v in per_fold[0].items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)]
    out = {}
    for k in keys:
        values = np.array([_float(f.get(k)) for f in per_fold], dtype=float)
        if np.isfinite(values).any():
            out[f"{k}_mean"] = float(np.nanmean(values))
            out[f"{k}_std"] = float(np.nanstd(values))
    return out


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


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


def _label(row) -> str:
    return str(row["point"] if "point" in row.index else row["run"])


def history_table(summary: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """Each point's metrics beside the study's published values for its variant (the run's
    ``preset`` from metrics.json, else its label: preset v2_6_7 is variant v2.6.7), those of
    the published rows that describe the point (see :func:`_matches`). ``summary``: the points
    (``point``, ``<metric>_mean`` and its interval ``<metric>_ci_low/_ci_high``) or plain runs
    (``run``, ``<metric>``, a run's bootstrap interval). ``differs_from_published``: the
    published value lies outside our interval (None where either is undefined)."""
    rows = []
    for _, ours in summary.iterrows():
        label = _label(ours)
        preset = ours.get("preset") if isinstance(ours.get("preset"), str) else label
        variant = re.sub(r"(?<=\d)_(?=\d)", ".", preset)  # preset v2_6_7 is variant v2.6.7
        pub = published[published["variant"] == variant]
        pub = pub[[_matches(ours, p) for _, p in pub.iterrows()]] if len(pub) else pub
        for _, p in (pub.iterrows() if len(pub) else [(None, None)]):
            metric = p["metric"] if p is not None else ORACLE
            key = PUBLISHED_METRICS.get(metric, metric)
            value = ours.get(f"{key}_mean", ours.get(key))
            low, high = _float(ours.get(f"{key}_ci_low")), _float(ours.get(f"{key}_ci_high"))
            value_published = None if p is None else _float(p["value"])
            differs = None
            if value_published is not None and math.isfinite(low) and math.isfinite(high):
                differs = not (low <= value_published <= high)
            rows.append({"preset": label, "dataset": ours["dataset"], "metric": metric, "ours": value,
                         "ours_ci_low": low, "ours_ci_high": high,
                         "n_replicates": ours.get("n_replicates", 1), "published": value_published,
                         "published_std": None if p is None else p["std"], "differs_from_published": differs,
                         "published_protocol": None if p is None else p["protocol"]})
    return pd.DataFrame(rows)


def _yerr(frame: pd.DataFrame, metric: str) -> np.ndarray:
    """Error bars (below, above) from a points frame's interval; none where it is undefined."""
    mean = pd.to_numeric(frame[f"{metric}_mean"], errors="coerce").to_numpy(float)
    low = pd.to_numeric(frame.get(f"{metric}_ci_low", np.nan), errors="coerce")
    high = pd.to_numeric(frame.get(f"{metric}_ci_high", np.nan), errors="coerce")
    low = np.broadcast_to(np.asarray(low, float), mean.shape)
    high = np.broadcast_to(np.asarray(high, float), mean.shape)
    return np.nan_to_num(np.vstack([mean - low, high - mean]), nan=0.0).clip(min=0.0)


def _baseline_band(ax, points: pd.DataFrame, metric: str, x_key: str | None, level: float) -> None:
    """The raw features' score of an ARI panel (``baseline_<metric>``): its mean as a dashed line
    and its interval shaded, along x (a sweep coordinate, else the bars)."""
    base = f"baseline_{metric}"
    if not metric.startswith("ari_") or f"{base}_mean" not in points:
        return
    columns = [f"{base}_{k}" for k in ("mean", "ci_low", "ci_high") if f"{base}_{k}" in points]
    frame = points[columns].apply(pd.to_numeric, errors="coerce")
    if x_key:
        frame = frame.groupby(points[x_key]).mean().sort_index()
        xs = frame.index.to_numpy()
    else:
        xs = np.arange(len(frame))
    mean = frame[f"{base}_mean"].to_numpy(float)
    low = frame.get(f"{base}_ci_low", pd.Series(np.nan, frame.index)).to_numpy(float)
    high = frame.get(f"{base}_ci_high", pd.Series(np.nan, frame.index)).to_numpy(float)
    label = "raw features"
    if np.isfinite(low).any():
        band = f"raw features ({level:.0%} interval)"
        if len(xs) == 1:
            ax.axhspan(low[0], high[0], color="grey", alpha=0.25, lw=0, label=band)
        else:
            ax.fill_between(xs, low, high, color="grey", alpha=0.25, lw=0, step=None if x_key else "mid", label=band)
        label = "_raw features, mean"  # one legend entry: the band
    if len(xs) == 1:
        ax.axhline(mean[0], color="grey", ls="--", lw=1, label=label)
    else:
        ax.plot(xs, mean, "--", color="grey", lw=1, label=label, drawstyle="default" if x_key else "steps-mid")


def plot_study(spec, summary: pd.DataFrame, path: Path, dataset: str, synthetic: bool,
               published: pd.DataFrame | None = None, history: pd.DataFrame | None = None,
               level: float = LEVEL) -> Path:
    """:func:`study_figure`, saved to ``path`` (PNG)."""
    import matplotlib.pyplot as plt

    fig = study_figure(spec, summary, dataset, synthetic, published, history, level)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png",
                                               metadata=metadata(fig, synthetic, figure="study", dataset=dataset)))
    plt.close(fig)
    return path


def study_figure(spec, summary: pd.DataFrame, dataset: str, synthetic: bool,
                 published: pd.DataFrame | None = None, history: pd.DataFrame | None = None,
                 level: float = LEVEL):
    """One panel per metric: per point (``summary``: the points table) the mean and its interval
    (error bars; over replicates, or a single run's bootstrap interval) against the grid
    coordinate (or per point, as bars), the raw features' band on ARI panels, and the
    ``published`` curve (grid studies) or the ``history`` table's published values. The
    ``ari_best`` panel is titled as the oracle it is (chosen on the test labels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(spec.get("panels", ["ari_selected"])) + list(spec.get("extra", []))
    ncols = 3 if len(panels) > 3 else len(panels)
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.3 * nrows), squeeze=False)
    ours_label = f"ours ({dataset}), mean, {level:.0%} interval"
    for ax, metric in zip(axes.flat, panels):
        has = f"{metric}_mean" in summary
        if spec.get("x"):
            x_key, series = spec["x"], spec.get("series")
            if has:
                # one line per value of the second sweep axis (``series``), if the study has one
                for value, part in (summary.groupby(series, sort=True) if series else [(None, summary)]):
                    part = part.sort_values(x_key)
                    label = ours_label if series is None else f"ours, {series}={value}"
                    ax.errorbar(part[x_key], pd.to_numeric(part[f"{metric}_mean"], errors="coerce"),
                                yerr=_yerr(part, metric), fmt="o-", ms=3, capsize=2, lw=1, label=label)
            _baseline_band(ax, summary, metric, x_key, level)
            if history is not None:  # published grid points (published_results.csv ``setting``)
                marks = _published_marks(history, metric, headline=False)
                at = summary.drop_duplicates("point").set_index("point")[x_key]
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
        elif has:
            labels = summary["point"].astype(str).tolist()
            # markers, not bars: a bar from 0 would hide the interval's scale
            ax.errorbar(range(len(summary)), pd.to_numeric(summary[f"{metric}_mean"], errors="coerce"),
                        yerr=_yerr(summary, metric), fmt="o", ms=4, capsize=3, label=ours_label)
            ax.set_xlim(-0.5, len(summary) - 0.5)
            _baseline_band(ax, summary, metric, None, level)
            ax.set_xticks(range(len(summary)), labels, rotation=60, ha="right", fontsize=7)
            best = None if history is None else _published_marks(history, metric, headline=True)
            if best is not None and len(best):
                ax.scatter([i for i, r in enumerate(labels) if r in best.index],
                           [best[r] for r in labels if r in best.index], color="black", marker="_",
                           s=200, label="published (real LILY)", zorder=3)
        ax.set_title(f"{metric} (oracle: best k on test labels)" if metric == ORACLE else metric, fontsize=9)
        if not has:
            ax.text(0.5, 0.5, "not in these runs' metrics", ha="center", va="center", transform=ax.transAxes)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    note = "SYNTHETIC data: not a real-data result" if synthetic else "real data"
    fig.suptitle(f"{spec['name']} on {dataset} ({note})", fontsize=11)
    fig.tight_layout()
    return fig


def _published_marks(history: pd.DataFrame, metric: str, headline: bool) -> pd.Series:
    """The first published value per point label (history's ``preset``) for the panel ``metric``:
    rows whose metric is ours ``metric`` (PUBLISHED_METRICS); with ``headline``, the ari_best
    panel also takes the published k=12 ARI, the seeds' headline where no best is given."""
    ours = history["metric"].map(lambda m: PUBLISHED_METRICS.get(m, m))
    keep = ours == metric
    if headline and metric == ORACLE:
        keep = history["metric"].isin(["ari_best", "ari_k12"])
    return history[keep].groupby("preset", sort=False)["published"].first().dropna()


def _job_config(job_dir: Path):
    """A job's ``.hydra/config.yaml`` (an empty config if it has none)."""
    path = job_dir / ".hydra" / "config.yaml"
    return OmegaConf.load(path) if path.exists() else OmegaConf.create()


def _config_value(cfg, key: str):
    try:
        value = OmegaConf.select(cfg, key, default=None)
    except Exception:  # noqa: BLE001 - an unresolvable interpolation: unknown
        return None
    return value if not OmegaConf.is_config(value) else None


def _with_config_values(summary: pd.DataFrame, sweep_dir: Path, keys) -> pd.DataFrame:
    """``summary`` plus a column per key of ``keys`` it lacks: each job's resolved value of the
    key in its ``.hydra/config.yaml`` (None where the job's config has no such key)."""
    keys = [k for k in keys if k not in summary.columns]
    if not keys or summary.empty:
        return summary
    columns: dict[str, list] = {k: [] for k in keys}
    for job in summary["job"]:
        cfg = _job_config(sweep_dir / str(job))
        for key in keys:
            columns[key].append(_config_value(cfg, key))
    return summary.assign(**columns)


def _split_stats(job_dir: Path) -> dict:
    """The data module's stats a job wrote in split.json ({} if none)."""
    path = job_dir / "split.json"
    return json.loads(path.read_text()).get("stats", {}) if path.exists() else {}


def grid_table(summary: pd.DataFrame, x: str, series: str, metrics: list[str]) -> pd.DataFrame:
    """A two-axis study as a table: one row per ``x``, a column ``<metric> @ <series>=<value>``
    for each metric and value of the second axis (the mean where jobs repeat a cell: replicates)."""
    metrics = [m for m in metrics if m in summary]
    frame = summary.assign(**{m: pd.to_numeric(summary[m], errors="coerce") for m in metrics})
    wide = frame.pivot_table(index=x, columns=series, values=metrics, aggfunc="mean")
    wide.columns = [f"{m} @ {series}={v}" for m, v in wide.columns]
    return wide.reset_index()


def _parse(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def collect_jobs(sweep_dir: Path) -> pd.DataFrame:
    """One row per job of the sweep: its coordinates (the overrides that vary between jobs,
    ``seed`` and ``datamodule.fold`` aside), its ``seed`` and ``datamodule.fold`` (swept, else
    from metrics.json or its config; None: not a CV fold), ``point`` (the coordinates' values
    joined by ``_``: jobs with the same point are replicates of it; with no coordinate, the
    preset), ``label`` (every swept value), ``run_id`` (its MLflow run id), ``status`` and every
    scalar of its ``metrics.json``. The coordinates' names are in ``frame.attrs["coordinates"]``."""
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
    names = list(dict.fromkeys(k for _, overrides, _ in jobs for k in overrides))
    varying = [k for k in names if len({j[1].get(k) for j in jobs}) > 1]
    coordinates = [k for k in varying if k not in REPLICATE_KEYS]
    presets = [m.get("preset") for _, _, m in jobs if isinstance(m.get("preset"), str)]
    whole = presets[0] if presets else "all"  # the point of a study with no coordinate
    rows = []
    for num, overrides, metrics in jobs:
        cfg = None
        if "datamodule.fold" not in overrides or ("seed" not in overrides and "seed" not in metrics):
            cfg = _job_config(sweep_dir / str(num))
        seed = _number(overrides["seed"]) if "seed" in overrides else metrics.get("seed", _config_value(cfg, "seed"))
        fold = (_number(overrides["datamodule.fold"]) if "datamodule.fold" in overrides
                else _config_value(cfg, "datamodule.fold"))
        row = {"job": num, **{k: _number(overrides.get(k)) for k in coordinates}, "seed": seed,
               "datamodule.fold": None if fold in (None, "null") else fold,
               "point": "_".join(str(overrides.get(k)) for k in coordinates) or whole,
               "label": " ".join(f"{k}={overrides.get(k)}" for k in varying) or str(num),
               "run_id": metrics.get("mlflow_run_id"), "status": "FINISHED" if metrics else "FAILED"}
        row.update({k: v for k, v in metrics.items()
                    if k not in row and k != "mlflow_run_id" and not isinstance(v, (dict, list))})
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame.attrs["coordinates"] = coordinates
    return frame


def _number(text):
    try:
        return float(text) if any(c in str(text) for c in ".e") else int(text)
    except (TypeError, ValueError):
        return text


def pair_index(jobs: pd.DataFrame) -> pd.MultiIndex:
    """The pairing key of each job: (seed, fold), fold :data:`NO_FOLD` for a run that is no CV fold."""
    folds = jobs["datamodule.fold"] if "datamodule.fold" in jobs else pd.Series(None, index=jobs.index)
    return pd.MultiIndex.from_arrays(
        [pd.to_numeric(jobs["seed"], errors="coerce").fillna(NO_FOLD).astype(int).to_numpy(),
         pd.to_numeric(folds, errors="coerce").fillna(NO_FOLD).astype(int).to_numpy()], names=REPLICATE_KEYS)


def summarised_metrics(spec, jobs: pd.DataFrame, extra=()) -> list[str]:
    """The metrics a study's points table carries: the headline scores, the oracle best ARI, the
    figure's panels and ``extra`` (those published values are put beside), each with the raw
    features' counterpart where the runs have one."""
    panels = list(spec.get("panels", []) or []) + list(spec.get("extra", []) or [])
    wanted = list(dict.fromkeys([*HEADLINE, ORACLE, *panels, *extra]))
    wanted += [f"baseline_{m}" for m in wanted if m.startswith("ari_") and f"baseline_{m}" not in wanted]
    return [m for m in dict.fromkeys(wanted) if m in jobs]


def _replicate_unit(part: pd.DataFrame) -> str:
    """What a point's replicates differ in: ``seeds``, ``folds`` (a CV), or ``runs`` (both)."""
    seeds = part["seed"].nunique() if "seed" in part else 1
    folds = part["datamodule.fold"].nunique() if "datamodule.fold" in part else 1
    return "folds" if folds > 1 and seeds == 1 else "seeds" if folds <= 1 else "runs"


def point_table(jobs: pd.DataFrame, metrics, carry=(), level: float = LEVEL) -> pd.DataFrame:
    """One row per point (the finished ``jobs`` that share ``point``): the ``carry`` columns (the
    first job's), ``n_replicates``, ``seeds`` and, per metric, ``<metric>_mean/_std/_ci_low/_ci_high``:
    the mean and Student-t interval over the replicates, or with one replicate its own bootstrap
    interval (metrics.json's ``<metric>_ci_low/_ci_high``; ``interval`` says which). The paired
    gains over the raw features get a verdict (``ari_gain_verdict``: beats / matches / loses to)."""
    rows = []
    for point, part in jobs.groupby("point", sort=False):
        n = len(part)
        row = {"point": point, **{c: part[c].iloc[0] for c in carry if c in part and c != "point"},
               "n_replicates": n, "seeds": ",".join(str(s) for s in pd.unique(part["seed"])),
               "replicates_of": _replicate_unit(part),
               "interval": "replicates" if n > 1 else "bootstrap",
               "run_ids": ";".join(str(r) for r in part["run_id"] if isinstance(r, str))}
        for m in metrics:
            stats = mean_interval(pd.to_numeric(part[m], errors="coerce"), level)
            if n == 1:  # one draw: the run's own interval over test boreholes
                stats["ci_low"] = _float(part[f"{m}_ci_low"].iloc[0]) if f"{m}_ci_low" in part else math.nan
                stats["ci_high"] = _float(part[f"{m}_ci_high"].iloc[0]) if f"{m}_ci_high" in part else math.nan
            row.update({f"{m}_{k}": stats[k] for k in INTERVAL_KEYS})
        for gain in GAINS:
            if f"{gain}_mean" in row:
                row[f"{gain}_verdict"] = verdict(row[f"{gain}_ci_low"], row[f"{gain}_ci_high"])
        rows.append(row)
    return pd.DataFrame(rows)


def _describe(row, coordinates) -> str:
    return " ".join(f"{k}={row[k]}" for k in coordinates) or str(row["point"])


def compare_with_reference(jobs: pd.DataFrame, points: pd.DataFrame, reference: dict, coordinates,
                           metrics=COMPARED, level: float = LEVEL) -> tuple[pd.DataFrame, list[str]]:
    """Each point against its reference point: the point with the same coordinates except those
    ``reference`` names, which take its values (``{"mask.prob": 0.0}``). Per metric, the paired
    difference point - reference over their shared (seed, fold) pairs (:func:`paired_difference`)
    as ``<metric>_vs_ref_mean/_ci_low/_ci_high/_n/_verdict`` (``reference`` on the reference point
    itself, ``undefined`` where no reference point or fewer than 2 pairs), and ``reference`` (the
    reference point's label). Returns the points and the notes for the console (no reference found)."""
    missing = [k for k in reference if k not in coordinates]
    if missing:
        wanted = " ".join(f"{k}={v}" for k, v in reference.items())
        return points, [f"reference {wanted}: {missing[0]} is not swept here: no comparison with a reference"]
    index = pair_index(jobs)
    columns: dict[str, list] = {"reference": []}
    lines = []
    for _, row in points.iterrows():
        target = {**{k: row[k] for k in coordinates}, **reference}
        found = points[[all(_same_value(other[k], str(v)) for k, v in target.items())
                        for _, other in points.iterrows()]]
        ref = None if found.empty else found.iloc[0]
        columns["reference"].append(None if ref is None else ref["point"])
        for m in metrics:
            if m not in jobs:
                continue
            d = {"mean": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0,
                 "verdict": "reference" if ref is not None and ref["point"] == row["point"] else "undefined"}
            if ref is not None and ref["point"] != row["point"]:
                values = pd.Series(pd.to_numeric(jobs[m], errors="coerce").to_numpy(float), index=index)
                try:
                    d = paired_difference(values[(jobs["point"] == ref["point"]).to_numpy()],
                                          values[(jobs["point"] == row["point"]).to_numpy()], level)
                except DataError as exc:  # two jobs of a point on one seed: no pairing, said once
                    lines.append(f"point {row['point']}: {m} not compared with the reference: {exc}")
            for k in ("mean", "ci_low", "ci_high", "n", "verdict"):
                columns.setdefault(f"{m}_vs_ref_{k}", []).append(d[k])
    if not any(r is not None for r in columns["reference"]):
        wanted = " ".join(f"{k}={v}" for k, v in reference.items())
        lines.append(f"reference {wanted}: no point of this study: no comparison with a reference")
    return points.assign(**columns), lines


def _interval_text(row, m: str) -> str:
    mean, std, low, high = (row.get(f"{m}_{k}") for k in INTERVAL_KEYS)
    n = int(row["n_replicates"])
    if n > 1:
        return f"{m} {mean:.3f} ± {std:.3f} [{low:.3f}, {high:.3f}] (n={n})"
    if math.isfinite(_float(low)):
        return f"{m} {mean:.3f} [{low:.3f}, {high:.3f}] (one replicate: bootstrap interval over test boreholes)"
    return f"{m} {mean:.3f} (one replicate, no interval)"


def _reference_lines(row, points: pd.DataFrame, coordinates, level: float) -> list[str]:
    """A point's verdicts against its reference point (:func:`compare_with_reference`'s columns)."""
    ref = row.get("reference")
    if ref is None or (isinstance(ref, float) and math.isnan(ref)) or str(ref) == str(row["point"]):
        return []  # no reference point, or the reference itself
    found = points[points["point"].astype(str) == str(ref)]
    subject, other = _describe(row, coordinates), _describe(found.iloc[0], coordinates) if len(found) else str(ref)
    lines = []
    for m in COMPARED:
        if f"{m}_vs_ref_verdict" not in row.index:
            continue
        mean, low, high, n = (row[f"{m}_vs_ref_{k}"] for k in ("mean", "ci_low", "ci_high", "n"))
        if row[f"{m}_vs_ref_verdict"] == "undefined":
            lines.append(f"  verdict: {subject} against {other}: undefined ({m}: {int(n)} paired seed(s), 2 needed)")
        else:
            lines.append("  " + verdict_line(subject, other, f"{m} difference", mean, low, high, level,
                                             over=f"{int(n)} paired {row.get('replicates_of', 'seeds')}"))
    return lines


def point_lines(points: pd.DataFrame, coordinates, level: float = LEVEL) -> list[str]:
    """The console's summary: per point its headline scores as ``mean ± std [low, high] (n=...)``,
    the verdict of the paired gain over the raw features and, with a reference point, of its
    difference from it."""
    lines = []
    for _, row in points.iterrows():
        n = int(row["n_replicates"])
        lines.append(f"[{_describe(row, coordinates)}] {n} replicate(s) over {row.get('replicates_of', 'seeds')}, "
                     f"seeds {row['seeds']}")
        lines += [f"  {_interval_text(row, m)}" for m in HEADLINE if f"{m}_mean" in row.index
                  and math.isfinite(_float(row[f"{m}_mean"]))]
        for gain, subject in zip(GAINS, ("the latent space", "the latent space (inductive clusterer)")):
            if f"{gain}_mean" in row.index and math.isfinite(_float(row[f"{gain}_mean"])):
                over = f"{n} {row.get('replicates_of', 'seeds')}" if n > 1 else "test boreholes, one replicate"
                lines.append("  " + verdict_line(subject, "the raw features", gain, row[f"{gain}_mean"],
                                                 row[f"{gain}_ci_low"], row[f"{gain}_ci_high"], level, over=over))
        lines += _reference_lines(row, points, coordinates, level)
    return lines


def parent_metrics(points: pd.DataFrame) -> dict[str, float]:
    """The parent run's metrics: per point (``<point>/`` unless the study has one) its
    ``n_replicates``, the mean, std and interval of each headline score and its difference from
    the reference point."""
    out: dict[str, float] = {}
    single = len(points) == 1
    keys = [f"{m}_{k}" for m in HEADLINE for k in INTERVAL_KEYS]
    keys += [f"{m}_vs_ref_{k}" for m in COMPARED for k in ("mean", "ci_low", "ci_high")]
    for _, row in points.iterrows():
        prefix = "" if single else f"{row['point']}/"
        for key in ["n_replicates", *keys]:
            value = _float(row.get(key))
            if math.isfinite(value):
                out[f"{prefix}{key}"] = value
    return out


def _write_csv(frame: pd.DataFrame, path: Path) -> Path:

    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))
    return path


class StudySummary(Callback):
    """Writes a study's summary when its multirun ends (a no-op for plain sweeps). Every
    multirun that logs to an MLflow server first checks that the server answers; ``replicates=N``
    outside ``study=replicates`` (or beside a ``seed`` sweep) is one ``error:`` line, exit 2."""

    def __init__(self):
        self.parent = None

    def on_run_start(self, config, **kwargs) -> None:
        _check_replicates(config)

    def on_multirun_start(self, config, **kwargs) -> None:
        from lithovae import tracking

        _check_replicates(config)
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

        try:
            # the runs' own bootstrap level (eval.bootstrap.level), for the intervals over replicates too
            level = float(OmegaConf.select(config, "eval.bootstrap.level", default=LEVEL))
            files, metrics = write_summary(study, Path(config.hydra.sweep.dir), level)
        except Exception as exc:  # noqa: BLE001 - reported in one line; the jobs' runs are kept
            tracking.end_run(self.parent, "FAILED", {"error": one_line(exc)})
            print(f"error: study {study.name}: summary not written: {one_line(exc)}", file=sys.stderr)
            sys.exit(2)
        items = list(metrics.items())
        for i in range(0, len(items), MLFLOW_BATCH):  # already named: cv/..., <point>/...
            tracking.log_test_metrics(self.parent, dict(items[i:i + MLFLOW_BATCH]), prefix="")
        tracking.log_artifacts(self.parent, files)
        tracking.end_run(self.parent, "FINISHED")
        for f in files:
            print(f)


def replicates_problem(config) -> str | None:
    """Why ``replicates`` cannot be honoured, or None. It sweeps the seeds of ``study=replicates``
    only (``seed: range(0,${replicates})``): set anywhere else, or given beside a ``seed=...``
    override (which replaces that sweep), it would be silently ignored; below 1 it would sweep
    nothing."""

    replicates = config.get("replicates")
    if replicates is None:
        return None
    try:
        integer_at_least("replicates:", replicates, 1)
    except ValueError as exc:
        return str(exc)
    sweep = OmegaConf.to_container(config.hydra.sweeper.get("params") or OmegaConf.create(), resolve=False)
    if "${replicates}" not in str(sweep.get("seed", "")):
        return (f"replicates={replicates}: only study=replicates sweeps it; to replicate another study, "
                "sweep the seeds: seed=0,1,2")
    given = {_parse(o)[0] for o in config.hydra.overrides.task}
    if {"seed", "replicates"} <= given:  # seed=... alone replaces the preset's sweep: as asked
        return f"replicates={replicates} and seed: give one of them (replicates=5, or seed=0,1,2,3,4)"
    return None


def _check_replicates(config) -> None:
    """:func:`replicates_problem` as one ``error:`` line and exit 2, before anything runs."""

    problem = replicates_problem(config)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


def _check_tracking_server(config) -> None:
    """An unreachable tracking server (logger.tracking_uri or MLFLOW_TRACKING_URI) stops the
    multirun before any job starts: one ``error:`` line and exit 2, as a single run does."""
    from lithovae import tracking

    try:
        tracking.check_remote_store(config.logger.get("tracking_uri"))
    except LithovaeError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


def _fold_table(finished: pd.DataFrame, sweep_dir: Path, synthetic: bool) -> tuple[list[Path], dict]:
    """``study.folds``: cv_folds.csv (a row per fold: the seeds' columns, the selected ARI, the raw
    features' and the gain), cv_summary.json (mean and std over folds of every metric), printed
    with a last line of mean ± std."""
    per_fold = [json.loads((sweep_dir / str(j) / "metrics.json").read_text()) for j in finished["job"]]
    stats = [_split_stats(sweep_dir / str(j)) for j in finished["job"]]
    folds = pd.to_numeric(finished.get("datamodule.fold"), errors="coerce")
    numbers = [int(f) + 1 if math.isfinite(f) else i + 1 for i, f in enumerate(np.asarray(folds, float))] \
        if folds is not None else list(range(1, len(per_fold) + 1))
    table = pd.DataFrame([fold_row(n, f, st) for n, f, st in zip(numbers, per_fold, stats)], columns=FOLD_COLUMNS)
    metrics = {f"cv/{k}": v for k, v in summarise(per_fold).items()}
    files = [_write_csv(table, sweep_dir / "cv_folds.csv"), sweep_dir / "cv_summary.json"]

    summary = json.dumps({k.removeprefix("cv/"): v for k, v in metrics.items()}, indent=1)
    atomic_write(files[1], lambda tmp: Path(tmp).write_text(summary))
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    values = table[list(FOLD_MEANS)].apply(pd.to_numeric, errors="coerce")
    parts = [f"{k} {values[k].mean():.3f} ± {values[k].std(ddof=0):.3f}" for k in FOLD_MEANS if values[k].notna().any()]
    print(f"mean ± std over {len(per_fold)} folds: " + ", ".join(parts) + (" (SYNTHETIC data)" if synthetic else ""))
    return files, metrics


def write_summary(study, sweep_dir: Path, level: float = LEVEL) -> tuple[list[Path], dict]:
    """summary.csv (a row per job), points.csv (a row per point: mean and interval over its
    replicates, the gain's verdict, the difference from ``study.reference``), the figure, the
    history table (published values) and, for CV, the fold table and mean/std; prints the
    per-point summary; returns the files and the parent run's metrics."""
    from lithovae.data import reference

    summary = collect_jobs(sweep_dir)
    finished = summary[summary["status"] == "FINISHED"] if len(summary) else summary
    if finished.empty:
        raise ValueError(f"no job of {sweep_dir} finished")
    coordinates = summary.attrs.get("coordinates", [])
    dataset, synthetic = finished["dataset"].iloc[0], bool(finished["synthetic"].iloc[0])
    files = [_write_csv(summary, sweep_dir / "summary.csv")]
    published = reference.read(study.published) if study.get("published") else None
    carry, beside = [*coordinates, "preset", "dataset", "synthetic"], []
    if published is not None and "variant" in published:
        # the keys of the published grid points, with each job's value (a sweep axis or its config)
        keys = sorted({k for _, row in published.iterrows() for k in settings_of(row)})
        finished = _with_config_values(finished, sweep_dir, keys)
        carry += keys
        beside = [PUBLISHED_METRICS.get(m, m) for m in published["metric"].unique()]
    spec = OmegaConf.to_container(study)
    points = point_table(finished, summarised_metrics(spec, finished, beside), carry, level)
    reference_lines = []
    if study.get("reference"):
        points, reference_lines = compare_with_reference(finished, points, dict(spec["reference"]), coordinates,
                                                         level=level)
    files.append(_write_csv(points, sweep_dir / "points.csv"))
    metrics: dict = parent_metrics(points)
    history = None
    if published is not None and "variant" in published:
        history = history_table(points, published)
        files.append(_write_csv(history, sweep_dir / "history.csv"))
    if study.get("folds"):
        fold_files, fold_metrics = _fold_table(finished, sweep_dir, synthetic)
        files += fold_files
        metrics.update(fold_metrics)
    if study.get("x") and study.get("series"):
        grid = grid_table(finished, study.x, study.series, list(study.get("panels", [])))
        files.append(_write_csv(grid, sweep_dir / f"{study.name}_grid.csv"))
        print(grid.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if study.get("panels"):
        files.append(plot_study(spec, points, sweep_dir / f"{study.name}.png", dataset, synthetic,
                                published, history, level))
    print("\n".join(point_lines(points, coordinates, level) + reference_lines))
    print(f"[study {study.name}] {len(finished)}/{len(summary)} jobs finished on {dataset}"
          + (" (SYNTHETIC data)" if synthetic else ""))
    return files, metrics
