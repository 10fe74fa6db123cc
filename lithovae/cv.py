"""python -m lithovae.cv [OVERRIDE ...]: an alias of ``python -m lithovae.train -m study=cv ...``,
the study's entropy-balanced K-fold over boreholes (``lithovae/conf/study/cv.yaml``)."""

from __future__ import annotations

import runpy
import sys


def main() -> None:
    sys.argv = [sys.argv[0], "-m", "study=cv", *sys.argv[1:]]
    # as `python -m lithovae.train` runs: Hydra finds the configs beside that file (imported
    # instead, it would look for an importable package lithovae.conf, which there is not)
    runpy.run_module("lithovae.train", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
