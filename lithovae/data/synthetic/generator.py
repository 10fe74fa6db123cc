"""Boreholes of the synthetic LILY: layout (holes, units, lithology probabilities), then
per hole the beds, cores, sections and measurements, as tables in the raw LILY schema."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy.signal import lfilter

from lithovae.data import reference
from lithovae.data.schema import INSTRUMENTS, LITHOLOGY_COLUMNS, LOCATION_COLUMNS
from lithovae.data.synthetic.calibration import (
    BED_PERSISTENCE, BED_SD, BED_SIGMA, COMPLETE_YIELD, CRU, FLUID_DENSITY, GRADE_AFFINITY,
    GROUP_AFFINITY, HOLE_SD, LITHIFIED, LSTAR_SD_SHARE, MIN_BED_M, MIX_MAX, NO_CAMERA_SHARES,
    NO_CAMERA_SIZE, PEL, PHYSICAL3_YIELD, POROSITY_SD_SHARE, PREFIX_P, PREFIXES,
    RGB_CORE_GAP_HARD, RGB_GAIN, RGB_GAMMA, SAMPLING, SECONDARY, SECTION_M, SETTINGS, SIL, SOFT,
    SUFFIX_P, SUFFIXES, WATER_DEPTH, WITHIN_SD, Scale, _InstrumentSampling,
)
from lithovae.data.synthetic.lithologies import _Lithologies, _lithologies

# --- layout: holes, units, lithology probabilities ---------------------------------------


@dataclass
class _Hole:
    index: int
    exp: str
    site: str
    hole: str
    kind: str             # camera | no_camera | no_ngr
    setting: int          # main setting
    top: float
    bottom: float
    lat: float
    lon: float
    water_depth: float
    unit_top: np.ndarray = None
    unit_bottom: np.ndarray = None
    unit_row: np.ndarray = None   # setting * 2 + grade
    transition_m: float = 0.0     # soft above, lithified below
    z: np.ndarray = None          # hole effects: porosity, MS, NGR, L*, G tint, B tint


@dataclass
class _Layout:
    holes: list[_Hole]
    lith: _Lithologies
    bed_cdf: np.ndarray           # rows x lithologies, cumulative bed-draw probabilities
    group_cdf: np.ndarray         # rows x groups x lithologies, within-group cumulative draws
    zref: np.ndarray              # reference depth of each lithology's MAD porosity


def _ipf(seed: np.ndarray, rows: np.ndarray, cols: np.ndarray, iterations: int = 300) -> np.ndarray:
    m = seed.astype(float).copy()
    for _ in range(iterations):
        s = m.sum(axis=1)
        m *= np.divide(rows, s, out=np.zeros_like(s), where=s > 0)[:, None]
        s = m.sum(axis=0)
        m *= np.divide(cols, s, out=np.zeros_like(s), where=s > 0)[None, :]
    return m


def _allocate_settings(rng, sizes: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """Main setting per hole, so that settings get about their share of the total size."""
    want = shares / shares.sum() * sizes.sum()
    out = np.zeros(len(sizes), dtype=np.int64)
    for i in np.argsort(-sizes, kind="stable"):
        deficit = np.maximum(want, 0.0) + 1e-9
        s = int(rng.choice(len(shares), p=deficit / deficit.sum()))
        out[i] = s
        want[s] -= sizes[i]
    return out


def _units(rng, h: _Hole):
    length = h.bottom - h.top
    if h.setting == CRU:
        tops, settings = [h.top], [CRU]
        if h.top < 5 and rng.random() < 0.4:
            cover = h.top + length * rng.uniform(0.05, 0.3)
            tops, settings = [h.top, cover], [int(rng.choice([PEL, SIL], p=[0.7, 0.3])), CRU]
    else:
        n = 1 + rng.poisson(length / 120.0)
        tops = [h.top] + sorted(rng.uniform(h.top, h.bottom, n - 1).tolist())
        settings = [h.setting if rng.random() < 0.7 else int(rng.choice(SECONDARY[h.setting]))
                    for _ in range(n)]
        if h.setting in (PEL, SIL) and rng.random() < 0.08:
            tops.append(h.bottom - length * rng.uniform(0.05, 0.2))
            settings.append(CRU)
            order = np.argsort(tops, kind="stable")
            tops, settings = [tops[i] for i in order], [settings[i] for i in order]
    frac = rng.uniform(0.4, 1.0) if h.top < 50 else rng.uniform(0.0, 0.6)
    h.transition_m = h.top + frac * length
    # split units at the soft/lithified transition
    bounds = np.array(tops + [h.bottom])
    ut, ub, row = [], [], []
    for s, a, b in zip(settings, bounds[:-1], bounds[1:]):
        if b - a <= 0:
            continue
        for lo, hi, g in ((a, min(b, h.transition_m), SOFT),
                          (max(a, h.transition_m), b, LITHIFIED)):
            if hi > lo:
                ut.append(lo)
                ub.append(hi)
                row.append(s * 2 + g)
    h.unit_top, h.unit_bottom, h.unit_row = np.array(ut), np.array(ub), np.array(row)


def _layout(scale: Scale, seed: int) -> _Layout:
    rng = np.random.default_rng([seed, 0])
    lith = _lithologies()
    ref = reference.read("lily_boreholes_complete6.csv")
    n_rows = len(SETTINGS) * 2

    # main-setting shares of complete bins implied by the affinities
    col_norm = lith.affinity / lith.affinity.sum(axis=0, keepdims=True)
    shares = (col_norm * lith.counts[None, :]).sum(axis=1)
    nocam = np.array([NO_CAMERA_SHARES.get(s, 0.0) for s in range(len(SETTINGS))])
    rest = shares * np.array([s not in NO_CAMERA_SHARES for s in range(len(SETTINGS))])
    nocam = nocam + rest / rest.sum() * (1 - nocam.sum())

    kinds = (["camera"] * scale.camera_holes + ["no_camera"] * scale.no_camera_holes
             + ["no_ngr"] * scale.no_ngr_holes)
    picks = rng.integers(0, len(ref), len(kinds))
    target_bins = ref["n_samples"].to_numpy(float)[picks] * np.exp(rng.normal(0, 0.3, len(kinds)))
    target_bins = np.maximum(target_bins * scale.length_factor, 5.0)
    kinds_arr = np.array(kinds)
    settings = np.zeros(len(kinds), dtype=np.int64)
    for kind, sh in (("camera", shares), ("no_camera", nocam), ("no_ngr", shares)):
        sel = np.flatnonzero(kinds_arr == kind)
        if len(sel):
            settings[sel] = _allocate_settings(rng, target_bins[sel], sh)

    used: set[str] = set()
    sites: dict[str, tuple] = {}
    holes = []
    for i, (kind, pick) in enumerate(zip(kinds, picks)):
        exp_no, site, letter = ref["borehole_id"].iloc[pick].split("-")
        exp = f"S{exp_no}"
        while f"{exp}-{site}-{letter}" in used:
            letter = chr(ord(letter) + 1) if letter < "Z" else "A"
            if letter == "A":
                site = f"{site}X"
        used.add(f"{exp}-{site}-{letter}")
        s = int(settings[i])
        if site not in sites:
            lo, hi = WATER_DEPTH[s]
            sites[site] = (rng.uniform(-60, 60), rng.uniform(-180, 180), rng.uniform(lo, hi))
        lat, lon, wd = sites[site]
        top = float(ref["min_depth"].iloc[pick]) * rng.uniform(0.8, 1.2)
        if kind == "no_camera":
            length = NO_CAMERA_SIZE * target_bins[i] * 0.2 / PHYSICAL3_YIELD[s]
        else:
            length = target_bins[i] * 0.2 / COMPLETE_YIELD[s]
        h = _Hole(i, exp, site, letter, kind, s, top, top + length, lat, lon,
                  wd + rng.normal(0, 1.5))
        _units(rng, h)
        holes.append(h)

    # hole effects, centred and scaled within each kind so that a seed does not shift the whole set
    z = rng.normal(0, 1, (len(holes), 6))
    for kind in set(kinds):
        sel = kinds_arr == kind
        if sel.sum() > 2:
            w = target_bins[sel] / target_bins[sel].sum()
            zk = z[sel] - w @ z[sel]
            z[sel] = zk / np.sqrt(w @ zk ** 2)
    for h, zh in zip(holes, z):
        h.z = zh

    # setting x grade rows: cored bins of the camera holes, weighted by expected yield
    row_bins = np.zeros(n_rows)
    row_depth = np.zeros(n_rows)
    for h in holes:
        if h.kind != "camera":
            continue
        yield_ = np.array([COMPLETE_YIELD[r // 2] for r in h.unit_row])
        b = (h.unit_bottom - h.unit_top) / 0.2 * yield_
        np.add.at(row_bins, h.unit_row, b)
        np.add.at(row_depth, h.unit_row, b * (h.unit_top + h.unit_bottom) / 2)
    mean_depth = np.divide(row_depth, row_bins, out=np.full(n_rows, 100.0), where=row_bins > 0)
    seed_matrix = (np.repeat(lith.affinity, 2, axis=0)
                   * GRADE_AFFINITY[np.arange(n_rows) % 2][:, lith.grade])
    cols = lith.counts / lith.counts.sum() * row_bins.sum()
    fitted = _ipf(seed_matrix * (row_bins > 0)[:, None], row_bins, cols)
    zref = (fitted * mean_depth[:, None]).sum(axis=0) / np.maximum(fitted.sum(axis=0), 1e-12)

    # bed draws: bins of a lithology = draws * mean thickness
    mean_thick = lith.bed_m * np.exp(BED_SIGMA ** 2 / 2)
    # rows without camera units still need probabilities: fall back to the seed
    probs = np.where(row_bins[:, None] > 0, fitted, seed_matrix * cols[None, :])
    draws = probs / mean_thick[None, :]
    draws /= draws.sum(axis=1, keepdims=True)
    bed_cdf = np.cumsum(draws, axis=1)
    n_groups = len(GROUP_AFFINITY)
    group_cdf = np.zeros((n_rows, n_groups, len(lith.names)))
    for g in range(n_groups):
        within = draws * (lith.group_code == g)[None, :]
        tot = within.sum(axis=1, keepdims=True)
        within = np.divide(within, tot, out=np.zeros_like(within), where=tot > 0)
        group_cdf[:, g] = np.cumsum(within, axis=1)
    return _Layout(holes, lith, bed_cdf, group_cdf, zref)


# --- one hole ---------------------------------------------------------------------------


def _draw(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, u * cdf[-1], side="right"), len(cdf) - 1)


def _beds(rng, lay: _Layout, h: _Hole):
    """Bed tops, lithology codes (Markov persistence within units), and the lithology each
    bed is partly mixed with and by how much (described lithologies are end-members)."""
    lith = lay.lith
    tops, liths, partners = [], [], []
    for a, b, row in zip(h.unit_top, h.unit_bottom, h.unit_row):
        if h.unit_bottom[-1] == b:
            b = b + 12.0  # overlap of the last core's expansion
        depth = a
        while depth < b:
            n = 16 + int((b - depth) / 1.0)
            first = _draw(lay.bed_cdf[row], rng.random(n))
            stay = rng.random(n) < BED_PERSISTENCE
            stay[0] = False
            seg_start = np.flatnonzero(~stay)
            seg = np.cumsum(~stay) - 1
            group = lith.group_code[first[seg_start]][seg]
            code = first.copy()
            u = rng.random(n)
            for g in np.unique(group[stay]):
                idx = stay & (group == g)
                code[idx] = _draw(lay.group_cdf[row, g], u[idx])
            thick = np.maximum(lith.bed_m[code] * np.exp(rng.normal(0, BED_SIGMA, n)),
                               0.8 * MIN_BED_M)
            bottoms = depth + np.cumsum(thick)
            keep = np.flatnonzero(bottoms - thick < b)
            tops.append(depth + np.concatenate([[0.0], np.cumsum(thick)[:-1]])[keep])
            liths.append(code[keep])
            partners.append(_draw(lay.bed_cdf[row], rng.random(len(keep))))
            depth = bottoms[keep[-1]]
    codes, partners = np.concatenate(liths), np.concatenate(partners)
    hard = lith.hard[codes]
    # hard rocks do not blend with sediments, and blend less among themselves
    mix = (MIX_MAX * rng.beta(1.0, 2.0, len(codes)) * (hard == lith.hard[partners])
           * np.where(hard, 0.4, 1.0))
    return np.concatenate(tops), codes, partners, mix


def _cores(rng, h: _Hole):
    """Core tops, advances, recovered lengths and types (0 APC, 1 HLAPC, 2 XCB, 3 RCB)."""
    apc_refusal = h.top + rng.uniform(120, 400) if h.setting != CRU else -1.0
    hlapc_m = rng.choice([0.0, rng.uniform(20, 80)], p=[0.5, 0.5])
    depth, out = h.top, []
    while depth < h.bottom:
        unit = min(np.searchsorted(h.unit_top, depth, side="right") - 1, len(h.unit_row) - 1)
        hard = h.unit_row[max(unit, 0)] // 2 == CRU
        if hard or depth >= apc_refusal + hlapc_m:
            ctype = 3 if (hard or h.setting == CRU) else 2
            adv = 9.6
        elif depth < apc_refusal:
            ctype, adv = 0, 9.5
        else:
            ctype, adv = 1, 4.7
        if ctype in (0, 1):
            rec = rng.uniform(0.93, 1.07)
        elif ctype == 2:
            rec = np.clip(rng.normal(0.8, 0.17), 0.05, 1.02)
        else:
            rec = np.clip(rng.normal(0.45 if hard else 0.65, 0.2), 0.05, 1.0)
        out.append((depth, adv, adv * rec, ctype, hard))
        depth += adv
    a = np.array(out, dtype=float)
    return a[:, 0], a[:, 1], a[:, 2], a[:, 3].astype(np.int64), a[:, 4].astype(bool)


def _sections(rec_len: np.ndarray):
    n = np.maximum(np.ceil(rec_len / SECTION_M - 1e-9).astype(np.int64), 1)
    core = np.repeat(np.arange(len(n)), n)
    k = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    top = k * SECTION_M
    length = np.minimum(rec_len[core] - top, SECTION_M)
    return core, top, length, k + 1


def _positions(sec_len: np.ndarray, s: _InstrumentSampling, measured: np.ndarray):
    usable = sec_len * 100 - s.skip_top_cm - s.skip_bottom_cm
    n = np.where(measured & (usable >= 0),
                 np.floor(usable / s.interval_cm + 1e-9).astype(np.int64) + 1, 0)
    sec = np.repeat(np.arange(len(n)), n)
    k = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    return sec, s.skip_top_cm + k * s.interval_cm


def _ar1(rng, n: int, step_m: float, corr_m: float) -> np.ndarray:
    a = np.exp(-step_m / corr_m)
    return lfilter([np.sqrt(1 - a * a)], [1, -a], rng.normal(0, 1, n))


def _blue_shift(lstar: np.ndarray) -> np.ndarray:
    """Dark sediments are greyer, mid-tones browner (relative blue by lightness)."""
    return 1 + 0.02 * np.exp(-((lstar - 33) / 5) ** 2) - 0.04 * np.exp(-((lstar - 44) / 5) ** 2)


def _hole_tables(lay: _Layout, h: _Hole, seed: int) -> dict[str, pa.Table]:
    rng = np.random.default_rng([seed, 1, h.index])
    lith = lay.lith
    bed_top, code, partner, mix = _beds(rng, lay, h)
    nb = len(code)
    bed_mid = np.append((bed_top[:-1] + bed_top[1:]) / 2, bed_top[-1] + 0.5)

    def blend(values: np.ndarray) -> np.ndarray:
        own, other = values[code], values[partner]
        m = mix if own.ndim == 1 else mix[:, None]
        return (1 - m) * own + m * other

    # bed properties
    hole_z = h.z
    bed_comp = rng.normal(0, 1, nb)  # shared "terrigenous" factor of a bed
    def compacted(c: np.ndarray) -> np.ndarray:
        return lith.porosity[c] * np.exp(-(bed_mid - lay.zref[c]) / lith.compaction_m[c])

    por_ref = (1 - mix) * compacted(code) + mix * compacted(partner)
    por_sd = POROSITY_SD_SHARE * lith.porosity_sd[code]
    bed_por = por_ref + por_sd * (HOLE_SD * hole_z[0] + BED_SD * rng.normal(0, 1, nb))
    bed_grain = blend(lith.grain) + lith.grain_sd[code] * 0.7 * rng.normal(0, 1, nb)
    ms_sd, ngr_sd = lith.ms_sd[code], lith.ngr_sd[code]
    ms_diamag = blend(lith.ms_diamag)
    bed_ms = (blend(np.log(lith.ms_median)) + ms_sd * HOLE_SD * hole_z[1]
              + ms_sd * BED_SD * (0.6 * bed_comp + 0.8 * rng.normal(0, 1, nb)))
    bed_ngr = (blend(np.log(lith.ngr_median)) + ngr_sd * HOLE_SD * hole_z[2]
               + ngr_sd * BED_SD * (0.6 * bed_comp + 0.8 * rng.normal(0, 1, nb)))
    l_sd = LSTAR_SD_SHARE * lith.lstar_rsd[code]
    bed_l = blend(np.log(lith.lstar)) + l_sd * HOLE_SD * hole_z[3] + l_sd * BED_SD * (
        -0.5 * bed_comp + 0.87 * rng.normal(0, 1, nb))
    bed_tint = blend(lith.tint) * np.exp(np.column_stack([
        np.zeros(nb), 0.012 * hole_z[4] + 0.01 * rng.normal(0, 1, nb),
        0.03 * hole_z[5] + 0.025 * rng.normal(0, 1, nb)]))

    # depth-scale variation on a 2 cm grid
    grid_top = bed_top[0]
    n_grid = int((h.bottom + 14.0 - grid_top) / 0.02) + 2
    comp = _ar1(rng, n_grid, 0.02, 0.4)
    poro = _ar1(rng, n_grid, 0.02, 0.3)
    light = _ar1(rng, n_grid, 0.02, 0.3)

    # cores, sections and which instrument measured what
    core_top, advance, rec_len, ctype, hard = _cores(rng, h)
    n_cores = len(core_top)
    fill = np.where(ctype >= 2, 1.0 - np.abs(rng.normal(0.015, 0.01, n_cores)), 1.0)
    sec_core, sec_top, sec_len, sec_no = _sections(rec_len)
    squeeze = np.minimum(1.0, advance / rec_len)

    strings = _hole_strings(rng, lay, h, code, bed_mid, ctype, sec_no)
    out = {}
    for name, s in SAMPLING.items():
        core_ok = rng.random(n_cores) >= s.core_gap_p
        if name == "RGB":
            core_ok &= ~(hard & (rng.random(n_cores) < RGB_CORE_GAP_HARD))
            if h.kind == "no_camera":
                core_ok[:] = False
        if name == "NGR" and h.kind == "no_ngr":
            core_ok[:] = False
        measured = core_ok[sec_core] & (rng.random(len(sec_core)) >= s.section_gap_p)
        sec, offset = _positions(sec_len, s, measured)
        core = sec_core[sec]
        in_core = sec_top[sec] + offset / 100
        depth_a = core_top[core] + in_core
        depth_b = core_top[core] + in_core * squeeze[core]
        bed = np.clip(np.searchsorted(bed_top, depth_b, side="right") - 1, 0, nb - 1)
        gi = np.clip(((depth_b - grid_top) / 0.02).astype(np.int64), 0, n_grid - 1)
        n = len(bed)
        if name in ("GRA", "NGR"):
            por = np.clip(bed_por[bed] + WITHIN_SD * por_sd[bed] * poro[gi], 0.003, 0.95)
        if name == "GRA":
            rho = bed_grain[bed] * (1 - por) + FLUID_DENSITY * por
            values = [rho * fill[core] + rng.normal(0, 0.012, n)]
            void = rng.random(n) < np.where(ctype[core] >= 2, 0.04, 0.008)
            values[0][void] *= rng.uniform(0.05, 0.9, void.sum())
        elif name == "MS":
            ms = np.exp(bed_ms[bed] + WITHIN_SD * ms_sd[bed] * comp[gi]) + ms_diamag[bed]
            values = [ms * fill[core] + rng.normal(0, 0.6, n)]
        elif name == "NGR":
            ngr = np.exp(bed_ngr[bed] + WITHIN_SD * ngr_sd[bed] * comp[gi])
            ngr *= (1 - por) / np.maximum(1 - np.clip(por_ref[bed], 0.003, 0.95), 0.05)
            values = [ngr + rng.normal(0, 0.4, n) * (1 + 0.03 * ngr)]
        else:
            lstar = np.exp(bed_l[bed] + WITHIN_SD * l_sd[bed] * (0.8 * light[gi] - 0.6 * comp[gi]))
            v = RGB_GAIN * (lstar / 100) ** RGB_GAMMA
            tint = bed_tint[bed] * np.column_stack([np.ones(n), np.ones(n), _blue_shift(lstar)])
            values = [np.clip(v * tint[:, j] + rng.normal(0, 1.2, n), 0.0, 255.0)
                      for j in range(3)]
        out[name] = _table(name, strings, core, sec, offset, depth_a, depth_b, bed, values)
    return out


def _hole_strings(rng, lay: _Layout, h: _Hole, code, bed_mid, ctype, sec_no) -> dict:
    lith = lay.lith
    nb = len(code)
    prefix, suffix, full, consolidation = [], [], [], []
    u = rng.random((nb, 4))
    for i, c in enumerate(code):
        name, group = lith.names[c], lith.groups[c]
        pre_opts, suf_opts = PREFIXES.get(group), SUFFIXES.get(group)
        pre = pre_opts[int(u[i, 2] * len(pre_opts))] if pre_opts and u[i, 0] < PREFIX_P else ""
        suf = suf_opts[int(u[i, 3] * len(suf_opts))] if suf_opts and u[i, 1] < SUFFIX_P else ""
        prefix.append(pre)
        suffix.append(suf)
        full.append(" ".join(p for p in (pre, name, suf) if p))
        grade = lith.grade[c]
        if grade != SOFT:
            consolidation.append("consolidated")
        elif u[i, 0] > 0.97:
            consolidation.append("indeterminate")
        elif bed_mid[i] > h.transition_m or u[i, 1] > 0.95:
            consolidation.append("partially consolidated")
        else:
            consolidation.append("unconsolidated")
    return {
        "Exp": pa.array([h.exp]), "Site": pa.array([h.site]), "Hole": pa.array([h.hole]),
        "Type": pa.array(np.array(["H", "F", "X", "R"])[ctype]),
        "Expanded Core Type": pa.array(np.array(["APC", "HLAPC", "XCB", "RCB"])[ctype]),
        "Sect": pa.array(sec_no.astype(str)),
        "Prefix": pa.array(prefix), "Principal": pa.array([lith.names[c] for c in code]),
        "Suffix": pa.array(suffix), "Full Lithology": pa.array(full),
        "Simplified Lithology": pa.array([lith.simplified[c] for c in code]),
        "Lithology Type": pa.array([lith.lith_type[c] for c in code]),
        "Degree of Consolidation": pa.array(consolidation),
        "Lithology Subtype": pa.array([lith.subtype[c] for c in code]),
        "Water Depth (mbsl)": pa.array([f"{h.water_depth:.2f}"]),
        "lat": round(h.lat, 6), "lon": round(h.lon, 6),
    }


def _round(x: np.ndarray, decimals: int) -> pa.Array:
    return pa.array(np.round(x, decimals) + 0.0)  # + 0.0 turns -0.0 into 0.0


def _table(name, strings, core, sec, offset, depth_a, depth_b, bed, values) -> pa.Table:
    n = len(core)
    zeros = pa.array(np.zeros(n, dtype=np.int64))
    bed_idx, core_idx, sec_idx = pa.array(bed), pa.array(core), pa.array(sec)
    inst = INSTRUMENTS[name]
    decimals = {"GRA": 3, "MS": 2, "NGR": 2, "RGB": 2}[name]
    cols = {
        "Exp": pc.take(strings["Exp"], zeros), "Site": pc.take(strings["Site"], zeros),
        "Hole": pc.take(strings["Hole"], zeros), "Core": pa.array(core + 1),
        "Type": pc.take(strings["Type"], core_idx), "Sect": pc.take(strings["Sect"], sec_idx),
        "A/W": pc.take(pa.array([SAMPLING[name].half]), zeros),
        "Offset (cm)": _round(offset, 1),
        "Depth CSF-A (m)": _round(depth_a, 3), "Depth CSF-B (m)": _round(depth_b, 3),
    }
    for col, v in zip(inst.columns, values):
        cols[col] = _round(v, decimals)
    for col in LITHOLOGY_COLUMNS[:8]:
        cols[col] = pc.take(strings[col], bed_idx)
    cols["Expanded Core Type"] = pc.take(strings["Expanded Core Type"], core_idx)
    cols["Latitude (DD)"] = pa.array(np.full(n, strings["lat"]))
    cols["Longitude (DD)"] = pa.array(np.full(n, strings["lon"]))
    cols["Water Depth (mbsl)"] = pc.take(strings["Water Depth (mbsl)"], zeros)
    return pa.table(cols, schema=_schema(name))


@lru_cache(maxsize=None)
def _schema(name: str) -> pa.Schema:
    types = {"Core": pa.int64(), "Offset (cm)": pa.float64(), "Depth CSF-A (m)": pa.float64(),
             "Depth CSF-B (m)": pa.float64(), "Latitude (DD)": pa.float64(),
             "Longitude (DD)": pa.float64()}
    types.update({c: pa.float64() for c in INSTRUMENTS[name].columns})
    columns = LOCATION_COLUMNS + list(INSTRUMENTS[name].columns) + LITHOLOGY_COLUMNS
    return pa.schema([(c, types.get(c, pa.string())) for c in columns])

