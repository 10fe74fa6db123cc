"""Wall time of the study's masking sweep with the joblib launcher on this machine.

The full sweep (``study=masking_sweep``) is 51 runs (mask_prob 0.00-0.50) x 50 epochs of
v2_14_2 on the default dataset, two jobs at a time with one torch thread each (target: under
60 minutes on 2 cores); it ends with the study's summary.csv and figure. ``--probs``/``--epochs`` run a smaller sweep. The baseline,
in the same process, is the same runs one after another with the basic launcher.

    python benchmarks/bench_sweep.py                  # the full sweep
    python benchmarks/bench_sweep.py --probs 4 --epochs 5 --baseline
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time


def sweep(probs: list[str], epochs: int, launcher: list[str], root: str, data_dir: str) -> float:
    cmd = [sys.executable, "-m", "lithovae.train", "-m", "study=masking_sweep", *launcher,
           f"trainer.max_epochs={epochs}", f"mask.prob={','.join(probs)}", "eval.figures=false",
           "trainer.enable_progress_bar=false", f"paths.root_dir={root}", f"paths.data_dir={data_dir}"]
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probs", type=int, default=51, help="how many of 0.00, 0.01, ... 0.50")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--data-dir", default="outputs/data")
    parser.add_argument("--baseline", action="store_true", help="also time the sequential basic launcher")
    parser.add_argument("--keep", default=None, help="keep the sweep's outputs (summary.csv, figure, MLflow) here")
    args = parser.parse_args()
    probs = [f"{p / 100:.2f}" for p in range(51)][:args.probs]
    subprocess.run([sys.executable, "-m", "lithovae.data", "report=false",
                    f"paths.data_dir={args.data_dir}"], check=True, stdout=subprocess.DEVNULL)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or tmp
        joblib = sweep(probs, args.epochs, ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.jobs}"],
                       root, args.data_dir)
    print(f"masking sweep, {len(probs)} runs x {args.epochs} epochs (v2_14_2, default dataset), "
          f"joblib n_jobs={args.jobs}: {joblib / 60:.1f} min "
          f"({'target < 60 min' if len(probs) == 51 and args.epochs == 50 else 'a reduced sweep'})")
    if args.baseline:
        with tempfile.TemporaryDirectory() as root:
            basic = sweep(probs, args.epochs, [], root, args.data_dir)
        print(f"sequential basic launcher: {basic / 60:.1f} min -> joblib is {basic / joblib:.2f}x faster")


if __name__ == "__main__":
    main()
