"""Synthetic LILY: raw ``*_DataLITH.csv`` files calibrated to the real database.

SYNTHETIC benchmark data, never a real-data result. The real LILY files cannot be
downloaded here, so :func:`generate_raw` writes GRA, MS, NGR and RGB files in the
exact published schema, shaped after the reference figures in
``lithovae/data/reference`` (see its README):

* boreholes bootstrap the rows of ``lily_boreholes_complete6.csv`` (sizes, top
  depths), cored by APC/HLAPC/XCB/RCB with realistic recovery and 1.5 m sections;
* each hole is a stack of units in one of five depositional settings; lithologies
  come in beds with Markov persistence, drawn from a setting x lithology matrix
  fitted by iterative proportional fitting to the 139 real class counts;
* GRA from grain density and compacting porosity (MAD table), MS and NGR
  log-normal per lithology family, RGB from reflectance L* with a reddish tint;
  hole-, bed- and depth-scale variation plus instrument noise;
* missingness tied to lithology and coring: holes without camera (mostly oceanic
  crust), holes without NGR, RGB/NGR gaps per core and section.

The calibration figures are in :mod:`.calibration`, the lithology table in
:mod:`.lithologies`, the holes and their measurements in :mod:`.generator`; this module
writes the files.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.csv as pacsv

from lithovae.data.schema import INSTRUMENTS
from lithovae.data.synthetic.calibration import SCALES
# generate_raw looks _hole_tables up here, so tests can patch it on this package
from lithovae.data.synthetic.generator import _hole_tables, _layout, _schema

__all__ = ["GENERATOR_VERSION", "SCALES", "generate_raw"]

GENERATOR_VERSION = 1


def generate_raw(raw_dir: Path, scale: str = "small", seed: int = 0) -> dict:
    """Write synthetic GRA/MS/NGR/RGB ``*_DataLITH.csv`` files into ``raw_dir``.

    Same scale and seed give byte-identical files. Each file is written under a
    temporary name and renamed when complete. Returns a summary of what was written.
    """
    if scale not in SCALES:
        raise ValueError(f"unknown synthetic scale {scale!r}; choose one of {sorted(SCALES)}")
    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    lay = _layout(SCALES[scale], seed)
    final = {name: raw_dir / inst.filename for name, inst in INSTRUMENTS.items()}
    tmp = {name: p.with_name(f".{p.name}.{os.getpid()}.tmp") for name, p in final.items()}
    writers: dict[str, pacsv.CSVWriter] = {}
    rows = dict.fromkeys(INSTRUMENTS, 0)
    try:
        for name in INSTRUMENTS:
            writers[name] = pacsv.CSVWriter(str(tmp[name]), _schema(name))
        for h in lay.holes:
            for name, table in _hole_tables(lay, h, seed).items():
                writers[name].write_table(table)
                rows[name] += table.num_rows
        for w in writers.values():
            w.close()
        for name in INSTRUMENTS:
            os.replace(tmp[name], final[name])
    except BaseException:
        for w in writers.values():
            try:
                w.close()
            except Exception:
                pass
        for p in tmp.values():
            p.unlink(missing_ok=True)
        raise
    kinds = [h.kind for h in lay.holes]
    return {
        "generator": "lithovae.data.synthetic", "generator_version": GENERATOR_VERSION,
        "synthetic": True, "scale": scale, "seed": seed,
        "boreholes": len(lay.holes),
        "boreholes_by_kind": {k: kinds.count(k) for k in ("camera", "no_camera", "no_ngr")},
        "rows": {INSTRUMENTS[n].filename: r for n, r in rows.items()},
    }
