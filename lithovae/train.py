"""python -m lithovae.train [experiment=PRESET] [model=...] [beta=...] [mask=...] [alpha=...]

Builds (or reuses) the dataset, trains the composed model, evaluates it on the
test boreholes with latent means, writes ``metrics.json`` in the run dir and
logs everything to MLflow. Returns ``optimized_metric`` (the sweep objective: a validation
score, ``val_ari_selected`` by default). The run itself is :mod:`lithovae.run`'s; this module
parses the command line and turns errors into exit codes.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import lithovae.config  # noqa: F401 - registers the train schema before Hydra composes
from lithovae import slurm  # registers the SLURM launcher's resolvers before Hydra composes
from lithovae.cli import EXIT_USER_ERROR, RunInterrupted, exits_cleanly, one_line
from lithovae.errors import LithovaeError
from lithovae.results import write_text
from lithovae.sweeps import FAILED_MARK, in_multirun, mark_failed


def train(cfg: DictConfig, logger=None, callbacks: tuple = (), outputs: Sequence = ()) -> dict:
    """One run (:func:`lithovae.run.train`): its metrics; raises, never exits."""
    # not at the top: torch and Lightning take seconds to import, and a command line Hydra
    # refuses (an unknown option, a typo) needs neither
    from lithovae import run as lifecycle

    return lifecycle.train(cfg, logger, callbacks, outputs)


# train as the command line runs it: one `error:` line and exit code 2 (143/130 when stopped)
run = exits_cleanly(train)


def _mark_failed_run(cfg: DictConfig, message: str) -> None:
    """A run that stops on a user error leaves its folder (Hydra made it, with ``.hydra/``)
    saying why: ``FAILED`` holds the error line, as a failed multirun job's folder does."""
    try:
        run_dir = Path(cfg.paths.run_dir)
        if run_dir.is_dir():
            write_text(run_dir / FAILED_MARK, f"exit code {EXIT_USER_ERROR}: error: {message}\n")
    except Exception:  # noqa: BLE001 - an unresolvable run dir, a full disk: the error line still prints
        pass


def _in_optuna_search() -> bool:
    try:
        return "optuna" in str(HydraConfig.get().sweeper.get("_target_", "")).lower()
    except ValueError:
        return False


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Train; return ``cfg.optimized_metric`` (the objective of a sweeper)."""
    if _in_optuna_search():
        metrics = train(cfg)  # the sweeper records a raising trial as FAIL and goes on
    elif in_multirun():
        slurm.resume_own_checkpoint(cfg)  # a requeued SLURM job continues from its own last.ckpt
        try:
            metrics = train(cfg)
        except LithovaeError as exc:
            # one bad value fails its own job (FAILED MLflow run); the others run
            print(f"error: {one_line(exc)}", file=sys.stderr)
            mark_failed(cfg.paths.run_dir, EXIT_USER_ERROR)
            return float("nan")
        except RunInterrupted as exc:  # a stopped job stops the sweep; a SLURM job may requeue itself
            print(f"error: {exc}", file=sys.stderr)
            slurm.requeue_stopped_job(cfg)
            sys.exit(exc.exit_code)
    else:
        metrics = exits_cleanly(train, on_user_error=lambda message: _mark_failed_run(cfg, message))(cfg)
    value = metrics.get(cfg.optimized_metric)
    if value is None and cfg.optimized_metric not in metrics:
        print(f"error: optimized_metric: '{cfg.optimized_metric}' is not a metric of this run", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    return float(value) if value is not None else float("nan")


if __name__ == "__main__":
    main()
