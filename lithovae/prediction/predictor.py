"""A trained run applied to new bins: one row out per bin in.

The run's predictor bundle (``<run dir>/predictor/``, written by :mod:`lithovae.prediction.bundle`)
holds everything needed, in plain files: the network's weights (tensors only), its config, the
scaler, the label codes, the clusterer of the scored clustering, the cluster table and the
training distribution of the anomaly score. :class:`Predictor` loads it and maps a table of bins
(``borehole_id``, ``depth_m`` and the run's feature columns, in original units) to the
prediction table; ``lithovae.predict`` and the run's MLflow model both call it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lithovae.data.errors import BuildError
from lithovae.errors import DataError, RunDirError
from lithovae.prediction.clusterer import FittedClusterer

BUNDLE_FORMAT = 1  # bumped when the bundle's files change meaning; older bundles are refused
BUNDLE_DIR = "predictor"
KEY_COLUMNS = ("borehole_id", "depth_m")
CHUNK = 65536  # rows per forward pass: bounded memory on any input size


@dataclass
class ScoredBins:
    """The network's view of prepared bins (rows in input order)."""

    x: torch.Tensor  # [N, F] scaled model features, 0 where missing
    observed: torch.Tensor  # [N, F] bool
    values: np.ndarray  # [N, B] base features in original units, NaN where missing or unusable
    out_of_range: np.ndarray  # [N, B] bool: outside the training bins' range, or not finite


def _model_from_config(model_cfg: dict, spec):
    """The run's network built from its saved config; only lithovae's own classes are built."""
    from hydra.utils import instantiate

    target = str(model_cfg.get("_target_", ""))
    if not target.startswith("lithovae.models."):
        raise RunDirError(f"predictor.json: model _target_ {target!r} is not a lithovae model")
    return instantiate(model_cfg, _partial_=True, _convert_="all")(data=spec)


class Predictor:
    """A trained model, its scaler and its clusterer, applied to new bins (:meth:`predict`)."""

    def __init__(self, bundle_dir: str | Path):
        from lithovae.data.datamodule import LabelEncoding
        from lithovae.data.scaler import DistributionAwareScaler
        from lithovae.spec import DataSpec

        self.path = bundle_dir = Path(bundle_dir)
        meta_path = bundle_dir / "predictor.json"
        if not meta_path.is_file():
            raise RunDirError(f"{bundle_dir}: no predictor.json (not a lithovae predictor bundle)")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != BUNDLE_FORMAT:
            raise RunDirError(f"{meta_path}: predictor format {meta.get('format')!r}, this lithovae reads "
                              f"format {BUNDLE_FORMAT}: train the run again with this version")
        self.meta = meta
        self.features: list[str] = list(meta["features"])  # the input columns (original units)
        self.model_features: list[str] = list(meta["model_features"])  # with context/engineered
        self.context, self.engineered = int(meta["context"]), bool(meta["engineered"])
        self.scaler = DistributionAwareScaler.load(bundle_dir / "scaler.json")
        self.encoding = LabelEncoding(**json.loads((bundle_dir / "label_encoding.json").read_text()))
        spec = DataSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["data_spec"].items()})
        self.model = _model_from_config(meta["model"], spec)
        from lithovae.files import load_checkpoint

        self.model.load_state_dict(load_checkpoint(bundle_dir / "weights.pt"))
        self.model.eval()
        self.clusterer = FittedClusterer.load(bundle_dir / "clusterer.json")
        table = pd.read_csv(bundle_dir / "clusters.csv", index_col="cluster")
        self.cluster_names = _lookup(table, "top_lithology", self.clusterer.k, None)
        self.cluster_purity = _lookup(table, "purity", self.clusterer.k, np.nan).astype(np.float64)
        self.cluster_top3 = _lookup(table, "top3", self.clusterer.k, None)
        anomaly = json.loads((bundle_dir / "anomaly.json").read_text())
        self.anomaly_quantiles = np.asarray(anomaly["quantiles"], dtype=np.float64)
        low, high = meta["training_range"]["min"], meta["training_range"]["max"]
        self.range_low = np.asarray(low, dtype=np.float64)
        self.range_high = np.asarray(high, dtype=np.float64)
        self.target = self.model.class_target_name()
        self.class_names = np.asarray(self.encoding.vocabulary(self.target), dtype=object)
        self.top_k = int(meta.get("top_k", 3))

    # -- preparing ---------------------------------------------------------------------------
    def check_columns(self, frame: pd.DataFrame, where: str = "input") -> None:
        missing = [c for c in (*KEY_COLUMNS, *self.features) if c not in frame.columns]
        if missing:
            raise DataError(f"{where}: missing column '{missing[0]}' (the run's features: {self.features})")

    def prepare(self, frame: pd.DataFrame, where: str = "input") -> ScoredBins:
        """The network's inputs for the bins of ``frame``, as training prepared them."""
        from lithovae.data.features import expand_features
        from lithovae.data.schema import MAX_ABS_VALUE

        self.check_columns(frame, where)
        if frame.empty:
            raise DataError(f"{where}: no bins to predict")
        _numeric_column(frame, "depth_m", where)
        values = np.column_stack([_numeric_column(frame, f, where) for f in self.features])
        unusable = ~np.isfinite(values) | (np.abs(values) > MAX_ABS_VALUE)
        unusable &= ~np.isnan(values)
        values = np.where(unusable, np.nan, values)
        with np.errstate(invalid="ignore"):
            outside = (values < self.range_low) | (values > self.range_high)
        base = pd.DataFrame(values, columns=self.features)
        base["borehole_id"] = frame["borehole_id"].astype(str).to_numpy()
        base["depth_m"] = pd.to_numeric(frame["depth_m"]).to_numpy(np.float64)
        order = None
        if self.context:  # neighbours are found in depth order within each borehole
            order = np.lexsort((base["depth_m"].to_numpy(), base["borehole_id"].to_numpy()))
            base = base.iloc[order].reset_index(drop=True)
        try:
            expanded, names, _ = expand_features(base, self.features, self.context, self.engineered)
        except BuildError as exc:
            raise DataError(f"{where}: {exc}") from None
        if order is not None:
            expanded = expanded[np.argsort(order)]
        if names != self.model_features:
            raise RunDirError(f"{self.path}: the bundle's model features {self.model_features} differ "
                              f"from those derived from {self.features}: {names}")
        with np.errstate(invalid="ignore", divide="ignore"):
            scaled = self.scaler.transform(expanded)
        observed = np.isfinite(scaled)
        x = np.where(observed, scaled, 0.0).astype(np.float32)
        return ScoredBins(torch.from_numpy(x), torch.from_numpy(observed), values, outside | unusable)

    # -- the network -------------------------------------------------------------------------
    def network(self, x: torch.Tensor, observed: torch.Tensor) -> dict[str, torch.Tensor]:
        """Latent means, reconstructions from them, class logits (or None), and per bin the
        reconstruction's squared error over observed entries and the KL term of the ELBO."""
        from lithovae.models.base import ModelOutput, inference
        from lithovae.models.losses import masked_sse

        parts: dict[str, list] = {"mu": [], "recon": [], "logits": [], "sse": [], "kl": []}
        with inference(self.model):
            for xs, obs in zip(x.split(CHUNK), observed.split(CHUNK)):
                visible = obs.to(xs.dtype)
                mu, logvar = self.model.encode(xs, visible)
                recon = self.model.decode(mu)
                logits = self.model.classify(mu)
                parts["mu"].append(mu)
                parts["recon"].append(recon)
                parts["logits"].append(logits)
                parts["sse"].append(masked_sse(recon, xs, obs))
                parts["kl"].append(self.model.prior_kl(ModelOutput(mu=mu, logvar=logvar, z=mu, recon=recon)))
        out = {k: torch.cat(v) for k, v in parts.items() if k != "logits"}
        out["logits"] = torch.cat(parts["logits"]) if parts["logits"][0] is not None else None
        return out

    def anomaly_scores(self, x: torch.Tensor, observed: torch.Tensor) -> np.ndarray:
        """Per-bin negative ELBO at the latent mean: squared reconstruction error over the
        observed entries plus KL(q(z|x) || p(z)) (the training loss of one bin at beta 1)."""
        out = self.network(x, observed)
        return (out["sse"] + out["kl"]).double().numpy()

    def anomaly_percentile(self, scores: np.ndarray) -> np.ndarray:
        """Share of the training bins (in %) whose score is at most ``scores``, to 0.1%."""
        q = self.anomaly_quantiles
        if not np.isfinite(q).all():
            return np.full(len(scores), np.nan)
        pct = 100.0 * np.searchsorted(q, scores, side="right") / len(q)
        return np.where(np.isfinite(scores), pct, np.nan)

    # -- the table ---------------------------------------------------------------------------
    def predict(self, frame: pd.DataFrame, where: str = "input", top_k: int | None = None) -> pd.DataFrame:
        """One row per row of ``frame``, in its order (the columns: README, "Prediction")."""
        bins = self.prepare(frame, where)
        return self.table(frame, bins, self.network(bins.x, bins.observed), top_k)

    def table(self, frame: pd.DataFrame, bins: ScoredBins, out: dict, top_k: int | None = None) -> pd.DataFrame:
        n_base = len(self.features)
        mu = out["mu"].numpy()
        columns: dict[str, np.ndarray] = {
            "borehole_id": frame["borehole_id"].astype(str).to_numpy(),
            "depth_m": pd.to_numeric(frame["depth_m"]).to_numpy(np.float64),
        }
        for j in range(mu.shape[1]):
            columns[f"z_{j}"] = mu[:, j]
        cluster = self.clusterer.predict(mu)
        known = cluster >= 0
        columns["cluster"] = cluster
        columns["cluster_top_lithology"] = np.where(known, self.cluster_names[cluster.clip(0)], None)
        columns["cluster_purity"] = np.where(known, self.cluster_purity[cluster.clip(0)], np.nan)
        columns["cluster_top3"] = np.where(known, self.cluster_top3[cluster.clip(0)], None)
        if out["logits"] is not None:
            k = min(top_k or self.top_k, out["logits"].shape[1])
            probs, codes = torch.softmax(out["logits"].double(), 1).topk(k, dim=1)
            names = self.class_names[codes.numpy()]
            label = "lithology" if self.target == "principal" else self.target
            columns[f"predicted_{label}"] = names[:, 0]
            for r in range(k):
                columns[f"{label}_top{r + 1}"] = names[:, r]
                columns[f"probability_top{r + 1}"] = probs[:, r].numpy()
        observed = bins.observed.numpy()
        n_observed = observed[:, :n_base].sum(1)
        sse = out["sse"].double().numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            columns["recon_error"] = np.where(observed.any(1), sse / observed.sum(1), np.nan)
        score = sse + out["kl"].double().numpy()
        columns["anomaly_score"] = score
        columns["anomaly_percentile"] = self.anomaly_percentile(score)
        columns["n_observed"] = n_observed.astype(np.int64)
        recon = out["recon"].double().numpy()
        with np.errstate(invalid="ignore", over="ignore"):
            recon_orig = self.scaler.inverse_transform(recon)[:, :n_base]
        missing = ~observed[:, :n_base]
        for j, f in enumerate(self.features):
            columns[f] = np.where(missing[:, j], recon_orig[:, j], bins.values[:, j])
            columns[f"{f}_imputed"] = missing[:, j]
        for j, f in enumerate(self.features):
            columns[f"{f}_out_of_range"] = bins.out_of_range[:, j]
        columns["n_out_of_range"] = bins.out_of_range.sum(1).astype(np.int64)
        return pd.DataFrame(columns)


def _lookup(table: pd.DataFrame, column: str, k: int, fill) -> np.ndarray:
    """``column`` of the cluster table per cluster id 0..k-1 (``fill`` for a cluster with no row)."""
    out = np.full(k, fill, dtype=object)
    for cluster, value in table[column].items():
        if 0 <= int(cluster) < k and not (isinstance(value, float) and np.isnan(value)):
            out[int(cluster)] = value
    return out


def _numeric_column(frame: pd.DataFrame, column: str, where: str) -> np.ndarray:
    """``frame[column]`` as float64; a value that is not a number is an error naming it."""
    raw = frame[column]
    if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
        return raw.to_numpy(np.float64, na_value=np.nan)
    values = pd.to_numeric(raw, errors="coerce")
    bad = values.isna() & raw.notna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{where}: column '{column}': non-numeric value {raw.iloc[row]!r} in row {row + 1}")
    return values.to_numpy(np.float64, na_value=np.nan)
