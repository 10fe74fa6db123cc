"""Prediction throughput of a v2.6.7 run on one CPU thread, against the bare network in the
same process.

A v2_6_7 run is trained briefly on the small synthetic data (the weights' values do not change
the cost), and its bins are tiled to ``--rows`` bins (each copy a borehole of its own). Then,
alternating over ``--rounds`` and taking medians:

- ``network``: the encoder and decoder on the already scaled tensors (the floor: nothing
  else is done);
- ``predict``: :meth:`Predictor.predict` on the table of bins (checks, scaling, network,
  clusters from the saved clusterer, anomaly score and its training percentile, top lithologies,
  imputed values and range flags) plus writing the Parquet table: what ``lithovae.predict``
  does per bin;
- ``+ csv``: the same, reading the bins from a CSV first (the command line's ``data=table``
  path without the per-borehole figures).

    python benchmarks/bench_predict.py [--rows 500000] [--rounds 3] [--threads 1]

Target (issue 13): ``predict`` >= 100 K bins/s on one thread.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

TARGET = 100_000
FEATURES = ["GRA", "MS", "NGR", "R", "G", "B"]


def trained_run(root: Path) -> tuple[Path, Path]:
    """(run dir, dataset) of a v2_6_7 run trained 1 epoch on the small synthetic data."""
    from hydra import compose, initialize_config_dir

    import lithovae.config  # noqa: F401 - registers the train schema
    from lithovae.train import train

    conf = str(Path(__import__("lithovae").__file__).parent / "conf")
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            "experiment=v2_6_7", "data.scale=small", "trainer.max_epochs=1", "logger=none",
            f"paths.root_dir={root}", f"paths.run_dir={root / 'run'}", "trainer.enable_progress_bar=false",
            "eval.figures=false", "eval.n_init=1"])
    train(cfg)
    return root / "run", next((root / "outputs" / "data").rglob("synthetic-small-seed0*.parquet"))


def tiled_bins(dataset: Path, rows: int) -> pd.DataFrame:
    frame = pd.read_parquet(dataset, columns=["borehole_id", "depth_m", *FEATURES])
    copies = -(-rows // len(frame))
    tiled = pd.concat([frame.assign(borehole_id=frame["borehole_id"] + f"-{c}") for c in range(copies)],
                      ignore_index=True)
    return tiled.iloc[:rows].reset_index(drop=True)


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    from lithovae.prediction.predictor import Predictor

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run_dir, dataset = trained_run(root)
        torch.set_num_threads(args.threads)
        predictor = Predictor(run_dir / "predictor")
        bins = tiled_bins(dataset, args.rows)
        csv = root / "bins.csv"
        bins.to_csv(csv, index=False)
        prepared = predictor.prepare(bins)
        out = root / "predictions.parquet"

        def network():
            with torch.no_grad():
                for x, v in zip(prepared.x.split(65536), prepared.observed.split(65536)):
                    predictor.model.decode(predictor.model.encode(x, v.to(x.dtype))[0])

        def predict():
            predictor.predict(bins).to_parquet(out, index=False)

        def predict_csv():
            predictor.predict(pd.read_csv(csv)).to_parquet(out, index=False)

        cases = {"network": network, "predict": predict, "+ csv": predict_csv}
        times: dict[str, list[float]] = {name: [] for name in cases}
        predict()  # warm-up
        for _ in range(args.rounds):
            for name, fn in cases.items():
                times[name].append(timed(fn))
        table = pd.read_parquet(out)
        assert len(table) == args.rows and table["cluster"].ge(0).all()

    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"v2.6.7 predictor, {args.rows} bins, {args.threads} thread(s), median of {args.rounds} rounds "
          f"({predictor.model.__class__.__name__}, {sum(p.numel() for p in predictor.model.parameters())} "
          f"parameters, {predictor.clusterer.method} k={predictor.clusterer.k}, {len(table.columns)} columns out)")
    base = medians["network"]
    for name, seconds in medians.items():
        print(f"  {name:8s} {seconds:7.3f} s  {args.rows / seconds / 1e3:9.1f} K bins/s  "
              f"{seconds / base:5.2f}x the network's time")
    rate = args.rows / medians["predict"]
    print(f"predict: {rate / 1e3:.1f} K bins/s (target >= {TARGET / 1e3:.0f} K): "
          + ("PASS" if rate >= TARGET else "FAIL"))
    print(f"per-bin cost besides the network: {(medians['predict'] - base) / args.rows * 1e6:.2f} us")


if __name__ == "__main__":
    main()
