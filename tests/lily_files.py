"""Small LILY-format raw files written by hand, for builder tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lithovae.data.schema import INSTRUMENTS, LITHOLOGY_COLUMNS, LOCATION_COLUMNS


def lily_frame(inst_name: str, rows: list[dict]) -> pd.DataFrame:
    """A frame in the exact column order of a LILY file; ``rows`` give exp/site/hole/depth,
    measurement values by feature name, and principal (others blank)."""
    inst = INSTRUMENTS[inst_name]
    columns = LOCATION_COLUMNS + list(inst.columns) + LITHOLOGY_COLUMNS
    records = []
    for r in rows:
        rec = {c: "" for c in columns}
        rec.update({"Exp": r.get("exp", "900"), "Site": r.get("site", "U1"), "Hole": r.get("hole", "A"),
                    "Core": 1, "Type": "H", "Sect": "1", "A/W": "A", "Offset (cm)": 0,
                    "Depth CSF-A (m)": r["depth"], "Depth CSF-B (m)": r["depth"],
                    "Principal": r.get("principal", "clay"), "Prefix": r.get("prefix", ""),
                    "Suffix": r.get("suffix", ""), "Full Lithology": r.get("principal", "clay")})
        for raw_col, feat in inst.columns.items():
            rec[raw_col] = r.get(feat, "")
        records.append(rec)
    return pd.DataFrame(records, columns=columns)


def write_lily(raw_dir: Path, frames: dict[str, pd.DataFrame]) -> Path:
    raw_dir.mkdir(parents=True, exist_ok=True)
    for name, frame in frames.items():
        frame.to_csv(raw_dir / INSTRUMENTS[name].filename, index=False)
    return raw_dir


def random_lily(raw_dir: Path, n_boreholes: int = 8, bins_per_borehole: int = 60, seed: int = 0) -> Path:
    """Several boreholes with three lithologies whose measurements differ, every
    instrument sampled twice per 20 cm bin."""
    rng = np.random.default_rng(seed)
    liths = {"clay": (1.6, 30, 40, 80), "nannofossil ooze": (1.5, -2, 10, 160), "basalt": (2.7, 900, 5, 40)}
    rows = []
    for b in range(n_boreholes):
        names = rng.choice(list(liths), size=bins_per_borehole // 10)
        for i in range(bins_per_borehole * 2):
            depth = round(i * 0.1, 3)
            principal = names[min(i // 20, len(names) - 1)]
            gra, ms, ngr, rgb = liths[principal]
            rows.append({"exp": "368X" if b % 2 else str(350 + b), "site": f"U{1500 + b}", "hole": "A",
                         "depth": depth, "principal": principal,
                         "GRA": gra + rng.normal(0, 0.05), "MS": ms + rng.normal(0, 5),
                         "NGR": ngr + rng.normal(0, 2), "R": rgb + rng.normal(0, 5),
                         "G": rgb * 0.95 + rng.normal(0, 5), "B": rgb * 0.9 + rng.normal(0, 5)})
    return write_lily(raw_dir, {name: lily_frame(name, rows) for name in INSTRUMENTS})


def built_random_lily(tmp: Path, build: dict, **random) -> Path:
    """The dataset the builder makes of :func:`random_lily` files (``random``: its options),
    with the train config's ``data.build`` options: its Parquet path."""
    from lithovae.data.builder import BuildOptions, build_dataset

    raw = random_lily(tmp / "raw", **random)
    return build_dataset(raw, tmp / "out", BuildOptions(**build, encoding="utf-8"), log=lambda *a: None).path
