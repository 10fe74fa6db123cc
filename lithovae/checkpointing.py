"""Which weights a run scores, and the checkpoints that let a killed run resume exactly.

Every run writes ``checkpoints/last.ckpt`` at the end of every epoch (:class:`EpochEndCheckpoint`),
so ``ckpt_path=<run>/checkpoints/last.ckpt`` resumes from the next epoch. A
:class:`CheckpointPolicy` (config group ``checkpoint``) chooses which weights are evaluated:

- ``final`` (default): the weights at the end of training, i.e. ``last.ckpt`` (the last epoch,
  or the early-stopping epoch);
- ``val_loss``: lowest validation loss. With a rising beta, validation loss rises too, so
  this picks an early epoch: use it with a fixed beta only;
- ``val_recon``: lowest validation reconstruction error, which does not depend on beta;
- ``val_ari``: highest k-means ARI of the validation boreholes' latent means, computed every
  ``every_n_epochs`` epochs and at the last epoch.

The monitored policies keep ``checkpoints/best.ckpt``. Every file is written atomically.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Checkpoint

from lithovae.checks import MAX_CLUSTERS, at_least, between, check_options
from lithovae.files import atomic_write

# not at the top: sklearn and the evaluation/model helpers of the val_ari policy are imported inside
# it: the other policies and the command line's config check need neither

log = logging.getLogger(__name__)

LAST = "last.ckpt"
BEST = "best.ckpt"


def copy_atomically(source: Path, path: Path) -> None:
    """A copy of ``source`` at ``path``, renamed into place (never half-written)."""

    atomic_write(path, lambda tmp: shutil.copyfile(source, tmp))


def take_over(ckpt_path: Path, ckpt_dir: Path, policy: "CheckpointPolicy", state: dict) -> list[Path]:
    """A resumed run continues the stopped run's checkpoints in its own folder: ``ckpt_path``
    (the state it resumes from) becomes its ``last.ckpt``, and the stopped run's ``best.ckpt``
    its own when the same policy kept it (the checkpoint then carries that policy's state, which
    Lightning restores). Every policy then scores what the uninterrupted run would, and a resume
    with no epoch left to train has its weights at hand. Returns the files copied."""
    ckpt_path, ckpt_dir = Path(ckpt_path), Path(ckpt_dir)
    pairs = [(ckpt_path, ckpt_dir / LAST)]
    best = ckpt_path.parent / BEST
    if policy.name != "final" and best.is_file() and policy.state_key in (state.get("callbacks") or {}):
        pairs.append((best, ckpt_dir / BEST))
    copied = []
    for source, target in pairs:
        if target.exists() and os.path.samefile(source, target):
            continue  # resumed in its own folder
        copy_atomically(source, target)
        copied.append(target)
    return copied


def save_atomically(trainer: pl.Trainer, path: Path) -> None:
    """``trainer.save_checkpoint`` to a temporary name, renamed into place: a run killed while
    saving keeps the previous file. Called on every rank (the save is collective)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        # second argument (weights_only) False: save the full training state, which a resume needs
        trainer.save_checkpoint(tmp, False)
        if trainer.is_global_zero:
            os.replace(tmp, path)
    except BaseException:
        if trainer.is_global_zero:
            tmp.unlink(missing_ok=True)
        raise


class EpochEndCheckpoint(Checkpoint):
    """``last.ckpt`` after every training epoch, validation included."""

    def __init__(self, dirpath: str | Path):
        self.path = Path(dirpath) / LAST

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        save_atomically(trainer, self.path)


class CheckpointPolicy:
    """Chooses the evaluated weights: a rule fed each epoch's validation metrics by either
    training loop (:class:`PolicyCheckpoint` under Lightning, the stacked loop per member), which
    saves ``best.ckpt`` whenever :meth:`end_epoch` says so. Subclasses monitor a value."""

    name = "final"
    mode = "min"

    def __init__(self):
        self.dirpath: Path | None = None
        self.best_score: float | None = None
        self.best_epoch: int | None = None

    def bind(self, dirpath: str | Path) -> "CheckpointPolicy":
        self.dirpath = Path(dirpath)
        return self

    @property
    def state_key(self) -> str:
        """The key of this policy's state in a training checkpoint."""
        return type(self).__qualname__

    def measure(self, epoch: int, max_epochs: int, model, val: dict, seed: int) -> dict[str, float]:
        """Validation values this policy computes itself after ``epoch`` (finite ones only, by
        their logged names), from ``model`` and the validation tensors ``val``; the loop logs them."""
        return {}

    def score(self, epoch: int, metrics: Mapping[str, float]) -> float | None:
        """This epoch's monitored value, or None when it was not measured."""
        return None

    def end_epoch(self, epoch: int, metrics: Mapping[str, float]) -> bool:
        """After ``epoch``'s validation: whether its weights are the best so far (save them)."""
        value = self.score(epoch, metrics)
        if value is None or not math.isfinite(value):
            return False
        if self.best_score is not None and not (
                value < self.best_score if self.mode == "min" else value > self.best_score):
            return False
        self.best_score, self.best_epoch = float(value), int(epoch)
        return True

    def selected(self) -> Path:
        """The checkpoint to evaluate. Read from disk after training, so it holds with spawned
        DDP ranks too (whose callback state does not come back to this process)."""
        if self.name == "final":
            return self.dirpath / LAST
        best = self.dirpath / BEST
        if not best.exists():
            log.warning("checkpoint=%s: no epoch was scored; evaluating the final weights (%s)",
                        self.name, LAST)
            return self.dirpath / LAST
        return best

    def state_dict(self) -> dict:
        return {"best_score": self.best_score, "best_epoch": self.best_epoch}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best_score = state_dict.get("best_score")
        self.best_epoch = state_dict.get("best_epoch")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class FinalWeights(CheckpointPolicy):
    name = "final"


class LowestValidationMetric(CheckpointPolicy):
    """The epoch with the lowest logged ``val/<metric>``."""

    def __init__(self, *, metric: str):
        super().__init__()
        self.metric = metric
        self.name = f"val_{metric}"

    @property
    def state_key(self) -> str:
        # val_loss and val_recon keep apart: a resume restores (and takes over) the same policy's best
        return f"{type(self).__qualname__}[{self.metric}]"

    def score(self, epoch: int, metrics: Mapping[str, float]) -> float | None:
        value = metrics.get(f"val/{self.metric}")
        return None if value is None else float(value)


class HighestValidationARI(CheckpointPolicy):
    """The epoch whose validation latent means cluster best: k-means ARI against the validation
    boreholes' lithology, every ``every_n_epochs`` epochs and at the last epoch."""

    name = "val_ari"
    mode = "max"
    metric = "val/ari"
    # the options' ranges, checked by the config and by the constructor (lithovae.checks)
    OPTIONS = {"every_n_epochs": at_least(1), "k": between(2, MAX_CLUSTERS), "n_init": at_least(1),
               "max_rows": at_least(2)}

    def __init__(self, *, every_n_epochs: int, k: int, n_init: int, max_rows: int):
        check_options(type(self), locals())
        super().__init__()
        self.every_n_epochs, self.k, self.n_init, self.max_rows = every_n_epochs, k, n_init, max_rows
        self._measured: tuple[int, float] | None = None  # (epoch, ARI) of the last measurement

    def due(self, epoch: int, max_epochs: int) -> bool:
        return (epoch + 1) % self.every_n_epochs == 0 or epoch + 1 >= max_epochs

    def measure(self, epoch: int, max_epochs: int, model, val: dict, seed: int) -> dict[str, float]:
        if not self.due(epoch, max_epochs):
            return {}
        value = validation_ari(model, val, self.k, self.n_init, self.max_rows, seed=seed)
        self._measured = (epoch, value)
        return {self.metric: value} if math.isfinite(value) else {}

    def score(self, epoch: int, metrics: Mapping[str, float]) -> float | None:
        # this epoch's own measurement: a logged val/ari of an earlier epoch does not count again
        if self._measured is None or self._measured[0] != epoch:
            return None
        return self._measured[1]


class PolicyCheckpoint(Checkpoint):
    """Lightning's adapter of a :class:`CheckpointPolicy`: measures, logs, and keeps ``best.ckpt``."""

    def __init__(self, policy: CheckpointPolicy):
        self.policy = policy

    @property
    def state_key(self) -> str:
        return self.policy.state_key

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        measured = self.policy.measure(trainer.current_epoch, trainer.max_epochs or 0, pl_module.model,
                                       trainer.datamodule.tensors["val"], pl_module.seed)
        for name, value in measured.items():
            pl_module.log(name, value, on_epoch=True, on_step=False)
            pl_module.record(name, value)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        if self.policy.end_epoch(trainer.current_epoch, metrics):
            self.policy.dirpath.mkdir(parents=True, exist_ok=True)
            save_atomically(trainer, self.policy.dirpath / BEST)

    def state_dict(self) -> dict:
        return self.policy.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.policy.load_state_dict(state_dict)


def validation_ari(model, val: dict, k: int, n_init: int, max_rows: int, seed: int) -> float:
    """k-means ARI of ``model``'s latent means of the validation tensors ``val`` (NaN without
    labels or with one class)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    from lithovae.evaluation.metrics import seeded_subsample
    from lithovae.models.base import latent_means

    rows = torch.from_numpy(seeded_subsample(len(val["x"]), max_rows, seed))
    y = val["y"][rows.to(val["y"].device)].cpu().numpy()
    labeled = y >= 0
    if np.unique(y[labeled]).size < 2 or len(rows) < k:
        return float("nan")
    mu = latent_means(model, val["x"][rows], val["observed"][rows]).numpy()
    if not np.isfinite(mu).all():
        return float("nan")
    assignment = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit_predict(mu)
    return float(adjusted_rand_score(y[labeled], assignment[labeled]))


def checkpoint_record(path: Path, state: dict, policy: CheckpointPolicy) -> dict:
    """What was scored: file, 0-based epoch, global step and policy (for metrics.json)."""
    return {"checkpoint_policy": policy.name, "evaluated_checkpoint": path.name,
            "evaluated_epoch": int(state["epoch"]), "evaluated_global_step": int(state["global_step"])}
