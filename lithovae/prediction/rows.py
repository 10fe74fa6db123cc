"""The prediction table's rows beyond what the network gives: bins that get no cluster (and
say why), large inputs predicted in bounded chunks, and values made JSON-safe for the served
model (NaN and infinities as null). ``lithovae.predict`` and the MLflow model both use them."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lithovae.errors import DataError

# not at the top: lithovae.data.sources is imported inside the one function that needs it (it loads
# pyarrow)

REASON = "no_cluster_reason"
NO_FEATURE = "no observed feature"
NOT_FINITE = "latent mean not finite"
CHUNK_ROWS = 20000  # rows per chunk of a request: memory bounded by the chunk, not the request


def mark_unclustered(predictor, table: pd.DataFrame) -> pd.DataFrame:
    """A bin with none of the run's features observed carries no information: its latent is the
    network's answer to an empty input, so it gets no cluster (-1) and no predicted class, and
    ``no_cluster_reason`` says why (also for a bin whose latent mean is not finite). Other
    bins have ``None`` there."""
    reason = np.full(len(table), None, dtype=object)
    reason[table["cluster"].to_numpy() < 0] = NOT_FINITE
    empty = table["n_observed"].to_numpy() == 0
    reason[empty] = NO_FEATURE
    table.insert(table.columns.get_loc("cluster_top3") + 1, REASON, reason)
    if empty.any():
        table.loc[empty, "cluster"] = -1
        label = "lithology" if predictor.target == "principal" else predictor.target
        classes = [c for c in table.columns if c == f"predicted_{label}"
                   or c.startswith((f"{label}_top", "probability_top"))]
        for column in ["cluster_top_lithology", "cluster_purity", "cluster_top3", *classes]:
            if pd.api.types.is_float_dtype(table[column]):
                table.loc[empty, column] = np.nan
            else:
                table[column] = table[column].astype(object)
                table.loc[empty, column] = None
    return table


def imputed_counts(table: pd.DataFrame, features: list[str]) -> dict[str, int]:
    """``n_bins_imputed``: bins (rows) with at least one imputed feature value;
    ``n_values_imputed``: imputed values, over every bin and feature (a bin missing two
    features counts once in the first, twice in the second)."""
    flags = table[[f"{f}_imputed" for f in features]].to_numpy(dtype=bool)
    return {"n_bins_imputed": int(flags.any(axis=1).sum()), "n_values_imputed": int(flags.sum())}


def predict_rows(predictor, frame: pd.DataFrame, where: str = "input", rows: int = CHUNK_ROWS) -> pd.DataFrame:
    """The prediction table of ``frame`` (one row per row, in its order), computed ``rows`` bins
    at a time so a large input never holds the network's intermediate arrays for all of it.
    With context (neighbouring bins as inputs) a chunk holds whole boreholes. A bin without a
    borehole id (null, empty) is predicted on its own, with no neighbours, and its
    ``borehole_id`` comes back null; a bin without a depth has no neighbours either."""
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"{where}: expected a table of bins (columns borehole_id, depth_m and "
                        f"{predictor.features}), got {type(frame).__name__}")
    if frame.empty:
        raise DataError(f"{where}: no bins to predict (the input has no rows)")
    from lithovae.data.sources import missing_ids

    predictor.check_columns(frame, where)
    frame = frame.reset_index(drop=True)
    no_id = missing_ids(frame["borehole_id"])
    ids = frame["borehole_id"].astype(str).to_numpy(dtype=object)
    if no_id.any():  # a key of its own: never the neighbour of another bin
        ids[no_id] = [f"\0no-id-{i}" for i in np.flatnonzero(no_id)]
        frame = frame.assign(borehole_id=ids)
    parts = []
    for positions in _chunks(ids, rows, by_borehole=bool(predictor.context)):
        chunk = frame.iloc[positions] if len(positions) < len(frame) else frame
        table = predictor.predict(chunk, where=where)
        table.index = positions
        parts.append(table)
    table = parts[0] if len(parts) == 1 else pd.concat(parts)
    table = table.sort_index().reset_index(drop=True) if predictor.context else table.reset_index(drop=True)
    if no_id.any():
        table["borehole_id"] = table["borehole_id"].astype(object)
        table.loc[no_id, "borehole_id"] = None
    return mark_unclustered(predictor, table)


def _chunks(ids: np.ndarray, rows: int, by_borehole: bool):
    """Row positions per chunk: blocks of ``rows``, or whole boreholes packed up to ``rows``
    (a borehole longer than that is one chunk of its own)."""
    n = len(ids)
    if not by_borehole:
        for start in range(0, n, rows):
            yield np.arange(start, min(start + rows, n))
        return
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    ends = np.r_[starts[1:], n]
    begin = 0
    for start, end in zip(starts, ends):
        if end - begin > rows and start > begin:
            yield np.sort(order[begin:start])
            begin = start
    yield np.sort(order[begin:n])


def json_safe(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with every NaN, infinity and missing value as ``None``, so any JSON writer
    (MLflow's scoring server writes ``NaN`` for a float NaN, which is not JSON) writes null.
    Only columns holding such values change (to object); the others keep their dtype."""
    out = {}
    for column, values in table.items():
        if pd.api.types.is_float_dtype(values):
            bad = ~np.isfinite(values.to_numpy(np.float64))
        elif values.dtype == object or isinstance(values.dtype, pd.StringDtype):
            bad = values.isna().to_numpy(bool)
        else:
            bad = None
        if bad is not None and bad.any():
            values = values.astype(object)
            values[bad] = None
        out[column] = values
    return pd.DataFrame(out, index=table.index)
