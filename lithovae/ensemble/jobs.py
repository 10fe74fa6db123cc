"""One job of an ensemble sweep (:mod:`lithovae.ensemble.launcher`): its composed config and
Hydra's per-job context, which both the launcher and a stacked group (:mod:`lithovae.ensemble.group`)
work in."""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Sequence
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, _save_config
from hydra.types import HydraContext
from omegaconf import DictConfig, OmegaConf, open_dict, read_write


class Job:
    """One job of the sweep: its composed config, and Hydra's per-job context around a block."""

    def __init__(self, idx: int, overrides: Sequence[str], config: DictConfig, hydra_context: HydraContext):
        self.idx, self.overrides, self.hydra_context = idx, list(overrides), hydra_context
        self.config = config
        with self.active():
            out = Path(str(OmegaConf.select(config, "hydra.sweep.dir"))) / str(
                OmegaConf.select(config, "hydra.sweep.subdir"))
            with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
                config.hydra.runtime.output_dir = os.path.abspath(out)
        self.output_dir = Path(config.hydra.runtime.output_dir)
        self.task_cfg = copy.deepcopy(config)
        with read_write(self.task_cfg), open_dict(self.task_cfg):
            del self.task_cfg["hydra"]
        self.started = False

    @contextlib.contextmanager
    def active(self):
        """HydraConfig set to this job's config for the block (what ``${hydra:...}``, the job tags
        and the sweep's MLflow experiment read)."""
        previous = HydraConfig.instance().cfg
        HydraConfig.instance().set_config(self.config)
        try:
            yield self
        finally:
            HydraConfig.instance().cfg = previous

    def start(self) -> None:
        """What Hydra's run_job does before the task: the job directory, its .hydra files, the
        callbacks' on_job_start."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if self.config.hydra.output_subdir is not None:
            hydra_output = self.output_dir / str(self.config.hydra.output_subdir)
            _save_config(self.task_cfg, "config.yaml", hydra_output)
            _save_config(copy.deepcopy(HydraConfig.instance().cfg), "hydra.yaml", hydra_output)
            _save_config(self.config.hydra.overrides.task, "overrides.yaml", hydra_output)
        self.hydra_context.callbacks.on_job_start(config=self.config, task_function=None)
        self.started = True

    def end(self, status: JobStatus, value) -> JobReturn:
        ret = JobReturn(overrides=list(OmegaConf.to_container(self.config.hydra.overrides.task)),
                        cfg=self.task_cfg, hydra_cfg=copy.deepcopy(HydraConfig.instance().cfg),
                        working_dir=os.getcwd(), task_name=str(self.config.hydra.job.name),
                        status=status, _return_value=value)
        self.hydra_context.callbacks.on_job_end(config=self.config, job_return=ret)
        return ret
