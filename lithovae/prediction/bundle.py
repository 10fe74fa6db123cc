"""Write a run's predictor bundle: what applying it to new bins needs, in plain files.

``<run dir>/predictor/``:

- ``predictor.json``: format, model config and data spec, feature lists and how model inputs
  are derived (context, engineered; the transforms are the scaler's), the scored weights (checkpoint, epoch,
  policy), the clustering (method, k, fitted on which rows, chosen how), the training range per feature;
- ``weights.pt``: the network's state dict (tensors only: read with ``weights_only``);
- ``scaler.json``, ``label_encoding.json``: the run's;
- ``clusterer.json``: the parameters (centres, or GMM weights, means and covariances) of the
  clusterer fitted on the training boreholes and chosen on the validation ones (its test score
  is the run's ``ari_inductive``); ``clusters.csv``: its clusters' lithologies on the test
  boreholes;
- ``anomaly.json``: the anomaly score's distribution over the training bins (1001 quantiles);
- ``example.json``: a few of the run's test bins in original units (the MLflow model's input example).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lithovae.files import default_mode
from lithovae.prediction.clusterer import FittedClusterer
from lithovae.prediction.predictor import BUNDLE_DIR, BUNDLE_FORMAT, Predictor

# not at the top: omegaconf and the evaluation helpers are imported inside write_bundle: loading a
# bundle (serving) needs neither

QUANTILES = np.linspace(0.0, 1.0, 1001)
EXAMPLE_FILE = "example.json"
EXAMPLE_BINS = 5


def training_range(dm) -> dict[str, list[float]]:
    """Per base feature, the min and max of the training bins in original units."""
    train = dm.tensors["train"]
    raw = dm.scaler.inverse_transform(train["x"].numpy().astype(np.float64))
    raw = np.where(train["observed"].numpy(), raw, np.nan)[:, :len(dm.base_features)]
    with np.errstate(all="ignore"):
        low, high = np.nanmin(raw, 0), np.nanmax(raw, 0)
    return {"min": low.tolist(), "max": high.tolist()}


def example_bins(dm, n: int = EXAMPLE_BINS) -> pd.DataFrame:
    """The first ``n`` bins by depth of one test borehole, among the test bins with the most
    features observed: columns ``borehole_id``, ``depth_m`` and the base features in original
    units (6 significant digits, NaN where unobserved)."""
    test = dm.tensors["test"]
    n_base = len(dm.base_features)
    raw = dm.scaler.inverse_transform(test["x"].numpy().astype(np.float64))[:, :n_base]
    observed = test["observed"].numpy()[:, :n_base]
    frame = dm.frames["test"][["borehole_id", "depth_m"]].copy()
    for j, feature in enumerate(dm.base_features):
        frame[feature] = [float(f"{v:.6g}") if seen else np.nan for v, seen in zip(raw[:, j], observed[:, j])]
    most = observed.sum(1) == observed.sum(1).max()
    borehole = frame["borehole_id"][most].iloc[0]
    rows = frame[most & (frame["borehole_id"] == borehole).to_numpy()]
    return rows.sort_values("depth_m").head(n).reset_index(drop=True)


def unsupported_reason(cfg) -> str | None:
    """Why a run cannot be applied to new bins, or None."""
    if cfg.datamodule.get("impute_rgb"):
        return ("datamodule.impute_rgb: the RGB regressor fitted on the training bins is not saved, "
                "so new bins cannot be prepared as training prepared them")
    return None


def write_bundle(run_dir: Path, *, cfg, dm, model, clusterer, assignment, metrics: dict,
                 source, score_options: dict) -> Path | None:
    """The bundle of a scored run (replacing an older one atomically); None (and a note in
    ``metrics["predictor"]``) when the run cannot predict: no clusterer was fitted, or the
    run's data preparation cannot be repeated on new bins. ``clusterer``: the fitted
    parameters (:func:`lithovae.evaluation.metrics.fitted_params`) of the clusterer fitted on
    the training boreholes; ``assignment``: its clusters of the test rows."""
    from omegaconf import OmegaConf

    from lithovae import __version__
    from lithovae.evaluation.clusters import cluster_table
    from lithovae.evaluation.well_log import training_scales

    reason = unsupported_reason(cfg)
    if reason is None and (clusterer is None or assignment is None):
        reason = "no clusterer of the training latents could be chosen (see the ari_* warnings)"
    if reason is not None:
        metrics["predictor"] = f"not written: {reason}"
        return None
    clusterer = FittedClusterer(clusterer)
    model = model.cpu().eval()
    meta = {
        "format": BUNDLE_FORMAT, "lithovae_version": __version__,
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "data_spec": dataclasses.asdict(model.data),
        "features": list(dm.base_features), "model_features": list(dm.feature_names),
        "context": int(cfg.datamodule.context), "engineered": bool(cfg.datamodule.engineered),
        "weights": {k: metrics.get(k) for k in ("evaluated_checkpoint", "evaluated_epoch",
                                                 "evaluated_global_step", "checkpoint_policy")},
        "clustering": {"method": clusterer.method, "k": clusterer.k, "fitted_on": "training latent means",
                       "n_fitted": int(min(len(dm.tensors["train"]["x"]), score_options["train_fit_samples"]
                                           or len(dm.tensors["train"]["x"]))),
                       "chosen_on": "validation ARI", "ari": metrics.get("ari_inductive")},
        "training_range": training_range(dm), "axis_scales": training_scales(dm),  # the log figure's axes
        "dataset": source.name, "synthetic": bool(source.synthetic), "seed": int(cfg.seed),
        "preset": cfg.get("preset"), "eval": score_options, "top_k": 3,
        # the run's names of numeric label codes: predict names new wells' codes the same way
        "label_names": getattr(source, "label_names", None) or None,
    }
    principal = dm.frames["test"]["principal"].to_numpy()
    final = run_dir / BUNDLE_DIR
    tmp = Path(tempfile.mkdtemp(prefix=f".{BUNDLE_DIR}-", dir=run_dir))
    tmp.chmod(default_mode(directory=True))  # mkdtemp's 0700: the mode of a plain mkdir instead
    try:
        (tmp / "predictor.json").write_text(json.dumps(meta, indent=1, default=str))
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp / "weights.pt")
        dm.scaler.save(tmp / "scaler.json")
        (tmp / "label_encoding.json").write_text(json.dumps(dm.encoding.to_dict(), indent=1))
        (tmp / "clusterer.json").write_text(json.dumps(clusterer.to_dict()))
        cluster_table(assignment, principal).to_csv(tmp / "clusters.csv")
        (tmp / "anomaly.json").write_text(json.dumps({"quantiles": [0.0] * len(QUANTILES)}))
        predictor = Predictor(tmp)  # the bundle as prediction reads it
        train = dm.tensors["train"]
        scores = predictor.anomaly_scores(train["x"], train["observed"])
        (tmp / "anomaly.json").write_text(json.dumps(anomaly_distribution(scores), indent=1))
        (tmp / EXAMPLE_FILE).write_text(example_bins(dm).to_json(orient="split", index=False, double_precision=15))
        agreement = float(np.mean(predictor.clusterer.predict(predictor_latents(predictor, dm)) == assignment))
        meta["clustering"]["agreement_with_scored_assignment"] = agreement
        (tmp / "predictor.json").write_text(json.dumps(meta, indent=1, default=str))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return final


def predictor_latents(predictor: Predictor, dm) -> np.ndarray:
    test = dm.tensors["test"]
    return predictor.network(test["x"], test["observed"])["mu"].numpy()


def anomaly_distribution(scores: np.ndarray) -> dict:
    """The anomaly score over the training bins: 1001 quantiles (0, 0.1, ..., 100 %), n, mean, sd."""
    finite = scores[np.isfinite(scores)]
    if finite.size == 0:  # a model with no reconstruction (a direct classifier)
        return {"definition": DEFINITION, "n": 0, "quantiles": [None] * len(QUANTILES)}
    return {"definition": DEFINITION, "n": int(finite.size), "n_nonfinite": int(scores.size - finite.size),
            "mean": float(finite.mean()), "std": float(finite.std()),
            "quantiles": np.quantile(finite, QUANTILES).tolist()}


DEFINITION = ("negative ELBO per bin at the latent mean: sum over observed scaled features of the "
              "squared reconstruction error, plus KL(q(z|x) || p(z)); computed on the training bins")
