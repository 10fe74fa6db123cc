"""The depth-log figure of one borehole, drawn the same way for a training run's figures
(:func:`run_log`, ``figures/borehole_log_<id>.png``) and for ``lithovae.predict``
(:func:`prediction_log`, ``figures/<id>.png``):

- a track per base feature of the run, in the run's order, titled with its unit where the
  data say it (LAS curve headers, ``data.units`` of a table, LILY's instruments); no unit
  where none is known;
- a feature's x-axis is logarithmic where the run's scaler log-transforms it (``signed_log``,
  ``log1p``; symmetric-log where it has values <= 0), or where it has no transform but is
  positive and spans more than two decades (99th / 1st percentile > 100, e.g. resistivity);
  otherwise linear. A run decides each feature's axis once, over its training bins, and saves
  it in its predictor bundle, so its predictions are drawn on the same axes;
- a colour strip from R, G, B only where all three are features of the run;
- strips of the described (and predicted) lithology, by name, the most frequent in the
  palette's colours (:mod:`lithovae.evaluation.style`), the rest grey "other"; the cluster strip,
  coloured by cluster id from the same palette, each cluster labelled by the most frequent
  lithology of its labeled bins (``3: Shale``) in its own legend;
- depth down, labelled with its unit (the LAS depth unit; metres for LILY).

What was drawn is saved in the PNG itself (text chunk ``lithovae:log``, JSON: borehole, depth
unit, tracks with feature, unit and scale, strips, cluster labels, synthetic): :func:`read_metadata`.
A run's log of synthetic data says so in its corner.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from lithovae.files import atomic_write
from lithovae.evaluation.style import DISTINCT, OTHER, OTHER_COLOUR, categorical, cluster_colours, mark_synthetic
from lithovae.evaluation.style import metadata as figure_metadata

# not at the top: PIL is imported inside the function that reads an image back

__all__ = ["axis_scales", "cluster_labels", "dataset_units", "prediction_log", "read_metadata",
           "rgb_colours", "run_log"]

DPI = 120
RGB = ("R", "G", "B")
META_KEY = "lithovae:log"
MAX_LITHOLOGIES = len(DISTINCT)  # named colours in a lithology strip; the rest grey, as "other"
# LILY's instruments (the builder's raw schema): the units its manifest does not repeat
LILY_UNITS = {"GRA": "g/cm³", "MS": "instr. units", "NGR": "cps"}
LOG_TRANSFORMS = ("signed_log", "log1p")
DECADES = 2.0  # a positive feature without a transform spanning more than this is drawn on a log axis
TRACK_COLOURS = ("tab:blue", "tab:red", "tab:green", "tab:purple", "tab:brown", "tab:olive", "tab:cyan")


# -- colours ---------------------------------------------------------------------------------------
palette = categorical  # lithologies and clusters: one palette (lithovae.evaluation.style)


def rgb_colours(rgb) -> np.ndarray:
    """RGBA per row from raw 0–255 R, G, B; rows with any NaN are fully transparent."""
    rgb = np.asarray(rgb, dtype=np.float64).reshape(-1, 3)
    valid = np.isfinite(rgb).all(axis=1)
    rgba = np.zeros((len(rgb), 4))
    rgba[valid, :3] = np.clip(rgb[valid] / 255.0, 0, 1)
    rgba[valid, 3] = 1.0
    return rgba


# -- what the data say ---------------------------------------------------------------------------
def dataset_units(manifest: Mapping | None) -> tuple[dict[str, str], str | None]:
    """(unit per feature, depth unit) from a dataset manifest: what a table or LAS source
    recorded (``units``, ``depth_unit``); LILY's instrument units and metres for a LILY build
    (real or synthetic: its manifest has ``builder_version``); else nothing known."""
    manifest = manifest if isinstance(manifest, Mapping) else {}
    if "builder_version" in manifest:
        return dict(LILY_UNITS), "m"
    units = manifest.get("units")
    units = {str(k): str(v) for k, v in units.items() if isinstance(v, str) and v.strip()} \
        if isinstance(units, Mapping) else {}
    depth = manifest.get("depth_unit")
    return units, (str(depth) if isinstance(depth, str) and depth.strip() else None)


def manifest_beside(dataset_path) -> dict | None:
    """The manifest written beside a dataset (``<name>.manifest.json``), or None."""
    path = Path(dataset_path).with_suffix(".manifest.json")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def axis_scales(values: pd.DataFrame, transforms: Mapping[str, str] | None = None) -> dict[str, str]:
    """``linear``, ``log`` or ``symlog`` per column of ``values`` (original units, all bins drawn):
    log where the scaler log-transforms the feature (symlog where it has values <= 0), or where
    it has no transform and is positive over more than :data:`DECADES` decades (99th over 1st
    percentile)."""
    transforms = transforms or {}
    scales = {}
    for feature in values.columns:
        v = values[feature].to_numpy(np.float64)
        v = v[np.isfinite(v)]
        positive = v.size > 0 and v.min() > 0
        if transforms.get(feature, "none") in LOG_TRANSFORMS:
            scales[feature] = "log" if positive or v.size == 0 else "symlog"
        elif positive:
            lo, hi = np.quantile(v, [0.01, 0.99])
            scales[feature] = "log" if hi / lo > 10 ** DECADES else "linear"
        else:
            scales[feature] = "linear"
    return scales


SCALES = ("linear", "log", "symlog")


def training_scales(dm) -> dict[str, str]:
    """:func:`axis_scales` of a run's base features over its training bins (observed values, in
    original units): decided once per run, drawn by its figures and saved in its predictor bundle
    (``axis_scales``), so predictions are drawn on the same axes."""
    train = dm.tensors["train"]
    n = len(dm.base_features)
    with np.errstate(all="ignore"):
        raw = dm.scaler.inverse_transform(train["x"].numpy().astype(np.float64))
    raw = np.where(train["observed"].numpy(), raw, np.nan)[:, :n]
    return axis_scales(pd.DataFrame(raw, columns=list(dm.base_features)), dm.scaler.transforms)


def saved_scales(value, features: Sequence[str]) -> dict[str, str] | None:
    """A bundle's ``axis_scales`` where it gives one of :data:`SCALES` for every feature, else
    None (an older bundle: the prediction decides over its own bins)."""
    if isinstance(value, Mapping) and all(value.get(f) in SCALES for f in features):
        return {f: value[f] for f in features}
    return None


def cluster_labels(clusters, lithology) -> dict:
    """{cluster id: "id: top lithology"} over the labeled bins (ties: alphabetically first);
    ``"id"`` alone for a cluster without labeled bins."""
    clusters = np.asarray(clusters).reshape(-1)
    names = label_text(lithology)
    labeled = names.notna().to_numpy()
    counts = pd.crosstab(clusters[labeled], names[labeled].to_numpy())
    top = {}
    if counts.size:
        counts = counts.reindex(sorted(counts.columns), axis=1)  # idxmax keeps the first of a tie
        top = counts.idxmax(axis=1).to_dict()
    return {c: (f"{c}: {top[c]}" if c in top else f"{c}") for c in np.unique(clusters).tolist()}


def label_text(values) -> pd.Series:
    """Lithology labels as text (own data carry their names: ``data.label_names`` is applied
    when the dataset is built); None, NaN, NA and "" unlabeled (NaN)."""
    series = pd.Series(np.asarray(values, dtype=object))
    blank = series.isna() | (series.astype(str) == "")
    return series.astype(str).astype(object).where(~blank, np.nan)


# -- drawing -------------------------------------------------------------------------------------
def _bin_height(depth: np.ndarray) -> float:
    steps = np.diff(np.unique(depth))
    steps = steps[steps > 0]
    return float(np.median(steps)) if steps.size else 0.2


def _with_gaps(depth: np.ndarray, values: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Insert NaN where consecutive bins are further apart than 1.5 bins, so lines break there."""
    gaps = np.flatnonzero(np.diff(depth) > 1.5 * step)
    return (np.insert(depth.astype(float), gaps + 1, np.nan),
            np.insert(values.astype(float), gaps + 1, np.nan))


def _strip(ax, depth: np.ndarray, colours: np.ndarray, height: float, title: str) -> None:
    """One rectangle per bin, coloured; transparent colours leave the bin blank."""
    top, bottom = depth - height / 2, depth + height / 2
    boxes = np.stack([np.column_stack([np.zeros_like(depth), top]),
                      np.column_stack([np.ones_like(depth), top]),
                      np.column_stack([np.ones_like(depth), bottom]),
                      np.column_stack([np.zeros_like(depth), bottom])], axis=1)
    ax.add_collection(PolyCollection(boxes, facecolors=colours, edgecolors="none"))
    ax.set_xlim(0, 1)
    ax.set_xticks([])
    ax.set_title(title, fontsize=9)


def _name_colours(names: pd.Series, colour_of: dict) -> np.ndarray:
    """RGBA per bin: its name's colour, grey for a name not shown, transparent where unlabeled."""
    codes, uniques = pd.factorize(names)  # -1: unlabeled
    table = np.array([colour_of.get(u, to_rgba(OTHER_COLOUR)) for u in uniques] + [(0, 0, 0, 0)])
    return table.reshape(-1, 4)[codes]


def _log_axes(widths: Sequence[float]):
    """(figure, one axis per track or strip of ``widths`` sharing the depth axis, a legend axis)."""
    widths = [*widths, 3.0]
    fig = Figure(figsize=(sum(widths) + 1.0, 10))
    axes = fig.subplots(1, len(widths), gridspec_kw={"width_ratios": widths}, squeeze=False)[0]
    legend_ax, axes = axes[-1], axes[:-1]
    for ax in axes[1:]:
        ax.sharey(axes[0])
        ax.tick_params(labelleft=False)
    return fig, axes, legend_ax


def _save(fig: Figure, path, meta: dict, synthetic: bool = False) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tight_layout's notes on outside legends
        fig.tight_layout()
    mark_synthetic(fig, synthetic)
    png = {META_KEY: json.dumps(meta, default=str), **figure_metadata(fig, synthetic, figure="log")}
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight", metadata=png))
    fig.clear()
    return path


def read_metadata(path) -> dict:
    """What a log figure drew (see the module's docstring), read back from its PNG."""
    from PIL import Image

    with Image.open(path) as image:
        return json.loads(image.text[META_KEY])


def track_title(feature: str, unit: str | None) -> str:
    return f"{feature} ({unit})" if unit else feature


def _draw(part: pd.DataFrame, features: Sequence[str], path, *, borehole_id, units: Mapping | None,
          depth_unit: str | None, scales: Mapping | None, lithology: pd.Series | None,
          predicted: pd.Series | None, clusters: np.ndarray | None, labels: Mapping | None,
          anomaly: bool, title_note: str = "", synthetic: bool = False) -> Path:
    """The log of ``part``: one borehole's bins sorted by depth, with ``depth_m``, the features
    (original units) and, where present, ``<feature>_imputed`` / ``<feature>_out_of_range``
    flags and ``anomaly_percentile``. ``lithology``/``predicted``: names aligned with ``part``."""
    units, scales, labels = dict(units or {}), dict(scales or {}), dict(labels or {})
    depth = part["depth_m"].to_numpy(np.float64)
    height = _bin_height(depth)
    has_rgb = all(c in features for c in RGB)
    tracks = [f for f in features if not (has_rgb and f in RGB)]
    strips = ["colour"] * has_rgb + ["lithology"] * (lithology is not None) \
        + ["predicted"] * (predicted is not None) + ["cluster"] * (clusters is not None)
    fig, axes, legend_ax = _log_axes([2.0] * len(tracks) + [0.6] * len(strips) + [1.8] * anomaly)
    drawn = []
    for i, (ax, feature) in enumerate(zip(axes, tracks)):
        values = part[feature].to_numpy(np.float64)
        imputed = part[f"{feature}_imputed"].to_numpy(bool) if f"{feature}_imputed" in part else None
        line = values if imputed is None else np.where(imputed, np.nan, values)
        ax.plot(*_with_gaps(depth, line, height)[::-1], color=TRACK_COLOURS[i % len(TRACK_COLOURS)], lw=0.8)
        if imputed is not None and imputed.any():
            ax.plot(values[imputed], depth[imputed], ".", color="tab:orange", ms=2)
        outside = f"{feature}_out_of_range"
        if outside in part and part[outside].to_numpy(bool).any():
            flag = part[outside].to_numpy(bool)
            ax.plot(values[flag], depth[flag], "x", color="tab:red", ms=4)
        scale = scales.get(feature, "linear")
        if scale == "symlog":
            ax.set_xscale("symlog", linthresh=1.0)
        elif scale == "log" and (values[np.isfinite(values)] > 0).any():
            ax.set_xscale("log")
        ax.set_title(track_title(feature, units.get(feature)), fontsize=9)
        ax.grid(alpha=0.3, which="both" if scale != "linear" else "major")
        if not np.isfinite(values).any():
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        drawn.append({"feature": feature, "unit": units.get(feature), "scale": scale})
    i = len(tracks)
    if has_rgb:
        _strip(axes[i], depth, rgb_colours(part[list(RGB)].to_numpy(np.float64)), height, "colour")
        i += 1

    names = pd.concat([s for s in (lithology, predicted) if s is not None]).dropna() \
        if lithology is not None or predicted is not None else pd.Series(dtype=object)
    counts = names.value_counts()
    shown = sorted(counts.index[:MAX_LITHOLOGIES], key=lambda n: (-counts[n], n))  # most frequent first
    colour_of = dict(zip(shown, categorical(len(shown))))
    for series, title in ((lithology, "lithology"), (predicted, "predicted")):
        if series is not None:
            _strip(axes[i], depth, _name_colours(series.reset_index(drop=True), colour_of), height, title)
            i += 1
    legend_ax.axis("off")
    legends = []
    if shown:
        handles = [Patch(color=colour_of[n], label=f"{n} ({counts[n]})") for n in shown]
        if len(counts) > len(shown):
            rest = counts.drop(shown)
            handles.append(Patch(color=OTHER_COLOUR, label=f"{OTHER}: {len(rest)} lithologies ({rest.sum()})"))
        legends.append(legend_ax.legend(handles=handles, title="lithology", fontsize=7, title_fontsize=8,
                                        loc="upper left", bbox_to_anchor=(0, 1), frameon=False))
    cluster_names = {}
    if clusters is not None:
        known = clusters >= 0
        colours = np.zeros((len(clusters), 4))  # a bin without a cluster (-1): blank
        ids, inverse = np.unique(clusters[known], return_inverse=True)
        colour_of_cluster = dict(zip(ids.tolist(), cluster_colours(ids)))
        if known.any():
            colours[known] = np.array(cluster_colours(ids)).reshape(-1, 4)[inverse]
        _strip(axes[i], depth, colours, height, "cluster")
        i += 1
        cluster_names = {c: str(labels.get(c, c)) for c in ids.tolist()}
        if legends:
            legend_ax.add_artist(legends[-1])
        legend_ax.legend(handles=[Patch(color=colour_of_cluster[c], label=cluster_names[c]) for c in ids.tolist()],
                         title="cluster: top lithology", fontsize=7, title_fontsize=8, loc="lower left",
                         bbox_to_anchor=(0, 0), frameon=False, ncols=max(1, -(-len(ids) // 15)))
    if anomaly:
        ax = axes[i]
        ax.plot(*_with_gaps(depth, part["anomaly_percentile"].to_numpy(np.float64), height)[::-1],
                color="black", lw=0.8)
        ax.axvline(99, color="tab:red", lw=0.8, ls="--")
        ax.set_xlim(0, 100)
        ax.set_title("anomaly (percentile\nof training bins)", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].set_ylim(depth.max() + height, depth.min() - height)  # shared y: depth down
    axes[0].set_ylabel(f"depth ({depth_unit})" if depth_unit else "depth")
    unit = f" {depth_unit}" if depth_unit else ""
    fig.suptitle(f"Borehole {borehole_id} ({len(part)} bins, {depth.min():.1f}–{depth.max():.1f}{unit})"
                 + title_note, fontsize=10)
    meta = {"borehole": str(borehole_id), "depth_unit": depth_unit, "tracks": drawn, "strips": strips,
            "clusters": {str(c): n for c, n in cluster_names.items()}, "lithologies": shown,
            "synthetic": bool(synthetic)}
    return _save(fig, path, meta, synthetic)


def run_log(frame: pd.DataFrame, x_raw, feature_names: Sequence[str], assignment, borehole_id, path, *,
            base_features: Sequence[str] | None = None, units: Mapping | None = None,
            depth_unit: str | None = None, scales: Mapping | None = None, labels: Mapping | None = None,
            synthetic: bool = False) -> Path:
    """A training run's log of one (test) borehole: ``frame`` (borehole_id, depth_m, principal)
    and ``x_raw`` (features in original units, aligned with it; ``feature_names`` its columns)
    of all bins, ``assignment`` their clusters (or None). ``base_features``: the tracks (the
    run's features before context/engineered columns; default all); ``scales``: from
    :func:`axis_scales` over all bins (default: by these bins, no transform); ``labels``: cluster
    labels (default: :func:`cluster_labels` over all labeled bins of ``frame``); ``synthetic``: the
    data are synthetic (the figure says so)."""
    x_raw = np.asarray(x_raw, dtype=np.float64)
    names = list(feature_names)
    if x_raw.ndim != 2 or x_raw.shape != (len(frame), len(names)):
        raise ValueError(f"x_raw must be [len(frame), n_features] = [{len(frame)}, {len(names)}], "
                         f"got {x_raw.shape}")
    rows = np.flatnonzero(frame["borehole_id"].astype(str).to_numpy() == str(borehole_id))
    if rows.size == 0:
        raise ValueError(f"borehole {borehole_id!r} has no rows in frame")
    features = [f for f in (base_features or names) if f in names]
    lithology_all = label_text(frame["principal"].to_numpy())
    clusters_all = None if assignment is None else np.asarray(assignment).reshape(-1)
    if clusters_all is not None and labels is None:
        labels = cluster_labels(clusters_all, lithology_all)
    if scales is None:
        scales = axis_scales(pd.DataFrame(x_raw[:, [names.index(f) for f in features]], columns=features))
    rows = rows[np.argsort(frame["depth_m"].to_numpy(np.float64)[rows], kind="stable")]
    part = pd.DataFrame(x_raw[rows][:, [names.index(f) for f in features]], columns=features)
    part.insert(0, "depth_m", frame["depth_m"].to_numpy(np.float64)[rows])
    has_rgb = all(c in features for c in RGB)
    return _draw(part, features, path, borehole_id=borehole_id, units=units, depth_unit=depth_unit,
                 scales=scales, lithology=lithology_all.iloc[rows].reset_index(drop=True), predicted=None,
                 clusters=None if clusters_all is None else clusters_all[rows], labels=labels,
                 anomaly=False, title_note="; blank colour = no RGB" if has_rgb else "", synthetic=synthetic)


def prediction_log(table: pd.DataFrame, features: Sequence[str], borehole_id, path,
                   described: pd.Series | None = None, *, units: Mapping | None = None,
                   depth_unit: str | None = None, scales: Mapping | None = None) -> Path:
    """``table``: lithovae.predict's table (rows of any boreholes); ``described``: the bins'
    described lithology (indexed like ``table``), drawn as a strip when given. Imputed values
    are orange dots, values outside the training range red crosses; the clusters are labelled
    by their top lithology on the training run's test bins (``cluster_top_lithology``)."""
    rows = np.flatnonzero(table["borehole_id"].astype(str).to_numpy() == str(borehole_id))
    if rows.size == 0:
        raise ValueError(f"borehole {borehole_id!r} has no predicted bins")
    part = table.iloc[rows].sort_values("depth_m", kind="stable")
    if scales is None:
        scales = axis_scales(table[list(features)])
    clusters = part["cluster"].to_numpy().astype(np.int64)
    labels = {}
    if "cluster_top_lithology" in part:
        first = pd.DataFrame({"cluster": clusters, "top": label_text(part["cluster_top_lithology"].to_numpy())
                              }).drop_duplicates("cluster")  # one name per cluster (the bundle's)
        labels = {c: (f"{c}: {t}" if isinstance(t, str) else f"{c}")
                  for c, t in zip(first["cluster"].tolist(), first["top"].tolist())}
    predicted = next((c for c in part.columns if c.startswith("predicted_")), None)
    return _draw(part.reset_index(drop=True), list(features), path, borehole_id=borehole_id, units=units,
                 depth_unit=depth_unit, scales=scales,
                 lithology=None if described is None else label_text(described.loc[part.index].to_numpy()),
                 predicted=None if predicted is None else label_text(part[predicted].to_numpy()),
                 clusters=clusters, labels=labels, anomaly="anomaly_percentile" in part,
                 title_note="  (orange: imputed, red x: outside the training range)")
