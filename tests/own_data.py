"""A generated set of own well logs, nothing of LILY in it: North Sea-like wells with five curves
(gamma ray, density, neutron, sonic, deep resistivity), ten numeric lithology codes, curves
missing over intervals and a third of the bins unlabeled, written both as a folder of LAS 2.0
files and as one CSV table of the same samples (the same wells, the same ids).

    data = north_sea_like(tmp_path)
    python -m lithovae.train data=las data.path={data.las_dir} data.label=LITH \
        'data.features=[GR,RHOB,NPHI,DTC,RDEP]'
    python -m lithovae.train data=table data.path={data.table} data.borehole=WELL \
        data.depth=DEPTH_MD data.label=LITHOLOGY 'data.features=[GR,RHOB,NPHI,DTC,RDEP]'
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

CURVES = ("GR", "RHOB", "NPHI", "DTC", "RDEP")
UNITS = {"DEPT": "M", "GR": "GAPI", "RHOB": "G/C3", "NPHI": "V/V", "DTC": "US/F", "RDEP": "OHMM",
         "LITH": ""}
# numeric lithology codes as in the FORCE 2020 Norwegian-sea labels, and what they are
NAMES = {30000: "Sandstone", 65000: "Shale", 65030: "Sandstone/Shale", 70000: "Limestone",
         70032: "Chalk", 74000: "Dolomite", 80000: "Marl", 86000: "Anhydrite", 88000: "Halite",
         90000: "Coal"}
CODES = tuple(NAMES)
GROUPS = {"Sandstone": "clastic", "Shale": "clastic", "Sandstone/Shale": "clastic",
          "Limestone": "carbonate", "Chalk": "carbonate", "Dolomite": "carbonate", "Marl": "carbonate",
          "Anhydrite": "evaporite", "Halite": "evaporite", "Coal": "organic"}
# per code: mean GR (API), RHOB (g/cm3), NPHI (v/v), DTC (us/ft), log10 RDEP (ohm.m)
RESPONSE = np.array([[45, 2.30, 0.18, 85, 1.2], [110, 2.50, 0.33, 105, 0.3], [80, 2.40, 0.25, 95, 0.7],
                     [30, 2.65, 0.08, 60, 1.8], [20, 2.35, 0.22, 75, 0.9], [25, 2.80, 0.05, 50, 2.2],
                     [70, 2.55, 0.20, 80, 0.8], [15, 2.95, 0.01, 50, 3.0], [10, 2.05, 0.00, 67, 3.5],
                     [60, 1.40, 0.45, 120, 2.0]], dtype=float)
NOISE = np.array([8, 0.04, 0.025, 5, 0.15])
STEP = 0.1524  # metres: the logging step (6 in)
NULL = -999.25


@dataclass
class OwnData:
    las_dir: Path
    table: Path
    wells: list[str]
    frame: pd.DataFrame  # every sample: WELL, DEPTH_MD, the curves (NaN: missing), LITHOLOGY (NaN: none)


def north_sea_like(root: Path, n_wells: int = 15, samples: int = 240, seed: int = 0) -> OwnData:
    """``n_wells`` wells of ``samples`` logging steps each (``STEP`` m), seeded. Lithology comes in
    beds of 5 to 30 samples, each well with its own mix of the ten codes (all ten occur in
    the set); the top third of every well, and some beds below, are unlabeled; DTC is missing
    over an interval of every third well and NPHI in scattered samples."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    frames = []
    for w in range(n_wells):
        mix = rng.dirichlet(np.full(len(CODES), 0.7))
        mix[w % len(CODES)] += 0.3  # every code is common somewhere
        mix /= mix.sum()
        beds, codes = 0, []
        while beds < samples:
            length = int(rng.integers(5, 31))
            codes += [int(rng.choice(len(CODES), p=mix))] * length
            beds += length
        code = np.array(codes[:samples])
        values = RESPONSE[code] + rng.normal(0, 1, (samples, len(CURVES))) * NOISE
        values[:, 4] = 10 ** values[:, 4]  # resistivity spans decades
        if w % 3 == 0:
            start = int(rng.integers(samples // 3, samples // 2))
            values[start:start + samples // 5, CURVES.index("DTC")] = np.nan
        values[rng.random(samples) < 0.04, CURVES.index("NPHI")] = np.nan
        label = np.array([CODES[c] for c in code], dtype=float)
        label[: samples // 3] = np.nan
        label[(code == code[samples // 2]) & (rng.random(samples) < 0.1)] = np.nan
        frame = pd.DataFrame(values, columns=list(CURVES))
        frame.insert(0, "DEPTH_MD", np.round(1500.0 + np.arange(samples) * STEP, 4))
        frame.insert(0, "WELL", f"15/9-F-{w + 1}")
        frame["LITHOLOGY"] = label
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True)
    las_dir = root / "las"
    las_dir.mkdir(parents=True, exist_ok=True)
    for well, rows in frame.groupby("WELL", sort=False):
        _write_las(las_dir / f"{well.replace('/', '_')}.las", well, rows)
    table = root / "logs.csv"
    frame.to_csv(table, index=False)
    return OwnData(las_dir, table, list(frame["WELL"].unique()), frame)


def _write_las(path: Path, well: str, rows: pd.DataFrame) -> None:
    import lasio

    las = lasio.LASFile()
    las.well["WELL"].value = well
    las.well["NULL"].value = NULL
    curves = {"DEPT": rows["DEPTH_MD"], **{c: rows[c] for c in CURVES}, "LITH": rows["LITHOLOGY"]}
    for name, values in curves.items():
        las.append_curve(name, np.where(np.isnan(values.to_numpy(float)), NULL, values.to_numpy(float)),
                         unit=UNITS[name])
    las.write(str(path), version=2.0)
