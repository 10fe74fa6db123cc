"""Well logs in LAS 2.0 (and 1.2) files, read with ``lasio``: ``data=las data.path=<file or folder>``.
Another version (LAS 3.0) is an error naming the file and its version.

One well per file. Each file becomes rows of (borehole, depth, label, features) and the
rows of all files go through the same code as a table (:func:`~lithovae.data.sources.table_to_contract`,
:func:`~lithovae.data.sources.write_contract`), so the output is the same dataset contract as
``data=table``: training, evaluation and prediction read it unchanged.

- borehole id: the ``~Well`` header named by ``data.borehole`` (``WELL``), or the file name
  without ``.las`` where that header is absent or empty (or ``data.borehole`` is null);
- depth: the first of the ``data.depth`` mnemonics (``DEPT|DEPTH|MD|TDEP``) that is a curve of
  the file, in the file's own depth unit (never converted: a folder mixing metres and feet, or
  files with a unit and files without one, is an error); the depths are binned at
  ``data.bin_size`` in that unit;
- curves: chosen by mnemonic, case-insensitive, with aliases ``RHOB|DEN`` tried in order
  (the first present is used, per file; the manifest records which); a mnemonic a file repeats
  (two ``GR`` curves, which lasio names ``GR:1``, ``GR:2``) is the first of them, said in one
  line and recorded in the manifest (``repeated_mnemonics``); ``GR:2`` names the other;
- the ``NULL`` header value (e.g. -999.25) is missing;
- units: each feature's curve unit as the headers write it (``OHMM``) and the depth unit are
  recorded in the manifest (``units``, ``depth_unit``) for the log figures; files that disagree
  on a curve's unit leave it unknown (one line);
- the label: a curve (``data.label``), text or numeric lithology codes (``3.0`` -> ``"3"``),
  codes named by ``data.label_names``; groups only from ``data.groups`` (label -> group).
"""

from __future__ import annotations

import io
import logging
import re
from collections import Counter
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from lithovae.data.builder import checked_encoding, not_decodable
from lithovae.data.errors import BuildError
from lithovae.data.labels import checked_mapping
from lithovae.data.schema import MAX_ABS_VALUE
from lithovae.data.sources import (checked_bin_size, checked_features, label_strings, table_to_contract,
                                   transforms_within, write_contract)
from lithovae.files import file_digest

# not at the top: lasio is imported inside the reader: only data=las needs it

LAS_VERSION = 1  # bump when the output of the same files and options changes

# the spellings of a depth unit in LAS headers, for the one-unit-per-folder check
_UNITS = {"m": "m", "meter": "m", "meters": "m", "metre": "m", "metres": "m",
          "f": "ft", "ft": "ft", "feet": "ft", "foot": "ft", ".1in": "0.1 in"}

# the columns of the rows built from the files (features are named by their curve aliases)
_BOREHOLE, _DEPTH, _LABEL = "__borehole", "__depth", "__label"


def aliases(spec: str) -> list[str]:
    """``"RHOB|DEN"`` -> ``["RHOB", "DEN"]`` (upper case: lasio reads mnemonics upper case)."""
    return [a.strip().upper() for a in str(spec).split("|") if a.strip()]


class LasSource:
    """LAS well logs in ``path`` (one ``.las`` file, or a folder of them: every ``*.las``
    directly inside, in name order). The parameters are those of ``conf/data/las.yaml``,
    where each is described."""

    synthetic = False

    def __init__(self, *, path: str, borehole: str | None, depth: str, label: str | None,
                 features: dict[str, str] | list[str] | None, transforms: dict | None,
                 bin_size: float | None, encoding: str, label_names, groups):
        if path in (None, "", "???"):
            raise BuildError("data.path: set it to a LAS file or a folder of LAS files")
        self.label_names = checked_mapping(label_names, "data.label_names", "code,name")
        self.groups = checked_mapping(groups, "data.groups", "label,group")
        if label in (None, "") and (self.label_names or self.groups):
            raise BuildError("data.label_names / data.groups: need data.label (the label curve)")
        self.path = Path(path)
        self.borehole = str(borehole).strip().upper() if borehole not in (None, "") else None
        self.depth = aliases(depth) if depth is not None else []
        if not self.depth:
            raise BuildError(f"data.depth: name the depth curve(s), e.g. DEPT|DEPTH|MD; got {depth!r}")
        self.label = str(label) if label not in (None, "") else None
        self.features = checked_features(features, noun="curve")
        self.transforms = transforms_within(transforms, list(self.features))
        self.bin_size = checked_bin_size(bin_size)
        self.encoding = checked_encoding(encoding)

    @property
    def name(self) -> str:
        return f"las-{self.path.stem}"

    def options(self) -> dict:
        """Everything besides the files that changes the output (in the manifest and file name)."""
        return {"borehole": self.borehole, "depth": self.depth, "label": self.label,
                "features": self.features, "bin_size": self.bin_size, "encoding": self.encoding,
                "label_names": self.label_names, "groups": self.groups,
                "max_abs_value": MAX_ABS_VALUE, "las_version": LAS_VERSION}

    def files(self) -> list[Path]:
        if self.path.is_dir():
            found = sorted(p for p in self.path.iterdir() if p.is_file() and p.suffix.lower() == ".las")
            if not found:
                raise BuildError(f"{self.path}: no .las files in this folder")
            return found
        if not self.path.exists():
            raise BuildError(f"{self.path}: no such file or folder")
        return [self.path]

    def prepare(self, data_dir: str | Path, log=print, force: bool = False):
        # every file is read and checked before anything is written
        wells = [(f, *self._well(f, log)) for f in self.files()]
        units: dict[str, str] = {}
        for f, _, info in wells:
            if info["depth_unit"]:
                units.setdefault(info["depth_unit"], f.name)
        if len(units) > 1:
            (u1, f1), (u2, f2) = list(units.items())[:2]
            raise BuildError(f"{self.path}: wells in different depth units ({u1} in {f1}, {u2} in {f2}); "
                             "depths are used in each file's unit, so give one folder one unit")
        unitless = [f.name for f, _, info in wells if not info["depth_unit"]]
        if units and unitless:  # a file without a unit may be in feet as well as in metres
            (u1, f1), = units.items()
            more = f" and {len(unitless) - 1} more" if len(unitless) > 1 else ""
            raise BuildError(f"{self.path}: depth unit {u1} in {f1} but none in {unitless[0]}{more}; "
                             "depths are used in each file's unit, so give every file the same depth unit")
        rows = pd.concat([frame for _, frame, _ in wells], ignore_index=True)
        specs = {target: "|".join(aliases(spec)) for target, spec in self.features.items()}
        out, steps = table_to_contract(rows, where=self.path, borehole=_BOREHOLE, depth=_DEPTH,
                                       label=_LABEL if self.label else None, group=None,
                                       features=specs, bin_size=self.bin_size, noun="curve",
                                       label_names=self.label_names, groups=self.groups, log=log)
        steps["files"] = len(wells)
        steps["depth_unit"] = next(iter(units), None)
        files_per_id = Counter(info["borehole_id"] for _, _, info in wells)
        shared = sorted(i for i, n in files_per_id.items() if n > 1)
        repeated = {f.name: sorted(info["repeated_mnemonics"]) for f, _, info in wells
                    if info.get("repeated_mnemonics")}
        if repeated:
            steps["repeated_mnemonics"] = repeated
        if shared:  # e.g. two logging runs of one well: their rows are averaged per bin
            steps["boreholes_from_several_files"] = shared
            log(f"[lithovae.data] {self.path.name}: wells named alike in several files, merged as one "
                f"borehole each: {shared}")
        inputs = {f.name: {"sha256": file_digest(f), **info} for f, _, info in wells}
        return write_contract(out, steps, name=self.name, source=self.path, options=self.options(),
                              inputs=inputs, data_dir=data_dir, units=self._curve_units(wells, log),
                              depth_unit=steps["depth_unit"])

    def _curve_units(self, wells, log=print) -> dict[str, str]:
        """The unit of each feature's curve as the headers write it (``OHMM``), where the files
        that give one agree (ignoring case); files that disagree leave it unknown, said in one line."""
        units = {}
        for target in self.features:
            given = {}
            for f, _, info in wells:
                if info["units"].get(target):
                    given.setdefault(info["units"][target].upper(), (info["units"][target], f.name))
            if len(given) == 1:
                units[target] = next(iter(given.values()))[0]
            elif given:
                (u1, f1), (u2, f2) = list(given.values())[:2]
                log(f"[lithovae.data] {self.path.name}: feature {target} in different units ({u1} in {f1}, "
                    f"{u2} in {f2}): its values are used as they are, no unit is shown")
        return units

    # -- one file ---------------------------------------------------------------------------------
    def _read(self, path: Path):
        import lasio

        try:
            data = path.read_bytes()
        except OSError as exc:
            raise BuildError(f"{path}: cannot read ({exc.strerror or type(exc).__name__})") from None
        if not data.strip():
            raise BuildError(f"{path}: empty file")
        try:
            text = data.decode(self.encoding)
        except UnicodeDecodeError:
            raise not_decodable(path, self.encoding) from None
        version = _declared_version(text.removeprefix("\ufeff"))
        if version is not None and float(version) not in _READABLE_VERSIONS:
            # lasio reads a LAS 3.0 file partly and then fails on its data section somewhere
            raise BuildError(f"{path}: LAS version {version} is not supported (lithovae reads LAS 1.2 "
                             "and 2.0); save the well as LAS 2.0")
        # lasio logs (and warns) what it could not parse; the error below says it in one line
        lasio_log = logging.getLogger("lasio")  # its modules' loggers inherit this level
        level = lasio_log.level
        lasio_log.setLevel(logging.CRITICAL + 1)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return lasio.read(io.StringIO(text.removeprefix("\ufeff")))
        except Exception as exc:  # noqa: BLE001 - anything lasio cannot parse: name the file
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise BuildError(f"{path}: not a readable LAS file ({type(exc).__name__}: {reason})") from None
        finally:
            lasio_log.setLevel(level)

    def _well(self, path: Path, log=print) -> tuple[pd.DataFrame, dict]:
        las = self._read(path)
        repeated = _repeated_mnemonics(las)
        for mnemonic, names in repeated.items():
            log(f"[lithovae.data] {path.name}: curve {mnemonic} appears {len(names)} times (read as "
                f"{', '.join(names)}): {mnemonic} means {names[0]}; name {names[1]} in data.features "
                "to use another")
        curves: dict[str, object] = {}
        for curve in las.curves:  # a repeated mnemonic is GR:1, GR:2 in lasio: the first is GR
            for key in (curve.mnemonic, getattr(curve, "original_mnemonic", curve.mnemonic)):
                curves.setdefault(str(key).strip().upper(), curve)
        have = ", ".join(c.mnemonic for c in las.curves) or "none"

        def pick(spec_aliases: list[str]):
            return next(((a, curves[a]) for a in spec_aliases if a in curves), (None, None))

        depth_name, depth_curve = pick(self.depth)
        if depth_curve is None:
            raise BuildError(f"{path}: no depth/index curve (tried {'|'.join(self.depth)}; curves: {have}); "
                             "set data.depth to its mnemonic")
        null = _null_value(las)
        n = len(depth_curve.data)
        if n == 0:
            raise BuildError(f"{path}: empty well: no data rows")
        depth = _numbers(path, depth_name, depth_curve.data, null, what="depth curve")
        frame = pd.DataFrame({_BOREHOLE: self._borehole_id(las, path), _DEPTH: depth})
        used: dict[str, str] = {}
        for target, spec in self.features.items():
            tried = aliases(spec)
            name, curve = pick(tried)
            if curve is None:
                raise BuildError(f"{path}: no curve for feature '{target}' (tried {'|'.join(tried)}; "
                                 f"curves: {have})")
            frame["|".join(tried)] = _numbers(path, name, curve.data, null)
            used[target] = name
        label_name = None
        if self.label:
            tried = aliases(self.label)
            label_name, curve = pick(tried)
            if curve is None:
                raise BuildError(f"{path}: no label curve (data.label: tried {'|'.join(tried)}; "
                                 f"curves: {have}); set data.label=null for unlabeled wells")
            frame[_LABEL] = _labels(curve.data, null)
        values = frame[list(dict.fromkeys("|".join(aliases(s)) for s in self.features.values()))]
        usable = frame[_DEPTH].notna() & np.isfinite(values.to_numpy(np.float64)).any(axis=1)
        if not usable.any():
            raise BuildError(f"{path}: empty well: none of its {n} rows has a depth and a value of "
                             f"{', '.join(used.values())} (NULL {null!r} counts as missing)")
        unit_text = str(getattr(depth_curve, "unit", "") or getattr(las, "index_unit", "") or "").strip()
        info = {"borehole_id": str(frame[_BOREHOLE].iloc[0]), "rows": n, "depth_curve": depth_name,
                "depth_unit": _UNITS.get(unit_text.lower(), unit_text), "null": null, "curves": used,
                "label_curve": label_name,
                "units": {t: str(getattr(curves[name], "unit", "") or "").strip() for t, name in used.items()}}
        if repeated:
            info["repeated_mnemonics"] = repeated
        return frame, info

    def _borehole_id(self, las, path: Path) -> str:
        if self.borehole and self.borehole in las.well:
            value = str(las.well[self.borehole].value).strip()
            if value:
                return value
        return path.stem


_READABLE_VERSIONS = (1.2, 2.0)
# the value of VERS in the ~Version section: "VERS.   2.0 : CWLS LAS 2.0"
_VERSION_SECTION = re.compile(r"^~V[^\n]*\n(.*?)(?=^~|\Z)", re.M | re.S | re.I)
_VERS_LINE = re.compile(r"^\s*VERS\s*\.\S*\s+([^\s:]+)\s*:", re.M | re.I)


def _declared_version(text: str) -> str | None:
    """The LAS version the file declares (as written, e.g. "3.0"), or None where it declares
    none that is a number (lasio then says what is wrong with it)."""
    section = _VERSION_SECTION.search(text)
    line = _VERS_LINE.search(section.group(1)) if section else None
    try:
        return line.group(1) if line and float(line.group(1)) == float(line.group(1)) else None
    except ValueError:
        return None


def _repeated_mnemonics(las) -> dict[str, list[str]]:
    """{mnemonic: the names lasio gave its curves} for each mnemonic a file repeats."""
    names: dict[str, list[str]] = {}
    for curve in las.curves:
        original = str(getattr(curve, "original_mnemonic", curve.mnemonic)).strip().upper()
        names.setdefault(original, []).append(str(curve.mnemonic).strip().upper())
    return {m: n for m, n in names.items() if len(n) > 1}


def _null_value(las) -> float | None:
    try:
        value = las.well["NULL"].value
        return float(value) if str(value).strip() != "" else None
    except (KeyError, TypeError, ValueError):
        return None


def _numbers(path: Path, curve: str, data, null: float | None, what: str = "curve") -> np.ndarray:
    """A curve as float64, the NULL value missing; a value that is not a number is an error."""
    raw = pd.Series(np.asarray(data))
    if raw.dtype == object or pd.api.types.is_string_dtype(raw):
        text = raw.astype(str).str.strip()
        values = pd.to_numeric(text, errors="coerce")
        bad = values.isna() & ~_blank(text)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise BuildError(f"{path}: {what} '{curve}': non-numeric value {text.iloc[row]!r} "
                             f"in data row {row + 1}")
    else:
        values = raw
    values = values.astype(np.float64)
    if null is not None:
        values = values.mask(values == null)
    return values.to_numpy()


def _blank(text: pd.Series) -> pd.Series:
    """Text that stands for no value (missing, empty, nan)."""
    return text.isna() | text.str.lower().isin(["", "nan", "none"])


def _labels(data, null: float | None) -> pd.Series:
    """A label curve as text: numeric codes as integers where whole, the NULL value missing."""
    text = pd.Series(np.asarray(data)).astype(str).str.strip()
    empty = _blank(text)
    numbers = pd.to_numeric(text.mask(empty), errors="coerce")
    if null is not None:
        empty |= numbers == null
        numbers = numbers.mask(numbers == null)
    if (numbers.notna() | empty).all():  # every value a number (or missing): lithology codes
        return label_strings(numbers)
    return text.mask(empty).astype("string")
