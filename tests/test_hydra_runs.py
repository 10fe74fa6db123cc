"""One run, one folder: runs and multiruns started together, or given the same directory, never
share one (lithovae.hydra_callbacks.FreshOutputDir). A password in a tracking URI is refused
before Hydra writes anything (RefuseSecrets). A joblib multirun's workers end when it dies
(lithovae.sweeps.ParentWatch)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from lithovae.hydra_callbacks import claim_dir
from tests.conftest import FAST_EVAL

COMMON = ["data.scale=small", "trainer.enable_progress_bar=false", "logger=none", *FAST_EVAL]
SECRET = "s3cr3tpw"


def _env(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": os.getcwd(), **extra}


def _start(module: str, args: list[str], cwd: Path, env: dict | None = None, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", module, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=cwd, env=env or _env(), **kwargs)


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


# -- one run, one folder ----------------------------------------------------------------------

@pytest.mark.parametrize("token", [".hydra", None], ids=["run", "sweep"])
def test_a_folder_is_claimed_by_one_process_only(tmp_path, token):
    wanted = tmp_path / "outputs" / "2026-01-01_00-00-00"
    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(lambda _: claim_dir(wanted, token), range(32)))
    assert len(set(got)) == 32  # each caller its own folder
    assert {p.name for p in wanted.parent.iterdir()} == {p.name for p in got}  # and no stray one
    assert got.count(wanted) == 1 and all(p.name.startswith(wanted.name) for p in got)


def test_a_run_may_use_an_empty_folder_made_for_it_but_never_a_used_one(tmp_path):
    empty = tmp_path / "made_by_the_scheduler"
    empty.mkdir()
    assert claim_dir(empty, ".hydra") == empty
    assert claim_dir(empty, ".hydra") == tmp_path / "made_by_the_scheduler_1"  # now in use
    other = tmp_path / "someone_elses"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    assert claim_dir(other, ".hydra") == tmp_path / "someone_elses_1"
    assert [p.name for p in other.iterdir()] == ["notes.txt"]


@pytest.mark.slow
def test_two_trainings_started_together_get_a_folder_each(tmp_path, shared_data_dir):
    """Both given the same run dir (what two runs started in the same second get by default)."""
    run_dir = tmp_path / "run"
    procs = [_start("lithovae.train", [*COMMON, "trainer.max_epochs=1", f"seed={seed}", f"paths.root_dir={tmp_path}",
                                       f"paths.data_dir={shared_data_dir}", f"hydra.run.dir={run_dir}"], tmp_path)
             for seed in (1, 2)]
    outs = [p.communicate(timeout=400) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for _, e in outs]
    dirs = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("run"))
    assert dirs == ["run", "run_1"]
    notes = [line for _, err in outs for line in err.splitlines() if line.startswith("warning: hydra.run.dir")]
    assert len(notes) == 1 and notes[0].endswith(str(tmp_path / "run_1")), notes
    seeds = set()
    for name in dirs:
        folder = tmp_path / name
        for file in ("metrics.json", "config.yaml", "split.json", "scaler.json", "checkpoints/last.ckpt",
                     ".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml"):
            assert (folder / file).is_file(), folder / file
        seed = [line for line in (folder / ".hydra" / "overrides.yaml").read_text().splitlines() if "seed=" in line]
        assert f"seed: {seed[0].split('=')[1]}" in (folder / "config.yaml").read_text()  # one run's files
        assert f"run_dir: {folder}" in (folder / "config.yaml").read_text()
        seeds.add(seed[0])
    assert seeds == {"- seed=1", "- seed=2"}


def _sweep_seeds(sweep: Path) -> list[str]:
    """The seed override of each job of ``sweep``, as its .hydra/overrides.yaml says."""
    return sorted(line.split("seed=")[1] for p in sweep.glob("*/.hydra/overrides.yaml")
                  for line in p.read_text().splitlines() if "seed=" in line)


def test_every_job_of_a_multirun_goes_to_the_sweep_dir_it_claimed(tmp_path):
    """Hydra composes each job's config again from the multirun's overrides: the claimed folder
    must be what the jobs get, not the one asked for (a path with a space and a quote)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from lithovae.hydra_callbacks import FreshOutputDir
    from tests.conftest import CONF_DIR

    wanted = tmp_path / "it's a sweep"
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        quoted = str(wanted).replace("'", "\\'")  # as typed on a command line
        masters = [loader.load_configuration("train", [f"hydra.sweep.dir='{quoted}'", "seed=1,2"],
                                             run_mode=RunMode.MULTIRUN) for _ in range(2)]
        for master in masters:
            FreshOutputDir().on_multirun_start(config=master)
        jobs = [loader.load_sweep_config(master, ["seed=1"]) for master in masters]
    GlobalHydra.instance().clear()
    assert [job.hydra.sweep.dir for job in jobs] == [str(wanted), f"{wanted}_1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [wanted.name, f"{wanted.name}_1"]


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "joblib", "ensemble"])
def test_a_second_multirun_into_a_used_sweep_dir_writes_to_a_fresh_one(tmp_path, launcher):
    """Two multiruns given one hydra.sweep.dir, started together: each keeps its own jobs. The
    jobs fail at once (trainer.max_epochs=0), after Hydra has written their files."""
    sweep = tmp_path / "sweep"
    procs = [_start("lithovae.train", ["-m", *COMMON, "trainer.max_epochs=0", seeds, f"hydra/launcher={launcher}",
                                       f"paths.root_dir={tmp_path}", f"hydra.sweep.dir={sweep}"], tmp_path)
             for seeds in ("seed=1,2", "seed=3,4")]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [2, 2]  # the failed-jobs report
    assert all("2 sweep job(s) failed" in err for _, err in outs), [e[-2000:] for _, e in outs]
    notes = [line for _, err in outs for line in err.splitlines() if line.startswith("warning: hydra.sweep.dir")]
    assert notes == [f"warning: hydra.sweep.dir {sweep} is in use (another multirun's files): this multirun "
                     f"writes to {tmp_path / 'sweep_1'}"]
    jobs = sorted(_sweep_seeds(tmp_path / name) for name in ("sweep", "sweep_1"))
    assert jobs == [["1", "2"], ["3", "4"]]  # every job's files, none overwritten by the other sweep
    for name in ("sweep", "sweep_1"):
        assert f"dir: {tmp_path / name}\n" in (tmp_path / name / "0" / ".hydra" / "hydra.yaml").read_text()


@pytest.mark.parametrize("args, line", [
    (["hydra/launcher=ensemble", "hydra.launcher.max_group_size=0", "logger=none"],
     "error: hydra.launcher.max_group_size: must be an integer >= 1, got 0"),
    # refused after the sweep dir was claimed (the study callback's server check): the claimed,
    # still empty folders are removed as the multirun exits
    (["logger.tracking_uri=http://127.0.0.1:9"], "error: logger.tracking_uri: MLflow tracking server"),
], ids=["max_group_size=0", "unreachable server"])
def test_a_multirun_refused_at_start_is_one_line_and_leaves_no_folder(tmp_path, args, line):
    proc = _start("lithovae.train", ["-m", *args, "seed=1,2", f"paths.root_dir={tmp_path}"], tmp_path)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(line), err
    assert not (tmp_path / "outputs").exists()


# -- secrets never reach disk -----------------------------------------------------------------

URI = f"http://someone:{SECRET}@127.0.0.1:9"


@pytest.mark.parametrize("module, args, env", [
    ("lithovae.train", [f"logger.tracking_uri={URI}"], {}),
    ("lithovae.train", ["-m", "seed=1,2", f"logger.tracking_uri={URI}"], {}),
    ("lithovae.train", ["-m", "seed=1,2", "logger=none",
                        f"+hydra.job.env_set.MLFLOW_TRACKING_URI={URI}"], {}),
    ("lithovae.train", [], {"MLFLOW_TRACKING_URI": URI}),
    ("lithovae.evaluate", ["run_dir=some_run", f"tracking_uri={URI}"], {}),
    ("lithovae.predict", ["run=some_run", "data=synthetic", f"tracking_uri={URI}"], {}),
    ("lithovae.predict", ["run=some_run", "data=synthetic"], {"MLFLOW_TRACKING_URI": URI}),
], ids=["train", "multirun", "hydra env_set", "train env", "evaluate", "predict", "predict env"])
def test_a_password_in_a_tracking_uri_is_refused_before_anything_is_written(tmp_path, module, args, env):
    proc = _start(module, [*args, "data.scale=small", f"paths.root_dir={tmp_path}"] if module == "lithovae.train"
                  else [*args, f"paths.root_dir={tmp_path}"], tmp_path, _env(**env))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err[-2000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "holds a password" in lines[0], err
    assert SECRET not in out + err and "someone:***@127.0.0.1:9" in lines[0]
    leaked = [p for p in _files(tmp_path) if SECRET.encode() in p.read_bytes()]
    assert not leaked
    assert not (tmp_path / "outputs").exists()  # no run dir, .hydra, log file or MLflow store


# -- multirun workers end with their multirun ---------------------------------------------------

def _session(sid: int) -> list[int]:
    """Live (not zombie) processes of session ``sid``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_joblib_workers_exit_within_seconds_when_the_multirun_is_killed(tmp_path, shared_data_dir):
    sweep, log = tmp_path / "sweep", tmp_path / "stderr.txt"
    with open(log, "w") as stderr:  # a file: orphaned workers would hold a pipe open
        proc = subprocess.Popen([
            sys.executable, "-m", "lithovae.train", "-m", *COMMON, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
            "trainer.max_epochs=100000", "seed=1,2", f"paths.root_dir={tmp_path}", f"paths.data_dir={shared_data_dir}",
            f"hydra.sweep.dir={sweep}"], stdout=subprocess.DEVNULL, stderr=stderr, cwd=tmp_path, env=_env(),
            start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while len(list(sweep.glob("*/checkpoints/last.ckpt"))) < 2 and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-2000:]
            time.sleep(0.5)
        workers = [pid for pid in _session(proc.pid) if pid != proc.pid]
        assert len(workers) >= 2, "both jobs train in worker processes"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 15
        while _session(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _session(proc.pid), "workers outlived their multirun"
        err = log.read_text()
        assert err.count("has died: ending this worker") == 2, err[-2000:]
        assert err.count("interrupted by SIGTERM") == 2  # each job stopped as SIGTERM stops it
    finally:
        for pid in _session(proc.pid):
            os.kill(pid, signal.SIGKILL)
