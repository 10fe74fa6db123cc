"""One stacked group of a sweep: build every member as a single run would, train them together,
score each one, and end each member's MLflow run on its own (a failing member fails alone)."""

from __future__ import annotations

import logging
import math
import sys

import torch
from hydra.core.utils import JobReturn, JobStatus

from lithovae import tracking
from lithovae.cli import EXIT_USER_ERROR, RunInterrupted, one_line, signals_interrupt
from lithovae.ensemble.jobs import Job
from lithovae.ensemble.stacked import Member, StackedTraining
from lithovae.errors import LithovaeError
from lithovae.evaluation.metrics import clustering_scores_many
from lithovae.files import load_checkpoint
from lithovae.models.base import latent_means
from lithovae.run import build_run, configured_logger, early_tags, run_tags, score_run, track_run
from lithovae.sweeps import mark_failed

log = logging.getLogger("lithovae")
LAUNCHER_TAG = "ensemble"  # each member's MLflow run's ``launcher`` tag


def _device(cfg) -> torch.device:
    accelerator = str(cfg.trainer.get("accelerator", "cpu")).lower()
    if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def _objective(job: Job, metrics: dict) -> float:
    value = metrics.get(job.task_cfg.optimized_metric)
    return float(value) if value is not None else float("nan")


def _user_error(job: Job, exc: BaseException) -> JobReturn:
    """What ``lithovae.train.main`` does with a bad value in a multirun: one error line, a FAILED
    mark in the job dir, NaN for the sweeper; other failures fail the job for Hydra."""
    if isinstance(exc, LithovaeError):
        print(f"error: {one_line(exc)}", file=sys.stderr)
        mark_failed(job.output_dir, EXIT_USER_ERROR)
        return job.end(JobStatus.COMPLETED, float("nan"))
    log.error("job #%d failed: %s", job.idx, one_line(exc))
    return job.end(JobStatus.FAILED, exc)


def _failed_before_training(job: Job, exc: BaseException) -> JobReturn:
    """A member that could not be built: a FAILED MLflow run saying why, as a single run leaves."""
    try:
        with tracking.tracked_run(configured_logger(job.task_cfg), job.task_cfg, early_tags(job.task_cfg)):
            raise exc
    except BaseException:  # noqa: BLE001 - recorded in the run; the job's return says it below
        pass
    return _user_error(job, exc)


def train_group(jobs: list[Job], number: int, run_alone, threads: int) -> dict[int, JobReturn]:
    results: dict[int, JobReturn] = {}
    datamodules: dict = {}
    built = []
    for job in jobs:
        with job.active():
            job.start()
            try:
                built.append((job, build_run(job.task_cfg, None, datamodules)))
            except Exception as exc:  # noqa: BLE001 - this member fails; the others train
                results[job.idx] = _failed_before_training(job, exc)
    if not built:
        return results

    members = [Member(name=f"#{job.idx}", plan=parts.plan, dm=parts.dm, policy=parts.policy,
                      ckpt_dir=parts.ckpt_dir, max_epochs=int(job.task_cfg.trainer.max_epochs),
                      early_stopping_patience=(int(job.task_cfg.early_stopping.patience)
                                               if job.task_cfg.early_stopping.enabled else None))
               for job, parts in built]
    torch.set_num_threads(threads)  # a group's tensors are large enough to use every core
    try:
        training = StackedTraining(members, _device(built[0][0].task_cfg))
        training.probe()
    except Exception as exc:  # noqa: BLE001 - e.g. an operation vmap cannot batch
        log.warning("group %d cannot train stacked (%s): its %d jobs run one after another",
                    number, one_line(exc), len(built))
        for job, _ in built:
            results[job.idx] = run_alone(job)
        return results

    size = len(built)
    for member, (job, parts) in zip(members, built):
        with job.active():
            logger = configured_logger(job.task_cfg)
            tags = {**early_tags(job.task_cfg), **run_tags(parts), "launcher": LAUNCHER_TAG,
                    "ensemble_group": f"{number}", "ensemble_size": str(size)}
            tracking.start_run(logger, job.task_cfg, {})
            parts.logger = logger
            track_run(parts, tags)
            parts.plan.mlflow_run_id = tracking.run_id(logger)
            member.on_epoch_end = _epoch_logger(logger)
    print(f"[ensemble launcher] group {number}: {size} members on {training.device} "
          f"({torch.get_num_threads()} threads), "
          f"jobs {[job.idx for job, _ in built]}", flush=True)

    with signals_interrupt():
        try:
            training.fit()
        except RunInterrupted as exc:
            for job, parts in built:
                tracking.end_run(parts.logger, "KILLED", {"stop_reason": exc.signame, "error": str(exc)[:5000]})
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(exc.exit_code)
        except Exception as exc:  # noqa: BLE001 - the shared computation failed: every member fails
            for job, parts in built:
                with job.active():
                    tracking.end_run(parts.logger, "FAILED", {"error": one_line(exc)[:5000]})
                    results[job.idx] = _user_error(job, exc)
            return results
        clusterings = _batched_clustering(built)
        for (job, parts), member, clustering in zip(built, members, clusterings):
            results[job.idx] = _score_member(job, parts, member, clustering)
    return results


def _score_member(job: Job, parts, member, clustering) -> JobReturn:
    with job.active():
        try:
            metrics = score_run(parts, epochs_trained=member.epochs_trained,
                                final_losses=member.final_losses, clustering=clustering)
        except RunInterrupted:
            raise
        except Exception as exc:  # noqa: BLE001 - this member fails alone
            tracking.end_run(parts.logger, "FAILED", {"error": one_line(exc)[:5000]})
            return _user_error(job, exc)
        tracking.end_run(parts.logger, "FINISHED")
        return job.end(JobStatus.COMPLETED, _objective(job, metrics))


def _epoch_logger(logger):
    """Per-epoch metrics to the member's MLflow run, under the names a single run logs."""
    def log_epoch(epoch: int, metrics: dict, step: int) -> None:
        if logger is not None:
            logger.log_metrics({**{k: v for k, v in metrics.items() if math.isfinite(v)}, "epoch": epoch},
                               step=step)
    return log_epoch


def _batched_clustering(built) -> list:
    """Every member's test-set clustering (the weights its policy chose), in one call of
    :func:`clustering_scores_many` (which batches the members on a GPU); None for a member whose
    latents cannot be computed here, which then clusters in its own scoring."""
    options = {k: v for k, v in built[0][1].score_options.items()
               if k in ("n_init", "gmm", "max_fit_samples", "backend")}
    first = built[0][1]
    if any(parts.score_options != first.score_options or parts.dm is not first.dm
           or parts.cfg.seed != first.cfg.seed for _, parts in built):
        return [None] * len(built)  # other test rows or options: each member clusters alone
    latents = []
    try:
        for _, parts in built:
            state = load_checkpoint(parts.policy.selected())
            parts.plan.load_state_dict(state["state_dict"])
            test = parts.dm.tensors["test"]
            latents.append(latent_means(parts.plan.model, test["x"], test["observed"]).numpy())
        labels = first.dm.tensors["test"]["y"].cpu().numpy()
        return clustering_scores_many(latents, labels, ks=tuple(built[0][1].score_options["k"]),
                                      seed=int(built[0][0].task_cfg.seed), **options)
    except Exception as exc:  # noqa: BLE001 - each member then clusters in its own scoring
        log.warning("batched clustering failed (%s): each member clusters on its own", one_line(exc))
        return [None] * len(built)
