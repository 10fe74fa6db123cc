"""python -m lithovae.evaluate run_dir=RUN [data=...] [split=...]: re-evaluate a trained run.

Scaler, label encoding, model and masking come from the run, so nothing needs
to be respecified; any dataset and split can be scored. Metrics go to
``RUN/evaluations/<dataset>-<split>/metrics.json`` and to MLflow.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import hydra
import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lithovae.cli import exits_cleanly, one_line
from lithovae.config import check_saved_ranges
from lithovae.data.splits import saved_assignment
from lithovae.errors import CheckpointError, ConfigError, DataError, RunDirError
from lithovae.files import fit_weights, load_checkpoint
from lithovae.outputs import check_evaluation_output
from lithovae.results import write_json
from lithovae.untrusted import (load_config, load_label_encoding, load_run_config, load_scaler,
                                read_json)

# not at the top: torch, Lightning, MLflow and the scoring, which take seconds to import, are
# imported inside the functions that use them; above is what the command line needs before it
# knows a run is worth scoring (its config composed, its run_dir checked)


def load_run_model(run_dir: Path, spec, checkpoint: str = "scored"):
    """The run's model with the chosen checkpoint's weights, and which weights those are."""
    run_cfg = load_config(run_dir / "config.yaml")  # no foreign _target_ at any depth
    if checkpoint == "scored":  # the checkpoint the run's own metrics came from
        checkpoint = _scored_checkpoint(run_dir / "metrics.json")
        if checkpoint is None:  # not scored yet (stopped while scoring): what its policy scores
            checkpoint = str(instantiate(run_cfg.checkpoint).bind(run_dir / "checkpoints").selected())
    path = Path(checkpoint) if checkpoint not in ("best", "last") else run_dir / "checkpoints" / f"{checkpoint}.ckpt"
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    checkpoint_state = load_checkpoint(path)  # weights_only: a pickled payload is refused, never run
    state = checkpoint_state.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a lithovae checkpoint (no state_dict)")
    model_cfg = run_cfg.model
    if "pretrained" in model_cfg:  # the checkpoint holds every weight: read no file the config names
        model_cfg = OmegaConf.merge(model_cfg, {"pretrained": None})
    try:
        model = instantiate(model_cfg, _partial_=True, _convert_="all")(data=spec)
    except Exception as exc:  # noqa: BLE001 - a constructor refusing the saved values
        raise RunDirError(f"{run_dir / 'config.yaml'}: model: cannot build {model_cfg.get('_target_')} "
                          f"({one_line(exc)[:200]})") from None
    fit_weights(model, {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}, path)
    scored = {"evaluated_checkpoint": path.name, "evaluated_epoch": checkpoint_state.get("epoch"),
              "evaluated_global_step": checkpoint_state.get("global_step")}
    return model, scored


def _scored_checkpoint(metrics_path: Path) -> str | None:
    """``best`` or ``last``: the checkpoint the run's metrics.json says was scored (``last``
    when it names none; None when the run has no metrics.json); the file names only one of the
    run's own checkpoints."""
    if not metrics_path.exists():
        return None
    try:
        scored = json.loads(metrics_path.read_text()).get("evaluated_checkpoint")
    except (ValueError, AttributeError, UnicodeDecodeError):
        raise RunDirError(f"{metrics_path}: not a readable metrics file (JSON object expected)") from None
    if scored in (None, "best.ckpt", "last.ckpt"):
        return Path(scored).stem if scored else "last"
    raise RunDirError(f"{metrics_path}: evaluated_checkpoint {str(scored)[:80]!r} is not best.ckpt or last.ckpt")


def _option_yaml(conf: Path, group: str, target) -> DictConfig | None:
    """The packaged ``conf/<group>/*.yaml`` whose ``_target_`` is ``target`` (its defaults
    list merged in), or None when no option, or more than one, builds that target."""
    def load(path: Path) -> DictConfig:
        node = OmegaConf.load(path)
        parents = [e for e in node.pop("defaults", []) if e != "_self_"]
        return OmegaConf.merge(*[load(path.parent / f"{p}.yaml") for p in parents], node)

    nodes = [n for n in map(load, sorted((conf / group).glob("*.yaml"))) if n.get("_target_") == target]
    return nodes[0] if len(nodes) == 1 else None


def _with_current_defaults(run_cfg: DictConfig) -> DictConfig:
    """A run's saved config, with the keys added since it was made at their defaults, read
    from the packaged YAML: ``datamodule`` and ``eval`` (e.g. datamodule.steps_per_batch),
    and the ``model`` and ``data`` keys of the option that builds the run's ``_target_``
    (e.g. model.init_epoch of VaDE, data.encoding: the constructors have no defaults)."""
    conf = Path(__file__).parent / "conf"
    train_yaml = OmegaConf.load(conf / "train.yaml")
    current = {"datamodule": train_yaml.datamodule, "eval": OmegaConf.load(conf / "eval" / "default.yaml")}
    for group in ("model", "data"):
        node = run_cfg.get(group)
        option = _option_yaml(conf, group, node.get("_target_")) if isinstance(node, DictConfig) else None
        if option is not None:
            current[group] = option
    return OmegaConf.merge(current, run_cfg)


def _saved_split(run_dir: Path, split: str) -> dict[str, list[str]] | None:
    """The run's own borehole parts (its split.json), so a run is scored on the boreholes it
    held out whatever rows were added or removed since. A run saved before runs kept their
    split has none: its split is recomputed from the data, with one line saying so."""
    assignment = saved_assignment(run_dir / "split.json")
    if assignment is None:
        if split == "unseen":
            raise RunDirError(f"{run_dir}: no split.json, so which boreholes the run never saw is "
                              "unknown; split=unseen needs it")
        print(f"[lithovae.evaluate] warning: {run_dir}: no split.json (a run saved before runs kept "
              "their split): the split is recomputed from the data, so boreholes added or removed "
              "since can move between train, val and test")
    return assignment


def _scored_part(dm, split: str, dataset: str):
    """The tensors of ``split`` (``all``: train, val and test) and its borehole ids. The run's
    boreholes that the data lacks are named in one warning line; none left is an error."""
    import torch

    parts = _parts(split)
    if split == "unseen" and not len(dm.split_boreholes["unseen"]):
        raise DataError(f"split=unseen: every borehole of {dataset} is in the run's train, val or "
                        "test part; none is unseen")
    if dm.assignment is not None and split != "unseen":
        missing = [b for p in parts for b in dm.missing_boreholes[p]]
        expected = sum(len(dm.assignment[p]) for p in parts)
        named = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        if len(missing) == expected:
            raise DataError(f"split={split}: none of the run's {expected} {split} boreholes is in {dataset} "
                            f"({named}); split=unseen scores the boreholes the run never saw")
        if missing:
            print(f"[lithovae.evaluate] warning: {len(missing)} of the run's {expected} {split} boreholes "
                  f"are not in {dataset} and are not scored: {named}")
    tensors = {k: torch.cat([dm.tensors[p][k] for p in parts]) for k in dm.tensors[parts[0]]}
    boreholes = sorted(b for p in parts for b in dm.split_boreholes[p])
    rows = np.concatenate([dm.frames[p]["borehole_id"].to_numpy() for p in parts])
    return tensors, boreholes, rows


def _parts(split: str) -> list[str]:
    from lithovae.data.datamodule import SPLITS

    return list(SPLITS) if split == "all" else [split]


def _train_time(split_path: Path) -> dict:
    """``train_time`` (seconds) as the run's split.json keeps it after its fit; none before."""
    if not split_path.exists():
        return {}
    value = read_json(split_path).get("stats", {}).get("train_time")
    if value is None:
        return {}
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RunDirError(f"{split_path}: stats.train_time: {str(value)[:40]!r} is not a number of seconds")
    return {"train_time": float(value)}


def run_record(run_dir: Path, run_cfg: DictConfig, dm, model, split: str) -> dict:
    """What the run's own metrics.json says beside its scores, for the scored part: the
    checkpoint policy, the training (epochs, final losses, MLflow run: from the run's last
    checkpoint), the data (:func:`lithovae.run.data_record`), the latent width and the seed."""
    from lithovae.run import data_record, training_record

    record = {"checkpoint_policy": instantiate(run_cfg.checkpoint).name}
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.exists():
        record.update(training_record(load_checkpoint(last)))
    record.update({**data_record(dm, _parts(split)), **_train_time(run_dir / "split.json"),
                   "latent_dim": int(getattr(model, "latent_dim", 0)), "seed": int(run_cfg.seed)})
    return record


def evaluate_run(cfg: DictConfig) -> dict:
    import torch

    from lithovae import tracking
    from lithovae.data.datamodule import SPLITS, LithoDataModule
    from lithovae.evaluation.scoring import hierarchy_inputs, score_model, split_eval_options

    if cfg.log_mlflow:  # an unreachable tracking server fails now, not after the evaluation
        tracking.resolved_store(cfg.get("tracking_uri"), cfg.paths.mlflow_dir, key="tracking_uri")
    run_dir = Path(cfg.run_dir)
    needed = ["config.yaml", "scaler.json", "label_encoding.json"]
    missing = [n for n in needed if not (run_dir / n).exists()]
    if missing:
        raise RunDirError(f"{run_dir}: not a lithovae run directory (missing {missing[0]})")
    if cfg.split not in (*SPLITS, "all", "unseen"):
        raise ConfigError(f"split: unknown '{cfg.split}', choose one of {[*SPLITS, 'all', 'unseen']}")
    assignment = _saved_split(run_dir, cfg.split)
    run_cfg = _with_current_defaults(load_run_config(run_dir))  # checked (and .hydra/) before any build
    check_saved_ranges(run_cfg, str(run_dir / "config.yaml"))  # e.g. a saved context of 1e9
    torch.set_num_threads(run_cfg.get("threads", 1))
    source = instantiate(cfg.data if cfg.get("data") else run_cfg.data, _convert_="all")
    out = run_dir / "evaluations" / f"{source.name}-{cfg.split}"
    check_evaluation_output(run_dir, out, source, str(cfg.weights))  # it replaces no input
    dataset_path, _ = source.prepare(cfg.paths.data_dir)
    encoding = load_label_encoding(run_dir / "label_encoding.json")
    dm = LithoDataModule(dataset_path, seed=run_cfg.seed,
                         scaler=load_scaler(run_dir / "scaler.json"), encoding=encoding,
                         assignment=assignment, **OmegaConf.to_container(run_cfg.datamodule))
    dm.setup()
    tensors, boreholes, row_boreholes = _scored_part(dm, cfg.split, source.name)
    model, scored = load_run_model(run_dir, dm.data_spec(), cfg.weights)
    mask = instantiate(run_cfg.mask, _convert_="all").bind(dm.feature_names)
    score_options, _ = split_eval_options(OmegaConf.to_container(run_cfg.eval))
    # a part other than the validation one is scored with clusterings chosen on it
    held_out = ({p: dm.tensors[p] for p in ("val", "train") if len(dm.tensors[p]["x"])}
                if cfg.split in ("test", "unseen") and len(dm.tensors["val"]["x"]) else None)
    metrics, _ = score_model(model, tensors, dm.feature_names, mask=mask, seed=run_cfg.seed,
                             baseline_cache_dir=cfg.paths.data_dir, scaler=dm.scaler,
                             group_names=encoding.vocabulary("group"), held_out=held_out,
                             boreholes=row_boreholes, hierarchy=hierarchy_inputs(dm, _parts(cfg.split)),
                             **score_options)
    metrics.update(scored)
    metrics.update(run_record(run_dir, run_cfg, dm, model, cfg.split))
    metrics.update({"dataset": source.name, "synthetic": source.synthetic, "split": cfg.split,
                    "run_dir": str(run_dir), "preset": run_cfg.get("preset"),
                    "split_from": "split.json" if assignment is not None else "recomputed",
                    "boreholes": boreholes})
    write_json(out / "metrics.json", metrics)
    if cfg.log_mlflow:
        logger = tracking.mlflow_logger("lithovae-evaluate", cfg.paths.mlflow_dir,
                                        run_name=f"{run_cfg.get('preset') or 'run'}@{source.name}-{cfg.split}",
                                        tracking_uri=cfg.get("tracking_uri"), uri_key="tracking_uri")
        tags = {"evaluates": str(run_dir), "dataset": source.name, "split": cfg.split,
                "synthetic": str(source.synthetic)}
        with tracking.tracked_run(logger, run_cfg, tags):
            tracking.log_test_metrics(logger, metrics)
            tracking.log_artifacts(logger, [out / "metrics.json"])
    print(f"{source.name} [{cfg.split}]: " + ", ".join(
        f"{k}={metrics[k]:.4f}" for k in ("ari_selected", "baseline_ari_selected", "ari_inductive", "ari_best",
                                          "baseline_ari_best", "r2_mean", "auc_pooled")
        if isinstance(metrics.get(k), float)) + f" ({scored['evaluated_checkpoint']}, epoch "
        f"{scored['evaluated_epoch']})")
    print(out / "metrics.json")
    return metrics


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    exits_cleanly(evaluate_run)(cfg)  # one `error:` line and exit 2 for bad input


if __name__ == "__main__":
    main()
