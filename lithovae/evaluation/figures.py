"""Evaluation figures: numpy/pandas in, one PNG out per function (its path returned).

Figures are built on ``matplotlib.figure.Figure`` objects (Agg canvas, no pyplot
state), so nothing stays registered after a figure is saved and memory does not grow.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from lithovae import progress
from lithovae.cli import one_line
from lithovae.evaluation.clusters import assignment_with_names, latent_with_names
from lithovae.evaluation.metrics import seeded_subsample
from lithovae.evaluation.style import (DISTINCT, OTHER, OTHER_COLOUR, categorical, cluster_colours,
                                       mark_synthetic, metadata)
from lithovae.files import atomic_write
from lithovae.evaluation.well_log import DPI, axis_scales, rgb_colours, run_log

# not at the top: umap, scipy and scikit-learn are imported inside the figures that use them: each
# takes seconds to import (umap the most), and figures=false needs none

log = logging.getLogger("lithovae")

__all__ = [
    "umap_latent",
    "training_curves",
    "reconstruction_scatter",
    "roc_curves",
    "latent_normality",
    "latent_qq",
    "latent_correlation",
    "contingency_heatmap",
    "rgb_colours",
    "borehole_log",
    "write_all",
]

# -- shared helpers ------------------------------------------------------------------------------
def _save(fig: Figure, path, synthetic: bool, **meta) -> Path:
    """Save ``fig``; a figure of synthetic data says so (corner note and PNG metadata, with
    ``meta``: :func:`lithovae.evaluation.style.read_figure_metadata`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tight_layout's notes on twin axes and outside legends
        fig.tight_layout()
    mark_synthetic(fig, synthetic)
    png = metadata(fig, synthetic, figure=path.stem, **meta)
    # a figure is whole or absent: a run stopped while it draws leaves no half-written PNG
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight", metadata=png))
    fig.clear()
    return path


def _grid(n: int, max_cols: int) -> tuple[int, int]:
    cols = max(1, min(n, max_cols))
    return (n + cols - 1) // cols, cols


def _point_size(n: int) -> float:
    return float(np.clip(3000.0 / max(n, 1), 1.0, 12.0))


# -- latent projection ---------------------------------------------------------------------------
UMAP_EPOCHS = 200  # umap-learn's own choice above 10 000 rows; below, it takes 500 (2.5x the layout time)


# umap-learn's numba functions a fit compiles without numba's cache: ~15 s of every run's UMAP
# (5 000 rows: 17.7 of 21 s). Cached, they compile once per environment and then load in < 1 s.
# numba keeps the cache beside umap's own files (its __pycache__) or in the user's cache folder,
# written and read by this environment only, as Python's own bytecode is.
UMAP_UNCACHED_JIT = ("umap.umap_.smooth_knn_dist", "umap.umap_.compute_membership_strengths",
                     "umap.layouts._nb_optimize_layout_euclidean_single_epoch")


def _cache_umap_compilation(umap) -> None:

    for name in UMAP_UNCACHED_JIT:
        module, _, attribute = name.rpartition(".")
        dispatcher = getattr(importlib.import_module(module), attribute, None)
        if hasattr(dispatcher, "enable_caching"):  # another umap version: left as it is
            dispatcher.enable_caching()


def _embed_2d(mu: np.ndarray, seed: int) -> tuple[np.ndarray, tuple[str, str], str]:
    """2-D coordinates of ``mu``: the latent itself when it has <= 2 dims, else seeded UMAP."""
    n, d = mu.shape
    if d <= 2 or n < 4:
        coords = mu[:, :2] if d >= 2 else np.column_stack([mu[:, 0], np.zeros(n)])
        return coords, ("z1", "z2" if d >= 2 else "(none)"), "latent"
    import umap  # slow import and numba JIT on first use
    from sklearn.neighbors import NearestNeighbors

    _cache_umap_compilation(umap)

    k = min(15, n - 1)
    # exact kNN from sklearn (self included, as UMAP expects) skips pynndescent's JIT compile
    dist, idx = NearestNeighbors(n_neighbors=k).fit(mu).kneighbors(mu)
    reducer = umap.UMAP(n_neighbors=k, random_state=seed, n_jobs=1, precomputed_knn=(idx, dist),
                        init="spectral" if n > 2 * k else "random", n_epochs=UMAP_EPOCHS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        coords = reducer.fit_transform(mu)
    return np.asarray(coords), ("UMAP 1", "UMAP 2"), "UMAP"


def _umap_rows(mu, principal_names, assignment, sample: int, seed: int):
    """(latent means, names, clusters) of the seeded subsample of finite rows the UMAP shows."""
    mu, names = latent_with_names(mu, principal_names)
    if assignment is not None:
        assignment = np.asarray(assignment).reshape(-1)
        if len(assignment) != len(mu):
            raise ValueError(f"mu has {len(mu)} rows but assignment has {len(assignment)}")
    finite = np.flatnonzero(np.isfinite(mu).all(axis=1))
    rows = finite[seeded_subsample(len(finite), sample, seed)]
    return (np.ascontiguousarray(mu[rows]), names.iloc[rows].reset_index(drop=True),
            None if assignment is None else assignment[rows])


def umap_latent(mu, principal_names, assignment, path, top_n: int = 12, sample: int = 20000,
                seed: int = 0, synthetic: bool = False, embedded=None) -> Path:
    """UMAP of a seeded subsample of finite latent means, coloured by lithology (the top N, at
    most the palette's 20, most frequent first; the rest and unlabeled rows grey "other") and by
    cluster (a second panel unless ``assignment`` is None). A latent of <= 2 dims is plotted
    directly. UMAP uses exact sklearn neighbours. ``embedded``: the :func:`_embed_2d` of these
    rows, already computed (:func:`write_all` computes it in another process)."""
    mu, names, clusters = _umap_rows(mu, principal_names, assignment, sample, seed)
    coords, axis_labels, method = embedded if embedded is not None else _embed_2d(mu, seed)

    panels = 2 if clusters is not None else 1
    fig = Figure(figsize=(7.5 * panels, 6.5))
    axes = fig.subplots(1, panels, squeeze=False)[0]
    size = _point_size(len(mu))
    marker_scale = max(1.0, float(np.sqrt(30 / size)))

    top = list(names.value_counts().index[:min(top_n, len(DISTINCT))])
    ax = axes[0]
    shown = names.where(names.isin(top), OTHER)
    mask = (shown == OTHER).to_numpy()
    if mask.any():
        ax.scatter(*coords[mask].T, s=size, c=OTHER_COLOUR, alpha=0.5, lw=0,
                   label=f"{OTHER} ({mask.sum()})")
    for name, colour in zip(top, categorical(len(top))):
        m = (shown == name).to_numpy()
        ax.scatter(*coords[m].T, s=size, color=colour, alpha=0.8, lw=0, label=f"{name} ({m.sum()})")
    ax.set_title(f"{method} of latent means by lithology (top {len(top)}, n={len(mu)})")
    ax.legend(fontsize=7, markerscale=marker_scale, loc="upper left",
              bbox_to_anchor=(1.0, 1.0), frameon=False)

    if clusters is not None:
        ax = axes[1]
        ids = np.unique(clusters)
        for cid, colour in zip(ids, cluster_colours(ids)):
            m = clusters == cid
            ax.scatter(*coords[m].T, s=size, color=colour, alpha=0.8, lw=0, label=f"{cid} ({m.sum()})")
        ax.set_title(f"{method} of latent means by cluster (k={len(ids)})")
        if len(ids) <= 30:
            ax.legend(fontsize=7, markerscale=marker_scale, loc="upper left",
                      bbox_to_anchor=(1.0, 1.0), frameon=False, title="cluster")
    for ax in axes:
        ax.set_xlabel(axis_labels[0])
        ax.set_ylabel(axis_labels[1])
    return _save(fig, path, synthetic, lithologies=top)


# -- training ------------------------------------------------------------------------------------
SCHEDULE_STYLE = {"beta": ("β", "#000000"), "alpha": ("α", "#8c564b")}  # drawn beside every loss


def training_curves(history: pd.DataFrame, path, synthetic: bool = False) -> Path:
    """Loss terms per epoch (train solid, val dashed, one panel per term), each panel with β
    (and α, where it varies over the epochs) on a second axis, so a loss that rises with a rising
    β is explained where it is seen; a last panel with every schedule and the learning rate."""
    history = history.copy()
    if "epoch" not in history.columns:
        history["epoch"] = np.arange(len(history))
    numeric = history.select_dtypes("number")
    # Lightning logs train and val on separate rows: one row per epoch, NaNs ignored
    per_epoch = numeric.groupby(history["epoch"]).mean().sort_index()
    split_cols = [c for c in per_epoch.columns if re.match(r"^(train|val)/", str(c))]
    terms = list(dict.fromkeys(str(c).split("/", 1)[1] for c in split_cols))
    lr_cols = [c for c in per_epoch.columns if re.match(r"^lr($|[-_/])", str(c))]
    schedule_cols = [c for c in per_epoch.columns
                     if c not in split_cols and c not in lr_cols and c not in ("epoch", "step")]
    beside = [c for c in SCHEDULE_STYLE if c in per_epoch.columns and per_epoch[c].notna().any()
              and (c == "beta" or per_epoch[c].dropna().nunique() > 1)]

    n_panels = len(terms) + 1
    n_rows, n_cols = _grid(n_panels, 3)
    fig = Figure(figsize=(4.8 * n_cols, 3.6 * n_rows))
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
    epochs = per_epoch.index.to_numpy()
    drawn_beside = {}
    for ax, term in zip(axes, terms):
        handles = []
        for split, style in (("train", "-"), ("val", "--")):
            col = f"{split}/{term}"
            if col in per_epoch.columns and per_epoch[col].notna().any():
                values = per_epoch[col]
                handles += ax.plot(epochs[values.notna()], values.dropna(), style, marker=".", label=split)
        if beside:
            twin, more = _schedules_beside(ax, per_epoch, beside)
            handles += more
            drawn_beside[term] = twin.get_ylabel()
        ax.set_title(term)
        ax.set_xlabel("epoch")
        ax.legend(handles=handles, fontsize=8)
        ax.grid(alpha=0.3)

    ax = axes[len(terms)]
    ax.set_title("schedules")
    ax.set_xlabel("epoch")
    handles = []
    for col, colour in zip(schedule_cols, categorical(len(schedule_cols))):
        values = per_epoch[col].dropna()
        handles += ax.plot(values.index, values, color=colour, label=str(col))
    if schedule_cols:
        if _log_worthy(per_epoch[schedule_cols]):
            ax.set_yscale("log")
        ax.set_ylabel(", ".join(map(str, schedule_cols)))
    if lr_cols:
        lr_ax = ax.twinx()
        for col in lr_cols:
            values = per_epoch[col].dropna()
            handles += lr_ax.plot(values.index, values, color="black", ls=":", label=str(col))
        if (per_epoch[lr_cols].to_numpy()[np.isfinite(per_epoch[lr_cols].to_numpy())] > 0).all():
            lr_ax.set_yscale("log")
        lr_ax.set_ylabel("learning rate")
    if handles:
        ax.legend(handles=handles, fontsize=8)
    else:
        ax.text(0.5, 0.5, "no schedule logged", ha="center", va="center", transform=ax.transAxes)
    for extra in axes[n_panels:]:
        extra.set_visible(False)
    return _save(fig, path, synthetic, beside_losses=drawn_beside)


def _log_worthy(values: pd.DataFrame) -> bool:
    """A positive schedule spanning more than two decades (e.g. beta 1e-10 -> 0.75): log axis."""
    positive = values.to_numpy()
    positive = positive[np.isfinite(positive) & (positive > 0)]
    return bool(positive.size and positive.max() / positive.min() > 100)


def _schedules_beside(ax, per_epoch: pd.DataFrame, columns: list[str]):
    """β (and α) per epoch on a right-hand axis of a loss panel, dotted: (that axis, its legend
    handles)."""
    twin = ax.twinx()
    handles = []
    for col in columns:
        symbol, colour = SCHEDULE_STYLE[col]
        values = per_epoch[col].dropna()
        handles += twin.plot(values.index, values, ls=":", color=colour, lw=1.2, label=symbol)
    if _log_worthy(per_epoch[columns]):
        twin.set_yscale("log")
    twin.set_ylabel(", ".join(SCHEDULE_STYLE[c][0] for c in columns))
    return twin, handles


# -- reconstruction ------------------------------------------------------------------------------
def reconstruction_scatter(x_true, x_pred, observed, feature_names: Sequence[str], path,
                           sample: int = 20000, seed: int = 0, synthetic: bool = False) -> Path:
    """Per feature: true vs reconstructed over observed entries (R² in the title, 1:1 line),
    and a row of residual histograms. R² uses every observed row; the scatter a subsample."""
    from lithovae.evaluation.metrics import reconstruction_r2

    x_true = np.asarray(x_true, dtype=np.float64)
    x_pred = np.asarray(x_pred, dtype=np.float64)
    observed = (np.ones(x_true.shape, dtype=bool) if observed is None
                else np.asarray(observed, dtype=bool))
    names = list(feature_names)
    r2 = reconstruction_r2(x_true, x_pred, observed, names)

    fig = Figure(figsize=(3.4 * len(names), 6.6))
    axes = fig.subplots(2, len(names), squeeze=False)
    for j, name in enumerate(names):
        rows = np.flatnonzero(observed[:, j] & np.isfinite(x_true[:, j]) & np.isfinite(x_pred[:, j]))
        true, pred = x_true[rows, j], x_pred[rows, j]
        ax, hist_ax = axes[0, j], axes[1, j]
        score = r2[f"r2_{name}"]
        ax.set_title(f"{name}: R² = {score:.3f}" if np.isfinite(score) else f"{name}: R² = n/a")
        ax.set_xlabel("true (scaled)")
        ax.set_ylabel("reconstructed (scaled)")
        hist_ax.set_xlabel("reconstructed − true")
        hist_ax.set_ylabel("count")
        if rows.size == 0:
            ax.text(0.5, 0.5, "no observed rows", ha="center", va="center", transform=ax.transAxes)
            continue
        shown = seeded_subsample(rows.size, sample, seed)
        if shown.size > 3000:
            ax.hexbin(true[shown], pred[shown], gridsize=50, bins="log", mincnt=1, cmap="viridis")
        else:
            ax.scatter(true[shown], pred[shown], s=_point_size(shown.size), alpha=0.4, lw=0)
        lo = float(min(true.min(), pred.min()))
        hi = float(max(true.max(), pred.max()))
        ax.plot([lo, hi], [lo, hi], "r--", lw=1, label="1:1")
        ax.legend(fontsize=8, loc="upper left")
        residual = pred - true
        spread = np.ptp(residual)
        # (near-)constant residuals cannot be cut into 50 finite bins
        bins = 50 if spread > 1e-9 * max(1.0, np.abs(residual).max()) else 1
        hist_ax.hist(residual, bins=bins, color="tab:blue", alpha=0.8,
                     range=None if bins > 1 else (residual.mean() - 0.5, residual.mean() + 0.5))
        hist_ax.axvline(0, color="r", ls="--", lw=1)
        hist_ax.set_title(f"mean {residual.mean():.3f}, sd {residual.std():.3f}", fontsize=9)
    return _save(fig, path, synthetic)


# -- classification ------------------------------------------------------------------------------
def roc_curves(logits, target, class_names: Sequence[str], path, top: int = len(DISTINCT),
               synthetic: bool = False) -> Path:
    """One-vs-rest ROC of the ``top`` most frequent classes present in ``target`` and the
    pooled (micro) curve over all classes; AUC in the legend. Rows with target < 0 are ignored."""
    from scipy.special import softmax
    from sklearn.metrics import auc, roc_curve

    logits = np.asarray(logits, dtype=np.float64)
    target = np.asarray(target).reshape(-1)
    names = list(class_names)
    if logits.ndim != 2 or logits.shape != (len(target), len(names)):
        raise ValueError(f"logits must be [N, n_classes] = [{len(target)}, {len(names)}], "
                         f"got {logits.shape}")
    labeled = (target >= 0) & np.isfinite(logits).all(axis=1)
    probs = softmax(logits[labeled], axis=1)
    target = target[labeled]

    fig = Figure(figsize=(10, 7))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1)
    counts = np.bincount(target, minlength=len(names)) if target.size else np.zeros(len(names), int)
    # a class present in every row has no negatives, so no curve
    present = [c for c in np.argsort(-counts, kind="stable") if 0 < counts[c] < target.size][:top]
    for c, colour in zip(present, categorical(len(present))):
        fpr, tpr, _ = roc_curve(target == c, probs[:, c])
        ax.plot(fpr, tpr, color=colour, lw=1,
                label=f"{names[c]} (n={counts[c]}, AUC={auc(fpr, tpr):.3f})")
    if present:
        one_hot = np.zeros(probs.shape, dtype=np.int8)
        one_hot[np.arange(target.size), target] = 1
        fpr, tpr, _ = roc_curve(one_hot.ravel(), probs.ravel())
        ax.plot(fpr, tpr, color="black", lw=2.5, label=f"pooled (micro), AUC={auc(fpr, tpr):.3f}")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    else:
        ax.text(0.5, 0.5, "fewer than 2 classes present", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"ROC, top {len(present)} classes by frequency (n={target.size})")
    return _save(fig, path, synthetic)


# -- latent distribution -------------------------------------------------------------------------
def latent_normality(mu, sample: int = 5000, seed: int = 0) -> pd.DataFrame:
    """D'Agostino–Pearson test (scipy.stats.normaltest) per latent dim on a seeded subsample
    of finite rows: columns dim, n, statistic, pvalue, mean, std (NaN where untestable)."""
    from scipy import stats

    mu = np.asarray(mu, dtype=np.float64)
    rows = []
    for j in range(mu.shape[1]):
        values = mu[:, j][np.isfinite(mu[:, j])]
        values = values[seeded_subsample(values.size, sample, seed)]
        stat = p = np.nan
        if values.size >= 8 and np.ptp(values) > 0:  # skewtest needs 8 rows
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                stat, p = stats.normaltest(values)
        rows.append({"dim": j, "n": int(values.size), "statistic": float(stat), "pvalue": float(p),
                     "mean": float(values.mean()) if values.size else np.nan,
                     "std": float(values.std()) if values.size else np.nan})
    return pd.DataFrame(rows)


def latent_qq(mu, path, sample: int = 5000, seed: int = 0, synthetic: bool = False) -> Path:
    """Normal Q–Q plot per latent dim (fitted line, and the N(0, 1) prior as 1:1), with the
    normaltest result in each title; both on the same seeded subsample."""
    from scipy import stats

    mu = np.asarray(mu, dtype=np.float64)
    tests = latent_normality(mu, sample, seed)
    n_rows, n_cols = _grid(mu.shape[1], 5)
    fig = Figure(figsize=(3.3 * n_cols, 3.2 * n_rows))
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
    for j, ax in enumerate(axes[:mu.shape[1]]):
        values = mu[:, j][np.isfinite(mu[:, j])]
        values = values[seeded_subsample(values.size, sample, seed)]
        test = tests.iloc[j]
        p_text = f"p={test.pvalue:.2g}" if np.isfinite(test.pvalue) else "p=n/a"
        ax.set_title(f"z{j + 1}: K²={test.statistic:.1f}, {p_text}", fontsize=9)
        ax.set_xlabel("normal quantiles")
        ax.set_ylabel("latent quantiles")
        if values.size < 2:
            continue
        (theoretical, ordered), (slope, intercept, _) = stats.probplot(values, dist="norm")
        ax.scatter(theoretical, ordered, s=4, alpha=0.5, lw=0)
        ends = np.array([theoretical[0], theoretical[-1]])
        ax.plot(ends, intercept + slope * ends, "r-", lw=1, label="fit")
        ax.plot(ends, ends, "k--", lw=1, label="N(0,1)")
        ax.legend(fontsize=7, loc="upper left")
    for extra in axes[mu.shape[1]:]:
        extra.set_visible(False)
    fig.suptitle(f"Latent Q–Q against the normal (normaltest on ≤{sample} rows, seed {seed})")
    return _save(fig, path, synthetic)


def latent_correlation(mu, path, synthetic: bool = False) -> Path:
    """Pearson correlation heatmap of the latent dims (finite rows; constant dims blank)."""
    mu = np.asarray(mu, dtype=np.float64)
    mu = mu[np.isfinite(mu).all(axis=1)]
    d = mu.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        corr = np.corrcoef(mu, rowvar=False) if len(mu) > 1 else np.full((d, d), np.nan)
    corr = np.atleast_2d(corr)
    size = max(4.0, 0.55 * d + 2)
    fig = Figure(figsize=(size + 1, size))
    ax = fig.subplots()
    image = ax.imshow(np.ma.masked_invalid(corr), cmap="RdBu_r", vmin=-1, vmax=1)
    labels = [f"z{j + 1}" for j in range(d)]
    ax.set_xticks(range(d), labels, rotation=90 if d > 12 else 0)
    ax.set_yticks(range(d), labels)
    if d <= 16:
        for (i, j), value in np.ndenumerate(corr):
            if np.isfinite(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if abs(value) > 0.6 else "black")
    fig.colorbar(image, ax=ax, label="Pearson r")
    ax.set_title(f"Latent correlation (n={len(mu)})")
    return _save(fig, path, synthetic)


# -- clusters vs lithology -----------------------------------------------------------------------
def contingency_heatmap(assignment, principal_names, path, top_n: int = 20, synthetic: bool = False) -> Path:
    """Cluster × lithology shares (rows sum to 1 over labeled rows): the ``top_n`` most
    frequent lithologies plus "other"; rows ordered by their dominant column."""
    assignment, names = assignment_with_names(assignment, principal_names)
    labeled = names.notna().to_numpy()
    names, clusters = names[labeled], assignment[labeled]
    top = list(names.value_counts().index[:top_n])
    columns = top + ([OTHER] if (~names.isin(top)).any() else [])
    counts = pd.crosstab(clusters, names.where(names.isin(top), OTHER).to_numpy()).reindex(
        columns=columns, fill_value=0)
    shares = counts.div(counts.sum(axis=1), axis=0)
    if len(shares):
        order = sorted(range(len(shares)), key=lambda i: (int(np.argmax(shares.iloc[i].to_numpy())),
                                                          -shares.iloc[i].max()))
        shares, counts = shares.iloc[order], counts.iloc[order]

    n_rows, n_cols = max(1, len(shares)), max(1, len(columns))
    fig = Figure(figsize=(max(6.0, 0.45 * n_cols + 3), max(4.0, 0.4 * n_rows + 2.5)))
    ax = fig.subplots()
    image = ax.imshow(shares.to_numpy() if len(shares) else np.zeros((1, 1)), cmap="viridis",
                      vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(columns)), columns, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(shares)),
                  [f"{c} (n={n})" for c, n in zip(shares.index, counts.sum(axis=1))], fontsize=8)
    if shares.size <= 600:
        for (i, j), value in np.ndenumerate(shares.to_numpy()):
            if value >= 0.05:
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6,
                        color="black" if value > 0.6 else "white")
    fig.colorbar(image, ax=ax, label="share of cluster's labeled rows")
    ax.set_xlabel("principal lithology")
    ax.set_ylabel("cluster")
    ax.set_title(f"Cluster × lithology (row-normalised, top {len(top)} lithologies)")
    return _save(fig, path, synthetic)


# -- borehole log --------------------------------------------------------------------------------
borehole_log = run_log  # the one log figure, shared with lithovae.predict (evaluation/well_log.py)


# -- everything at once --------------------------------------------------------------------------
MAX_NAME = 100  # characters of a sanitised id kept in a file name (file systems allow 255 bytes)


def _safe_name(value) -> str:
    """A file name for ``value`` (a borehole id): the id itself when it is a plain name,
    else the id sanitised plus a short hash of the raw id, so ``A/B`` and ``A_B`` (or ``A B``)
    never write one file."""
    raw = str(value)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", raw)[:MAX_NAME].lstrip(".")
    if safe == raw and safe:
        return safe
    return f"{safe}-{hashlib.sha256(raw.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"


def _unique_names(values) -> dict:
    """{value: file name} for the ``values`` (borehole ids) drawn into one folder: names also
    differ ignoring case (``U1437a`` and ``U1437A`` are one file on macOS and Windows)."""
    names: dict = {}
    taken: set[str] = set()
    for value in values:
        name = _safe_name(value)
        if name.lower() in taken:  # a case twin, or an id that spells another's hashed name
            stem = f"{_safe_name(value)}-{hashlib.sha256(repr(value).encode()).hexdigest()[:8]}"
            name, n = stem, 1
            while name.lower() in taken:
                name, n = f"{stem}-{n}", n + 1
        taken.add(name.lower())
        names[value] = name
    return names


def _draw(written: dict, name: str, figure, *args, **kwargs) -> None:
    """Draw one figure (a progress step of its own); a failure (degenerate latent, too few rows)
    is a one-line warning and the other figures are still drawn."""
    try:
        with progress.step(f"figure {name}"):
            written[name] = figure(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - one figure must not cost the others

        log.warning("figure %s not drawn: %s", name, one_line(exc)[:200])


BACKGROUND_UMAP_ROWS = 5000  # from this many rows, the UMAP runs in a process of its own


def _embedding(mu: np.ndarray, seed: int):
    """The UMAP of a run's latent sample, started before the other figures are drawn: in a
    process of its own for a large sample (umap's import and numba compile, seconds once per
    process, and its fit take a second core), here for a small one (tests)."""
    from lithovae.evaluation.background import Background, Here, second_core

    if len(mu) >= BACKGROUND_UMAP_ROWS and mu.shape[1] > 2 and second_core():
        return Background(_embed_2d, mu, seed)
    return Here(_embed_2d, mu, seed)


def _umap_sample(run_outputs: Mapping, umap_sample: int, seed: int) -> np.ndarray | None:
    """The latent rows the UMAP shows (:func:`_umap_rows`), or None where it has none to show."""
    mu, principal = run_outputs.get("mu"), _principal(run_outputs)
    if mu is None or principal is None:
        return None
    try:
        return _umap_rows(mu, principal, run_outputs.get("assignment"), umap_sample, seed)[0]
    except ValueError:  # rows that disagree: umap_latent says so as its figure's warning
        return None


def _principal(run_outputs: Mapping):
    principal, frame = run_outputs.get("principal"), run_outputs.get("frame")
    if principal is None and frame is not None:
        principal = frame["principal"].to_numpy()
    return principal


def unclustered_figures(run_outputs: Mapping, out_dir, umap_sample: int = 20000, seed: int = 0,
                        synthetic: bool = False) -> tuple[dict[str, Path], tuple | None]:
    """Every figure that needs no clustering (training curves, Q–Q, latent correlation,
    reconstruction, ROC), drawn; and the UMAP coordinates of the latent sample (None without
    one, or where the fit failed: :func:`umap_latent` then fits, and warns, itself). What a
    second process draws while the scoring clusters (``run_outputs`` without ``assignment``)."""
    written: dict[str, Path] = {}
    rows = _umap_sample(run_outputs, umap_sample, seed)
    embedding = None
    if rows is not None:
        try:
            with progress.step("UMAP coordinates"):
                embedding = _embed_2d(rows, seed)
        except Exception as exc:  # noqa: BLE001 - the figure is drawn (or its warning given) later
            log.debug("UMAP coordinates not computed here: %s", one_line(exc))
    _draw_unclustered(written, run_outputs, Path(out_dir), synthetic)
    return written, embedding


def clustered_figures(run_outputs: Mapping, out_dir, synthetic: bool = False) -> dict[str, Path]:
    """The figures that show the clustering (contingency, borehole logs) but the UMAP, drawn:
    what a second process draws while the run writes its bundle and MLflow model."""
    written: dict[str, Path] = {}
    _draw_clustered(written, run_outputs, Path(out_dir), synthetic)
    return written


WARM_UMAP_ROWS = 300  # a fit this small compiles (or loads from numba's cache) all a real one runs


def prepare_figures() -> None:
    """What a process drawing :func:`unclustered_figures` does before its inputs arrive (while
    the run trains): import matplotlib and umap, and compile umap's numba functions with a small
    fit (a fresh environment's first UMAP compiles for ~25 s, then loads them from numba's cache).
    It yields to the scoring's processes (nice 5): the run waits for those first."""
    try:
        os.nice(5)
    except OSError:  # not allowed: it only runs at the same priority
        pass
    rows = np.random.default_rng(0).normal(size=(WARM_UMAP_ROWS, 4)).astype(np.float32)
    try:
        _embed_2d(rows, 0)
    except Exception as exc:  # noqa: BLE001 - the real fit says what went wrong
        log.debug("UMAP not compiled ahead: %s", one_line(exc))


def write_all(run_outputs: Mapping, out_dir, umap_sample: int = 20000, umap_top_n: int = 12,
              seed: int = 0, synthetic: bool = False, unclustered=None, clustered=None) -> dict[str, Path]:
    """Write every figure whose inputs are in ``run_outputs``; returns {name: path}. With
    ``synthetic``, each figure says that its data are synthetic.

    Keys (all optional): ``mu``, ``assignment``, ``principal`` (per-row names; else
    ``frame["principal"]``), ``history`` (DataFrame), ``x`` (scaled), ``recon``, ``observed``,
    ``feature_names``, ``logits``, ``target`` (the classifier's class codes, -1 unlabeled),
    ``class_names`` (the names of those codes), ``frame`` (borehole_id, depth_m, principal),
    ``x_raw`` (unscaled, aligned with frame; else ``scaler.inverse_transform(x)`` with
    unobserved entries NaN), ``scaler``, ``borehole_ids`` (default: the borehole with most rows).
    The borehole log (:mod:`lithovae.evaluation.well_log`) also reads ``base_features`` (its
    tracks; default ``feature_names``), ``units`` ({feature: unit}), ``depth_unit`` and ``scales``
    ({feature: linear|log|symlog}; default: from ``scaler``'s transforms and these bins).
    The UMAP is computed first, in another process where its sample is large, and drawn last.
    ``unclustered``: the :func:`unclustered_figures` of these outputs, started elsewhere (a
    :class:`lithovae.evaluation.background.Background`): only the rest is drawn here; likewise
    ``clustered``, the :func:`clustered_figures` of these outputs.
    """
    out_dir = Path(out_dir)
    written: dict[str, Path] = {}
    mu, assignment, principal = run_outputs.get("mu"), run_outputs.get("assignment"), _principal(run_outputs)
    embedding = None
    if unclustered is None:
        rows = _umap_sample(run_outputs, umap_sample, seed)
        embedding = _embedding(rows, seed) if rows is not None else None
    try:
        if unclustered is None:
            _draw_unclustered(written, run_outputs, out_dir, synthetic)
        else:
            with progress.step("figures drawn meanwhile"):
                drawn, coordinates = unclustered.result()
            written.update(drawn)
        if clustered is None:
            _draw_clustered(written, run_outputs, out_dir, synthetic)
        if mu is not None and principal is not None:
            if unclustered is None:
                coordinates = embedding.result() if embedding is not None else None
            _draw(written, "umap", lambda: umap_latent(
                mu, principal, assignment, out_dir / "umap.png", top_n=umap_top_n, sample=umap_sample,
                seed=seed, synthetic=synthetic, embedded=coordinates))
        if clustered is not None:
            with progress.step("figures drawn meanwhile, with the clustering"):
                written.update(clustered.result())
    finally:
        if embedding is not None:
            embedding.close()
    return written


def _draw_unclustered(written: dict, run_outputs: Mapping, out_dir: Path, synthetic: bool) -> None:
    """Every figure but the UMAP that needs no clustering (:func:`write_all`)."""
    get = run_outputs.get
    history, mu = get("history"), get("mu")
    if history is not None and len(history):
        _draw(written, "training_curves", training_curves, history, out_dir / "training_curves.png",
              synthetic=synthetic)
    if mu is not None:
        _draw(written, "latent_qq", latent_qq, mu, out_dir / "latent_qq.png", synthetic=synthetic)
        _draw(written, "latent_correlation", latent_correlation, mu, out_dir / "latent_correlation.png",
              synthetic=synthetic)
    x, recon, feature_names = get("x"), get("recon"), get("feature_names")
    if x is not None and recon is not None and feature_names is not None:
        _draw(written, "reconstruction", reconstruction_scatter, x, recon, get("observed"), feature_names,
              out_dir / "reconstruction.png", synthetic=synthetic)
    logits, class_names, target = get("logits"), get("class_names"), get("target")
    if logits is not None and target is not None and class_names is not None:
        _draw(written, "roc", roc_curves, logits, target, class_names, out_dir / "roc.png", synthetic=synthetic)


def _draw_clustered(written: dict, run_outputs: Mapping, out_dir: Path, synthetic: bool) -> None:
    """The figures that show the clustering (contingency, borehole logs) (:func:`write_all`)."""
    get = run_outputs.get
    assignment, frame, principal = get("assignment"), get("frame"), _principal(run_outputs)
    x, feature_names = get("x"), get("feature_names")
    if assignment is not None and principal is not None:
        _draw(written, "contingency", contingency_heatmap, assignment, principal, out_dir / "contingency.png",
              synthetic=synthetic)
    x_raw = get("x_raw")
    if x_raw is None and get("scaler") is not None and x is not None:
        x_raw = np.asarray(get("scaler").inverse_transform(np.asarray(x, dtype=np.float64)))
        if get("observed") is not None:
            x_raw = np.where(np.asarray(get("observed"), dtype=bool), x_raw, np.nan)
    if frame is not None and x_raw is not None and feature_names is not None and len(frame):
        boreholes = get("borehole_ids")
        if not boreholes:
            boreholes = [frame["borehole_id"].astype(str).value_counts().index[0]]
        names = _unique_names(boreholes)
        style = _log_style(run_outputs, frame, x_raw, assignment)
        for bh in boreholes:
            _draw(written, f"borehole_log_{bh}", borehole_log,
                  frame, x_raw, feature_names, assignment, bh,
                  out_dir / f"borehole_log_{names[bh]}.png", synthetic=synthetic, **style)


def _log_style(run_outputs: Mapping, frame: pd.DataFrame, x_raw, assignment) -> dict:
    """What every borehole log of a run shares, decided once over all its (test) bins: the
    tracks, units, axis scales and cluster labels."""
    from lithovae.evaluation.well_log import cluster_labels

    names = list(run_outputs["feature_names"])
    tracks = [f for f in (run_outputs.get("base_features") or names) if f in names]
    scaler = run_outputs.get("scaler")
    values = pd.DataFrame(np.asarray(x_raw, dtype=np.float64)[:, [names.index(f) for f in tracks]],
                          columns=tracks)
    labels = None if assignment is None else cluster_labels(np.asarray(assignment).reshape(-1),
                                                            frame["principal"].to_numpy())
    return {"base_features": tracks, "units": run_outputs.get("units"),
            "depth_unit": run_outputs.get("depth_unit"), "labels": labels,
            "scales": run_outputs.get("scales") or axis_scales(values, getattr(scaler, "transforms", None))}
