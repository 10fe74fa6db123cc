"""The package installs like a library: a wheel carries its configs and trains from anywhere."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # over 20 s: `make test-slow`, which CI runs too
def test_a_built_wheel_installed_in_a_fresh_venv_trains_from_outside_the_repo(tmp_path):
    # build from a copy: setuptools writes build/ beside the sources, and a stale one would hide
    # files missing from the package data
    source = tmp_path / "source"
    for package in ("lithovae", "hydra_plugins"):  # hydra_plugins: the ensemble launcher
        shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(dist), str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = dist.glob("lithovae-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    # the dependencies come from this environment (no network in tests); lithovae itself only
    # from the wheel: a plain path line does not run this environment's editable-install hook
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], check=True,
                   capture_output=True, timeout=300)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LITHOVAE_ROOT")}
    where = subprocess.run([str(python), "-c", "import lithovae; print(lithovae.__file__)"], cwd=work, env=env,
                           check=True, capture_output=True, text=True).stdout.strip()
    assert where.startswith(site), where  # the installed wheel, not the repo
    proc = subprocess.run([str(python), "-m", "lithovae.train", "data.scale=small", "trainer.max_epochs=1",
                           "eval.figures=false", "eval.n_init=1", "trainer.enable_progress_bar=false"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "scored weights: last.ckpt, epoch 0" in proc.stdout
    (run_dir,) = [p.parent for p in (work / "outputs" / "runs" / "train").glob("*/metrics.json")]
    # predict (its config and the MLflow model's code file come from the wheel too)
    predicted = subprocess.run([str(python), "-m", "lithovae.predict", f"run={run_dir}", "data=synthetic",
                                "data.scale=small", "figures=false", f"out={work / 'predicted.csv'}"],
                               cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert (work / "predicted.csv").stat().st_size > 0
    # the ensemble launcher is a Hydra plugin: found in the installed wheel, not in the repo
    sweep = subprocess.run([str(python), "-m", "lithovae.train", "-m", "hydra/launcher=ensemble", "data.scale=small",
                            "trainer.max_epochs=1", "mask=random", "mask.prob=0.1,0.2", "eval.figures=false",
                            "eval.n_init=1", "trainer.enable_progress_bar=false"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    assert "1 stacked group(s) of [2]" in sweep.stdout
