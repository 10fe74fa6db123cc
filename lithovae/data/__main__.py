"""python -m lithovae.data data=synthetic|lily|table|las ...: build a dataset, print the
realism report, and print the Parquet path on the last line."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from lithovae.cli import exits_cleanly


@exits_cleanly
def build(cfg: DictConfig) -> str:
    import pandas as pd
    from hydra.utils import instantiate

    from lithovae.data.report import realism_report

    source = instantiate(cfg.data, _convert_="all")
    path, _ = source.prepare(cfg.paths.data_dir, force=cfg.force)
    if cfg.report:
        text, _ = realism_report(pd.read_parquet(path), source.name, source.synthetic)
        print(text)
    print(path)
    return str(path)


@hydra.main(version_base="1.3", config_path="../conf", config_name="build")
def main(cfg: DictConfig) -> None:
    build(cfg)


if __name__ == "__main__":
    main()
