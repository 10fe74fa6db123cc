"""python -m lithovae.study experiments/NAME.yaml [OVERRIDE ...]: one study, one command.

A study spec (see ``experiments/``) names a base composition and either a
``grid`` (one config key and its values) or named ``runs`` (override lists).
Every run is trained and evaluated in this process and logged to the MLflow
experiment ``study-NAME``; the study then writes a summary CSV and a figure
into its folder and logs both as artifacts of a summary run.

Extra overrides apply to every run (e.g. ``data.scale=small trainer.max_epochs=1``);
``--grid mask.prob=0.0,0.3`` replaces the grid's values, ``--limit N`` keeps the
first N runs (quick versions).
"""

from __future__ import annotations

import argparse
import itertools
import re
import sys
import time
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from lithovae.cli import EXIT_USER_ERROR

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
SPEC_KEYS = {"name", "description", "base", "grid", "runs", "x", "panels", "extra", "published"}
# published_results.csv metric -> our metrics.json key
PUBLISHED_METRICS = {"ari_k10": "ari_kmeans_k10", "ari_k12": "ari_kmeans_k12", "ari_k15": "ari_kmeans_k15",
                     "ari_k20": "ari_kmeans_k20", "silhouette_k10": "silhouette"}


class StudyError(ValueError):
    pass


def load_spec(path: Path) -> dict:
    if not path.exists():
        raise StudyError(f"{path}: study spec not found")
    spec = OmegaConf.to_container(OmegaConf.load(path))
    unknown = sorted(set(spec) - SPEC_KEYS)
    if unknown:
        raise StudyError(f"{path}: unknown key '{unknown[0]}' (known: {', '.join(sorted(SPEC_KEYS))})")
    if ("grid" in spec) == ("runs" in spec):
        raise StudyError(f"{path}: give exactly one of 'grid' or 'runs'")
    return spec


def expand_runs(spec: dict, grid_override: list[str], limit: int | None) -> list[tuple[str, list[str], dict]]:
    """(label, overrides, coordinates) for every run of the study."""
    if "runs" in spec:
        runs = [(label, list(ov), {"run": label}) for label, ov in spec["runs"].items()]
    else:
        grid = dict(spec["grid"])
        for item in grid_override:
            key, _, values = item.partition("=")
            if key not in grid:
                raise StudyError(f"--grid {key}: not a grid key of {spec['name']} ({', '.join(grid)})")
            grid[key] = [OmegaConf.create({"v": v})["v"] for v in values.split(",")]
        keys = list(grid)
        runs = []
        for values in itertools.product(*(grid[k] for k in keys)):
            coords = dict(zip(keys, values))
            label = "_".join(f"{k.split('.')[-1]}{v}" for k, v in coords.items())
            runs.append((label, [f"{k}={v}" for k, v in coords.items()], coords))
    return runs[:limit] if limit else runs


def compose_run(overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def history_table(summary: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """Each preset's metrics beside the study's published values for that variant."""
    rows = []
    for _, ours in summary.iterrows():
        variant = re.sub(r"(?<=\d)_(?=\d)", ".", ours["run"])  # preset v2_6_7 is variant v2.6.7
        pub = published[published["variant"] == variant]
        for _, p in (pub.iterrows() if len(pub) else [(None, None)]):
            metric = p["metric"] if p is not None else "ari_best"
            key = PUBLISHED_METRICS.get(metric, metric)
            rows.append({"preset": ours["run"], "dataset": ours["dataset"], "metric": metric,
                         "ours": ours.get(key), "published": None if p is None else p["value"],
                         "published_std": None if p is None else p["std"],
                         "published_protocol": None if p is None else p["protocol"]})
    return pd.DataFrame(rows)


def plot_study(spec: dict, summary: pd.DataFrame, path: Path, dataset: str, synthetic: bool,
               published: pd.DataFrame | None = None, history: pd.DataFrame | None = None) -> Path:
    """One panel per metric: ours against the grid coordinate (or per preset), with the
    ``published`` curve (grid studies) or the ``history`` table's published values."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = spec.get("panels", ["ari_best"]) + spec.get("extra", [])
    ncols = 3 if len(panels) > 3 else len(panels)
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.3 * nrows), squeeze=False)
    for ax, metric in zip(axes.flat, panels):
        values = pd.to_numeric(summary.get(metric), errors="coerce") if metric in summary else None
        if spec.get("x"):
            x = summary[spec["x"]]
            if values is not None:
                ax.plot(x, values, "o-", ms=3, label=f"ours ({dataset})")
            if published is not None and "mask_prob" in published and f"r2_{metric[3:].lower()}" in published:
                curve = published.sort_values("mask_prob")  # the file is not in mask order
                ax.plot(curve["mask_prob"], curve[f"r2_{metric[3:].lower()}"], "s--", ms=2,
                        color="grey", label="published (real LILY)")
            ax.set_xlabel(spec["x"])
        elif values is not None:
            ax.bar(range(len(summary)), values, label=f"ours ({dataset})")
            ax.set_xticks(range(len(summary)), summary["run"], rotation=60, ha="right", fontsize=7)
            if history is not None and metric == "ari_best":
                best = history[history["metric"].isin(["ari_best", "ari_k12"])].groupby("preset")["published"].first()
                ax.scatter([i for i, r in enumerate(summary["run"]) if r in best.index],
                           [best[r] for r in summary["run"] if r in best.index], color="black", marker="_",
                           s=200, label="published (real LILY)", zorder=3)
        ax.set_title(metric)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    note = "SYNTHETIC data: not a real-data result" if synthetic else "real data"
    fig.suptitle(f"{spec['name']} on {dataset} ({note})", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_study(spec_path: Path, overrides: list[str], grid_override: list[str] | None = None,
              limit: int | None = None) -> dict:
    from lithovae import tracking
    from lithovae.data import reference
    from lithovae.train import train

    spec = load_spec(spec_path)
    runs = expand_runs(spec, grid_override or [], limit)
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    probe = compose_run(list(spec.get("base", [])) + overrides + ["paths.run_dir=."])
    out = Path(probe.paths.output_dir) / "studies" / spec["name"] / stamp
    experiment = f"study-{spec['name']}"
    rows = []
    for i, (label, run_overrides, coords) in enumerate(runs):
        print(f"[lithovae.study] {spec['name']} run {i + 1}/{len(runs)}: {label}")
        cfg = compose_run(list(spec.get("base", [])) + run_overrides + overrides + [
            f"logger.experiment_name={experiment}", f"paths.run_dir={out / label}", f"logger.run_name={label}"])
        metrics = train(cfg)
        rows.append({**coords, "run": label, **{k: v for k, v in metrics.items() if not isinstance(v, dict)}})
    summary = pd.DataFrame(rows)
    dataset, synthetic = summary["dataset"].iloc[0], bool(summary["synthetic"].iloc[0])
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "summary.csv"]
    summary.to_csv(files[0], index=False)
    published = reference.read(spec["published"]) if spec.get("published") else None
    history = None
    if published is not None and "variant" in published:
        history = history_table(summary, published)
        files.append(out / "history.csv")
        history.to_csv(files[-1], index=False)
    files.append(plot_study(spec, summary, out / f"{spec['name']}.png", dataset, synthetic, published, history))
    logger = tracking.mlflow_logger(experiment, probe.paths.mlflow_dir, run_name=f"{spec['name']}-summary")
    tags = {"study": spec["name"], "dataset": dataset, "synthetic": str(synthetic),
            "runs": str(len(runs)), "git_commit": tracking.git_commit()}
    with tracking.tracked_run(logger, OmegaConf.create({"study": spec, "overrides": overrides}), tags):
        tracking.log_artifacts(logger, files)
    print(f"[lithovae.study] {len(runs)} runs on {dataset}" + (" (SYNTHETIC data)" if synthetic else ""))
    for f in files:
        print(f)
    return {"summary": summary, "files": files, "dir": out}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lithovae.study", description=__doc__.splitlines()[0])
    parser.add_argument("spec", type=Path, help="a study spec, e.g. experiments/masking_sweep.yaml")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides applied to every run")
    parser.add_argument("--grid", action="append", default=[], help="replace a grid: key=v1,v2,...")
    parser.add_argument("--limit", type=int, default=None, help="run only the first N runs")
    args = parser.parse_args(argv)
    try:
        run_study(args.spec, args.overrides, args.grid, args.limit)
    except StudyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


if __name__ == "__main__":
    main()
