"""python -m lithovae.cv [OVERRIDE ...]: an alias of ``python -m lithovae.train -m study=cv ...``,
the study's entropy-balanced K-fold over boreholes (``lithovae/conf/study/cv.yaml``)."""

from __future__ import annotations

import sys


def main() -> None:
    from lithovae.train import main as train_main

    sys.argv = [sys.argv[0], "-m", "study=cv", *sys.argv[1:]]
    train_main()


if __name__ == "__main__":
    main()
