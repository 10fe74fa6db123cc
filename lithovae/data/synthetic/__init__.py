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
writes the files (:func:`generate_raw`), or hands the same tables to a build that bins them
without writing them (:func:`generate_tables`: what ``data=synthetic`` does).
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.csv as pacsv

from lithovae.data.schema import INSTRUMENTS
from lithovae.data.synthetic.calibration import SCALES
# generate_tables looks _hole_tables up here, so tests can patch it on this package
from lithovae.data.synthetic.generator import _hole_tables, _layout, _schema

__all__ = ["GENERATOR_VERSION", "SCALES", "generate_raw", "generate_tables", "summary"]

GENERATOR_VERSION = 1


def _checked_layout(scale: str, seed: int):
    if scale not in SCALES:
        raise ValueError(f"unknown synthetic scale {scale!r}; choose one of {sorted(SCALES)}")
    return _layout(SCALES[scale], seed)


def generate_tables(scale: str = "small", seed: int = 0):
    """The synthetic boreholes one by one: for each, {instrument name: ``pa.Table`` with the
    columns of its ``*_DataLITH.csv`` file}. What :func:`generate_raw` writes; a build bins
    them without writing them (:func:`lithovae.data.builder.build_from_tables`)."""
    lay = _checked_layout(scale, seed)  # a bad scale fails here, before anything is written
    return (_hole_tables(lay, h, seed) for h in lay.holes)


def summary(scale: str, seed: int, rows: dict) -> dict:
    """What a generation made: the generator, its scale and seed, the boreholes by kind, and
    ``rows`` (per instrument file)."""
    kinds = [h.kind for h in _checked_layout(scale, seed).holes]
    return {
        "generator": "lithovae.data.synthetic", "generator_version": GENERATOR_VERSION,
        "synthetic": True, "scale": scale, "seed": seed,
        "boreholes": len(kinds),
        "boreholes_by_kind": {k: kinds.count(k) for k in ("camera", "no_camera", "no_ngr")},
        "rows": rows,
    }


def generate_raw(raw_dir: Path, scale: str = "small", seed: int = 0) -> dict:
    """Write synthetic GRA/MS/NGR/RGB ``*_DataLITH.csv`` files into ``raw_dir``.

    Same scale and seed give byte-identical files. Each file is written under a
    temporary name and renamed when complete. Returns a summary of what was written.
    """
    holes = generate_tables(scale, seed)
    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    final = {name: raw_dir / inst.filename for name, inst in INSTRUMENTS.items()}
    tmp = {name: p.with_name(f".{p.name}.{os.getpid()}.tmp") for name, p in final.items()}
    writers: dict[str, pacsv.CSVWriter] = {}
    rows = dict.fromkeys(INSTRUMENTS, 0)
    try:
        for name in INSTRUMENTS:
            writers[name] = pacsv.CSVWriter(str(tmp[name]), _schema(name))
        for hole in holes:
            for name, table in hole.items():
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
    return summary(scale, seed, {INSTRUMENTS[n].filename: r for n, r in rows.items()})
