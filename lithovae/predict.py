"""python -m lithovae.predict run=RUN data=table data.path=FILE [out=...]: apply a trained run
to new bins.

RUN is a run directory, an MLflow run id, ``runs:/<run id>/model`` or ``models:/<name>/<version>``.
The bins are read and prepared by the ``data`` source (``table``, ``las``, ``synthetic``) like
training data, then scaled, embedded and clustered with the run's own scaler, network and
clusterer. Writes one row per bin (``predictions.parquet``, or CSV), ``summary.json`` and a
log figure per borehole; with labels in the data, also the scores of ``lithovae.evaluate``.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig

from lithovae.cli import exits_cleanly
from lithovae.errors import ConfigError, DataError, RunDirError

FORMATS = {"parquet": ".parquet", "csv": ".csv"}
RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def resolve_predictor(run: str, tracking_uri: str | None, mlflow_dir: str):
    """(Predictor, a name for the run) of a run directory, a predictor bundle, an MLflow run id,
    ``runs:/…`` or ``models:/…`` URI."""
    from lithovae.prediction.predictor import BUNDLE_DIR, Predictor

    text = str(run)
    path = Path(text)
    if path.is_dir():
        if (path / "predictor.json").is_file():
            return Predictor(path), path.parent.name if path.name == BUNDLE_DIR else path.name
        if (path / BUNDLE_DIR / "predictor.json").is_file():
            return Predictor(path / BUNDLE_DIR), path.name
        if (path / "config.yaml").is_file() or (path / "checkpoints").is_dir():
            note = ""
            metrics = path / "metrics.json"
            if metrics.is_file():
                note = json.loads(metrics.read_text()).get("predictor") or ""
            raise RunDirError(f"{path}: this run has no {BUNDLE_DIR}/ " + (f"({note})" if note else
                              "(it was trained before lithovae saved one with every run): train it again "
                              "with this version to predict with it"))
        raise RunDirError(f"{path}: not a lithovae run directory (no {BUNDLE_DIR}/predictor.json)")
    if RUN_ID.match(text):
        text = f"runs:/{text}/model"
    if not text.startswith(("runs:/", "models:/")):
        raise ConfigError(f"run: '{run}' is neither a run directory nor an MLflow run id, runs:/ or "
                          "models:/ URI")
    return _mlflow_predictor(text, tracking_uri, mlflow_dir), re.sub(r"[^A-Za-z0-9._-]+", "_",
                                                                     text.split(":/", 1)[1]).strip("_")


def _mlflow_predictor(uri: str, tracking_uri: str | None, mlflow_dir: str):
    import os

    import mlflow

    from lithovae import tracking

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    store, _ = tracking.resolved_store(tracking_uri, mlflow_dir, key="tracking_uri")
    try:
        with tracking.global_uri(store):
            model = mlflow.pyfunc.load_model(uri)
    except Exception as exc:  # noqa: BLE001 - not found, no such version, not a pyfunc model
        from lithovae.cli import one_line

        raise RunDirError(f"run: cannot load the MLflow model {uri} from {tracking.redacted(store)} "
                          f"({one_line(exc)[:300]})") from None
    python_model = model.unwrap_python_model()
    predictor = getattr(python_model, "predictor", None)
    if predictor is None:
        raise RunDirError(f"run: {uri} is not a lithovae model")
    return predictor


def _output_paths(cfg: DictConfig, run_name: str, dataset: str) -> tuple[Path, Path]:
    """(the table's path, the folder of summary.json and figures/)."""
    if cfg.format not in FORMATS:
        raise ConfigError(f"format: unknown '{cfg.format}', choose one of {list(FORMATS)}")
    if cfg.out in (None, ""):
        folder = Path(cfg.paths.output_dir) / "predictions" / f"{run_name}-{dataset}"
        return folder / f"predictions{FORMATS[cfg.format]}", folder
    out = Path(cfg.out)
    suffix = out.suffix.lower()
    if suffix in FORMATS.values():
        return out, out.parent / f"{out.stem}_files"
    if suffix:
        raise ConfigError(f"out: '{cfg.out}' must end in .parquet or .csv, or be a folder")
    return out / f"predictions{FORMATS[cfg.format]}", out


def _source(cfg: DictConfig):
    """The configured data source; a table without the configured label column is unlabeled."""
    from hydra.utils import instantiate

    from lithovae.data.sources import TableSource

    if not cfg.get("data"):
        raise ConfigError("data: choose the bins to predict, e.g. data=table data.path=FILE or "
                          "data=las data.path=FOLDER")
    source = instantiate(cfg.data, _convert_="all")
    label = getattr(source, "columns", {}).get("principal") if isinstance(source, TableSource) else None
    if label and label not in source.header():
        print(f"[lithovae.predict] {source.path.name}: no label column '{label}': predicting unlabeled bins")
        source.columns["principal"] = None
    return source


def _check_features(predictor, frame, dataset_path: Path) -> None:
    from lithovae.data.schema import DATASET_KEY_COLUMNS

    have = [c for c in frame.columns if c not in DATASET_KEY_COLUMNS]
    if have != predictor.features:
        raise DataError(f"{dataset_path}: the data's features {have} differ from the run's {predictor.features} "
                        "(set data.features to the run's)")


def predict(cfg: DictConfig) -> dict:
    import numpy as np
    import pandas as pd
    import torch

    from lithovae.files import atomic_write
    from lithovae.results import write_json

    torch.set_num_threads(cfg.threads)
    predictor, run_name = resolve_predictor(cfg.run, cfg.get("tracking_uri"), cfg.paths.mlflow_dir)
    source = _source(cfg)
    table_path, folder = _output_paths(cfg, run_name, source.name)
    dataset_path, manifest = source.prepare(cfg.paths.data_dir)
    frame = pd.read_parquet(dataset_path)
    _check_features(predictor, frame, dataset_path)
    started = time.perf_counter()
    bins = predictor.prepare(frame, where=str(dataset_path))
    outputs = predictor.network(bins.x, bins.observed)
    table = predictor.table(frame, bins, outputs, cfg.top_k)
    seconds = time.perf_counter() - started
    labeled = frame["principal"].notna().to_numpy()
    summary = {
        "run": str(cfg.run), "dataset": source.name, "synthetic": bool(source.synthetic),
        "dataset_path": str(dataset_path), "table": str(table_path),
        "weights": predictor.meta["weights"], "trained_on": predictor.meta["dataset"],
        "clustering": predictor.meta["clustering"],
        "n_bins": int(len(table)), "n_boreholes": int(table["borehole_id"].nunique()),
        "n_labeled": int(labeled.sum()), "seconds": seconds,
        "n_bins_imputed": int(sum(table[f"{f}_imputed"].sum() for f in predictor.features)),
        "n_values_out_of_range": int(table["n_out_of_range"].sum()),
        "n_bins_out_of_range": int((table["n_out_of_range"] > 0).sum()),
        "n_bins_anomalous_p99": int((table["anomaly_percentile"] > 99).sum()),
        "preparation": (manifest or {}).get("steps", {}),
    }
    if labeled.any():
        summary["scores"] = _scores(predictor, frame, bins, outputs, table, labeled)
    suffix = table_path.suffix
    atomic_write(table_path, lambda tmp: table.to_parquet(tmp, index=False) if suffix == ".parquet"
                 else table.to_csv(tmp, index=False))
    if cfg.figures:
        summary["figures"] = _figures(predictor, table, frame, labeled, folder / "figures")
    write_json(folder / "summary.json", summary)
    weights = predictor.meta["weights"]
    note = " (SYNTHETIC data, not a real-data result)" if source.synthetic else ""
    print(f"predicted {len(table)} bins in {summary['n_boreholes']} boreholes of {source.name}{note} "
          f"with {run_name} ({weights['evaluated_checkpoint']}, epoch {weights['evaluated_epoch']}, "
          f"policy {weights['checkpoint_policy']}; {predictor.clusterer.method} k={predictor.clusterer.k}) "
          f"in {seconds:.2f} s")
    print(f"out of the training range: {summary['n_values_out_of_range']} values in "
          f"{summary['n_bins_out_of_range']} bins; imputed: {summary['n_bins_imputed']} values; "
          f"anomaly above the training 99th percentile: {summary['n_bins_anomalous_p99']} bins")
    if "scores" in summary:
        s = summary["scores"]
        print("scores on the labeled bins: " + ", ".join(
            f"{k}={s[k]:.4f}" for k in ("ari_saved_clusterer", "ari_best", "baseline_ari_best", "r2_mean",
                                        "auc_pooled") if isinstance(s.get(k), float)))
    print(table_path)
    return summary


def _scores(predictor, frame, bins, outputs, table, labeled) -> dict:
    """On labeled bins: the ARI of the saved clusterer's clusters, and the metrics of
    ``lithovae.evaluate`` (clusterings refitted on these bins, raw-feature baseline beside)."""
    import numpy as np
    import torch
    from sklearn.metrics import adjusted_rand_score

    from lithovae.evaluation.scoring import evaluate

    enc = predictor.encoding
    y = enc.encode(frame["principal"], enc.classes).copy()  # writable: torch shares its memory
    tensors = {"x": bins.x, "observed": bins.observed, "y": torch.from_numpy(y),
               "y_group": torch.from_numpy(enc.encode(frame["lithology_group"], enc.groups).copy())}
    known = y >= 0
    metrics, _ = evaluate(predictor.model, tensors, predictor.model_features, scaler=predictor.scaler,
                          seed=predictor.meta["seed"], group_names=enc.groups, **predictor.meta["eval"])
    clusters = table["cluster"].to_numpy()
    metrics["ari_saved_clusterer"] = (float(adjusted_rand_score(y[known], clusters[known]))
                                      if np.unique(y[known]).size > 1 else float("nan"))
    metrics["n_labeled_known_lithology"] = int(known.sum())
    return metrics


def _figures(predictor, table, frame, labeled, folder: Path) -> list[str]:
    """A log figure per borehole; one that cannot be drawn is a one-line warning, not a lost table."""
    import pandas as pd

    from lithovae.evaluation.figures import _draw, _safe_name
    from lithovae.prediction.figure import prediction_log

    described = pd.Series(frame["principal"].to_numpy(), index=table.index) if labeled.any() else None
    boreholes = list(pd.unique(table["borehole_id"]))
    print(f"drawing {len(boreholes)} borehole logs in {folder}")
    written: dict = {}
    for bh in boreholes:
        _draw(written, str(bh), prediction_log, table, predictor.features, bh,
              folder / f"{_safe_name(bh)}.png", described)
    return [str(path) for path in written.values()]


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    exits_cleanly(predict)(cfg)  # one `error:` line and exit 2 for bad input


if __name__ == "__main__":
    main()
