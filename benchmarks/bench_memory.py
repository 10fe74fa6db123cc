"""Peak memory (RSS) of default training and of building the default-scale dataset.

Each is run as its own process; its peak RSS comes from the OS (ru_maxrss of the
child, via GNU time). Training runs a few epochs of the default composition on the default
dataset (peak memory is reached in the first epoch and at evaluation).

    python benchmarks/bench_memory.py [--epochs 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time


def peak_of(cmd: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one child process, measured by GNU time."""
    started = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "peak_kb=%M", *cmd], check=True, text=True,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seconds = time.perf_counter() - started
    peak_kb = int(proc.stderr.rsplit("peak_kb=", 1)[1].split()[0])
    return seconds, peak_kb / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        sec, build = peak_of([sys.executable, "-m", "lithovae.data", "report=false", f"paths.root_dir={root}"])
        print(f"build default dataset (generate + build): {sec:6.1f} s, peak RSS {build:7.0f} MB (target < 4096 MB)")
        sec, trained = peak_of([sys.executable, "-m", "lithovae.train", f"trainer.max_epochs={args.epochs}",
                                "logger=none", "trainer.enable_progress_bar=false", f"paths.root_dir={root}"])
        print(f"default training ({args.epochs} epochs, evaluation and figures): {sec:6.1f} s, "
              f"peak RSS {trained:7.0f} MB")


if __name__ == "__main__":
    main()
