"""python -m lithovae.predict run=RUN data=table data.path=FILE [out=...]: apply a trained run
to new bins.

RUN is a run directory, an MLflow run id, ``runs:/<run id>/model`` or ``models:/<name>/<version>``.
The bins are read and prepared by the ``data`` source (``table``, ``las``, ``synthetic``) like
training data, then scaled, embedded and clustered with the run's own scaler, network and
clusterer. Writes one row per bin (``predictions.parquet``, or CSV), ``summary.json`` and a
log figure per borehole; with labels in the data, also the scores of ``lithovae.evaluate``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig

from lithovae.cli import exits_cleanly, one_line
from lithovae.errors import ConfigError, DataError, LithovaeError, RunDirError
from lithovae.files import atomic_write
from lithovae.results import write_json

# not at the top: torch, MLflow, the scoring and the figures are imported inside the functions that
# use them: they take seconds to import, and a bad command line or a missing file is reported first

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
    """The Predictor of a logged lithovae model, built from its predictor bundle artifact alone:
    the model's code file is never run (``mlflow.pyfunc.load_model`` would run it, and a
    model on a shared server may have been tampered with)."""
    import mlflow

    from lithovae import tracking
    from lithovae.prediction.predictor import BUNDLE_DIR, Predictor

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    store, _ = tracking.resolved_store(tracking_uri, mlflow_dir, key="tracking_uri")
    artifact = f"{uri.rstrip('/')}/artifacts/{BUNDLE_DIR}"  # where log_model puts the bundle
    with tempfile.TemporaryDirectory(prefix="lithovae-model-") as tmp, tracking.global_uri(store):
        try:  # the MLmodel file (YAML, read safely) says whether it is a lithovae model
            flavor = mlflow.models.get_model_info(uri).flavors.get("python_function") or {}
        except Exception as exc:  # noqa: BLE001 - not found, no such version, not a model
            raise RunDirError(f"run: cannot load the MLflow model {uri} from {tracking.redacted(store)} "
                              f"({one_line(exc)[:300]})") from None
        if BUNDLE_DIR not in (flavor.get("artifacts") or {}):
            raise RunDirError(f"run: {uri} is not a lithovae model (no {BUNDLE_DIR} artifact)")
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=artifact, dst_path=tmp)
        except Exception as exc:  # noqa: BLE001 - a missing or unreadable artifact
            raise RunDirError(f"run: cannot download {artifact} from {tracking.redacted(store)} "
                              f"({one_line(exc)[:300]})") from None
        try:
            return Predictor(local)  # every file checked: nothing from it is run
        except LithovaeError as exc:  # named by the model URI, not the temporary copy
            raise type(exc)(str(exc).replace(str(local), artifact)) from None


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


def _source(cfg: DictConfig, predictor=None):
    """The configured data source; a table without the configured label column is unlabeled.
    Without ``data.label_names``, label codes are named as the run named them (its bundle's
    ``label_names``), so the described lithology of new wells matches the run's classes."""
    from hydra.utils import instantiate
    from omegaconf import open_dict

    from lithovae.data.sources import TableSource

    if not cfg.get("data"):
        raise ConfigError("data: choose the bins to predict, e.g. data=table data.path=FILE or "
                          "data=las data.path=FOLDER")
    saved = predictor.meta.get("label_names") if predictor is not None else None
    if saved and "label_names" in cfg.data and cfg.data.get("label_names") is None and cfg.data.get("label"):
        with open_dict(cfg):
            cfg.data.label_names = saved
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
    import pandas as pd
    import torch

    from lithovae.prediction.rows import REASON, imputed_counts, mark_unclustered

    torch.set_num_threads(cfg.threads)
    predictor, run_name = resolve_predictor(cfg.run, cfg.get("tracking_uri"), cfg.paths.mlflow_dir)
    source = _source(cfg, predictor)
    table_path, folder = _output_paths(cfg, run_name, source.name)
    _check_outputs(cfg, predictor, source, table_path, folder)  # before any work
    dataset_path, manifest = source.prepare(cfg.paths.data_dir)
    frame = pd.read_parquet(dataset_path)
    _check_features(predictor, frame, dataset_path)
    started = time.perf_counter()
    bins = predictor.prepare(frame, where=str(dataset_path))
    outputs = predictor.network(bins.x, bins.observed)
    table = mark_unclustered(predictor, predictor.table(frame, bins, outputs, cfg.top_k))
    seconds = time.perf_counter() - started
    labeled = frame["principal"].notna().to_numpy()
    summary = {
        "run": str(cfg.run), "dataset": source.name, "synthetic": bool(source.synthetic),
        "dataset_path": str(dataset_path), "table": str(table_path),
        "weights": predictor.meta["weights"], "trained_on": predictor.meta["dataset"],
        "clustering": predictor.meta["clustering"],
        "n_bins": int(len(table)), "n_boreholes": int(table["borehole_id"].nunique()),
        "n_labeled": int(labeled.sum()), "seconds": seconds,
        **imputed_counts(table, predictor.features),  # n_bins_imputed (bins), n_values_imputed (values)
        "n_values_out_of_range": int(table["n_out_of_range"].sum()),
        "n_bins_out_of_range": int((table["n_out_of_range"] > 0).sum()),
        "n_bins_anomalous_p99": int((table["anomaly_percentile"] > 99).sum()),
        "n_bins_unclustered": int((table["cluster"] < 0).sum()),
        "preparation": (manifest or {}).get("steps", {}),
    }
    if labeled.any():
        summary["scores"] = _scores(predictor, frame, bins, outputs, table, labeled)
    _write_outputs(cfg, table, summary, table_path, folder,
                   lambda: _figures(predictor, table, frame, labeled, folder / "figures", manifest))
    weights = predictor.meta["weights"]
    note = " (SYNTHETIC data, not a real-data result)" if source.synthetic else ""
    print(f"predicted {len(table)} bins in {summary['n_boreholes']} boreholes of {source.name}{note} "
          f"with {run_name} ({weights['evaluated_checkpoint']}, epoch {weights['evaluated_epoch']}, "
          f"policy {weights['checkpoint_policy']}; {predictor.clusterer.method} k={predictor.clusterer.k}) "
          f"in {seconds:.2f} s")
    print(f"out of the training range: {summary['n_values_out_of_range']} values in "
          f"{summary['n_bins_out_of_range']} bins; imputed: {summary['n_values_imputed']} values in "
          f"{summary['n_bins_imputed']} bins; "
          f"anomaly above the training 99th percentile: {summary['n_bins_anomalous_p99']} bins")
    if summary["n_bins_unclustered"]:
        print(f"no cluster: {summary['n_bins_unclustered']} bins (see the column {REASON})")
    if "scores" in summary:
        s = summary["scores"]
        print("scores on the labeled bins: " + ", ".join(
            f"{k}={s[k]:.4f}" for k in ("ari_saved_clusterer", "ari_best", "baseline_ari_best", "r2_mean",
                                        "auc_pooled") if isinstance(s.get(k), float)))
    print(table_path)
    return summary


def _check_outputs(cfg: DictConfig, predictor, source, table_path: Path, folder: Path) -> None:
    """The outputs are none of the inputs, and can be written: one ``out:`` line otherwise."""
    from lithovae.outputs import refuse_inputs, refuse_unwritable
    from lithovae.prediction.predictor import BUNDLE_DIR

    files = [table_path, folder / "summary.json"]
    folders = [folder / "figures"] if cfg.figures else []
    inputs = [("data.path", getattr(source, "path", None), None),
              ("data.raw_dir", getattr(source, "raw_dir", None), True),
              ("the prepared datasets in paths.data_dir", Path(cfg.paths.data_dir), True),
              ("the predictor bundle", predictor.path, True)]
    if predictor.path.name == BUNDLE_DIR:  # the run directory around it
        inputs.append(("the run directory", predictor.path.parent, True))
    if Path(str(cfg.run)).is_dir():
        inputs.append(("the run", Path(str(cfg.run)), True))
    refuse_inputs(files, folders, inputs)
    refuse_unwritable(files, folders, bool(cfg.overwrite))


def _write_outputs(cfg: DictConfig, table, summary: dict, table_path: Path, folder: Path, draw) -> None:
    """The table, the figures (``draw``) and summary.json, each written atomically; a write that
    fails (a full disk) removes what this call wrote and is one line naming the file."""

    created = [p for p in (folder, table_path.parent) if not p.exists()]
    written: list[Path] = []
    current = table_path
    try:
        atomic_write(table_path, lambda tmp: table.to_parquet(tmp, index=False) if table_path.suffix == ".parquet"
                     else table.to_csv(tmp, index=False))
        written.append(table_path)
        if cfg.figures:
            summary["figures"] = draw()
            written += [Path(p) for p in summary["figures"]]
        current = folder / "summary.json"
        write_json(current, summary)
    except OSError as exc:
        for path in written:
            path.unlink(missing_ok=True)
        for path in [folder / "figures", *created]:
            with contextlib.suppress(OSError):
                path.rmdir()  # only when left empty
        reason = f"{os.strerror(exc.errno)} ({errno.errorcode.get(exc.errno, exc.errno)})" \
            if exc.errno else str(exc).splitlines()[0]
        raise ConfigError(f"out: cannot write {current}: {reason}; nothing written") from None


def _scores(predictor, frame, bins, outputs, table, labeled) -> dict:
    """On labeled bins: the ARI of the saved clusterer's clusters, and the metrics of
    ``lithovae.evaluate`` (clusterings refitted on these bins, raw-feature baseline beside)."""
    import numpy as np
    import torch
    from sklearn.metrics import adjusted_rand_score

    from lithovae.evaluation.scoring import score_model

    enc = predictor.encoding
    y = enc.encode(frame["principal"], enc.classes).copy()  # writable: torch shares its memory
    tensors = {"x": bins.x, "observed": bins.observed, "y": torch.from_numpy(y),
               "y_group": torch.from_numpy(enc.encode(frame["lithology_group"], enc.groups).copy())}
    known = y >= 0
    metrics, _ = score_model(predictor.model, tensors, predictor.model_features, scaler=predictor.scaler,
                             seed=predictor.meta["seed"], group_names=enc.groups, **predictor.meta["eval"])
    clusters = table["cluster"].to_numpy()
    metrics["ari_saved_clusterer"] = (float(adjusted_rand_score(y[known], clusters[known]))
                                      if np.unique(y[known]).size > 1 else float("nan"))
    metrics["n_labeled_known_lithology"] = int(known.sum())
    return metrics


def _figures(predictor, table, frame, labeled, folder: Path, manifest: dict | None) -> list[str]:
    """A log figure per borehole (units from the data's manifest, axis scales as the run drew
    them, saved in its bundle); one that cannot be drawn is a one-line warning, not a lost table."""
    import pandas as pd

    from lithovae.evaluation.figures import _draw, _unique_names
    from lithovae.evaluation.well_log import axis_scales, dataset_units, prediction_log, saved_scales

    units, depth_unit = dataset_units(manifest)
    scales = saved_scales(predictor.meta.get("axis_scales"), predictor.features) \
        or axis_scales(table[predictor.features], predictor.scaler.transforms)
    described = pd.Series(frame["principal"].to_numpy(), index=table.index) if labeled.any() else None
    boreholes = list(pd.unique(table["borehole_id"]))
    print(f"drawing {len(boreholes)} borehole logs in {folder}")
    written: dict = {}
    names = _unique_names(boreholes)  # A/B and A_B: two files
    for bh in boreholes:
        _draw(written, str(bh), prediction_log, table, predictor.features, bh,
              folder / f"{names[bh]}.png", described, units=units, depth_unit=depth_unit, scales=scales)
    return [str(path) for path in written.values()]


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    exits_cleanly(predict)(cfg)  # one `error:` line and exit 2 for bad input


if __name__ == "__main__":
    main()
