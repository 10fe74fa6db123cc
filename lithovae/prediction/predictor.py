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

from lithovae.cli import one_line
from lithovae.data.errors import BuildError
from lithovae.errors import ConfigError, DataError, RunDirError
from lithovae.files import fit_weights, load_checkpoint
from lithovae.prediction.clusterer import FittedClusterer
from lithovae.spec import DataSpec

# not at the top: Hydra, the config checks, the scoring and the models are imported inside the
# functions that use them: the served model loads only what predicting needs

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


def _model_from_config(model_cfg: dict, spec, where: str):
    """The run's network built from its saved config (checked by :func:`_checked_meta`: only
    lithovae's own model classes, nothing nested, keys and ranges of the class)."""
    from hydra.utils import instantiate

    # the weights come from weights.pt: a pretrained path would read a file named by the bundle
    model_cfg = {**model_cfg, "pretrained": None} if "pretrained" in model_cfg else model_cfg
    try:
        return instantiate(model_cfg, _partial_=True, _convert_="all")(data=spec)
    except Exception as exc:  # noqa: BLE001 - a constructor refusing the saved values
        raise RunDirError(f"{where}: model: cannot build {model_cfg['_target_']} ({one_line(exc)[:200]})") from None


def _checked_meta(path: Path) -> dict:
    """predictor.json, every key the predictor reads checked (one line naming the file and key):
    no foreign ``_target_``, Hydra directive or interpolation at any depth; feature lists,
    context (at most lithovae.config.MAX_CONTEXT), the data spec and the training range
    consistent with each other; the model's keys and ranges those of its class."""
    from omegaconf import OmegaConf

    from lithovae.config import MAX_CONTEXT, check_saved_ranges, check_target
    from lithovae.untrusted import check_config, number_list, read_json, string_list

    meta = read_json(path)
    if meta.get("format") != BUNDLE_FORMAT:
        raise RunDirError(f"{path}: predictor format {meta.get('format')!r}, this lithovae reads "
                          f"format {BUNDLE_FORMAT}: train the run again with this version")
    check_config(meta, str(path), allow_interpolation=False)  # before anything is imported or built
    model = meta.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("_target_"), str):
        raise RunDirError(f"{path}: model: must be a model config with a _target_")
    try:
        check_target(OmegaConf.create(model), "model")
    except ConfigError as exc:
        raise RunDirError(f"{path}: {exc}") from None
    check_saved_ranges(OmegaConf.create({"model": model}), str(path))
    features = string_list(meta.get("features"), f"{path}: features")
    model_features = string_list(meta.get("model_features"), f"{path}: model_features")
    if model_features[:len(features)] != features:
        raise RunDirError(f"{path}: model_features: must start with the features {features}")
    context = meta.get("context")
    if not isinstance(context, int) or isinstance(context, bool) or not 0 <= context <= MAX_CONTEXT:
        raise RunDirError(f"{path}: context: must be an integer in [0, {MAX_CONTEXT}], got {context!r}")
    if not isinstance(meta.get("engineered"), bool):
        raise RunDirError(f"{path}: engineered: must be true or false, got {meta.get('engineered')!r}")
    _check_data_spec(meta.get("data_spec"), model_features, path)
    span = meta.get("training_range")
    if not isinstance(span, dict):
        raise RunDirError(f"{path}: training_range: must have min and max lists")
    for key in ("min", "max"):  # NaN (a feature never observed in training) is written as NaN or null
        number_list(span.get(key), f"{path}: training_range.{key}", len(features), allow_nan=True)
    for key in ("weights", "clustering", "eval"):
        if not isinstance(meta.get(key), dict):
            raise RunDirError(f"{path}: {key}: must be a JSON object, got {str(meta.get(key))[:60]}")
    _check_eval(meta["eval"], path)
    names = meta.get("label_names")
    if names is not None and not (isinstance(names, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in names.items())):
        raise RunDirError(f"{path}: label_names: must map label codes to names (text), got {str(names)[:60]}")
    seed, top_k = meta.get("seed"), meta.get("top_k", 3)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= 2**32 - 1:
        raise RunDirError(f"{path}: seed: must be an integer in [0, 2**32 - 1], got {seed!r}")
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise RunDirError(f"{path}: top_k: must be an integer >= 1, got {top_k!r}")
    return meta


def _check_data_spec(spec, model_features: list[str], path: Path) -> None:
    """data_spec: the DataSpec the model was built with, its features the model features."""
    required = ("n_features", "feature_names", "n_classes", "n_groups")
    fields = (*required, "class_counts", "group_counts", "n_train")
    if not isinstance(spec, dict) or set(spec) - set(fields) or set(required) - set(spec):
        raise RunDirError(f"{path}: data_spec: must have the keys {', '.join(required)} "
                          f"(and class_counts, group_counts, n_train)")
    if spec["feature_names"] != model_features or spec["n_features"] != len(model_features):
        raise RunDirError(f"{path}: data_spec: its features ({spec['n_features']}: "
                          f"{str(spec['feature_names'])[:80]}) are not the {len(model_features)} model_features")
    # own data may have no groups; a bundle written before n_train was recorded has none (0)
    for key, least in (("n_classes", 1), ("n_groups", 0), ("n_train", 0)):
        value = spec.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise RunDirError(f"{path}: data_spec.{key}: must be an integer >= {least}, got {value!r}")
    for key, n in (("class_counts", spec["n_classes"]), ("group_counts", spec["n_groups"])):
        counts = spec.get(key, [])
        if not isinstance(counts, list) or counts and (len(counts) != n or not all(
                isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts)):
            raise RunDirError(f"{path}: data_spec.{key}: must be {n} counts >= 0, got {str(counts)[:80]}")


# scoring options added after bundles were first written: an older bundle's have these values
ADDED_EVAL_KEYS = {"train_fit_samples": None, "bootstrap": {"resamples": 0, "level": 0.95}}


def _check_eval(options: dict, path: Path) -> None:
    """The scoring options of ``lithovae.evaluate`` (keys of conf/eval/default.yaml that are not
    figure options), each in its range: predict passes them to score_model()."""
    from omegaconf import OmegaConf

    from lithovae.config import check_saved_ranges
    from lithovae.evaluation.scoring import split_eval_options

    defaults = OmegaConf.load(Path(__file__).parents[1] / "conf" / "eval" / "default.yaml")
    known, _ = split_eval_options(OmegaConf.to_container(defaults))
    for key in ADDED_EVAL_KEYS:  # a bundle written before they existed scores as it did then
        options.setdefault(key, ADDED_EVAL_KEYS[key])
    unknown = sorted(set(options) - set(known))
    missing = sorted(set(known) - set(options))
    if unknown or missing:
        key = (unknown or missing)[0]
        raise RunDirError(f"{path}: eval.{key}: {'unknown' if unknown else 'missing'} key "
                          f"(the keys: {', '.join(sorted(known))})")
    check_saved_ranges(OmegaConf.create({"eval": options}), str(path))
    if not isinstance(options["gmm"], bool):
        raise RunDirError(f"{path}: eval.gmm: must be true or false, got {options['gmm']!r}")


class Predictor:
    """A trained model, its scaler and its clusterer, applied to new bins (:meth:`predict`)."""

    def __init__(self, bundle_dir: str | Path):
        from lithovae.untrusted import load_label_encoding, load_scaler

        self.path = bundle_dir = Path(bundle_dir)
        meta_path = bundle_dir / "predictor.json"
        if not meta_path.is_file():
            raise RunDirError(f"{bundle_dir}: no predictor.json (not a lithovae predictor bundle)")
        self.meta = meta = _checked_meta(meta_path)
        self.features: list[str] = list(meta["features"])  # the input columns (original units)
        self.model_features: list[str] = list(meta["model_features"])  # with context/engineered
        self.context, self.engineered = int(meta["context"]), bool(meta["engineered"])
        self.scaler = load_scaler(bundle_dir / "scaler.json")
        if self.scaler.feature_names != self.model_features:
            raise RunDirError(f"{bundle_dir / 'scaler.json'}: feature_names: the scaler's features are not "
                              "the model_features of predictor.json")
        self.encoding = load_label_encoding(bundle_dir / "label_encoding.json")
        spec = DataSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["data_spec"].items()})
        if (spec.n_classes, spec.n_groups) != (len(self.encoding.classes), len(self.encoding.groups)):
            raise RunDirError(f"{meta_path}: data_spec: {spec.n_classes} classes and {spec.n_groups} groups, "
                              f"label_encoding.json has {len(self.encoding.classes)} and {len(self.encoding.groups)}")
        self.model = _model_from_config(meta["model"], spec, str(meta_path))

        weights_path = bundle_dir / "weights.pt"
        fit_weights(self.model, load_checkpoint(weights_path), weights_path)
        self.model.eval()
        self.clusterer = FittedClusterer.load(bundle_dir / "clusterer.json")
        latent = getattr(self.model, "latent_dim", None)
        if isinstance(latent, int) and self.clusterer.dim != latent:
            raise RunDirError(f"{bundle_dir / 'clusterer.json'}: its clusters are in {self.clusterer.dim} "
                              f"dimensions, the model's latent space has {latent}")
        clustering = meta["clustering"]
        if (clustering.get("method"), clustering.get("k")) != (self.clusterer.method, self.clusterer.k):
            raise RunDirError(f"{meta_path}: clustering: {clustering.get('method')} k={clustering.get('k')}, "
                              f"but clusterer.json holds {self.clusterer.method} k={self.clusterer.k}")
        table = _cluster_table(bundle_dir / "clusters.csv", self.clusterer.k)
        self.cluster_names = _lookup(table, "top_lithology", self.clusterer.k, None)
        self.cluster_purity = _lookup(table, "purity", self.clusterer.k, np.nan).astype(np.float64)
        self.cluster_top3 = _lookup(table, "top3", self.clusterer.k, None)
        self.anomaly_quantiles = _anomaly_quantiles(bundle_dir / "anomaly.json")
        low, high = meta["training_range"]["min"], meta["training_range"]["max"]
        self.range_low = np.asarray([np.nan if v is None else v for v in low], dtype=np.float64)
        self.range_high = np.asarray([np.nan if v is None else v for v in high], dtype=np.float64)
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


def _cluster_table(path: Path, k: int) -> pd.DataFrame:
    """clusters.csv: one row per cluster id (-1: rows with no cluster, 0..k-1), with the
    columns the predictor reads; anything else is one line naming the file."""
    if not path.is_file():
        raise RunDirError(f"{path}: not found")
    try:
        table = pd.read_csv(path)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise RunDirError(f"{path}: not a readable CSV table ({' '.join(str(exc).split())[:120]})") from None
    missing = [c for c in ("cluster", "top_lithology", "purity", "top3") if c not in table.columns]
    if missing:
        raise RunDirError(f"{path}: no column '{missing[0]}'")
    ids = pd.to_numeric(table["cluster"], errors="coerce")
    bad = ids.isna() | (ids != ids.round()) | (ids < -1) | (ids >= k) | ids.duplicated()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise RunDirError(f"{path}: column 'cluster': {_plain(table['cluster'].iloc[row])!r} in row {row + 1} is not a "
                          f"distinct cluster id in [-1, {k - 1}]")
    purity = pd.to_numeric(table["purity"], errors="coerce")
    bad = (purity.isna() & table["purity"].notna()) | (purity < 0) | (purity > 1)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise RunDirError(f"{path}: column 'purity': {_plain(table['purity'].iloc[row])!r} in row {row + 1} is not a "
                          "share in [0, 1]")
    table["purity"] = purity
    return table.set_index(ids.astype(np.int64).rename("cluster"))


def _plain(value):
    """A numpy scalar as the Python value it holds (for messages: 99, not np.int64(99))."""
    return value.item() if isinstance(value, np.generic) else value


def _anomaly_quantiles(path: Path) -> np.ndarray:
    """anomaly.json's quantiles: 1001 non-decreasing finite numbers, or all null (a model
    with no reconstruction)."""
    from lithovae.untrusted import number_list, read_json

    n = 1001  # len(lithovae.prediction.bundle.QUANTILES)
    quantiles = read_json(path).get("quantiles")
    if isinstance(quantiles, list) and len(quantiles) == n and all(q is None for q in quantiles):
        return np.full(n, np.nan)
    values = number_list(quantiles, f"{path}: quantiles", n)
    if (np.diff(values) < 0).any():
        raise RunDirError(f"{path}: quantiles: must be non-decreasing (entry "
                          f"{int(np.argmax(np.diff(values) < 0)) + 2} is below the one before)")
    return values


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
