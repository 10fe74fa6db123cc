"""Wall time and peak memory of the study's masking sweep with each launcher on this machine,
and how far each ensemble member's metrics are from the same job run on its own.

The full sweep (``study=masking_sweep``) is 51 runs (mask_prob 0.00-0.50) x 50 epochs of
v2_14_2 on the default dataset; it ends with the study's summary.csv and figure.

- ``--launcher ensemble``: ``hydra/launcher=ensemble``, the 51 jobs as one stacked group;
- ``--launcher joblib``: ``hydra/launcher=joblib``, ``--jobs`` runs at a time, one thread each;
- ``--compare N``: also run N of the sweep's jobs alone (basic launcher, the baseline of the
  agreement) and print each metric's difference from the ensemble member of the same job.

    python benchmarks/bench_sweep.py --launcher ensemble --compare 3     # the full sweep
    python benchmarks/bench_sweep.py --launcher ensemble joblib --probs 4 --epochs 5
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

AGREEMENT = ["ari_best", "r2_mean", "auc_pooled", "imputation_r2_mean"]


def sweep(probs: list[str], epochs: int, launcher: list[str], root: str, data_dir: str,
          study: bool = True) -> tuple[float, Path]:
    cmd = [sys.executable, "-m", "lithovae.train", "-m", *(["study=masking_sweep"] if study else
                                                            ["experiment=v2_14_2"]), *launcher,
           f"trainer.max_epochs={epochs}", f"mask.prob={','.join(probs)}", "eval.figures=false",
           "trainer.enable_progress_bar=false", f"paths.root_dir={root}", f"paths.data_dir={data_dir}"]
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    elapsed = time.perf_counter() - started
    (sweep_dir,) = sorted((Path(root) / "outputs" / "multiruns" / "train").iterdir())[-1:]
    return elapsed, sweep_dir


def job_metrics(sweep_dir: Path) -> pd.DataFrame:
    import json

    rows = []
    for metrics in sorted(sweep_dir.glob("*/metrics.json")):
        m = json.loads(metrics.read_text())
        cfg = (metrics.parent / ".hydra" / "overrides.yaml").read_text()
        prob = next(line.split("=", 1)[1].strip() for line in cfg.splitlines() if "mask.prob=" in line)
        rows.append({"mask.prob": float(prob), **{k: m.get(k) for k in AGREEMENT}})
    return pd.DataFrame(rows).set_index("mask.prob").sort_index()


def peak_rss_gib() -> float:
    # the largest resident set of any finished child process (joblib workers included)
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--launcher", nargs="+", default=["ensemble"], choices=["ensemble", "joblib"])
    parser.add_argument("--probs", type=int, default=51, help="how many of 0.00, 0.01, ... 0.50")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=2, help="joblib: runs at a time")
    parser.add_argument("--compare", type=int, default=0, help="jobs to run alone and compare with their member")
    parser.add_argument("--data-dir", default="outputs/data")
    parser.add_argument("--keep", default=None, help="keep the sweeps' outputs (summary.csv, figure, MLflow) here")
    args = parser.parse_args()
    probs = [f"{p / 100:.2f}" for p in range(51)][:args.probs]
    subprocess.run([sys.executable, "-m", "lithovae.data", "report=false",
                    f"paths.data_dir={args.data_dir}"], check=True, stdout=subprocess.DEVNULL)
    full = len(probs) == 51 and args.epochs == 50
    print(f"masking sweep, {len(probs)} runs x {args.epochs} epochs (v2_14_2, default dataset, SYNTHETIC)"
          f"{'' if full else ' - a reduced sweep'}")
    results = {}
    for name in args.launcher:
        launcher = (["hydra/launcher=ensemble"] if name == "ensemble" else
                    ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.jobs}"])
        with tempfile.TemporaryDirectory() as tmp:
            root = str(Path(args.keep) / name) if args.keep else tmp
            elapsed, sweep_dir = sweep(probs, args.epochs, launcher, root, args.data_dir)
            results[name] = (elapsed, job_metrics(sweep_dir))
        print(f"  {name:<9} {elapsed / 60:6.1f} min   peak RSS of a process so far {peak_rss_gib():.2f} GiB")
    if len(results) == 2:
        print(f"  joblib / ensemble wall time: {results['joblib'][0] / results['ensemble'][0]:.2f}x")
    if args.compare and "ensemble" in results:
        chosen = probs[:: max(1, len(probs) // args.compare)][:args.compare]
        with tempfile.TemporaryDirectory() as tmp:
            elapsed, sweep_dir = sweep(chosen, args.epochs, [], tmp, args.data_dir, study=False)
            alone = job_metrics(sweep_dir)
        member = results["ensemble"][1].loc[alone.index]
        print(f"  {len(chosen)} jobs alone (basic launcher, the baseline): {elapsed / 60:.1f} min; "
              f"ensemble member minus separate run:")
        print((member - alone).round(4).to_string())


if __name__ == "__main__":
    main()
