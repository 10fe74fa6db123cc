"""python -m lithovae.data data=synthetic|lily|table|las ...: build a dataset, print its report
(LILY and synthetic: the realism report against real LILY; own data: the build report of its
own figures), and print the Parquet path on the last line."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from lithovae.cli import exits_cleanly

# not at the top: each command's modules (LAS reading, reports, pandas) are imported inside the
# command that uses them: python -m lithovae.data --help stays quick


@exits_cleanly
def build(cfg: DictConfig) -> str:
    import pandas as pd
    from hydra.utils import instantiate

    from lithovae.data.las import LasSource
    from lithovae.data.report import realism_report
    from lithovae.data.sources import TableSource

    source = instantiate(cfg.data, _convert_="all")
    path, _ = source.prepare(cfg.paths.data_dir, force=cfg.force)
    if cfg.report:
        own = isinstance(source, (TableSource, LasSource))  # own data: compared with nothing of LILY
        text, _ = realism_report(pd.read_parquet(path), source.name, source.synthetic, lily=not own,
                                 transforms=getattr(source, "transforms", None))
        print(text)
    print(path)
    return str(path)


@hydra.main(version_base="1.3", config_path="../conf", config_name="build")
def main(cfg: DictConfig) -> None:
    build(cfg)


if __name__ == "__main__":
    main()
