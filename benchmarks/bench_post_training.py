"""The post-training phase of ``make train`` at the default scale: everything after the last
training epoch (scoring the chosen weights, tables, predictor bundle, MLflow logging, figures).

One run as ``python -m lithovae.train`` makes it (the default config, ``data.scale=default``),
trained as ``make train`` trains (the config's 100 epochs) unless ``--epochs``. The epochs matter
twice: while it trains, the run computes the raw-feature baseline and prepares the processes that
score and draw beside it (:class:`lithovae.run.Ahead`), which a 2-epoch run has not finished when
its phase starts; and the clusterings of weights trained 2 or 10 epochs converge more slowly than
those of the trained ones (measured: 27 s for the clusterings chosen on validation after 10
epochs, 18 s after 100). The dataset is reused from ``--data-dir`` (built there on the first use);
the raw-feature baseline is computed afresh, as on a fresh clone's first ``make train``, unless
``--warm-baseline`` (its cache in ``--data-dir``). The MLflow store and the run folder are
temporary.

Reported: the wall time from the end of ``trainer.fit`` to the end of the run, each phase of it
(the ``lithovae.progress`` steps of this process, nested ones indented; the other processes print
theirs as ``meanwhile: ...`` lines) with the CPU seconds this process spent in it, the CPU
seconds of the other processes (those ended after the fit, including what they did while it
trained), the phase as a ratio to the fastest training epoch and to a fixed piece of work timed
right after it in the same process (``bench_eval.py``'s evaluation: figures that compare runs made
under different loads of a shared machine), and PASS/FAIL against the goal (30 s of wall time).

    python benchmarks/bench_post_training.py [--epochs N] [--data-dir outputs/data] [--warm-baseline]
                                             [--profile post.prof] [--keep DIR]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytorch_lightning as pl
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import lithovae
import lithovae.config  # noqa: F401 - registers the train schema the config composes with
from lithovae import progress

GOAL_S = 30.0


class Timings(pl.Callback):
    """When fitting ended, and each training epoch's wall time; with a profiler, it starts it
    there so only the post-training phase is profiled."""

    def __init__(self, profiler: cProfile.Profile | None):
        self.profiler, self.fit_end, self.epochs, self._start = profiler, None, [], 0.0

    def on_train_epoch_start(self, trainer, pl_module):
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self.epochs.append(time.perf_counter() - self._start)

    def on_fit_end(self, trainer, pl_module):
        self.fit_end, self.cpu, self.children = time.perf_counter(), time.process_time(), _children_cpu()
        if self.profiler is not None:
            self.profiler.enable()


def _children_cpu() -> float:
    """CPU seconds of the ended child processes (the background baseline and UMAP)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Recorder:
    """Every ``progress`` step of the run, whichever ``phases()`` it is timed in: (start order,
    depth, name, wall seconds, CPU seconds of this process)."""

    def __init__(self):
        self.steps: list[list] = []
        self.depth = 0

    @contextmanager
    def patched(self):
        original = progress.Phases.step
        recorder = self

        @contextmanager
        def step(phases, name):
            row = [len(recorder.steps), recorder.depth, name, 0.0, 0.0]
            recorder.steps.append(row)
            recorder.depth += 1
            began, cpu = time.perf_counter(), time.process_time()
            try:
                with original(phases, name):
                    yield
            finally:
                row[3], row[4] = time.perf_counter() - began, time.process_time() - cpu
                recorder.depth -= 1

        progress.Phases.step = step
        try:
            yield
        finally:
            progress.Phases.step = original


def reference_seconds() -> float:
    """Wall seconds of a fixed piece of work in this process, right after the phase: one
    evaluation of ``bench_eval.py`` (40 000 rows x 10-D, 4 ks x (10 k-means restarts + GMM),
    silhouette on 10 000 rows, one thread). The phase in these units compares runs made under
    different loads of a shared machine."""
    import torch

    from bench_eval import evaluation, mixture

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        latent, labels = mixture(40_000, 10, 15, seed=0)
        return evaluation(latent, labels, "torch")[0]
    finally:
        torch.set_num_threads(threads)


def compose_config(args, tmp: Path, data_dir: Path):
    conf = Path(lithovae.__file__).parent / "conf"
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return compose(config_name="train", overrides=[
            "data.scale=default", *([f"trainer.max_epochs={args.epochs}"] if args.epochs else []),
            "trainer.enable_progress_bar=false",
            f"paths.root_dir={tmp}", f"paths.run_dir={tmp / 'run'}", f"paths.data_dir={data_dir}",
            *args.overrides])


def data_dir_for(args, tmp: Path) -> Path:
    """``--data-dir`` itself (baseline cache warm), or a folder holding only a link to its
    default-scale dataset (the baseline computed afresh, the dataset not rebuilt)."""
    shared = Path(args.data_dir).resolve()
    if args.warm_baseline:
        return shared
    own = tmp / "data"
    own.mkdir()
    for entry in shared.glob("synthetic-default-seed*"):
        (own / entry.name).symlink_to(entry, target_is_directory=True)
    return own


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None,
                        help="training epochs before the timed phase (default: the config's, as make train)")
    parser.add_argument("--data-dir", default="outputs/data", help="where the default-scale dataset is (built)")
    parser.add_argument("--warm-baseline", action="store_true",
                        help="reuse the raw-feature baseline cached in --data-dir (a repeated run)")
    parser.add_argument("--profile", help="write a cProfile of the post-training phase here")
    parser.add_argument("--keep", help="copy the run folder (metrics.json, figures) here")
    parser.add_argument("--nothing-ahead", action="store_true",
                        help="start no work ahead while training (lithovae.run.Ahead): all of it after")
    parser.add_argument("overrides", nargs="*", help="more train config overrides (key=value)")
    args = parser.parse_args()

    from lithovae import run
    from lithovae.train import train

    if args.nothing_ahead:
        run.start_ahead = lambda parts, world_size: run.Ahead()

    profiler = cProfile.Profile() if args.profile else None
    timings, recorder = Timings(profiler), Recorder()
    with tempfile.TemporaryDirectory(prefix="bench_post_training-") as tmp:
        tmp = Path(tmp)
        cfg = compose_config(args, tmp, data_dir_for(args, tmp))
        os.environ.pop("MLFLOW_TRACKING_URI", None)  # the temporary local store
        with recorder.patched(), progress.phases("post-training"):
            metrics = train(cfg, callbacks=(timings,))
            ended, cpu, children = time.perf_counter(), time.process_time(), _children_cpu()
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)
        if args.keep:
            shutil.copytree(tmp / "run", args.keep, dirs_exist_ok=True)
    post = ended - timings.fit_end
    epoch = min(timings.epochs)
    reference = reference_seconds()
    post_cpu, child_cpu = cpu - timings.cpu, children - timings.children

    print(f"\n{metrics['dataset']}: {metrics['n_test']:,} test, {metrics['n_val']:,} validation, "
          f"{metrics['n_train']:,} training bins; {metrics['epochs_trained']} epochs trained "
          f"(fastest epoch {epoch:.1f} s, all {sum(timings.epochs):.0f} s{'' if args.nothing_ahead else ', work started ahead'}); baseline {'cached' if args.warm_baseline else 'computed afresh'}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print("wall: seconds of the step; share: of the phase; epochs: wall / fastest training epoch; "
          "CPU: seconds this process computed (waits on the background processes are wall, not CPU)")
    print(f"{'phase':56s}{'wall':>8s}{'share':>7s}{'epochs':>8s}{'CPU':>8s}")
    for _, depth, name, seconds, used in sorted(recorder.steps):
        label = "  " * depth + name
        print(f"{label:56s}{seconds:8.2f}{seconds / post:7.0%}{seconds / epoch:8.1f}{used:8.2f}")
    timed = sum(row[3] for row in recorder.steps if row[1] == 0)
    timed_cpu = sum(row[4] for row in recorder.steps if row[1] == 0)
    print(f"{'(not in a step)':56s}{post - timed:8.2f}{(post - timed) / post:7.0%}{(post - timed) / epoch:8.1f}"
          f"{post_cpu - timed_cpu:8.2f}")
    print(f"{'post-training total':56s}{post:8.2f}{1:7.0%}{post / epoch:8.1f}{post_cpu:8.2f}")
    print(f"{'  background processes (CPU)':56s}{'':23s}{child_cpu:8.2f}")
    print(f"post-training phase {post:.1f} s = {post / epoch:.1f} training epochs "
          f"({post_cpu:.1f} CPU s here, {child_cpu:.1f} in background processes): "
          f"{'PASS' if post <= GOAL_S else 'FAIL'} (goal <= {GOAL_S:.0f} s)")
    print(f"reference work (bench_eval.py's evaluation, one thread) after it: {reference:.1f} s; "
          f"the phase = {post / reference:.1f} of them")
    headline = {k: metrics.get(k) for k in ("ari_selected", "ari_inductive", "baseline_ari_selected", "r2_mean")}
    print("headline:", json.dumps(headline, default=str))


if __name__ == "__main__":
    main()
