"""python -m lithovae.evaluate run_dir=RUN [data=...] [split=...]: re-evaluate a trained run.

Scaler, label encoding, model and masking come from the run, so nothing needs
to be respecified; any dataset and split can be scored. Metrics go to
``RUN/evaluations/<dataset>-<split>/metrics.json`` and to MLflow.
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from lithovae.cli import exits_cleanly
from lithovae.errors import CheckpointError, ConfigError, RunDirError


def load_run_model(run_dir: Path, spec, checkpoint: str = "scored"):
    """The run's model with the chosen checkpoint's weights, and which weights those are."""
    from hydra.utils import instantiate

    from lithovae.files import load_checkpoint

    run_cfg = OmegaConf.load(run_dir / "config.yaml")
    if checkpoint == "scored":  # the checkpoint the run's own metrics came from
        metrics_path = run_dir / "metrics.json"
        scored = json.loads(metrics_path.read_text()).get("evaluated_checkpoint") if metrics_path.exists() else None
        checkpoint = Path(scored).stem if scored else "last"
    path = Path(checkpoint) if checkpoint not in ("best", "last") else run_dir / "checkpoints" / f"{checkpoint}.ckpt"
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    model = instantiate(run_cfg.model, _partial_=True, _convert_="all")(data=spec)
    checkpoint_state = load_checkpoint(path)  # weights_only: a pickled payload is refused, never run
    state = checkpoint_state["state_dict"]
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    scored = {"evaluated_checkpoint": path.name, "evaluated_epoch": checkpoint_state.get("epoch"),
              "evaluated_global_step": checkpoint_state.get("global_step")}
    return model, scored


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


def evaluate_run(cfg: DictConfig) -> dict:
    import torch
    from hydra.utils import instantiate

    from lithovae import tracking
    from lithovae.data.datamodule import SPLITS, LabelEncoding, LithoDataModule
    from lithovae.data.scaler import DistributionAwareScaler
    from lithovae.evaluation.scoring import evaluate, split_eval_options
    from lithovae.results import write_json

    if cfg.log_mlflow:  # an unreachable tracking server fails now, not after the evaluation
        tracking.resolved_store(cfg.get("tracking_uri"), cfg.paths.mlflow_dir, key="tracking_uri")
    run_dir = Path(cfg.run_dir)
    needed = ["config.yaml", "scaler.json", "label_encoding.json"]
    missing = [n for n in needed if not (run_dir / n).exists()]
    if missing:
        raise RunDirError(f"{run_dir}: not a lithovae run directory (missing {missing[0]})")
    if cfg.split not in (*SPLITS, "all"):
        raise ConfigError(f"split: unknown '{cfg.split}', choose one of {[*SPLITS, 'all']}")
    run_cfg = _with_current_defaults(OmegaConf.load(run_dir / "config.yaml"))
    torch.set_num_threads(run_cfg.get("threads", 1))
    source = instantiate(cfg.data if cfg.get("data") else run_cfg.data, _convert_="all")
    dataset_path, _ = source.prepare(cfg.paths.data_dir)
    encoding = LabelEncoding(**json.loads((run_dir / "label_encoding.json").read_text()))
    dm = LithoDataModule(dataset_path, seed=run_cfg.seed,
                         scaler=DistributionAwareScaler.load(run_dir / "scaler.json"), encoding=encoding,
                         **OmegaConf.to_container(run_cfg.datamodule))
    dm.setup()
    model, scored = load_run_model(run_dir, dm.data_spec(), cfg.weights)
    if cfg.split == "all":
        tensors = {k: torch.cat([dm.tensors[s][k] for s in SPLITS]) for k in dm.tensors["test"]}
    else:
        tensors = dm.tensors[cfg.split]
    mask = instantiate(run_cfg.mask, _convert_="all").bind(dm.feature_names)
    score_options, _ = split_eval_options(OmegaConf.to_container(run_cfg.eval))
    metrics, _ = evaluate(model, tensors, dm.feature_names, mask=mask, seed=run_cfg.seed,
                          baseline_cache_dir=cfg.paths.data_dir, scaler=dm.scaler,
                          group_names=encoding.vocabulary("group"), **score_options)
    metrics.update(scored)
    metrics.update({"dataset": source.name, "synthetic": source.synthetic, "split": cfg.split,
                    "run_dir": str(run_dir), "preset": run_cfg.get("preset")})
    out = run_dir / "evaluations" / f"{source.name}-{cfg.split}"
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
        f"{k}={metrics[k]:.4f}" for k in ("ari_best", "baseline_ari_best", "r2_mean", "auc_pooled")
        if isinstance(metrics.get(k), float)) + f" ({scored['evaluated_checkpoint']}, epoch "
        f"{scored['evaluated_epoch']})")
    print(out / "metrics.json")
    return metrics


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    exits_cleanly(evaluate_run)(cfg)  # one `error:` line and exit 2 for bad input


if __name__ == "__main__":
    main()
