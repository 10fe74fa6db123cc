"""Work a run starts ahead on its second core (lithovae.run.Ahead, lithovae.evaluation.background):
a process started before its arguments exist computes what this process computes, the run's
scores and figures are the same whether the work ran ahead or here, and a stopped process
leaves no half-written file."""

from __future__ import annotations

import hashlib
import json
import math
import shutil

import numpy as np
import pytest

from lithovae.evaluation.background import Background, Here
from lithovae.evaluation.scoring import cluster_test_latents
from tests.conftest import compose_train

OPTIONS = dict(k=[3, 5], n_init=2, gmm=True, max_fit_samples=None, backend="torch", seed=0)


def _rows(n: int = 400, seed: int = 1):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (4, 3))
    y = rng.integers(0, 4, n)
    return (centres[y] + rng.normal(0, 1, (n, 3))).astype(np.float32), y


def _prepared():
    """A prepare step with a visible effect in its process only."""
    import os

    os.environ["LITHOVAE_PREPARED"] = "yes"


def _prepared_value(x):
    import os

    return os.environ.get("LITHOVAE_PREPARED"), x * 2


def test_a_waiting_process_computes_what_this_process_computes():
    mu, y = _rows()
    here_clusters, here_silhouettes = Here.waiting(cluster_test_latents).submit(mu, y, OPTIONS, 200).result()
    job = Background.waiting(cluster_test_latents)
    assert job.process is not None  # started before it has its rows: it imports meanwhile
    with pytest.raises(RuntimeError, match="no arguments yet"):
        job.result()
    job.submit(mu, y, OPTIONS, 200)
    with pytest.raises(RuntimeError, match="already given"):
        job.submit(mu, y, OPTIONS, 200)
    clusters, silhouettes = job.result()
    assert job.process is None  # ended once its result came back
    assert clusters.scores == here_clusters.scores and silhouettes == here_silhouettes
    assert all(np.array_equal(clusters.assignments[n], a) for n, a in here_clusters.assignments.items())
    # prepare runs there, before the arguments are read
    assert Background.waiting(_prepared_value, prepare=_prepared).submit(3).result() == ("yes", 6)


def _digests(run_dir):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((run_dir / "figures").glob("*.png"))}


def _scores(run_dir) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {k: v for k, v in metrics.items() if k not in ("mlflow_run_id", "train_time", "checkpoint_path")
            and not (isinstance(v, float) and math.isnan(v))}


@pytest.mark.slow  # two small trainings with figures, and three spawned processes
def test_a_run_scores_and_draws_the_same_with_its_work_started_ahead(tmp_path, shared_data_dir, monkeypatch, capfd):
    from lithovae import run
    from lithovae.evaluation import figures, scoring

    overrides = ["trainer.max_epochs=2", "logger=none", "eval.figures=true", "eval.umap_sample=300"]
    run.train(compose_train(overrides, tmp_path / "here", shared_data_dir))
    capfd.readouterr()
    shutil.rmtree(shared_data_dir / "baselines", ignore_errors=True)  # computed again, ahead
    # this small run as a large one: every piece of work in a process of its own, started ahead
    for module in (run, scoring):
        monkeypatch.setattr(module, "BACKGROUND_TEST_ROWS", 0)
    monkeypatch.setattr(scoring, "BACKGROUND_BASELINE_ROWS", 0)
    monkeypatch.setattr(figures, "BACKGROUND_UMAP_ROWS", 0)
    started = []
    original = run.start_ahead
    monkeypatch.setattr(run, "start_ahead", lambda *a: started.append(original(*a)) or started[-1])
    run.train(compose_train(overrides, tmp_path / "ahead", shared_data_dir))
    out = capfd.readouterr().out
    ahead = started[0]
    assert all(isinstance(job, Background) for job in (ahead.baseline, ahead.test_clusters, ahead.figures,
                                                       ahead.clustered_figures))
    assert "meanwhile: clustering the test latents" in out and "meanwhile: figure latent_qq" in out
    assert "meanwhile: figure contingency" in out
    assert _scores(tmp_path / "ahead" / "run") == _scores(tmp_path / "here" / "run")
    assert _digests(tmp_path / "ahead" / "run") == _digests(tmp_path / "here" / "run")
    assert len(_digests(tmp_path / "here" / "run")) >= 6
    assert not list((tmp_path / "ahead" / "run").rglob("*.tmp"))


def _writes_slowly(path):
    from lithovae.files import atomic_write

    def write(tmp):
        with open(tmp, "w") as fh:
            fh.write("half")
            fh.flush()
            import time

            time.sleep(60)

    atomic_write(path, write)


@pytest.mark.slow  # a spawned process imports torch: seconds
def test_a_process_ended_while_it_writes_leaves_no_half_written_file(tmp_path):
    import time

    job = Background(_writes_slowly, tmp_path / "figure.png")
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".figure.png.*.tmp")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert list(tmp_path.glob(".figure.png.*.tmp"))  # it is writing
    job.close()  # a run stopped meanwhile
    assert list(tmp_path.iterdir()) == []


def test_a_job_given_one_cpu_starts_no_other_process(monkeypatch, tmp_path):
    """On one CPU (a SLURM job with cpus_per_task=1) another process would share it with the
    training: everything is computed here, whatever the size."""
    import os

    from lithovae.evaluation import figures, scoring

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert isinstance(scoring.test_clustering_job(10**6), Here)
    x, y = _rows()
    monkeypatch.setattr(scoring, "BACKGROUND_BASELINE_ROWS", 0)
    assert isinstance(scoring._start_baseline(x, y, None, tmp_path, OPTIONS), Here)
    assert isinstance(figures._embedding(x, 0), Here)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    job = scoring.test_clustering_job(10**6)
    assert isinstance(job, Background)
    job.close()
