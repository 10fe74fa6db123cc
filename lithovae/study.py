"""python -m lithovae.study NAME [OVERRIDE ...]: an alias of
``python -m lithovae.train -m study=NAME [OVERRIDE ...]`` (studies are Hydra multiruns, see
:mod:`lithovae.study_summary` and ``lithovae/conf/study/``)."""

from __future__ import annotations

import runpy
import sys


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1].startswith("-") or "=" in sys.argv[1]:
        print("usage: python -m lithovae.study NAME [OVERRIDE ...]  (NAME: a file of lithovae/conf/study/)", file=sys.stderr)
        sys.exit(2)
    sys.argv = [sys.argv[0], "-m", f"study={sys.argv[1]}", *sys.argv[2:]]
    # as `python -m lithovae.train` runs: Hydra finds the configs beside that file (imported
    # instead, it would look for an importable package lithovae.conf, which there is not)
    runpy.run_module("lithovae.train", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
