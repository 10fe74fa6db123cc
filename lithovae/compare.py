"""python -m lithovae.compare A B [metric=NAME]: does configuration B beat A on these data?

A and B are each a run directory (``metrics.json`` and ``config.yaml``) or a sweep directory (a
study or multirun: its job folders ``0/``, ``1/``...). Runs are paired by (``seed``,
``datamodule.fold``), read from each run's ``config.yaml`` or ``.hydra/config.yaml`` (checked
as untrusted files); per headline score present on both sides (or ``metric=NAME`` alone) this
prints the mean paired difference B - A over the shared pairs, its 95% t-interval, the number
of pairs, and one plain verdict line for ``metric`` (default ``ari_selected``): "B beats A",
"B loses to A" or "no difference beyond the interval". Runs without a partner are named.

Bad input (a folder with no scored run, two runs of one side on the same seed and fold, no
shared seed, an unknown metric) is one ``error:`` line naming the folder or key, exit 2.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd

from lithovae.cli import exits_cleanly
from lithovae.errors import ConfigError, RunDirError
from lithovae.evaluation.comparisons import HEADLINE, LEVEL, paired_difference, verdict_line

# not at the top: omegaconf and lithovae.untrusted are imported inside the functions that read run
# configs: a bad command line fails before they load

DEFAULT_METRIC = "ari_selected"
NO_FOLD = -1  # a run that is not a CV fold
USAGE = "usage: python -m lithovae.compare A B [metric=NAME]  (A, B: run or sweep directories)"


def _run_dirs(path: Path) -> list[Path]:
    """The scored runs of ``path``: itself if it holds metrics.json, else its job folders that do."""
    if not path.is_dir():
        raise RunDirError(f"{path}: not a directory")
    if (path / "metrics.json").is_file():
        return [path]
    jobs = sorted((p for p in path.iterdir() if p.name.isdigit() and (p / "metrics.json").is_file()),
                  key=lambda p: int(p.name))
    if not jobs:
        raise RunDirError(f"{path}: no scored run (no metrics.json in it or in its job folders 0/, 1/, ...)")
    return jobs


def _pair_key(run: Path) -> tuple[int, int]:
    """A run's (seed, fold) from its saved config (``config.yaml``, else ``.hydra/config.yaml``)."""
    from omegaconf import OmegaConf

    from lithovae.untrusted import load_config

    saved = run / "config.yaml"
    cfg = load_config(saved) if saved.is_file() else load_config(run / ".hydra" / "config.yaml",
                                                                  allow_interpolation=True)
    where = saved if saved.is_file() else run / ".hydra" / "config.yaml"
    seed = OmegaConf.select(cfg, "seed", default=None)
    fold = OmegaConf.select(cfg, "datamodule.fold", default=None)
    for key, value in (("seed", seed), ("datamodule.fold", fold)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise RunDirError(f"{where}: {key}: an integer expected, got {value!r}")
    if seed is None:
        raise RunDirError(f"{where}: seed: missing")
    return int(seed), NO_FOLD if fold is None else int(fold)


def read_runs(path: str | Path) -> pd.DataFrame:
    """The scored runs of a run or sweep directory: one row per run, indexed by (seed, fold),
    with ``run`` (its folder) and every numeric scalar of its metrics.json. Two runs on one
    (seed, fold) are a ``RunDirError``: the folder holds several configurations."""
    from lithovae.untrusted import read_json

    path = Path(path)
    rows, keys = [], []
    for run in _run_dirs(path):
        metrics = read_json(run / "metrics.json")
        rows.append({"run": str(run), **{k: float(v) if v is not None else math.nan for k, v in metrics.items()
                                        if v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))}})
        keys.append(_pair_key(run))
    index = pd.MultiIndex.from_tuples(keys, names=["seed", "datamodule.fold"])
    frame = pd.DataFrame(rows, index=index)
    doubled = index[index.duplicated()]
    if len(doubled):
        seed, fold = doubled[0]
        runs = frame.loc[[(seed, fold)], "run"].tolist()
        raise RunDirError(f"{path}: {_describe((seed, fold))} has {len(runs)} runs ({', '.join(Path(r).name for r in runs)}): "
                          "several configurations; give one point's runs (a single study point or run)")
    return frame


def _describe(key) -> str:
    seed, fold = key
    return f"seed={seed}" + (f" fold={fold}" if fold != NO_FOLD else "")


def compare(a: str | Path, b: str | Path, metrics=None, level: float = LEVEL) -> pd.DataFrame:
    """Paired differences B - A, one row per metric (``metrics``, default: the headline scores
    present on both sides): mean, std, ci_low, ci_high, n (pairs), verdict, n_unpaired, unpaired."""
    runs_a, runs_b = read_runs(a), read_runs(b)
    shared = runs_a.index.intersection(runs_b.index)
    if shared.empty:
        seeds = lambda frame: ", ".join(_describe(k) for k in frame.index)  # noqa: E731
        raise RunDirError(f"{b}: no (seed, fold) shared with {a} ({seeds(runs_a)} against {seeds(runs_b)}): "
                          "train B on A's seeds")
    if metrics is None:
        metrics = [m for m in HEADLINE if m in runs_a and m in runs_b]
    rows = []
    for m in metrics:
        for side, frame in ((a, runs_a), (b, runs_b)):
            if m not in frame:
                raise ConfigError(f"metric={m}: not a score of the runs of {side} (their metrics.json)")
        d = paired_difference(runs_a[m], runs_b[m], level)
        d["unpaired"] = ", ".join(f"{side.upper()} {_describe(key)}" for side, key in d["unpaired"])
        rows.append({"metric": m, **d})
    return pd.DataFrame(rows)


def report(table: pd.DataFrame, a: str, b: str, metric: str, level: float = LEVEL) -> list[str]:
    """The printed lines: a row per metric and the verdict line for ``metric``."""
    lines = [f"B - A, paired by (seed, datamodule.fold): A = {a}, B = {b}"]
    for _, r in table.iterrows():
        interval = (f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]" if math.isfinite(r["ci_low"])
                    else "(no interval: fewer than 2 pairs)")
        lines.append(f"  {r['metric']:<24} {r['mean']:+.3f} {interval}  n={r['n']}  {r['verdict']}")
    unpaired = table["unpaired"].iloc[0] if len(table) else ""
    if unpaired:
        lines.append(f"  without a partner (left out): {unpaired}")
    row = table.set_index("metric").loc[metric]
    if row["verdict"] == "undefined":
        lines.append(f"verdict: undefined ({metric}: {row['n']} pair(s) with a value, 2 needed)")
    else:
        lines.append(verdict_line("B", "A", f"{metric} difference", row["mean"], row["ci_low"], row["ci_high"],
                                  level, over=f"{row['n']} paired seeds"))
    return lines


def parse_args(argv: list[str]) -> tuple[str, str, str | None]:
    """``A B [metric=NAME]``; anything else is a ``ConfigError`` with the usage."""
    options = [x for x in argv if "=" in x and not Path(x).exists()]
    dirs = [x for x in argv if x not in options]
    metric = None
    for option in options:
        key, _, value = option.partition("=")
        if key != "metric" or not value:
            raise ConfigError(f"{option}: unknown option (only metric=NAME). {USAGE}")
        metric = value
    if len(dirs) != 2:
        raise ConfigError(f"two directories expected, got {len(dirs)}. {USAGE}")
    return dirs[0], dirs[1], metric


def main(argv: list[str] | None = None) -> None:

    def run() -> None:
        a, b, metric = parse_args(sys.argv[1:] if argv is None else argv)
        table = compare(a, b, None if metric is None else [metric])
        chosen = metric or DEFAULT_METRIC
        if chosen not in set(table["metric"]):
            raise ConfigError(f"metric={chosen}: not a score of both {a} and {b} (their metrics.json)")
        print("\n".join(report(table, a, b, chosen)))

    exits_cleanly(run)()


if __name__ == "__main__":
    main()
