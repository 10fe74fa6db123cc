"""Generating and building the default-scale synthetic LILY: wall time and peak memory.

Each step runs in its own process so its peak RSS is its own. The LILY builder (``generate``
the raw CSV files, then ``build`` them) is compared with a plain pandas baseline (read whole
CSVs, groupby, merge) on the same files, in this process; and with what ``data=synthetic``
does (``in memory``: the generator's tables binned as they come, no file written or read).

    python benchmarks/bench_data.py [--scale default] [--seed 0] [--out /tmp/bench-lily]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

STEP = r"""
import json, resource, sys, time
from pathlib import Path
step, out, scale, seed = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
started = time.perf_counter()
if step == "generate":
    from lithovae.data.synthetic import generate_raw
    info = generate_raw(out / "raw", scale=scale, seed=seed)
else:
    import lithovae
    from omegaconf import OmegaConf
    from lithovae.data.builder import BuildOptions, build_dataset, build_from_tables
    from lithovae.data.synthetic import generate_tables
    synthetic = OmegaConf.load(Path(lithovae.__file__).parent / "conf" / "data" / "synthetic.yaml")
    from lithovae.data.sources import SyntheticSource
    options = BuildOptions.from_config(OmegaConf.to_container(synthetic.build),
                                       encoding=SyntheticSource.RAW_ENCODING)
    if step == "build":
        info = build_dataset(out / "raw", out / "built", options, log=lambda *a: None, force=True).manifest
    else:
        info = build_from_tables(generate_tables(scale, seed), "synthetic", out / "memory", options,
                                 name="synthetic", log=lambda *a: None).manifest
    info = {"rows": info["rows"], "boreholes": info["boreholes"]}
print(json.dumps({"seconds": time.perf_counter() - started,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "info": info}, default=str))
"""


def run_step(step: str, out: Path, scale: str, seed: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", STEP, step, str(out), scale, str(seed)],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def pandas_baseline(raw: Path) -> float:
    """Naive build: whole-file pandas reads of every column, then groupby and inner joins."""
    import numpy as np
    import pandas as pd

    from lithovae.data.schema import INSTRUMENTS

    started = time.perf_counter()
    tables = []
    for inst in INSTRUMENTS.values():
        df = pd.read_csv(raw / inst.filename, low_memory=False)
        df["bh"] = df["Exp"].astype(str) + "-" + df["Site"].astype(str) + "-" + df["Hole"].astype(str)
        df["bin"] = np.floor(np.round(df["Depth CSF-A (m)"] / 0.2, 9) + 0.5)
        tables.append(df.groupby(["bh", "bin"])[list(inst.columns)].mean())
    joined = tables[0]
    for t in tables[1:]:
        joined = joined.join(t, how="inner")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="/tmp/lithovae-bench-data")
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    gen = run_step("generate", out, args.scale, args.seed)
    size_mb = sum(p.stat().st_size for p in (out / "raw").glob("*.csv")) / 2**20
    print(f"generate ({args.scale}, seed {args.seed}): {gen['seconds']:6.1f} s, "
          f"peak RSS {gen['peak_rss_mb']:7.0f} MB, raw CSV {size_mb:,.0f} MB (targets: < 120 s, < 4096 MB)")
    build = run_step("build", out, args.scale, args.seed)
    print(f"build: {build['seconds']:6.1f} s, peak RSS {build['peak_rss_mb']:7.0f} MB, "
          f"{build['info']['rows']:,} bins from {build['info']['boreholes']} boreholes "
          f"(targets: < 120 s, < 4096 MB)")
    memory = run_step("memory", out, args.scale, args.seed)
    files = gen["seconds"] + build["seconds"]
    print(f"in memory (data=synthetic): {memory['seconds']:6.1f} s, peak RSS {memory['peak_rss_mb']:7.0f} MB, "
          f"{memory['info']['rows']:,} bins: {files / memory['seconds']:.2f}x the speed of generate + build "
          f"({files:.1f} s)")
    if not args.no_baseline:
        base = pandas_baseline(out / "raw")
        print(f"pandas whole-file baseline: {base:6.1f} s -> builder is {base / build['seconds']:.2f}x "
              f"its speed (and streams: bounded memory)")
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
