"""Shared fixtures: in-process Hydra composition of the train config on tmp dirs."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

import lithovae.config  # noqa: F401 - registers the train schema the configs compose with

CONF_DIR = str(Path(__file__).resolve().parents[1] / "lithovae" / "conf")
# fast evaluation for tests: every metric key, fewer k-means initialisations
FAST_EVAL = ["eval.n_init=1", "eval.silhouette_samples=500", "eval.figures=false", "eval.train_fit_samples=1000"]


def compose_train(overrides: list[str], tmp: Path, data_dir: Path | None = None,
                  return_hydra_config: bool = False):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="train", return_hydra_config=return_hydra_config, overrides=[
            "data.scale=small", f"paths.root_dir={tmp}", f"paths.run_dir={tmp / 'run'}",
            f"paths.data_dir={data_dir or tmp / 'data'}", "trainer.enable_progress_bar=false",
            *FAST_EVAL, *overrides])


def config_defaults(*overrides: str) -> dict:
    """The composed train config (``lithovae/conf/train.yaml`` and its group defaults, plus
    ``overrides``) as plain containers, interpolations unresolved: where a test takes the
    values a constructor does not default, e.g.
    ``LithoDataModule(path, seed=d["seed"], **d["datamodule"])`` or
    ``BuildOptions(**d["data"]["build"], encoding="utf-8")``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=False)


@pytest.fixture(scope="session")
def shared_data_dir(tmp_path_factory) -> Path:
    """One small synthetic dataset per test session (built on first use)."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(autouse=True)
def _local_tracking_store(monkeypatch):
    """Tests read the local MLflow store: a tracking server exported in the shell must not
    receive their runs (tests of the server set the variable themselves)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
