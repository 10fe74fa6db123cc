"""Evaluate a trained model on one split (the test boreholes by default).

Clustering uses the latent means, never sampled z. Reconstruction R², MAE and RMSE are in
the scaled space, as in the study, over observed entries only (MAE and RMSE also in
original units through the run's scaler). The seeds' diagnostics per expert lithology group
(reconstruction error, latent coherence, classifier accuracy) are nested dicts keyed by group
name; :func:`diagnostic_tables` lays them out as the run's CSV tables.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lithovae import progress
from lithovae.data import reference
from lithovae.data.splits import SAVED_PARTS
from lithovae.evaluation import bootstrap
from lithovae.evaluation.background import Background, Here, second_core
from lithovae.evaluation.clusters import hierarchy_check
from lithovae.evaluation.metrics import (active_dims, classification_scores, clustering_scores, labeled_ari,
                                         latent_abs_correlation, group_accuracy, group_coherence,
                                         group_reconstruction_errors, imputation_r2,
                                         reconstruction_errors, reconstruction_r2, silhouettes)
from lithovae.evaluation.batched import seeded_subsample
from lithovae.evaluation.comparisons import HEADLINE
from lithovae.evaluation.selection import held_out_choices, held_out_clusterings, held_out_fits
from lithovae.files import atomic_write
from lithovae.results import to_json
from lithovae.masking import MaskStrategy
from lithovae.models.base import LatentModel, inference


FIGURE_OPTIONS = ("figures", "umap_sample", "umap_top_n", "log_boreholes")
COHERENCE_SAMPLES = 4000  # rows for the pairwise latent distances of group_coherence


def split_eval_options(eval_cfg: dict) -> tuple[dict, dict]:
    """The ``eval`` config as (score_model() keyword arguments, figure options): every key that is
    not a figure option (k, n_init, gmm, silhouette_samples, max_fit_samples, backend) is a
    scoring option."""
    scores = {k: v for k, v in eval_cfg.items() if k not in FIGURE_OPTIONS}
    figures = {k: v for k, v in eval_cfg.items() if k in FIGURE_OPTIONS}
    return scores, figures


def model_outputs(model: LatentModel, tensors: dict[str, torch.Tensor], visible: torch.Tensor,
                  chunk: int = 8192) -> dict[str, np.ndarray]:
    """Latent means, reconstructions from them, and class logits (if any) for every row."""
    device = next(model.parameters()).device
    mus, recons, logits = [], [], []
    with inference(model):
        for x, v in zip(tensors["x"].split(chunk), visible.split(chunk)):
            mu = model.embed(x.to(device), v.to(device))
            mus.append(mu.cpu())
            recons.append(model.decode(mu).cpu())
            lg = model.classify(mu)
            if lg is not None:
                logits.append(lg.cpu())
    return {"mu": torch.cat(mus).numpy(), "recon": torch.cat(recons).numpy(),
            "logits": torch.cat(logits).numpy() if logits else None}


def latent_means(model: LatentModel, x: torch.Tensor, visible: torch.Tensor, chunk: int = 8192) -> np.ndarray:
    """Latent means only (no decoding), e.g. of a whole dataset."""
    device = next(model.parameters()).device
    with inference(model):
        return torch.cat([model.embed(a.to(device), v.to(device)).cpu()
                          for a, v in zip(x.split(chunk), visible.split(chunk))]).numpy()


def prior_assignment(model: LatentModel, mu: np.ndarray, chunk: int = 8192) -> np.ndarray | None:
    """The model's own clustering: the argmax of its mixture prior's responsibilities
    (``log_responsibilities``, VaDE's gamma(c|z)) at the latent means; None for a model
    without one (a VampPrior is a mixture too, but of posteriors with no responsibilities)."""
    responsibilities = getattr(model, "log_responsibilities", None)
    if not callable(responsibilities):
        return None
    device = next(model.parameters()).device
    with inference(model):
        return torch.cat([responsibilities(z.to(device)).argmax(1).cpu()
                          for z in torch.as_tensor(mu).split(chunk)]).numpy()


def _silhouettes(mu: np.ndarray, clusters, ks, samples: int, seed: int, backend: str) -> dict:
    """``silhouette_kmeans_k{k}`` for every k, and ``silhouette`` of the best clustering (the
    same score as before: same rows, same formula), with the distances computed once."""
    nan = float("nan")
    wanted = {f"kmeans_k{k}": clusters.assignments.get(f"kmeans_k{k}") for k in ks}
    wanted = {name: a for name, a in wanted.items() if a is not None}
    best = f"{clusters.scores.get('best_method')}_k{clusters.scores.get('best_k')}"
    if clusters.assignment is not None and best not in wanted:
        best = "best"  # a GMM (or a clustering given without its assignments)
        wanted[best] = clusters.assignment
    scores = silhouettes(mu, wanted, samples, seed, backend=backend)
    out = {f"silhouette_kmeans_k{k}": scores.get(f"kmeans_k{k}", nan) for k in ks}
    out["silhouette"] = scores[best] if clusters.assignment is not None else nan
    return out


@dataclass
class EvaluationContext:
    """One evaluation of a model on one part of the data: what every score of :data:`SCORES`
    reads. ``metrics`` holds the scores computed so far, in order; a score may also leave what a
    later one reads (the clusterings, the chosen assignments)."""

    model: LatentModel
    tensors: dict[str, torch.Tensor]
    feature_names: list[str]
    options: dict  # the clustering options: k, n_init, gmm, max_fit_samples, backend, seed
    outputs: dict  # model_outputs(): mu, recon, logits
    x: np.ndarray
    y: np.ndarray
    target: np.ndarray
    observed: np.ndarray
    silhouette_samples: int
    mask: MaskStrategy | None = None
    scaler: object = None
    group_names: list[str] | None = None
    held_out: dict | None = None  # _held_out_parts(): validation (and training) latents and features
    baseline: bool = True
    baseline_cache_dir: str | Path | None = None
    clustering: object = None  # this part's clustering, already computed (an ensemble's batched pass)
    baseline_job: object = None  # the raw-feature baseline, already started (start_baseline)
    test_job: object = None  # a process waiting for the test latents' clusterings (test_clustering_job)
    boreholes: object = None
    bootstrap: dict | None = None
    hierarchy: dict | None = None  # hierarchy_inputs()
    metrics: dict = field(default_factory=dict)
    clusters: object = None  # set by the clustering score
    silhouettes: dict | None = None  # likewise, where the test clusterings were computed with them
    held: object = None  # likewise: the held-out selection (None without a validation part)
    chosen: dict = field(default_factory=dict)  # name -> test assignment the bootstrap rescores
    prior_assignment: np.ndarray | None = None

    @property
    def seed(self) -> int:
        return self.options["seed"]


def cluster_test_latents(mu: np.ndarray, y: np.ndarray, options: dict, silhouette_samples: int):
    """The test latents' clusterings (``ari_*``) and their silhouettes: what a second process
    computes while this one fits the clusterings chosen on validation (:func:`_clustering`)."""
    o = options
    with progress.step("clustering the test latents"):
        clusters = clustering_scores(mu, y, ks=tuple(o["k"]), seed=o["seed"], n_init=o["n_init"], gmm=o["gmm"],
                                     max_fit_samples=o["max_fit_samples"], backend=o["backend"])
    with progress.step("silhouettes"):
        return clusters, _silhouettes(mu, clusters, o["k"], silhouette_samples, o["seed"], o["backend"])


BACKGROUND_TEST_ROWS = 20000  # from this many test rows, their clusterings run in a process of their own


def test_clustering_job(rows: int, started=None):
    """Where :func:`cluster_test_latents` of ``rows`` test rows runs: ``started`` (a process started
    ahead, :meth:`Background.waiting`), a process of its own for a large test set where a second
    CPU is there for it, else here."""
    if started is not None:
        return started
    if rows >= BACKGROUND_TEST_ROWS and second_core():
        return Background.waiting(cluster_test_latents)
    return Here.waiting(cluster_test_latents)


def _clustering(ctx: EvaluationContext) -> dict:
    """The test latents' clusterings (``ari_*``), the ones chosen on validation and fitted on
    training (``ari_selected``, ``ari_inductive``), the raw features' (``baseline_ari_*``) and
    the gains between them. The test clusterings (with their silhouettes) and the raw features'
    run in other processes for a large test set, meanwhile."""
    o, parts = ctx.options, ctx.held_out
    scores: dict = {}
    # the raw features' clusterings do not depend on the model: on a second core meanwhile
    raw = ctx.baseline_job
    if raw is None and ctx.baseline:
        raw = _start_baseline(ctx.x, ctx.y, parts, ctx.baseline_cache_dir, o)
    test = None
    if ctx.clustering is None:
        test = test_clustering_job(len(ctx.x), ctx.test_job)
        test.submit(ctx.outputs["mu"], ctx.y, o, ctx.silhouette_samples)
    try:
        fits = None
        if parts is not None:
            with progress.step("clusterings chosen on validation, fitted on training"):
                fits = held_out_fits(ctx.outputs["mu"], parts["val_mu"], parts["val_y"], parts.get("train_mu"),
                                     ks=tuple(o["k"]), seed=o["seed"], n_init=o["n_init"], gmm=o["gmm"],
                                     max_fit_samples=o["max_fit_samples"], backend=o["backend"])
        if test is None:
            ctx.clusters = ctx.clustering
        else:
            with progress.step("clustering the test latents, silhouettes"):
                ctx.clusters, ctx.silhouettes = test.result()
        scores.update(ctx.clusters.scores)
        if fits is not None:
            ctx.held = held_out_choices(ctx.clusters, ctx.y, fits)
            scores.update(ctx.held.scores)
            ctx.chosen.update({"ari_selected": ctx.held.selected, "ari_inductive": ctx.held.inductive})
        if raw is not None:
            with progress.step("raw-feature baseline"):
                raw_scores, assignments = raw.result()
    finally:
        for job in (raw, test):
            if job is not None:
                job.close()
    if raw is not None:
        scores.update(raw_scores)
        ctx.chosen.update({f"baseline_{name}": a for name, a in assignments.items()})
        scores["ari_best_gain"] = scores["ari_best"] - scores["baseline_ari_best"]
        for name, gain in GAINS.items():
            if name in scores and f"baseline_{name}" in scores:
                scores[gain] = scores[name] - scores[f"baseline_{name}"]
    return scores


def _silhouette(ctx: EvaluationContext) -> dict:
    if ctx.silhouettes is not None:  # computed with the test clusterings
        return ctx.silhouettes
    with progress.step("silhouettes"):
        return _silhouettes(ctx.outputs["mu"], ctx.clusters, ctx.options["k"], ctx.silhouette_samples,
                            ctx.seed, ctx.options["backend"])


def _reconstruction(ctx: EvaluationContext) -> dict:
    return {**reconstruction_r2(ctx.x, ctx.outputs["recon"], ctx.observed, ctx.feature_names),
            **reconstruction_errors(ctx.x, ctx.outputs["recon"], ctx.observed, ctx.feature_names, ctx.scaler)}


def _latent_use(ctx: EvaluationContext) -> dict:
    """How many latent dims carry information, and how correlated those are."""
    return {"active_dims": active_dims(ctx.outputs["mu"]),
            "latent_abs_correlation": latent_abs_correlation(ctx.outputs["mu"])}


def _classification(ctx: EvaluationContext) -> dict:
    logits = ctx.outputs["logits"]
    return {} if logits is None else classification_scores(logits, ctx.target, logits.shape[1])


def _prior(ctx: EvaluationContext) -> dict:
    """For a model with a mixture prior, ``ari_prior`` of its own clustering."""
    ctx.prior_assignment = own = prior_assignment(ctx.model, ctx.outputs["mu"])
    if own is None:
        return {}
    # non-finite latent means have no responsibilities: no score, as for the clusterings
    return {"ari_prior": labeled_ari(ctx.y, own) if np.isfinite(ctx.outputs["mu"]).all() else float("nan"),
            "prior_clusters_used": int(np.unique(own).size)}


def _models_own(ctx: EvaluationContext) -> dict:
    """What the variant scores itself (:meth:`LatentModel.extra_scores`, e.g. VaDE's ``ari_vade``)."""
    return ctx.model.extra_scores(dict(ctx.metrics))


def _groups(ctx: EvaluationContext) -> dict:
    if "y_group" not in ctx.tensors or (ctx.group_names is not None and not len(ctx.group_names)):
        return {}  # [] : data without groups
    groups, names = ctx.tensors["y_group"].numpy(), ctx.group_names
    scores = group_reconstruction_errors(ctx.x, ctx.outputs["recon"], ctx.observed, groups, names)
    coherence = group_coherence(ctx.outputs["mu"], groups, names, COHERENCE_SAMPLES, ctx.seed)
    ratios = [c["ratio"] for c in coherence.values() if np.isfinite(c["ratio"])]
    scores["group_coherence"] = coherence
    scores["group_coherence_ratio_mean"] = float(np.mean(ratios)) if ratios else float("nan")
    if ctx.outputs["logits"] is not None:
        scores["accuracy_group"] = group_accuracy(ctx.outputs["logits"], ctx.target, groups, names)
    return scores


def _imputation(ctx: EvaluationContext) -> dict:
    if ctx.mask is None or not ctx.mask.trains_imputation:
        return {}
    observed = ctx.tensors["observed"]
    visible = ctx.mask(observed, torch.Generator().manual_seed(ctx.seed))
    hidden = (observed & ~visible).numpy()
    masked = model_outputs(ctx.model, ctx.tensors, visible)
    return imputation_r2(ctx.x, masked["recon"], hidden, ctx.feature_names)


def _bootstrap_intervals(ctx: EvaluationContext) -> dict:
    if ctx.boreholes is None or not ctx.bootstrap or ctx.bootstrap["resamples"] <= 0:
        return {}
    with progress.step("bootstrap intervals"):
        return _intervals(ctx.metrics, ctx.chosen, ctx.y, ctx.x, ctx.outputs, ctx.observed, ctx.target,
                          ctx.boreholes, ctx.bootstrap, ctx.seed)


def _hierarchy(ctx: EvaluationContext) -> dict:
    """The expert-hierarchy check (:func:`hierarchy_check`), twice: ``hierarchy_ari_test`` on
    the centroids of the lithologies of the scored rows (``hierarchy_ari``, as before, is this
    one) and ``hierarchy_ari_all`` on those of every lithology of the hierarchy in the run's
    train, val and test parts, from their latent means (the seed's protocol: 139 centroids);
    ``hierarchy_n_lithologies_{test,all}`` count them. None for data without a hierarchy."""
    h = ctx.hierarchy
    if not h:
        return {}
    with progress.step("expert hierarchy"):
        k = len(set(h["group_of"].values()))  # 14 on LILY (the seed's), the user's group count on own data
        ari, n = hierarchy_check(ctx.outputs["mu"], h["names"], h["group_of"], k)
        scores = {"hierarchy_ari": ari, "hierarchy_ari_test": ari, "hierarchy_n_lithologies_test": n}
        mu_all = [ctx.outputs["mu"] if part is None else latent_means(ctx.model, part["x"], part["observed"])
                  for part, _ in h["all"]]
        names_all = [h["names"] if names is None else names for _, names in h["all"]]
        ari, n = hierarchy_check(np.concatenate(mu_all), np.concatenate(names_all), h["group_of"], k)
        scores.update({"hierarchy_ari_all": ari, "hierarchy_n_lithologies_all": n})
    return scores


# every score of an evaluation, in the order metrics.json lists them: each reads the context
# and returns its keys (a variant adds its own through LatentModel.extra_scores, not here)
SCORES: list[Callable[[EvaluationContext], dict]] = [
    _clustering, _silhouette, _reconstruction, _latent_use, _classification, _prior, _models_own, _groups,
    _imputation, _bootstrap_intervals, _hierarchy]


def hierarchy_inputs(dm, scored: list[str]) -> dict | None:
    """What :func:`_hierarchy` reads from a data module whose parts ``scored`` were scored:
    the data's hierarchy (LILY's for LILY data, the user's groups for own data; None when it
    has none), the scored rows' principal lithologies, and the run's train, val and test parts
    (None where a part is the scored one, whose latent means are at hand)."""
    group_of = getattr(dm, "hierarchy", None)
    group_of = reference.lithology_groups() if group_of is None else group_of
    if not group_of:
        return None
    names = np.concatenate([dm.frames[p]["principal"].to_numpy() for p in scored])
    every = [p for p in SAVED_PARTS if p in dm.tensors]
    if list(scored) == every:
        parts = [(None, None)]  # the scored rows are every part's, in this order
    else:
        parts = [(None, None) if [p] == list(scored) else (dm.tensors[p], dm.frames[p]["principal"].to_numpy())
                 for p in every]
    return {"group_of": group_of, "names": names, "all": parts}


def score_model(model: LatentModel, tensors: dict[str, torch.Tensor], feature_names: list[str], *,
                k, n_init: int, gmm: bool, silhouette_samples: int, max_fit_samples: int | None,
                backend: str, seed: int, mask: MaskStrategy | None = None, baseline: bool = True,
                baseline_cache_dir: str | Path | None = None, clustering=None, scaler=None,
                group_names: list[str] | None = None, held_out: dict | None = None,
                train_fit_samples: int | None, boreholes=None, bootstrap: dict,
                hierarchy: dict | None = None, outputs: dict | None = None, baseline_job=None,
                test_job=None) -> tuple[dict, dict]:
    """Every score of :data:`SCORES` for ``model`` on these rows: the metrics dict (keys of the
    study) and the arrays behind them.

    The scoring options of the ``eval`` config (:func:`split_eval_options`) and ``seed``
    are required keywords: their defaults are written once, in
    ``lithovae/conf/eval/default.yaml`` and ``lithovae/conf/train.yaml``.

    With ``held_out`` (the ``val`` part's tensors, and the ``train`` part's), clusterings chosen
    without the test labels (:mod:`lithovae.evaluation.selection`): ``ari_selected`` and, with
    ``train``, ``ari_inductive`` (fitted on a seeded subsample of ``train_fit_samples``
    training rows; null: all). With ``baseline``, the same clusterings of the scaled input
    features of the same rows (``baseline_ari_*``), ``ari_gain = ari_selected -
    baseline_ari_selected``, ``ari_inductive_gain`` likewise, and ``ari_best_gain`` between the
    test-label oracles: does the latent space beat the raw features at all? With ``boreholes``
    (the test rows' borehole ids) and ``bootstrap`` (``{resamples, level}``; resamples 0: none),
    ``<name>_ci_low``/``_ci_high`` for the headline scores
    (:data:`lithovae.evaluation.comparisons.HEADLINE`): a percentile interval over resamples of
    the test boreholes, the fitted clusterings kept, the gains paired.

    Also: ``silhouette_kmeans_k{k}`` per k (``silhouette``: of the best clustering);
    ``mae_*``/``rmse_*`` per feature (scaled; ``*_orig`` in original units with the run's
    ``scaler``); with ``tensors["y_group"]`` (expert group codes; ``group_names`` names them,
    else the codes are the keys; ``[]``: the data have no groups, none of these) ``recon_mse_group``, ``recon_mae_group``, ``n_group``,
    ``group_coherence`` ({group: {intra, inter, ratio}}, on a seeded sample of
    ``COHERENCE_SAMPLES`` rows), ``group_coherence_ratio_mean`` and, for a classifier,
    ``accuracy_group``; for a model with a mixture prior (VaDE), ``ari_prior`` of its own
    clustering, and the variant's own scores (``ari_vade`` for VaDE); with ``hierarchy``
    (:func:`hierarchy_inputs`), ``hierarchy_ari*``.

    Work started ahead (a run starts it before or while it trains): ``outputs``, the
    :func:`model_outputs` of these rows; ``baseline_job``, the :func:`start_baseline` of these
    rows and options; ``test_job``, a process waiting for :func:`cluster_test_latents`.
    """
    observed = tensors["observed"]
    with progress.step("latent means"):
        outputs = model_outputs(model, tensors, observed) if outputs is None else outputs
        parts = _held_out_parts(model, held_out, train_fit_samples, seed)
    x, y = tensors["x"].numpy(), tensors["y"].numpy()
    ctx = EvaluationContext(
        model=model, tensors=tensors, feature_names=feature_names, outputs=outputs, x=x, y=y,
        target=model.class_target(tensors).numpy(), observed=observed.numpy(),
        options=dict(k=k, n_init=n_init, gmm=gmm, max_fit_samples=max_fit_samples, backend=backend, seed=seed),
        silhouette_samples=silhouette_samples, mask=mask, scaler=scaler, group_names=group_names,
        held_out=parts, baseline=baseline, baseline_cache_dir=baseline_cache_dir, clustering=clustering,
        baseline_job=baseline_job if baseline else None, test_job=test_job,
        boreholes=boreholes, bootstrap=bootstrap, hierarchy=hierarchy,
        metrics={"n_test": int(len(x)), "n_test_labeled": int((y >= 0).sum())})  # labeled: scored
    for score in SCORES:
        ctx.metrics.update(score(ctx))
    held = ctx.held
    arrays = {"mu": outputs["mu"], "recon": outputs["recon"], "logits": outputs["logits"], "target": ctx.target,
              "assignment": ctx.clusters.assignment, "prior_assignment": ctx.prior_assignment,
              "clustering": ctx.clusters,
              "selected_assignment": held.selected if held is not None else None,
              "inductive_assignment": held.inductive if held is not None else None,
              "inductive_clusterer": held.inductive_fitted if held is not None else None}
    return ctx.metrics, arrays


GAINS = {"ari_selected": "ari_gain", "ari_inductive": "ari_inductive_gain"}  # latent - raw, paired


def _held_out_parts(model: LatentModel, held_out: dict | None, train_fit_samples: int | None,
                    seed: int) -> dict | None:
    """The validation part's latent means, labels and scaled features, and those of a seeded
    subsample of ``train_fit_samples`` training rows (None: all): what the held-out selection
    fits and scores. None without a validation part."""
    if not held_out or "val" not in held_out:
        return None
    val = held_out["val"]
    parts = {"val_mu": latent_means(model, val["x"], val["observed"]), "val_y": val["y"].numpy(),
             "val_x": val["x"].numpy()}
    if "train" in held_out:
        x, observed = _train_fit_rows(held_out["train"], train_fit_samples, seed)
        parts.update({"train_mu": latent_means(model, x, observed), "train_x": x.numpy()})
    return parts


def _train_fit_rows(train: dict, train_fit_samples: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The features and observed mask of the training rows the inductive clusterers fit."""
    rows = torch.as_tensor(seeded_subsample(len(train["x"]), train_fit_samples, seed))
    return train["x"][rows], train["observed"][rows]


def start_baseline(tensors: dict, held_out: dict | None, *, train_fit_samples: int | None,
                   cache_dir, k, n_init: int, gmm: bool, max_fit_samples: int | None, backend: str,
                   seed: int, **_):
    """:func:`raw_feature_baseline` of these rows (the test part's ``tensors``, the ``held_out``
    parts of :func:`score_model`), started before the model exists: it needs the data only, so
    a run starts it on its second core while it trains, and passes it as ``baseline_job``."""
    features = None
    if held_out and "val" in held_out:
        val = held_out["val"]
        features = {"val_x": val["x"].numpy(), "val_y": val["y"].numpy()}
        if "train" in held_out:
            features["train_x"] = _train_fit_rows(held_out["train"], train_fit_samples, seed)[0].numpy()
    options = dict(k=k, n_init=n_init, gmm=gmm, max_fit_samples=max_fit_samples, backend=backend, seed=seed)
    return _start_baseline(tensors["x"].numpy(), tensors["y"].numpy(), features, cache_dir, options)


def _intervals(metrics: dict, chosen: dict, y, x, out: dict, observed, target, boreholes,
               options: dict, seed: int) -> dict:
    """``<name>_ci_low``/``_ci_high`` of each headline score: the fitted clusterings and the
    model kept, the test boreholes resampled (the same resamples for every score, so the
    gains are paired)."""
    resamples = bootstrap.resample_boreholes(np.asarray(boreholes), options["resamples"], seed,
                                             options["level"])
    fixed = {name: a for name, a in chosen.items() if a is not None}
    values = bootstrap.ari(y, fixed, resamples)
    for name, gain in GAINS.items():
        if name in values and f"baseline_{name}" in values:
            values[gain] = values[name] - values[f"baseline_{name}"]
    values["r2_mean"] = bootstrap.r2_mean(x, out["recon"], observed, resamples)
    if out["logits"] is not None:
        values["balanced_accuracy"] = bootstrap.balanced_accuracy(out["logits"], target, resamples)
        values["auc_pooled"] = bootstrap.auc_pooled(out["logits"], target, resamples)
    intervals = {}
    for name in HEADLINE:
        if name in values and name in metrics:
            low, high = bootstrap.interval(values[name], options["level"])
            intervals.update({f"{name}_ci_low": low, f"{name}_ci_high": high})
    intervals.update({"bootstrap_resamples": int(options["resamples"]), "bootstrap_level": float(options["level"]),
                      "bootstrap_boreholes": int(len(np.unique(np.asarray(boreholes))))})
    return intervals


FEATURE_COLUMNS = ["feature", "r2", "mae", "rmse", "mae_orig", "rmse_orig"]
GROUP_COLUMNS = ["group", "n", "recon_mse", "recon_mae", "intra", "inter", "ratio", "accuracy"]


def diagnostic_tables(metrics: dict, feature_names: list[str]) -> dict[str, pd.DataFrame]:
    """The diagnostics of :func:`score_model` as the run's tables: ``feature_errors`` (one row
    per feature: r2, mae, rmse in scaled units, mae_orig, rmse_orig in original units) and
    ``group_diagnostics`` (one row per expert group of the scored rows, most rows first: n,
    recon_mse, recon_mae, latent intra/inter distance and their ratio, classifier accuracy).
    Missing values (no scaler, no classifier, undefined) are NaN."""
    nan = float("nan")
    features = pd.DataFrame([{"feature": f, "r2": metrics.get(f"r2_{f}", nan),
                              "mae": metrics.get(f"mae_{f}", nan), "rmse": metrics.get(f"rmse_{f}", nan),
                              "mae_orig": metrics.get(f"mae_{f}_orig", nan),
                              "rmse_orig": metrics.get(f"rmse_{f}_orig", nan)} for f in feature_names],
                            columns=FEATURE_COLUMNS)
    counts = metrics.get("n_group") or {}
    coherence = metrics.get("group_coherence") or {}
    rows = []
    for group in sorted(counts, key=lambda g: (-counts[g], g)):
        c = coherence.get(group, {})
        rows.append({"group": group, "n": counts[group],
                     "recon_mse": metrics.get("recon_mse_group", {}).get(group, nan),
                     "recon_mae": metrics.get("recon_mae_group", {}).get(group, nan),
                     "intra": c.get("intra", nan), "inter": c.get("inter", nan), "ratio": c.get("ratio", nan),
                     "accuracy": (metrics.get("accuracy_group") or {}).get(group, nan)})
    tables = {"feature_errors": features}
    if "n_group" in metrics:  # absent when the data have no groups: no table of invented ones
        tables["group_diagnostics"] = pd.DataFrame(rows, columns=GROUP_COLUMNS)
    return tables


def raw_feature_baseline(x: np.ndarray, y: np.ndarray, *, k, n_init: int, gmm: bool,
                         max_fit_samples: int | None, backend: str, seed: int, parts: dict | None = None,
                         cache_dir: str | Path | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """``baseline_ari_*``: :func:`clustering_scores` on the scaled input features (unobserved
    entries at the scaled mean, 0), with the model's ks, initialisations and seed; with
    ``parts`` (:func:`_held_out_parts`: validation and training features), the held-out
    selection of the raw features too (``baseline_ari_selected``, ``baseline_ari_inductive``).
    Returns the scores and the chosen test assignments (``ari_selected``, ``ari_inductive``),
    which the bootstrap rescores.

    Every run of a sweep scores the same rows, so the result is cached in ``cache_dir``
    under a digest of the rows, labels and options (the backend included: its fits differ).
    The cache is read back as untrusted: anything but the expected keys and assignments of the
    right length is recomputed (and rewritten).
    """
    options = dict(k=k, n_init=n_init, gmm=gmm, max_fit_samples=max_fit_samples, backend=backend, seed=seed)
    path = _baseline_path(x, y, parts, cache_dir, options)
    cached = _read_baseline(path, len(x)) if path is not None else None
    if cached is not None:
        return cached
    fit = dict(ks=tuple(k), seed=seed, n_init=n_init, gmm=gmm, backend=backend)
    clusters = clustering_scores(x, y, max_fit_samples=max_fit_samples, prefix="baseline_", **fit)
    scores, assignments = dict(clusters.scores), {}
    if parts is not None:
        held = held_out_clusterings(clusters, x, y, parts["val_x"], parts["val_y"], parts.get("train_x"),
                                    max_fit_samples=max_fit_samples, prefix="baseline_", **fit)
        scores.update(held.scores)
        assignments = {name: a for name, a in (("ari_selected", held.selected), ("ari_inductive", held.inductive))
                       if a is not None}
    if path is not None:
        text = to_json({"scores": scores, "assignments": {n: a.tolist() for n, a in assignments.items()}})
        atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    return scores, assignments


BACKGROUND_BASELINE_ROWS = 20000  # from this many test rows, the baseline runs in a process of its own


def _start_baseline(x, y, parts: dict | None, cache_dir, options: dict):
    """:func:`raw_feature_baseline` of these rows, started: read from its cache, computed in a
    process of its own (:class:`lithovae.evaluation.background.Background`) for a large test set
    while this one clusters the latent means, else computed here when its result is asked for."""
    features = None if parts is None else {key: parts[key] for key in ("val_x", "val_y", "train_x") if key in parts}
    path = _baseline_path(x, y, features, cache_dir, options)
    if len(x) >= BACKGROUND_BASELINE_ROWS and second_core() and (path is None or _read_baseline(path, len(x)) is None):
        return Background(_baseline, x, y, features, cache_dir, options)
    return Here(_baseline, x, y, features, cache_dir, options)


def _baseline(x, y, features, cache_dir, options):
    return raw_feature_baseline(x, y, parts=features, cache_dir=cache_dir, **options)


def _baseline_path(x, y, parts: dict | None, cache_dir, options: dict) -> Path | None:
    """Where :func:`raw_feature_baseline` caches the baseline of these rows and options: named
    by a digest of the rows, labels and options (the backend included: its fits differ)."""
    if cache_dir is None:
        return None
    keyed = {"k": list(options["k"]), "n_init": options["n_init"], "gmm": options["gmm"],
             "max_fit_samples": options["max_fit_samples"], "backend": options["backend"],
             "seed": options["seed"], "version": 3}  # 3: k-means sums as one matrix product (9ed887b)
    arrays = [x, y] + ([parts["val_x"], parts["val_y"]] + ([parts["train_x"]] if "train_x" in parts else [])
                       if parts is not None else [])
    digest = hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)
                            + json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:24]
    return Path(cache_dir) / "baselines" / f"{digest}.json"


def _read_baseline(path: Path, rows: int) -> tuple[dict, dict] | None:
    """A cached baseline, or None when there is none or it is not what this version writes."""
    try:
        cached = json.loads(path.read_text())
        scores = {key: (float("nan") if value is None and "ari_" in key else value)
                  for key, value in cached["scores"].items()}  # JSON null: a NaN score, a None method
        if not all(isinstance(v, (int, float, str, type(None))) and key.startswith("baseline_")
                   for key, v in scores.items()):
            return None
        assignments = {}
        for name, values in cached["assignments"].items():
            array = np.asarray(values)
            if name not in GAINS or array.shape != (rows,) or array.dtype.kind != "i":
                return None
            assignments[name] = array
        return scores, assignments
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
