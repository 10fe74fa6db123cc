"""Build the binned LILY dataset from raw ``*_DataLITH.csv`` files.

One path for real and synthetic data: each instrument file is streamed in
blocks (only the needed columns), reduced to per-bin sums and lithology votes,
then the instruments are joined on (borehole, bin). Peak memory is bounded by
the number of bins, not the size of the raw files.

Binning follows the study, ``round(depth / bin_size) * bin_size``, with one
documented choice: a depth exactly on a bin edge goes to the deeper bin
(half-up, after rounding the ratio to 1e-9 so 0.3/0.2 counts as an edge).

Rows that cannot be used are dropped and counted per instrument in the manifest
(``steps.instruments``): missing depth or id, a NaN measurement, an ``inf``/``-inf``
measurement (``dropped_nonfinite``), one beyond ``±1e12`` (``dropped_beyond_max_abs``,
see :data:`~lithovae.data.schema.MAX_ABS_VALUE`; always on, whatever the feature) and,
with ``outlier_filter``, one outside the physical GRA/RGB range (``dropped_outlier``).
A measurement column with no usable value at all is an error naming the file and column.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import re
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from lithovae.checks import check_options, non_negative, positive
from lithovae.data import reference
from lithovae.data.errors import BuildError
from lithovae.data.schema import (DEPTH_COLUMN, FEATURE_SETS, ID_COLUMNS, LABEL_COLUMNS,
                                  MAX_ABS_VALUE, Instrument, instruments_for)
from lithovae.files import atomic_write, file_digest

# not at the top: pyarrow.parquet is imported inside the writer: reading the options needs no
# pyarrow

BUILDER_VERSION = 2  # bump when the output of the same inputs and options changes (2: inf, |x| > 1e12)
_SEP = "\x1f"  # joins the four label strings into one vote key


@dataclass(kw_only=True)
class BuildOptions:
    """The ``data.build`` options (and ``data.encoding``). The options the YAML sets are
    required keywords: their defaults are written once, in ``lithovae/conf/data/*.yaml``;
    only the options no YAML sets (the physical ranges, the block size) have one here."""

    feature_set: str
    # metadata "check": the range, checked here and by the train config (lithovae.checks)
    bin_size: float = field(metadata={"check": positive})
    # fill a missing instrument from the nearest bin within this distance (m); v2.6.8 used 0.2
    depth_tolerance: float = field(metadata={"check": non_negative})
    # keep bins lacking some features, as NaN (v2.15); `require` lists those that must be present
    keep_incomplete: bool
    require: list[str]
    # the study's outlier filter on raw rows
    outlier_filter: bool
    gra_range: tuple[float, float] = (0.3, 4.0)
    rgb_range: tuple[float, float] = (0.0, 255.0)
    block_size_mb: int = 32
    # text encoding of the raw CSV files; set from ``data.encoding`` (not a data.build key)
    encoding: str

    @classmethod
    def from_config(cls, build: dict | None, *, encoding: str) -> "BuildOptions":
        """Options from the ``data.build`` config and ``data.encoding``; an unknown or a
        missing key is named in the error."""
        build = build or {}
        known = [f.name for f in fields(cls) if f.name != "encoding"]
        for key in build:
            if key not in known:
                raise BuildError(f"data.build.{key}: unknown key (known: {', '.join(known)})")
        missing = [f.name for f in fields(cls) if f.name != "encoding" and f.name not in build
                   and f.default is MISSING and f.default_factory is MISSING]
        if missing:
            raise BuildError(f"data.build: missing {', '.join(missing)} "
                             f"(the defaults are in lithovae/conf/data/*.yaml)")
        return cls(**build, encoding=encoding)

    def __post_init__(self):
        check_options(type(self), vars(self), "data.build.", BuildError)
        self.bin_size, self.depth_tolerance = float(self.bin_size), float(self.depth_tolerance)
        for key in ("gra_range", "rgb_range"):
            value = getattr(self, key)
            try:
                lo, hi = (float(v) for v in value)
            except (TypeError, ValueError):
                lo = hi = None
            if lo is None or not lo < hi:
                raise BuildError(f"data.build.{key} must be two numbers [low, high] with low < high, got {value!r}")
            setattr(self, key, (lo, hi))
        if self.feature_set not in FEATURE_SETS:
            raise BuildError(f"data.build.feature_set: unknown '{self.feature_set}', "
                             f"choose one of {sorted(FEATURE_SETS)}")
        bad = [f for f in self.require if f not in self.features]
        if bad:
            raise BuildError(f"data.build.require: {bad} not in feature set {self.features}")
        self.require = list(self.require)
        self.encoding = checked_encoding(self.encoding)

    @property
    def features(self) -> list[str]:
        return FEATURE_SETS[self.feature_set]

    def cache_key(self) -> str:
        payload = asdict(self)
        payload.pop("block_size_mb")  # does not change the output
        payload["builder_version"] = BUILDER_VERSION
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]


@dataclass
class BuildResult:
    path: Path
    manifest_path: Path
    manifest: dict
    rebuilt: bool


def checked_encoding(encoding) -> str:
    """``data.encoding`` as a codec name Python knows; an unknown one is named."""
    try:
        return codecs.lookup(str(encoding)).name
    except LookupError:
        raise BuildError(f"data.encoding: unknown text encoding {encoding!r} "
                         "(e.g. utf-8, latin-1, cp1252)") from None


def not_decodable(path: Path, encoding: str) -> BuildError:
    """The one-line error for a file that is not text in ``encoding``: it names the first
    bad line and byte and the ``data.encoding`` option."""
    decoder = codecs.getincrementaldecoder(encoding)()
    where = ""
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, 1):
            try:
                decoder.decode(line)
            except UnicodeDecodeError as exc:
                where = f" (line {number}, byte 0x{exc.object[exc.start]:02x})"
                break
    return BuildError(f"{path}: not {encoding} text{where}; if it is Latin-1 set data.encoding=latin-1 "
                      "(or data.encoding=<its encoding>, e.g. cp1252)")


# --- reading one instrument ------------------------------------------------------------

def _read_header(path: Path, encoding: str = "utf-8") -> list[str]:
    if not path.exists():
        raise BuildError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise BuildError(f"{path}: empty file")
    with open(path, newline="", encoding=encoding, errors="replace") as fh:
        header = next(csv.reader(fh), None)
    if not header:
        raise BuildError(f"{path}: empty file (no header)")
    return header


def _column_named_in(message: str, columns: list[str]) -> str | None:
    match = re.search(r"column #(\d+)", message)
    if match and int(match.group(1)) < len(columns):
        return columns[int(match.group(1))]
    return None


NULL_VALUES = ["", "NaN", "nan", "NA", "null"]  # read as missing (the CSV reader's null_values)


def _read_columns(inst: Instrument) -> list[str]:
    """The columns the builder reads of an instrument's file."""
    return ID_COLUMNS + [DEPTH_COLUMN] + list(inst.columns) + list(LABEL_COLUMNS)


def _iter_batches(path: Path, inst: Instrument, block_size_mb: int, encoding: str = "utf-8"):
    header = _read_header(path, encoding)
    needed = _read_columns(inst)
    missing = [c for c in needed if c not in header]
    if missing:
        raise BuildError(f"{path}: missing required column '{missing[0]}'"
                         + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    types = {c: pa.string() for c in ID_COLUMNS + list(LABEL_COLUMNS)}
    types.update({c: pa.float64() for c in [DEPTH_COLUMN, *inst.columns]})
    try:
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=block_size_mb << 20, encoding=encoding),
            convert_options=pacsv.ConvertOptions(
                include_columns=needed, column_types=types, strings_can_be_null=True,
                null_values=NULL_VALUES),
        )
        for batch in reader:
            yield batch
    except UnicodeDecodeError:
        raise not_decodable(path, encoding) from None
    except pa.ArrowInvalid as exc:
        if "invalid UTF8" in str(exc):
            raise not_decodable(path, encoding) from None
        column = _column_named_in(str(exc), header) or "?"
        detail = str(exc).split("\n")[0]
        raise BuildError(f"{path}: column '{column}': {detail}") from None


class _Codes:
    """Stable integer codes for strings seen across batches."""

    def __init__(self):
        self.index: dict[str, int] = {}

    def encode(self, arr: pa.Array) -> np.ndarray:
        enc = pc.dictionary_encode(arr).combine_chunks() if isinstance(arr, pa.ChunkedArray) \
            else pc.dictionary_encode(arr)
        lookup = np.array([self.index.setdefault(s, len(self.index))
                           for s in enc.dictionary.to_pylist()], dtype=np.int64)
        idx = enc.indices.to_numpy(zero_copy_only=False)
        return lookup[idx] if len(lookup) else idx.astype(np.int64)

    def names(self) -> list[str]:
        return list(self.index)


def bin_index(depth: np.ndarray, bin_size: float) -> np.ndarray:
    """Bin number of each depth: round(depth / bin_size), edges to the deeper bin."""
    return np.floor(np.round(depth / bin_size, 9) + 0.5).astype(np.int64)


class _InstrumentBins:
    """Per-bin sums/counts of one instrument's measurements and the lithology votes, fed batch
    by batch (record batches with the reader's columns and types: :func:`_iter_batches`, or
    :func:`tables_as_read`); ``source`` names the file (or generator) in errors."""

    def __init__(self, source, inst: Instrument, opts: BuildOptions, boreholes: _Codes,
                 votes_codes: _Codes, stats: dict):
        self.source, self.inst, self.opts, self.stats = source, inst, opts, stats
        self.boreholes, self.votes_codes = boreholes, votes_codes
        self.feats = list(inst.columns.values())
        self.sums, self.votes = [], []
        self.usable = np.zeros(len(self.feats), bool)  # per column: any finite value within MAX_ABS_VALUE

    def add(self, batch) -> None:
        inst, opts, stats = self.inst, self.opts, self.stats
        n = batch.num_rows
        stats["rows_read"] += n
        depth = batch.column(DEPTH_COLUMN).to_numpy(zero_copy_only=False)
        values = np.column_stack([batch.column(c).to_numpy(zero_copy_only=False)
                                  for c in inst.columns]).astype(np.float64)
        ids = [batch.column(c) for c in ID_COLUMNS]
        id_missing = np.zeros(n, bool)
        for col in ids:
            id_missing |= col.is_null().to_numpy(zero_copy_only=False)
        keep = ~np.isnan(depth) & ~id_missing
        stats["dropped_missing_depth_or_id"] += int(n - keep.sum())
        nan_rows = keep & np.isnan(values).any(axis=1)
        stats["dropped_nan_measurement"] += int(nan_rows.sum())
        keep &= ~nan_rows
        finite = np.isfinite(values)
        self.usable |= (finite & (np.abs(values) <= MAX_ABS_VALUE)).any(axis=0)
        nonfinite = keep & ~finite.all(axis=1)  # inf or -inf (NaN rows are gone)
        stats["dropped_nonfinite"] += int(nonfinite.sum())
        keep &= ~nonfinite
        huge = keep & (np.abs(values) > MAX_ABS_VALUE).any(axis=1)
        stats["dropped_beyond_max_abs"] += int(huge.sum())
        keep &= ~huge
        if opts.outlier_filter and inst.name in ("GRA", "RGB"):
            lo, hi = opts.gra_range if inst.name == "GRA" else opts.rgb_range
            out = keep & ((values < lo) | (values > hi)).any(axis=1)
            stats["dropped_outlier"] += int(out.sum())
            keep &= ~out
        if not keep.any():
            return
        mask = pa.array(keep)
        bh = self.boreholes.encode(pc.binary_join_element_wise(
            *[c.filter(mask) for c in ids], "-"))
        bins = bin_index(depth[keep], opts.bin_size)
        frame = pd.DataFrame({"bh": bh, "bin": bins})
        for j, f in enumerate(self.feats):
            frame[f] = values[keep, j]
        frame["n"] = 1
        self.sums.append(frame.groupby(["bh", "bin"], sort=False).sum())
        labels = [batch.column(c).filter(mask) for c in LABEL_COLUMNS]
        principal_present = labels[0].is_valid().to_numpy(zero_copy_only=False)
        key = pc.binary_join_element_wise(
            *[pc.fill_null(c, "") for c in labels], _SEP)
        vote = pd.DataFrame({"bh": bh, "bin": bins, "key": self.votes_codes.encode(key)})
        vote = vote[principal_present]
        self.votes.append(vote.groupby(["bh", "bin", "key"], sort=False).size().rename("votes"))

    def finish(self) -> tuple[pd.DataFrame, pd.Series]:
        stats, source = self.stats, self.source
        if stats["rows_read"] and not self.usable.all():
            column = list(self.inst.columns)[int(np.flatnonzero(~self.usable)[0])]
            raise BuildError(f"{source}: column '{column}' has no finite value in {stats['rows_read']} rows "
                             f"(all empty, NaN, inf or beyond ±{MAX_ABS_VALUE:g})")
        if not self.sums:
            raise BuildError(f"{source}: no usable rows (read {stats['rows_read']}, "
                             f"all dropped: missing depth/id, NaN, inf, beyond ±{MAX_ABS_VALUE:g} "
                             f"or outliers)")
        binned = pd.concat(self.sums).groupby(level=[0, 1], sort=False).sum()
        for f in self.feats:
            binned[f] = binned[f] / binned["n"]
        stats["bins"] = len(binned)
        vote_table = pd.concat(self.votes).groupby(level=[0, 1, 2], sort=False).sum()  # one per batch in sums
        return binned.rename(columns={"n": f"n_{self.inst.name}"}), vote_table


def _reduce_instrument(path: Path, inst: Instrument, opts: BuildOptions,
                       boreholes: _Codes, votes_codes: _Codes, stats: dict):
    """Per-bin sums/counts of the instrument's measurements and the lithology votes."""
    bins = _InstrumentBins(path, inst, opts, boreholes, votes_codes, stats)
    for batch in _iter_batches(path, inst, opts.block_size_mb, opts.encoding):
        bins.add(batch)
    return bins.finish()


def tables_as_read(table: pa.Table, inst: Instrument) -> pa.Table:
    """``table`` (an instrument file's columns, e.g. a generator's) as :func:`_iter_batches`
    reads them back from its CSV file: the needed columns only, ids and labels as strings with
    the reader's null values missing, depths and measurements as float64. Binning it gives what
    binning the written file gives (``tests/test_synthetic.py`` builds both)."""
    columns = {}
    for name in _read_columns(inst):
        column = table.column(name)
        if name in ID_COLUMNS or name in LABEL_COLUMNS:
            column = pc.cast(column, pa.string())
            column = pc.if_else(pc.is_in(column, value_set=pa.array(NULL_VALUES)), pa.scalar(None, pa.string()),
                                column)
        else:
            column = pc.cast(column, pa.float64())
        columns[name] = column
    return pa.table(columns)


# --- joining and labelling ------------------------------------------------------------

def _fuzzy_fill(target: pd.DataFrame, table: pd.DataFrame, max_bins: int, name: str,
                stats: dict) -> pd.DataFrame:
    """Values of ``table`` at the target bins, taking the nearest bin within max_bins."""
    left = target.reset_index()[["bh", "bin"]].sort_values("bin", kind="stable")
    right = table.reset_index().sort_values("bin", kind="stable")
    right["matched_bin"] = right["bin"]
    merged = pd.merge_asof(left, right, on="bin", by="bh", direction="nearest",
                           tolerance=max_bins)
    matched = merged["matched_bin"].notna()
    stats[f"fuzzy_filled_{name}"] = int((matched & (merged["matched_bin"] != merged["bin"])).sum())
    return merged[matched].drop(columns="matched_bin").set_index(["bh", "bin"])


def _join(tables: dict[str, pd.DataFrame], opts: BuildOptions, stats: dict) -> pd.DataFrame:
    names = list(tables)
    if opts.keep_incomplete:
        joined = pd.concat([tables[n] for n in names], axis=1, join="outer")
    elif opts.depth_tolerance > 0:
        reference_bins = tables[names[0]]
        max_bins = int(round(opts.depth_tolerance / opts.bin_size))
        joined = reference_bins
        for n in names[1:]:
            joined = joined.join(_fuzzy_fill(reference_bins, tables[n], max_bins, n, stats),
                                 how="inner")
    else:
        joined = pd.concat([tables[n] for n in names], axis=1, join="inner")
    return joined


def _modal_labels(votes: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Modal principal per bin, then the most voted prefix/suffix/full with that principal.

    Ties go to the alphabetically first label so the result is deterministic.
    """
    parts = pd.Series(keys).str.split(_SEP, expand=True)
    parts.columns = list(LABEL_COLUMNS.values())
    v = votes.reset_index()
    v = v.join(parts, on="key")
    by_principal = v.groupby(["bh", "bin", "principal"], sort=False)["votes"].sum().reset_index()
    by_principal = by_principal.sort_values(["bh", "bin", "votes", "principal"],
                                            ascending=[True, True, False, True], kind="stable")
    modal = by_principal.drop_duplicates(["bh", "bin"])[["bh", "bin", "principal"]]
    v = v.merge(modal, on=["bh", "bin", "principal"])
    v = v.sort_values(["bh", "bin", "votes", "prefix", "suffix", "full_lithology"],
                      ascending=[True, True, False, True, True, True], kind="stable")
    v = v.drop_duplicates(["bh", "bin"]).set_index(["bh", "bin"])
    return v[list(LABEL_COLUMNS.values())]


# --- inputs, cache and the entry point --------------------------------------------------

def _inputs(raw_dir: Path, instruments: list[Instrument]) -> dict[str, dict]:
    out = {}
    for inst in instruments:
        p = raw_dir / inst.filename
        if not p.exists():
            raise BuildError(f"{p}: file not found (needed for {', '.join(inst.columns.values())})")
        st = p.stat()
        out[inst.filename] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    return out


def _manifest_problem(old) -> str | None:
    """What makes a cached manifest unusable (it is read back, so any JSON may be there), or None."""
    if not isinstance(old, dict):
        return f"a JSON {type(old).__name__}, not an object"
    inputs = old.get("inputs")
    if not isinstance(inputs, dict):
        return "no 'inputs' object"
    for name, info in inputs.items():
        if not (isinstance(info, dict) and isinstance(info.get("size"), int)
                and isinstance(info.get("mtime_ns"), int) and isinstance(info.get("sha256"), str)):
            return f"inputs.{name}: not {{size, mtime_ns, sha256}}"
    if not isinstance(old.get("rows"), int) or isinstance(old.get("rows"), bool):
        return "no 'rows' count"
    output = old.get("output")
    if output is not None and not (isinstance(output, dict) and isinstance(output.get("size"), int)
                                   and isinstance(output.get("mtime_ns"), int)
                                   and isinstance(output.get("sha256"), str)):
        return "output: not {size, mtime_ns, sha256}"
    return None


def _output_record(path: Path) -> dict:
    """What the manifest records of the dataset it describes, to detect a damaged copy on use."""
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": file_digest(path)}


def _output_problem(out_path: Path, old: dict) -> str | None:
    """What is wrong with the cached dataset, or None: its Parquet footer and row count are
    read on every use, its SHA-256 only when its mtime changed (then recorded in ``old``),
    as for the inputs."""
    import pyarrow.parquet as pq

    try:
        rows = pq.read_metadata(out_path).num_rows
    except Exception as exc:  # noqa: BLE001 - truncated or garbled: whatever pyarrow raises
        return f"unreadable Parquet: {type(exc).__name__}"
    if rows != old["rows"]:
        return f"{rows} rows, its manifest says {old['rows']}"
    recorded, st = old.get("output"), out_path.stat()
    if recorded is not None:
        if st.st_size != recorded["size"]:
            return f"{st.st_size} bytes, its manifest says {recorded['size']}"
        if st.st_mtime_ns != recorded["mtime_ns"]:
            if file_digest(out_path) != recorded["sha256"]:
                return "its SHA-256 differs from its manifest's"
            recorded["mtime_ns"] = st.st_mtime_ns
    return None


def _read_manifest(manifest_path: Path, out_path: Path, log=print) -> dict | None:
    """The cached dataset's manifest if both files are there and it is well formed (it is read
    back, so any JSON may be there), else None; a damaged one is said in one line."""
    if not (manifest_path.exists() and out_path.exists()):
        return None
    try:
        old = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log(f"[lithovae.data] {manifest_path}: damaged manifest (not JSON: {type(exc).__name__}); rebuilding")
        return None
    problem = _manifest_problem(old)
    if problem:
        log(f"[lithovae.data] {manifest_path}: damaged manifest ({problem}); rebuilding")
        return None
    return old


def _cached(manifest_path: Path, out_path: Path, inputs: dict, raw_dir: Path, log=print) -> dict | None:
    """The previous manifest if the output is current for these inputs and intact, else None.
    A damaged manifest or dataset (truncated, garbled, another shape) is said in one line:
    the caller then rebuilds it."""
    old = _read_manifest(manifest_path, out_path, log)
    if old is None:
        return None
    old_inputs = old["inputs"]
    if set(old_inputs) != set(inputs):
        return None
    touched = False
    for name, info in inputs.items():
        prev = old_inputs[name]
        if prev["size"] != info["size"]:
            return None
        if prev["mtime_ns"] != info["mtime_ns"]:
            if prev["sha256"] != file_digest(raw_dir / name):
                return None
            prev["mtime_ns"], touched = info["mtime_ns"], True
    output_mtime = (old.get("output") or {}).get("mtime_ns")
    damage = _output_problem(out_path, old)
    if damage:
        log(f"[lithovae.data] {out_path}: damaged cached dataset ({damage}); rebuilding")
        return None
    if "output" not in old:  # a manifest from before outputs were recorded: record it once
        old["output"], touched = _output_record(out_path), True
    touched |= old["output"]["mtime_ns"] != output_mtime
    if touched:  # same content, new mtime (a copy or checkout): hash it once, not on every call
        atomic_write(manifest_path, lambda tmp: Path(tmp).write_text(json.dumps(old, indent=1)))
    return old


def built_dataset(out_dir: str | Path, options: BuildOptions, *, name: str, log=print) -> BuildResult | None:
    """The dataset built earlier in ``out_dir`` for these options, if it is there and intact,
    without its raw inputs (a source that can regenerate them exactly, as the synthetic one, need
    not keep them). A damaged one is said in one line and None returned: the caller rebuilds."""
    out_dir = Path(out_dir)
    stem = f"{name}_{options.feature_set}_{options.cache_key()}"
    out_path, manifest_path = out_dir / f"{stem}.parquet", out_dir / f"{stem}.manifest.json"
    old = _read_manifest(manifest_path, out_path, log)
    if old is None:
        return None
    problem = ("output" not in old and "no 'output' record") or _output_problem(out_path, old)
    if problem:
        log(f"[lithovae.data] {out_path}: damaged cached dataset ({problem}); rebuilding")
        return None
    log(f"[lithovae.data] up to date: {out_path}")
    return BuildResult(out_path, manifest_path, old, rebuilt=False)


def build_dataset(raw_dir: str | Path, out_dir: str | Path, options: BuildOptions,
                  *, name: str = "lily", force: bool = False, log=print) -> BuildResult:
    """Build (or reuse) the binned dataset of the raw files in ``raw_dir``.

    Writes ``{out_dir}/{name}_{feature_set}_{key}.parquet`` and a ``.manifest.json``
    beside it; rebuilds only when the inputs or the options change, or when the cached
    dataset or manifest is damaged (checked on every use: the Parquet footer, its row count,
    size and SHA-256 against the manifest's; said in one line).
    """
    opts = options
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    if not raw_dir.is_dir():
        raise BuildError(f"{raw_dir}: raw data directory not found")
    instruments = instruments_for(opts.features)
    inputs = _inputs(raw_dir, instruments)
    stem = f"{name}_{opts.feature_set}_{opts.cache_key()}"
    out_path = out_dir / f"{stem}.parquet"
    manifest_path = out_dir / f"{stem}.manifest.json"
    if not force and (old := _cached(manifest_path, out_path, inputs, raw_dir, log)) is not None:
        log(f"[lithovae.data] up to date: {out_path}")
        return BuildResult(out_path, manifest_path, old, rebuilt=False)

    started = time.perf_counter()
    boreholes, vote_keys = _Codes(), _Codes()
    reduced, steps = {}, {}
    for inst in instruments:
        path = raw_dir / inst.filename
        steps[inst.name] = stats = _new_stats()
        log(f"[lithovae.data] reading {path.name} ...")
        reduced[inst.name] = _reduce_instrument(path, inst, opts, boreholes, vote_keys, stats)
        inputs[inst.filename]["sha256"] = file_digest(path)
        log(f"[lithovae.data]   {stats['rows_read']:,} rows -> {stats['bins']:,} bins")
    return _write_dataset(reduced, steps, boreholes, vote_keys, inputs, opts, raw_dir, out_path, manifest_path,
                          name, started)


def _new_stats() -> dict:
    return {"rows_read": 0, "dropped_missing_depth_or_id": 0, "dropped_nan_measurement": 0,
            "dropped_nonfinite": 0, "dropped_beyond_max_abs": 0, "dropped_outlier": 0}


TABLE_ROWS_PER_BATCH = 250_000  # build_from_tables bins its tables this many rows at a time (~ a CSV block)


def build_from_tables(tables, source: str, out_dir: str | Path, options: BuildOptions, *, name: str,
                      log=print) -> BuildResult:
    """Build the binned dataset of instrument tables that exist in memory only: ``tables``
    yields dicts {instrument name: ``pa.Table`` with the columns of its ``*_DataLITH.csv``
    file} (a generator's boreholes, one by one), each binned as its file would be
    (:func:`tables_as_read`), so no raw file is written or read. ``source`` names them in
    errors and in the manifest, whose ``inputs`` are then empty: a source that builds this way
    (the synthetic one) regenerates the tables rather than check them. Always rebuilds."""
    opts, out_dir = options, Path(out_dir)
    instruments = instruments_for(opts.features)
    stem = f"{name}_{opts.feature_set}_{opts.cache_key()}"
    started = time.perf_counter()
    boreholes, vote_keys = _Codes(), _Codes()
    steps = {inst.name: _new_stats() for inst in instruments}
    bins = {inst.name: _InstrumentBins(f"{source} {inst.filename}", inst, opts, boreholes, vote_keys,
                                       steps[inst.name]) for inst in instruments}
    pending = {inst.name: [] for inst in instruments}

    def add(inst: Instrument) -> None:  # the pending tables as one batch: fewer, larger groupbys
        table = tables_as_read(pa.concat_tables(pending[inst.name]), inst).combine_chunks()
        pending[inst.name] = []
        for batch in table.to_batches():
            bins[inst.name].add(batch)

    for hole in tables:
        for inst in instruments:
            pending[inst.name].append(hole[inst.name])
            if sum(t.num_rows for t in pending[inst.name]) >= TABLE_ROWS_PER_BATCH:
                add(inst)
    reduced = {}
    for inst in instruments:
        if pending[inst.name]:
            add(inst)
        reduced[inst.name] = bins[inst.name].finish()
        stats = steps[inst.name]
        log(f"[lithovae.data]   {inst.name}: {stats['rows_read']:,} rows -> {stats['bins']:,} bins")
    return _write_dataset(reduced, steps, boreholes, vote_keys, {}, opts, source, out_dir / f"{stem}.parquet",
                          out_dir / f"{stem}.manifest.json", name, started)


def _write_dataset(reduced: dict, steps: dict, boreholes: _Codes, vote_keys: _Codes, inputs: dict,
                   opts: BuildOptions, source, out_path: Path, manifest_path: Path, name: str,
                   started: float) -> BuildResult:
    """Join the instruments' bins, label them, and write the dataset and its manifest."""
    tables = {inst: table for inst, (table, _) in reduced.items()}
    all_votes = [votes for _, votes in reduced.values()]
    join_stats: dict = {}
    joined = _join(tables, opts, join_stats)
    feats = opts.features
    present = joined[feats].notna()
    keep = present.any(axis=1)
    if opts.require:
        keep &= present[opts.require].all(axis=1)
    joined = joined[keep]
    votes = pd.concat(all_votes).groupby(level=[0, 1, 2], sort=False).sum()
    labels = _modal_labels(votes, vote_keys.names())
    joined = joined.join(labels, how="left")
    bh_names = np.array(boreholes.names(), dtype=object)
    idx = joined.index.to_frame(index=False)
    principal = joined["principal"].replace("", np.nan)
    data = pd.DataFrame({
        "borehole_id": bh_names[idx["bh"].to_numpy()],
        "depth_m": np.round(idx["bin"].to_numpy() * opts.bin_size, 6),
        "principal": principal.to_numpy(),
        "prefix": joined["prefix"].replace("", np.nan).to_numpy(),
        "suffix": joined["suffix"].replace("", np.nan).to_numpy(),
        "full_lithology": joined["full_lithology"].replace("", np.nan).to_numpy(),
    })
    data["lithology_group"] = reference.groups_for(data["principal"])
    for f in feats:
        data[f] = joined[f].to_numpy(dtype=np.float32)
    data = data.sort_values(["borehole_id", "depth_m"], kind="stable").reset_index(drop=True)
    if data.empty:
        raise BuildError(f"{source}: no bin has all of {opts.require or feats} "
                         "after joining the instruments")

    unlabeled = int(data["principal"].isna().sum())
    manifest = {
        "name": name,
        "builder_version": BUILDER_VERSION,
        "options": asdict(opts),
        "max_abs_value": MAX_ABS_VALUE,
        "features": feats,
        "source": str(source),
        "inputs": inputs,
        "steps": {
            "instruments": steps,
            "join": {"bins_per_instrument": {k: int(len(t)) for k, t in tables.items()},
                     **join_stats, "bins_joined": int(len(data))},
            "bins_incomplete": int((~present[keep].all(axis=1)).sum()),
            "bins_unlabeled": unlabeled,
        },
        "rows": int(len(data)),
        "boreholes": int(data["borehole_id"].nunique()),
        "lithologies": int(data["principal"].nunique()),
        "principal_counts": data["principal"].value_counts().to_dict(),
        "seconds": round(time.perf_counter() - started, 2),
    }
    atomic_write(out_path, lambda tmp: data.to_parquet(tmp, index=False))
    manifest["output"] = _output_record(out_path)
    atomic_write(manifest_path, lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=1)))
    return BuildResult(out_path, manifest_path, manifest, rebuilt=True)
