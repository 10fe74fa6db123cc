"""python -m lithovae.study NAME [OVERRIDE ...]: an alias of
``python -m lithovae.train -m study=NAME [OVERRIDE ...]`` (studies are Hydra multiruns, see
:mod:`lithovae.studies` and ``lithovae/conf/study/``)."""

from __future__ import annotations

import sys


def main() -> None:
    from lithovae.train import main as train_main

    if len(sys.argv) < 2 or sys.argv[1].startswith("-") or "=" in sys.argv[1]:
        print("usage: python -m lithovae.study NAME [OVERRIDE ...]  (NAME: a file of lithovae/conf/study/)", file=sys.stderr)
        sys.exit(2)
    sys.argv = [sys.argv[0], "-m", f"study={sys.argv[1]}", *sys.argv[2:]]
    train_main()


if __name__ == "__main__":
    main()
