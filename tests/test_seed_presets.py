"""The presets and published rows that follow the seeds: 004's standard and hybrid models, 002's
classifiers on the entropy-balanced split, and every published grid point's ``setting``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lithovae.data import reference
from lithovae.models.base import DataSpec
from lithovae.study_summary import settings_of
from tests.conftest import CONF_DIR, compose_train

SPEC = DataSpec(6, ("GRA", "MS", "NGR", "R", "G", "B"), 139, 14, tuple(range(1, 140)), tuple(range(1, 15)))
PRESETS = {p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml")}


def _model(tmp_path, preset: str):
    cfg = compose_train([f"experiment={preset}"], tmp_path)
    return cfg, instantiate(cfg.model, _partial_=True, _convert_="all")(data=SPEC)


@pytest.mark.parametrize("preset, n_parameters", [
    ("standard_unsup", 6426), ("standard_semisup", 16165),      # 004: models/unsup.pt, semisup.pt
    ("hybrid_unsup", 6426), ("hybrid_semisup", 16165),          # 004: the *_hybrid.pt models
])
def test_seed_004s_models_have_its_parameter_counts(tmp_path, preset, n_parameters):
    _, model = _model(tmp_path, preset)
    assert sum(p.numel() for p in model.parameters()) == n_parameters


def test_seed_004s_standard_models_are_beta_1_with_the_summed_loss(tmp_path):
    for preset, alpha in (("standard_unsup", None), ("standard_semisup", 0.1)):
        cfg, model = _model(tmp_path, preset)
        assert cfg.beta._target_.endswith("FixedBeta") and cfg.beta.value == 1.0
        assert cfg.mask._target_.endswith("NoMask")
        assert (cfg.alpha.get("value") if alpha else None) == alpha
        assert "reduction" not in cfg.model  # the models' own per-sample-sum loss


def test_seed_004s_hybrid_models_average_every_term(tmp_path):
    from lithovae.models.hybrid import HybridSemiSupervisedVAE, HybridVAE

    for preset, cls in (("hybrid_unsup", HybridVAE), ("hybrid_semisup", HybridSemiSupervisedVAE)):
        cfg, model = _model(tmp_path, preset)
        assert type(model) is cls and model.reduction == "mean"
        assert cfg.beta.start == 1.0e-6 and cfg.beta.end == 0.5 and cfg.beta.epochs == 30
        assert cfg.mask.prob == 0.1 and cfg.mask.masked_weight == 0.5
    assert compose_train(["experiment=hybrid_semisup"], tmp_path).alpha.value == 0.5


@pytest.mark.parametrize("preset", ["direct_classifier", "vae_classifier_v1_0", "vae_classifier_v1_1",
                                    "lithology_classifier_v2_6_7"])
def test_seed_002s_classifiers_use_the_entropy_balanced_split(tmp_path, preset):
    assert compose_train([f"experiment={preset}"], tmp_path).datamodule.split == "entropy_balanced"


def test_the_long_trainings_differ_from_their_preset_in_length_only(tmp_path):
    v2_6, long = (compose_train([f"experiment={p}"], tmp_path) for p in ("v2_6", "v2_6_100ep"))
    assert v2_6.early_stopping.enabled and not long.early_stopping.enabled
    assert long.trainer.max_epochs == 100 and long.model == v2_6.model and long.beta == v2_6.beta
    v2_14, long = (compose_train([f"experiment={p}"], tmp_path) for p in ("v2_14", "v2_14_100ep"))
    assert v2_14.trainer.max_epochs == 5 and long.trainer.max_epochs == 100
    assert long.model == v2_14.model and long.mask == v2_14.mask and long.alpha == v2_14.alpha


def _preset_of(variant: str) -> str:
    return re.sub(r"(?<=\d)\.(?=\d)", "_", variant)


def _published_settings():
    published = reference.read("published_results.csv")
    return [(row["variant"], row["metric"], row["value"], settings_of(row),
             str(row["in_preset"]).lower() == "true")
            for _, row in published.iterrows() if settings_of(row)]


@pytest.mark.parametrize("variant, metric, value, setting, in_preset", _published_settings(),
                         ids=lambda v: str(v))
def test_a_published_grid_point_says_truly_whether_it_is_the_presets_own(tmp_path, variant, metric, value,
                                                                         setting, in_preset):
    preset = _preset_of(variant)
    assert preset in PRESETS
    cfg = compose_train([f"experiment={preset}"], tmp_path)
    same = all(str(OmegaConf.select(cfg, key)) == str(type(OmegaConf.select(cfg, key))(v))
               for key, v in setting.items())
    assert same == in_preset, (variant, metric, setting)


def test_each_metric_of_a_preset_has_one_published_row_of_its_own():
    """What the history study shows beside a preset: one value per metric (v2.6.6's lucky split and
    its CV are two protocols of one configuration, the only exception)."""
    published = reference.read("published_results.csv")
    own = published[[not settings_of(r) or str(r["in_preset"]).lower() == "true" for _, r in published.iterrows()]]
    counts = own.groupby(["variant", "metric"]).size()
    assert counts[counts > 1].index.tolist() == [("v2.6.6", "ari_best")]
