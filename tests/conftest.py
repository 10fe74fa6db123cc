"""Shared fixtures: in-process Hydra composition of the train config on tmp dirs."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import lithovae.config  # noqa: F401 - registers the train schema the configs compose with

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
# fast evaluation for tests: every metric key, fewer k-means initialisations
FAST_EVAL = ["eval.n_init=1", "eval.silhouette_samples=500", "eval.figures=false"]


def compose_train(overrides: list[str], tmp: Path, data_dir: Path | None = None,
                  return_hydra_config: bool = False):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="train", return_hydra_config=return_hydra_config, overrides=[
            "data.scale=small", f"paths.root_dir={tmp}", f"paths.run_dir={tmp / 'run'}",
            f"paths.data_dir={data_dir or tmp / 'data'}", "trainer.enable_progress_bar=false",
            *FAST_EVAL, *overrides])


@pytest.fixture(scope="session")
def shared_data_dir(tmp_path_factory) -> Path:
    """One small synthetic dataset per test session (built on first use)."""
    return tmp_path_factory.mktemp("data")
