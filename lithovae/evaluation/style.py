"""What every figure shares: the categorical palette, the "other" grey, and the note and PNG
metadata that say whether the data are synthetic.

The palette: tab10 without its grey (kept for "other"), then 11 saturated colours chosen greedily
from Set1, Dark2, tab20b/c, Paired, Kelly's colours of maximum contrast and black, each the
farthest (CIE L*a*b*) from those before it and from the grey, none pale (L* <= 75 and chroma >= 30,
or dark). Any two differ by at least 26 ΔE*ab. Categories are coloured most frequent first, so
the commonest get tab10's familiar colours; those beyond the palette are grey "other".
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.colors import to_rgb, to_rgba

# not at the top: PIL is imported inside the function that stamps an image: drawing needs no PIL

DISTINCT = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22",
            "#17becf", "#000000", "#637939", "#a6761d", "#f99379", "#1b9e77", "#e7298a", "#2b3d26",
            "#393b79", "#b3446c", "#e6ab02", "#882d17")
OTHER = "other"
OTHER_COLOUR = "#c8c8c8"
META_KEY = "lithovae:figure"  # PNG text chunk: JSON with at least {"synthetic": bool}
SYNTHETIC_NOTE = "SYNTHETIC data, not a real-data result"


def categorical(n: int) -> list:
    """RGBA colours of the ``n`` most frequent categories, most frequent first: the palette's
    colours, then "other" grey for those beyond it (which a figure names as "other")."""
    return [to_rgba(DISTINCT[i]) if i < len(DISTINCT) else to_rgba(OTHER_COLOUR) for i in range(n)]


def cluster_colours(ids) -> list:
    """Colour per cluster id, fixed by the id (the same cluster has the same colour in every
    figure of a run); ids beyond the palette (k > 20) are grey."""
    return [to_rgba(DISTINCT[int(i)]) if 0 <= int(i) < len(DISTINCT) else to_rgba(OTHER_COLOUR) for i in ids]


def lab(colour) -> np.ndarray:
    """CIE L*a*b* (D65) of a matplotlib colour: where colour distances are perceptual."""
    rgb = np.asarray(to_rgb(colour))
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ linear
    xyz = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def mark_synthetic(fig, synthetic: bool) -> None:
    """A figure of synthetic data says so, in red in its lower right corner."""
    if synthetic:
        fig.text(0.995, 0.005, SYNTHETIC_NOTE, ha="right", va="bottom", fontsize=9, color="#d62728",
                 weight="bold")


def shows_synthetic(fig) -> bool:
    """Whether ``fig`` says, in a text or its title, that its data are synthetic."""
    texts = [t.get_text() for t in fig.texts] + [getattr(fig, "_suptitle", None) and fig._suptitle.get_text()]
    return any(text and "SYNTHETIC" in text for text in texts)


def metadata(fig, synthetic: bool, **more) -> dict:
    """The PNG text chunks of ``fig``: :data:`META_KEY` (JSON: ``synthetic``, whether the figure
    shows it, ``more``) and a plain ``Description``."""
    meta = {"synthetic": bool(synthetic), "shows_synthetic": shows_synthetic(fig), **more}
    return {META_KEY: json.dumps(meta, default=str),
            "Description": SYNTHETIC_NOTE if synthetic else "lithovae figure"}


def read_figure_metadata(path: str | Path) -> dict:
    """The :data:`META_KEY` JSON a figure saved in its PNG."""
    from PIL import Image

    with Image.open(path) as image:
        return json.loads(image.text[META_KEY])


def order_by_frequency(names: Sequence, counts) -> list:
    """``names`` most frequent first (ties by name): the order :func:`categorical` colours."""
    return sorted(names, key=lambda n: (-counts[n], str(n)))
