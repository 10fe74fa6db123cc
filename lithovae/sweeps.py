"""Hydra multirun: one job's bad value fails that job only, and the sweep says so at the end.

A failing job has already printed its one-line ``error:`` and ended its MLflow run FAILED;
it leaves a ``FAILED`` file in its job directory and the sweep goes on. When the multirun
ends, :class:`FailedJobsReport` lists the failed jobs in one line and exits 2.

A job that runs in a worker process of the multirun (the joblib launcher's loky workers)
ends, and its worker exits, within seconds of the multirun's own process dying
(:class:`ParentWatch`): loky workers would otherwise idle on, holding their memory.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

from hydra.experimental.callback import Callback

# not at the top: Hydra's runtime config is imported inside the functions that read it: it exists
# only in a Hydra job

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


POLL_S = 0.5   # how often a worker looks at its parent
GRACE_S = 5.0  # after the SIGTERM: time for the job to mark its MLflow run KILLED and return
_watching: set[int] = set()  # the processes (pids) that watch their parent already


def watch_parent(parent: int) -> None:
    """In a worker process of the multirun ``parent``: a daemon thread that, once the parent has
    died (this process was handed to another parent), ends the running job as SIGTERM does
    (RunInterrupted: its MLflow run KILLED) and exits the process after :data:`GRACE_S`."""
    if os.getpid() in _watching:
        return
    _watching.add(os.getpid())
    threading.Thread(target=_watch, args=(parent,), name="lithovae-parent-watch", daemon=True).start()


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(POLL_S)
    print(f"error: the multirun (process {parent}) has died: ending this worker (process {os.getpid()}) "
          f"and its job", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(GRACE_S)
    os._exit(128 + signal.SIGTERM)


class ParentWatch(Callback):
    """Starts :func:`watch_parent` in each worker process the multirun's jobs run in. The jobs
    of the basic and ensemble launchers run in the multirun's own process: nothing to watch;
    a SLURM job's parent is never the multirun's process: not watched either."""

    def __init__(self):
        self.sweep_pid: int | None = None  # travels with the callback into the workers

    def on_multirun_start(self, config, **kwargs) -> None:
        self.sweep_pid = os.getpid()

    def on_job_start(self, config, **kwargs) -> None:
        if self.sweep_pid is not None and os.getpid() != self.sweep_pid and os.getppid() == self.sweep_pid:
            watch_parent(self.sweep_pid)
