"""The log figure of one predicted borehole: its feature tracks (imputed values marked), the
cluster and predicted-lithology strips, the described lithology when known, and the anomaly
score's percentile against the training bins (depth increasing downwards)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.colors import to_rgba
from matplotlib.patches import Patch

from lithovae.evaluation.figures import (OTHER_COLOUR, _bin_height, _cluster_colours, _palette, _save,
                                         _strip, _with_gaps, log_axes, rgb_colours)

MAX_TRACKS = 8
MAX_NAMES = 20  # named colours in a lithology strip; the rest are grey


def _name_strip(ax, depth, names: pd.Series, height: float, title: str, colour_of: dict) -> None:
    colours = np.array([to_rgba(colour_of.get(v, OTHER_COLOUR)) if isinstance(v, str) else (0, 0, 0, 0)
                        for v in names]).reshape(-1, 4)
    _strip(ax, depth, colours, height, title)


def prediction_log(table: pd.DataFrame, features: list[str], borehole_id, path,
                   described: pd.Series | None = None) -> Path:
    """``table``: the prediction table (rows of any boreholes); ``described``: the bins' described
    lithology (indexed like ``table``), drawn as a strip when given."""
    rows = np.flatnonzero(table["borehole_id"].astype(str).to_numpy() == str(borehole_id))
    if rows.size == 0:
        raise ValueError(f"borehole {borehole_id!r} has no predicted bins")
    part = table.iloc[rows].sort_values("depth_m", kind="stable")
    depth = part["depth_m"].to_numpy(np.float64)
    height = _bin_height(depth)
    has_rgb = all(c in features for c in ("R", "G", "B"))
    tracks = [f for f in features if not (has_rgb and f in ("R", "G", "B"))][:MAX_TRACKS]
    predicted = next((c for c in part.columns if c.startswith("predicted_")), None)
    strips = ["colour"] * has_rgb + ["cluster"] + [predicted] * (predicted is not None) \
        + ["described"] * (described is not None)
    fig, axes, legend_ax = log_axes([1.8] * len(tracks) + [0.6] * len(strips) + [1.8])  # last: anomaly
    for ax, feature in zip(axes, tracks):
        values = part[feature].to_numpy(np.float64)
        imputed = part[f"{feature}_imputed"].to_numpy(bool)
        ax.plot(*_with_gaps(depth, np.where(imputed, np.nan, values), height)[::-1], color="tab:blue", lw=0.8)
        if imputed.any():
            ax.plot(values[imputed], depth[imputed], ".", color="tab:orange", ms=2)
        outside = part[f"{feature}_out_of_range"].to_numpy(bool)
        if outside.any():
            ax.plot(values[outside], depth[outside], "x", color="tab:red", ms=4)
        ax.set_title(feature, fontsize=9)
        ax.grid(alpha=0.3)
    i = len(tracks)
    if has_rgb:
        _strip(axes[i], depth, rgb_colours(part[["R", "G", "B"]].to_numpy()), height, "colour")
        i += 1
    clusters = part["cluster"].to_numpy()
    ids = np.unique(clusters)
    cluster_colour = dict(zip(ids, _cluster_colours(ids)))
    _strip(axes[i], depth, np.array([cluster_colour[c] for c in clusters]).reshape(-1, 4), height, "cluster")
    i += 1
    named = ([part[predicted]] if predicted is not None else []) \
        + ([described.loc[part.index]] if described is not None else [])
    names = pd.concat(named).dropna() if named else pd.Series(dtype=object)
    shown = list(names.value_counts().index[:MAX_NAMES])
    colour_of = dict(zip(shown, _palette(len(shown))))
    if predicted is not None:
        _name_strip(axes[i], depth, part[predicted], height, "predicted", colour_of)
        i += 1
    if described is not None:
        _name_strip(axes[i], depth, described.loc[part.index], height, "described", colour_of)
        i += 1
    ax = axes[i]
    ax.plot(*_with_gaps(depth, part["anomaly_percentile"].to_numpy(np.float64), height)[::-1],
            color="black", lw=0.8)
    ax.axvline(99, color="tab:red", lw=0.8, ls="--")
    ax.set_xlim(0, 100)
    ax.set_title("anomaly (percentile\nof training bins)", fontsize=9)
    ax.grid(alpha=0.3)
    legend_ax.axis("off")
    clusters_legend = legend_ax.legend(
        handles=[Patch(color=cluster_colour[c], label=str(c)) for c in ids], title="cluster", fontsize=7,
        title_fontsize=8, loc="upper left", bbox_to_anchor=(0, 1), frameon=False,
        ncols=max(1, -(-len(ids) // 10)))
    if shown:
        legend_ax.add_artist(clusters_legend)
        legend_ax.legend(handles=[Patch(color=colour_of[n], label=n) for n in shown], title="lithology",
                         fontsize=7, title_fontsize=8, loc="lower left", bbox_to_anchor=(0, 0), frameon=False)
    axes[0].set_ylim(depth.max() + height, depth.min() - height)
    axes[0].set_ylabel("depth")
    fig.suptitle(f"Borehole {borehole_id}: {len(part)} bins predicted"
                 "  (orange: imputed, red x: outside the training range)", fontsize=10)
    return _save(fig, path)
