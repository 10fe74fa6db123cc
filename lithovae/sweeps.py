"""Hydra multirun: one job's bad value fails that job only, and the sweep says so at the end.

A failing job has already printed its one-line ``error:`` and ended its MLflow run FAILED;
it leaves a ``FAILED`` file in its job directory and the sweep goes on. When the multirun
ends, :class:`FailedJobsReport` lists the failed jobs in one line and exits 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hydra.experimental.callback import Callback

FAILED_MARK = "FAILED"


def in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def mark_failed(job_dir: str | Path, code: int) -> None:
    from hydra.core.hydra_config import HydraConfig

    overrides = " ".join(HydraConfig.get().overrides.task)
    path = Path(job_dir)
    path.mkdir(parents=True, exist_ok=True)
    (path / FAILED_MARK).write_text(f"exit code {code}: {overrides}\n")


class FailedJobsReport(Callback):
    def on_multirun_end(self, config, **kwargs) -> None:
        failed = sorted(Path(config.hydra.sweep.dir).glob(f"*/{FAILED_MARK}"))
        if failed:
            names = ", ".join(f"#{p.parent.name}" for p in failed)
            print(f"error: {len(failed)} sweep job(s) failed ({names}); see each job's error line "
                  f"above and its FAILED MLflow run", file=sys.stderr)
            sys.exit(2)
