"""``hydra/launcher=ensemble``: a sweep's jobs that share an architecture and a dataset train as
one stacked computation (:mod:`lithovae.ensemble.stacked`); every job still becomes its own run.

The launcher groups the jobs by everything but what a member may vary (:data:`MEMBER_KEYS`), cuts
each group to ``max_group_size``, and trains each group together. Jobs that cannot be grouped
(a job alone in its group, or one :func:`lithovae.ensemble.stacked.unstackable` names: DDP, a
resumed run, a model with per-model epoch hooks) run one after another, exactly as the basic
launcher runs them.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from lithovae.checks import integer_at_least
from lithovae.ensemble.jobs import Job
from lithovae.errors import ConfigError

log = logging.getLogger("lithovae")

# what the members of one group may set differently: their training plans, schedules, seeds
# (and so their data splits), policies, and where and under which names their results go
MEMBER_KEYS = ("seed", "mask", "beta", "alpha", "optimizer", "lr_scheduler", "early_stopping",
               "checkpoint", "logger", "paths", "preset", "optimized_metric", "task_name", "study",
               "hparams_search", "ckpt_path")


def group_key(cfg: DictConfig) -> str | None:
    """What a job shares with the others of its group (JSON), or None when it cannot be grouped."""
    # stacked and group (below) import torch and Lightning: not at the top, so checking the
    # launcher's options before a sweep (hydra_callbacks.check_launcher) stays quick
    from lithovae.ensemble.stacked import unstackable

    if unstackable(cfg) is not None:
        return None
    shared = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k not in MEMBER_KEYS}
    shared["trainer"] = {k: v for k, v in shared.get("trainer", {}).items() if k != "max_epochs"}
    return json.dumps(shared, sort_keys=True, default=str)


def check_options(max_group_size, threads) -> tuple[int, int | None]:
    """The launcher's options, or a one-line ConfigError naming the key (checked before the
    sweep starts: lithovae.hydra_callbacks.check_launcher)."""
    try:
        size = integer_at_least("hydra.launcher.max_group_size:", max_group_size, 1)
        return size, None if threads is None else integer_at_least("hydra.launcher.threads:", threads, 1)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


class EnsembleLauncher(Launcher):
    def __init__(self, *, max_group_size: int, threads: int | None):
        self.max_group_size, self.threads = check_options(max_group_size, threads)
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from lithovae.console import quiet_third_party  # not at import: Hydra scans launchers at start
        from lithovae.ensemble.stacked import unstackable

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        quiet_third_party()
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        jobs = []
        for offset, overrides in enumerate(job_overrides):
            idx = initial_job_idx + offset
            config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(config):
                config.hydra.job.id = idx
                config.hydra.job.num = idx
            jobs.append(Job(idx, overrides, config, self.hydra_context))
        groups: dict[str, list[Job]] = {}
        alone: list[Job] = []
        for job in jobs:
            with job.active():
                try:
                    key = group_key(job.task_cfg)
                    why = unstackable(job.task_cfg) if key is None else None
                except Exception:  # noqa: BLE001 - an unresolvable config fails in its own run
                    key = why = None
            (alone.append(job) if key is None else groups.setdefault(key, []).append(job))
            if why is not None:
                print(f"[ensemble launcher] job #{job.idx} runs on its own: {why}", flush=True)
        batches: list[list[Job]] = []
        for members in groups.values():
            for start in range(0, len(members), self.max_group_size):
                batch = members[start:start + self.max_group_size]
                (batches.append(batch) if len(batch) > 1 else alone.extend(batch))
        print(f"[ensemble launcher] {len(jobs)} jobs: {len(batches)} stacked group(s) of "
              f"{[len(b) for b in batches]}, {len(alone)} job(s) one after another", flush=True)
        results: dict[int, JobReturn] = {}
        for number, batch in enumerate(batches):
            results.update(self._run_group(batch, number))
        for job in sorted(alone, key=lambda j: j.idx):
            results[job.idx] = self._run_alone(job)
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return [results[job.idx] for job in jobs]

    def _run_alone(self, job: Job) -> JobReturn:
        log.info("#%d : %s", job.idx, " ".join(filter_overrides(job.overrides)))
        return run_job(hydra_context=self.hydra_context, task_function=self.task_function, config=job.config,
                       job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")

    def _run_group(self, jobs: list[Job], number: int) -> dict[int, JobReturn]:
        from lithovae.ensemble.group import train_group  # torch and Lightning: see group_key

        return train_group(jobs, number, self._run_alone, self.threads or len(os.sched_getaffinity(0)))

