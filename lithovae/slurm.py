"""SLURM sweeps (``hydra/launcher=slurm``): hydra-submitit-launcher, with what a cluster needs.

- **Resources from the run's config**: ``gpus_per_node`` and ``cpus_per_task`` are interpolated
  from ``trainer`` and ``threads`` by the resolvers below, registered when ``lithovae.train`` is
  imported (before Hydra composes).
- **Checks before any job starts** (:func:`check_cluster`, from the ``FreshOutputDir`` callback):
  SLURM's commands on PATH, the controller answering, the partition existing, and the job
  accepted by ``sbatch --test-only``; each fault is one ``error:`` line naming the setting, exit 2.
- **Preemption and time limits** (:func:`requeue_stopped_job`, :func:`resume_own_checkpoint`):
  SLURM stops a job with SIGTERM (preemption, ``scontrol requeue``, ``scancel --signal=TERM``,
  and ``signal_delay_s`` before the time limit, which :class:`SlurmLauncher` asks for instead of
  submitit's USR2). lithovae ends the run KILLED with its ``last.ckpt``; a job SLURM is not
  already ending requeues itself, up to ``hydra.launcher.max_num_timeout`` times; a requeued job
  resumes from its own ``last.ckpt`` in its own run directory (a new MLflow run, tagged as a
  manual resume is).
- **Waiting without accounting** (:class:`SlurmLauncher`): job states come from ``squeue``, not
  ``sacct`` (which fails on clusters without slurmdbd, and submitit then warns every few seconds);
  a job that ends without a result (killed, out of memory, out of requeues) or with an error is
  one ``error:`` line, a ``FAILED`` file in its folder, and the sweep goes on
  (:class:`lithovae.sweeps.FailedJobsReport` lists the failed jobs when it ends).
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from omegaconf import OmegaConf

from lithovae.cli import EXIT_USER_ERROR, one_line
from lithovae.sweeps import FAILED_MARK

# not at the top: submitit, Hydra's launcher plugin and omegaconf are imported inside the functions
# that submit or resume a job: the requeue handler in the job itself needs none

log = logging.getLogger("lithovae")

GPU_ACCELERATORS = ("gpu", "cuda", "auto")  # trainer.accelerator values that run on a GPU when one is there
COMMANDS = ("sbatch", "squeue", "sinfo", "scontrol")
SUBMITIT_ONLY = ("submitit_folder", "max_num_timeout")  # executor options, not sbatch ones
COMMAND_TIMEOUT_S = 60
POLL_S = 2.0             # how often the sweep looks for finished jobs' result files (no RPC)
SQUEUE_EVERY_S = (10.0, 60.0)  # squeue for jobs that ended without a result: first, then at most
RESULT_GRACE_S = 15.0    # a shared file system may show a job's result file after SLURM says it ended
WAITING = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD",
           "RESIZING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD", "PREEMPTED"}
# sbatch's refusal -> the launcher settings it is about
REFUSALS = [
    ("partition", ("hydra.launcher.partition",)),
    ("generic resource", ("hydra.launcher.gpus_per_node", "hydra.launcher.gres")),
    ("gres", ("hydra.launcher.gpus_per_node", "hydra.launcher.gres")),
    ("memory", ("hydra.launcher.mem_gb",)),
    ("time limit", ("hydra.launcher.timeout_min",)),
    ("account", ("hydra.launcher.account",)),
    ("qos", ("hydra.launcher.qos",)),
    ("feature", ("hydra.launcher.constraint",)),
    ("constraint", ("hydra.launcher.constraint",)),
    ("node configuration", ("hydra.launcher.cpus_per_task", "hydra.launcher.mem_gb", "hydra.launcher.gpus_per_node",
                            "hydra.launcher.nodes", "hydra.launcher.tasks_per_node")),
    ("node count", ("hydra.launcher.nodes",)),
    ("cpu count", ("hydra.launcher.cpus_per_task", "hydra.launcher.tasks_per_node")),
]


# -- resources from the run's config ---------------------------------------------------------

def gpus_for(accelerator, devices) -> int:
    """GPUs per node a trainer uses: 0 on the CPU, else its ``devices`` (a count)."""
    if str(accelerator).lower() not in GPU_ACCELERATORS:
        return 0
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise ValueError(f"trainer.devices={devices!r} does not say how many GPUs a job uses: set "
                         "hydra.launcher.gpus_per_node to your nodes' GPU count (or trainer.devices to a number)")
    return devices


def cpus_for(threads, accelerator, devices) -> int:
    """CPUs per task: the run's torch ``threads``, times the processes of DDP on CPU."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads={threads!r}: the CPUs a job asks for come from it; give a whole number >= 1")
    ranks = devices if str(accelerator).lower() == "cpu" and isinstance(devices, int) and devices > 1 else 1
    return threads * ranks


for _name, _fn in (("lithovae.slurm_gpus", gpus_for), ("lithovae.slurm_cpus", cpus_for)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn)


# -- checks before the sweep -----------------------------------------------------------------

TARGET = "hydra_plugins.lithovae_slurm.slurm_launcher.SlurmLauncher"  # Hydra takes plugins from hydra_plugins only


def is_slurm_launcher(launcher) -> bool:
    return launcher is not None and str(launcher.get("_target_", "")) == TARGET


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, **kwargs)


def _first_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[0] if lines else ""


def _sbatch_error(text: str) -> str:
    """sbatch's reason, without its ``sbatch: error: Batch job submission failed:`` prefix."""
    lines = [line for line in (text or "").splitlines() if line.strip()]
    found = [line for line in lines if "error" in line.lower()] or lines
    reason = found[-1] if found else "no reason given"
    return re.sub(r"^(sbatch: )?(error: )?(Batch job submission failed: )?", "", reason.strip())


def launcher_params(launcher) -> dict:
    """The launcher config resolved (its interpolations of ``trainer`` and ``threads``), as the
    executor gets it. Raises ValueError (one line) where a resolver refuses a value."""
    from omegaconf.errors import InterpolationResolutionError

    try:
        params = OmegaConf.to_container(launcher, resolve=True)
    except InterpolationResolutionError as exc:
        cause = exc.__cause__ or exc
        raise ValueError(f"hydra.launcher: {_first_line(str(cause))}") from None
    params.pop("_target_", None)
    return params


def _executor(params: dict, folder: str):
    """A submitit SLURM executor with the launcher's settings, as hydra-submitit-launcher builds
    it, plus lithovae's: no ``--gpus-per-node`` for a CPU job, and SIGTERM (not submitit's
    USR2) ``signal_delay_s`` before the time limit, which lithovae turns into a requeue."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    params = dict(params)
    if not params.get("gpus_per_node"):
        params.pop("gpus_per_node", None)
    extra = dict(params.pop("additional_parameters", None) or {})
    extra.setdefault("signal", f"TERM@{params.get('signal_delay_s', 120)}")
    params["additional_parameters"] = extra
    executor = submitit.AutoExecutor(cluster="slurm", folder=folder,
                                     slurm_max_num_timeout=params.get("max_num_timeout", 0))
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()
                                  if k not in SUBMITIT_ONLY})
    return executor


def check_cluster(launcher) -> str | None:
    """Why the sweep cannot go to this cluster (one line naming the setting), or None: SLURM's
    commands, the controller, the partition, and ``sbatch --test-only`` of the job."""
    missing = [c for c in COMMANDS if shutil.which(c) is None]
    if missing:
        return (f"hydra/launcher=slurm: {', '.join(missing)} not found on PATH: run the sweep where SLURM's "
                "commands are (a login node), or try it on this machine: scripts/slurm-local.sh start")
    try:
        params = launcher_params(launcher)
    except ValueError as exc:
        return str(exc)
    try:
        listed = _run(["sinfo", "-h", "-o", "%P"])
    except subprocess.TimeoutExpired:
        return f"hydra/launcher=slurm: the SLURM controller did not answer sinfo within {COMMAND_TIMEOUT_S} s"
    if listed.returncode != 0:
        conf = os.environ.get("SLURM_CONF", "the default slurm.conf")
        return f"hydra/launcher=slurm: cannot reach the SLURM controller ({conf}): {_first_line(listed.stderr)}"
    partitions = [p.strip() for p in listed.stdout.split() if p.strip()]
    names = [p.rstrip("*") for p in partitions]
    wanted = params.get("partition")
    if wanted is not None and str(wanted) not in names:
        return (f"hydra.launcher.partition: no partition '{wanted}' on this cluster "
                f"(partitions: {', '.join(names) or 'none'})")
    if wanted is None and not any(p.endswith("*") for p in partitions):
        return f"hydra.launcher.partition: this cluster has no default partition: name one of {', '.join(names)}"
    return _test_submission(params)


def _test_submission(params: dict) -> str | None:
    """``sbatch --test-only`` of the job the sweep will submit: SLURM's refusal (resources the
    partition lacks, an unknown account or QOS, a time limit too long) as one line."""
    with tempfile.TemporaryDirectory(prefix="lithovae-slurm-") as tmp:
        try:
            executor = _executor(params, tmp)
            script = Path(tmp) / "test.sh"
            script.write_text(executor._executor._make_submission_file_text("true", "test"))
        except (ValueError, TypeError) as exc:
            return f"hydra.launcher: {_first_line(str(exc))}"
        try:
            tested = _run(["sbatch", "--test-only", str(script)], cwd=tmp)
        except subprocess.TimeoutExpired:
            return f"hydra/launcher=slurm: sbatch --test-only did not answer within {COMMAND_TIMEOUT_S} s"
    if tested.returncode == 0:
        return None
    return refusal_line(_sbatch_error(tested.stderr or tested.stdout), params)


def refusal_line(reason: str, params: dict) -> str:
    """``hydra.launcher.mem_gb=10000: SLURM refused the job: <reason> (<the nodes' most>)``,
    naming the settings the reason is about: those beyond every node of the partition where
    SLURM says the nodes lack something, else those its words name (all resource settings where
    they name none)."""
    lowered = reason.lower()
    beyond = _beyond_nodes(params) if "node configuration" in lowered else []
    keys = [k for k, _ in beyond] or next(
        (keys for word, keys in REFUSALS if word in lowered),
        ("hydra.launcher.partition", "hydra.launcher.cpus_per_task", "hydra.launcher.mem_gb",
         "hydra.launcher.gpus_per_node", "hydra.launcher.timeout_min"))
    named = ", ".join(f"{k}={params.get(k.rsplit('.', 1)[1])}" for k in keys)
    most = f" ({'; '.join(m for _, m in beyond)})" if beyond else ""
    return f"{named}: SLURM refused the job: {reason}{most}"


def _beyond_nodes(params: dict) -> list[tuple[str, str]]:
    """(setting, what the largest node has) for each resource asked beyond every node of the
    partition (``sinfo``: CPUs, memory, GPUs)."""
    partition = params.get("partition")
    args = ["sinfo", "-h", "-o", "%c|%m|%G"] + (["-p", str(partition)] if partition else [])
    try:
        listed = _run(args)
    except subprocess.TimeoutExpired:
        return []
    cpus, mem_mb, gpus = 0, 0, 0
    for line in listed.stdout.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 3:
            continue
        cpus = max(cpus, int(fields[0]) if fields[0].isdigit() else 0)
        mem_mb = max(mem_mb, int(fields[1].rstrip("+")) if fields[1].rstrip("+").isdigit() else 0)
        found = re.findall(r"gpu(?::[^:(,]+)?:(\d+)", fields[2])
        gpus = max([gpus, *map(int, found)])
    if not cpus:
        return []
    where = f"partition {partition}" if partition else "the default partition"
    beyond = []
    if (params.get("cpus_per_task") or 1) * (params.get("tasks_per_node") or 1) > cpus:
        beyond.append(("hydra.launcher.cpus_per_task", f"{where}'s nodes have at most {cpus} CPUs"))
    if params.get("mem_gb") and params["mem_gb"] * 1024 > mem_mb:
        beyond.append(("hydra.launcher.mem_gb", f"{where}'s nodes have at most {mem_mb // 1024} GB"))
    if (params.get("gpus_per_node") or 0) > gpus:
        beyond.append(("hydra.launcher.gpus_per_node", f"{where}'s nodes have at most {gpus} GPUs"))
    return beyond


# -- the launcher ----------------------------------------------------------------------------

def _launcher_base():
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as Base

    return Base


class SlurmLauncher(_launcher_base()):
    """hydra-submitit-launcher's SLURM launcher; its jobs are watched with ``squeue``, and a job
    that fails or ends without a result fails alone (see the module's docstring)."""

    def launch(self, job_overrides, initial_job_idx):
        from hydra.core.singleton import Singleton
        from hydra.core.utils import filter_overrides

        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        executor = _executor(self.params, str(self.params["submitit_folder"]))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        numbers = [initial_job_idx + i for i in range(len(job_overrides))]
        job_params = []
        for idx, overrides in zip(numbers, job_overrides):
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        try:
            jobs = executor.map_array(self, *zip(*job_params))
        except Exception as exc:  # noqa: BLE001 - submitit wraps sbatch's refusal in several types
            text = str(getattr(exc, "stderr", "") or exc)
            print(f"error: {refusal_line(_sbatch_error(text), self.params)}", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)
        ids = [j.job_id for j in jobs]
        named = ", ".join(ids) if len(ids) <= 4 else f"{ids[0]} ... {ids[-1]}"
        print(f"[slurm] {len(jobs)} job(s) submitted: SLURM job(s) {named}; "
              f"their logs: {Path(str(jobs[0].paths.stdout)).parent.parent}", file=sys.stderr, flush=True)
        return [self._outcome(num, overrides, job, ended)
                for (num, overrides), (job, ended) in zip(zip(numbers, job_overrides), wait_for(jobs))]

    def _outcome(self, num: int, overrides, job, ended: str | None):
        """The job's JobReturn; a failure (no result, or an error) is one ``error:`` line, the
        ``FAILED`` file in its folder, and NaN for the sweeper, so the other jobs' results count."""
        from hydra.core.utils import JobReturn, JobStatus

        job_dir = Path(str(self.config.hydra.sweep.dir)) / str(num)
        result, reason = None, None
        if ended is None:
            try:
                result = job.results()[0]
            except Exception as exc:  # noqa: BLE001 - raised outside the task: submitit's trace
                reason = _job_error_line(job) or one_line(exc)
        else:
            reason = f"ended {ended} without a result" + _suffix(_job_error_line(job))
        if result is not None and result.status == JobStatus.FAILED:
            reason = one_line(result._return_value)
        elif result is not None and (job_dir / FAILED_MARK).exists():
            reason = _job_error_line(job) or (job_dir / FAILED_MARK).read_text().strip()
        if reason is None:
            return result
        print(f"error: sweep job #{num} (SLURM job {job.job_id}) failed: {reason}; its log: {job.paths.stderr}",
              file=sys.stderr, flush=True)
        job_dir.mkdir(parents=True, exist_ok=True)
        if not (job_dir / FAILED_MARK).exists():
            (job_dir / FAILED_MARK).write_text(f"SLURM job {job.job_id}: {reason}\n")
        if result is None:
            result = JobReturn(overrides=list(overrides), working_dir=str(job_dir))
        result.status, result.return_value = JobStatus.COMPLETED, math.nan
        return result


def _suffix(line: str | None) -> str:
    return f" ({line})" if line else ""


RESTART = "[slurm] restart "  # starts the line a requeued job prints first (its log is appended to)


def _job_error_line(job) -> str | None:
    """The last ``error:`` line the job's latest attempt printed (its SLURM stderr log, which a
    requeued job appends to), without the prefix."""
    try:
        text = Path(job.paths.stderr).read_text(errors="replace")
    except OSError:
        return None
    found = [line for line in text.rpartition(RESTART)[2].splitlines() if line.startswith("error: ")]
    return found[-1].removeprefix("error: ") if found else None


def squeue_states(job_ids: list[str]) -> dict[str, str] | None:
    """Each job's state (``123_4`` for an array task; jobs SLURM no longer lists are missing), or
    None when squeue fails."""
    arrays = sorted({j.split("_")[0] for j in job_ids})
    try:
        out = _run(["squeue", "-h", "-r", "--states=all", "-o", "%i|%T", "-j", ",".join(arrays)])
    except subprocess.TimeoutExpired:
        return None
    if out.returncode != 0:
        if "invalid job id" in (out.stderr or "").lower():
            return {}  # none of them is known any more
        return None
    states = {}
    for line in out.stdout.splitlines():
        job_id, _, state = line.strip().partition("|")
        states[job_id] = state.strip().split()[0] if state.strip() else "UNKNOWN"
    return states


def wait_for(jobs: list) -> list[tuple]:
    """Wait for every job: ``(job, None)`` once its result file is there, ``(job, STATE)`` when
    SLURM says it ended (``STATE`` its last state, or ``GONE``) and no result file followed
    within :data:`RESULT_GRACE_S`. States come from squeue, polled ever more rarely; a failing
    squeue is one warning per outage, not one per poll."""
    pending = {j.job_id: j for j in jobs}
    ended_at: dict[str, tuple[float, str]] = {}
    outcome: dict[str, str | None] = {}
    start = last_squeue = time.monotonic()
    squeue_failing = False
    while pending:
        now = time.monotonic()
        for job_id, job in list(pending.items()):
            if job.paths.result_pickle.exists():
                outcome[job_id] = None
                del pending[job_id]
            elif job_id in ended_at and now - ended_at[job_id][0] > RESULT_GRACE_S:
                outcome[job_id] = ended_at[job_id][1]
                del pending[job_id]
        every = min(SQUEUE_EVERY_S[1], max(SQUEUE_EVERY_S[0], (now - start) / 10))
        if pending and now - last_squeue >= every:
            last_squeue = now
            states = squeue_states(list(pending))
            if states is None:
                if not squeue_failing:
                    log.warning("squeue failed: job states unknown until it answers again (results still count)")
                squeue_failing = True
            else:
                squeue_failing = False
                for job_id in pending:
                    state = states.get(job_id, "GONE")
                    if state in WAITING:
                        ended_at.pop(job_id, None)
                    elif job_id not in ended_at:
                        ended_at[job_id] = (now, state)
        if pending:
            time.sleep(POLL_S)
    return [(j, outcome[j.job_id]) for j in jobs]


# -- inside a job ----------------------------------------------------------------------------

def job_id() -> str | None:
    """This process's SLURM job id when it runs a submitit job of the SLURM launcher, else None."""
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
        return None
    return os.environ.get("SLURM_JOB_ID")


def resume_own_checkpoint(cfg) -> Path | None:
    """In a SLURM job that ran before (requeued after preemption, a time limit or a node failure):
    point ``ckpt_path`` at the ``last.ckpt`` the earlier attempt left in this job's own run dir,
    so the job continues from there as a manual resume does. Returns that checkpoint, or None."""
    from omegaconf import open_dict

    if job_id() is None:
        return None
    last = Path(cfg.paths.run_dir) / "checkpoints" / "last.ckpt"
    restart = f"{RESTART}{os.environ.get('SLURM_RESTART_COUNT', '0')} of job {job_id()}"
    if not last.is_file():
        if os.environ.get("SLURM_RESTART_COUNT", "0") != "0":
            print(f"{restart}: no last.ckpt to resume from, starting again", file=sys.stderr, flush=True)
        return None
    with open_dict(cfg):
        cfg.ckpt_path = str(last)
    print(f"{restart}: resuming from its own {last}", file=sys.stderr, flush=True)
    return last


def _requeues_allowed() -> int:
    from hydra.core.hydra_config import HydraConfig

    try:
        return int(HydraConfig.get().launcher.get("max_num_timeout") or 0)
    except (ValueError, TypeError):
        return 0


def requeue_stopped_job(cfg) -> str | None:
    """After a SLURM job's run stopped on SIGTERM: requeue the job, unless SLURM is ending it
    itself (it is no longer RUNNING: ``scancel``, or a requeue or preemption SLURM carries out)
    or its ``max_num_timeout`` requeues are spent. Prints and returns the line saying which (None
    outside a SLURM job). Further SIGTERMs (the requeue sends one) are ignored while the job exits."""
    if job_id() is None:
        return None
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    line = _requeue(Path(cfg.paths.run_dir) / "checkpoints" / "last.ckpt")
    print(line, file=sys.stderr, flush=True)
    return line


def _requeue(last: Path) -> str:
    job = job_id()
    resume = f"resumes from {last}" if last.is_file() else "starts again (no epoch was saved)"
    try:
        listed = _run(["squeue", "-h", "-j", job, "-o", "%T"])
        state = _first_line(listed.stdout) or "GONE"
    except subprocess.TimeoutExpired:
        state = "UNKNOWN"
    if state != "RUNNING":
        return f"slurm: job {job} is {state}: SLURM ends or requeues it itself; requeued, it {resume}"
    restarts, allowed = int(os.environ.get("SLURM_RESTART_COUNT") or 0), _requeues_allowed()
    if restarts >= allowed:
        return (f"slurm: job {job} not requeued: it has been requeued {restarts} time(s), "
                f"hydra.launcher.max_num_timeout={allowed}")
    try:
        done = _run(["scontrol", "requeue", job])
    except subprocess.TimeoutExpired:
        return f"slurm: job {job} not requeued: scontrol requeue did not answer within {COMMAND_TIMEOUT_S} s"
    if done.returncode != 0:
        return f"slurm: job {job} not requeued: scontrol requeue: {_first_line(done.stderr)}"
    return f"slurm: job {job} requeued ({restarts + 1} of {allowed}): it {resume}"
