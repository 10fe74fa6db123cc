"""The training plan: a LightningModule around any :class:`LatentModel`.

It owns what is about training, not about the model: the beta schedule, the
feature mask, the classification weight, the optimiser and LR schedule, and
the per-epoch logging of each named loss term. The rules it follows (optimiser, LR schedule,
early stopping) are :mod:`lithovae.training_rules`, which the stacked ensemble loop calls too.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from lithovae.alpha import AlphaStrategy
from lithovae.masking import MaskStrategy
from lithovae.models.base import LatentModel, LossContext, latent_means
from lithovae.schedules import BetaSchedule
from lithovae.training_rules import EarlyStopping, PlateauSchedule, make_adam

# not at the top: pandas is imported inside history_frame: training needs no pandas

__all__ = ["TrainingPlan", "EarlyStop", "make_adam"]


class TrainingPlan(pl.LightningModule):
    def __init__(self, model: LatentModel, beta: BetaSchedule, mask: MaskStrategy,
                 alpha: AlphaStrategy, *, lr: float, weight_decay: float, reduce_on_plateau: bool,
                 plateau_patience: int, plateau_factor: float, seed: int):
        super().__init__()
        self.model = model
        self.beta_schedule = beta
        self.mask = mask.bind(model.data.feature_names)
        self.alpha = alpha.bind(model.class_counts())  # counts of the class the model is scored on
        self.lr, self.weight_decay = lr, weight_decay
        self.lr_schedule = PlateauSchedule(enabled=reduce_on_plateau, patience=plateau_patience,
                                           factor=plateau_factor)
        self.seed = seed
        self.mlflow_run_id: str | None = None
        self.history: dict[int, dict[str, float]] = {}
        self.mask_generator = torch.Generator().manual_seed(seed)
        self.automatic_optimization = False  # one optimizer step per mini-batch of a chunk
        self._epoch_terms: dict[str, list[tuple[int, list[torch.Tensor]]]] = {}  # per stage, per step
        self._epoch_names: dict[str, tuple[str, ...]] = {}
        self._beta: tuple[int | None, float] = (None, 0.0)  # (epoch, beta) of the current epoch

    def context(self, batch: dict[str, torch.Tensor]) -> LossContext:
        epoch = self.current_epoch
        if self._beta[0] != epoch:  # the schedule is per epoch: computed once, not per step
            self._beta = (epoch, float(self.beta_schedule(epoch)))
        return LossContext(beta=self._beta[1], alpha=self.alpha(self.model.class_target(batch)),
                           masked_weight=self.mask.masked_weight, epoch=epoch)

    def _step(self, batch, visible, stage: str):
        out = self.model(batch["x"], visible)
        terms = self.model.loss(batch, out, visible, self.context(batch))
        # keep the detached terms and sum them once per epoch: self.log, or even a stack and an
        # add per step, costs a visible share of a step for models this small
        self._epoch_terms.setdefault(stage, []).append(
            (batch["x"].shape[0], [v.detach() for v in terms.values()]))
        self._epoch_names[stage] = tuple(terms)
        return terms["loss"]

    def _log_epoch(self, stage: str) -> None:
        steps, names = self._epoch_terms.pop(stage, None), self._epoch_names.pop(stage, None)
        if not steps:
            return
        totals, n = None, 0
        for size, values in steps:  # in step order: the same sums as a running total per step
            weighted = torch.stack(values) * size
            totals = weighted if totals is None else totals + weighted
            n += size
        for name, total in zip(names, totals / n):
            self.log(f"{stage}/{name}", total, on_step=False, on_epoch=True,
                     prog_bar=(name == "loss"), sync_dist=stage != "train")
        if not self.trainer.sanity_checking:
            for name, mean in zip(names, (totals / n).tolist()):  # one host sync per epoch
                self.record(f"{stage}/{name}", mean)

    def record(self, name: str, value: float) -> None:
        """Keep an epoch-level value for the training-curve figure (this rank's value)."""
        self.history.setdefault(self.current_epoch, {"epoch": self.current_epoch})[name] = float(value)

    def history_frame(self):
        """One row per epoch: loss terms per stage, beta, lr (None before the first epoch)."""
        import pandas as pd

        return pd.DataFrame([self.history[e] for e in sorted(self.history)]) if self.history else None

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")
        if not self.trainer.sanity_checking:
            self.lr_schedule.end_epoch(self.lr_schedulers(), self.trainer.callback_metrics)

    def training_step(self, chunk, batch_idx):
        # a chunk of several mini-batches (see LithoDataModule.steps_per_batch): one optimizer
        # step per mini-batch of batch_size rows, in the loader's shuffled order
        dm = self.trainer.datamodule
        size = dm.rank_batch_size() if dm is not None else len(chunk["x"])
        loss = None
        for start in range(0, len(chunk["x"]), size):
            batch = {k: v[start:start + size] for k, v in chunk.items()}
            if len(batch["x"]) > 1:  # BatchNorm needs two rows
                loss = self._optimizer_step(batch)
        return loss

    def _optimizer_step(self, batch):
        gen = self.mask_generator if batch["observed"].device.type == "cpu" else None
        visible = self.mask(batch["observed"], gen)
        loss = self._step(batch, visible, "train")
        # Lightning's public manual optimisation: manual_backward applies the precision plugin
        # (fp16 loss scaling) and the strategy (DDP re-arms its gradient all-reduce for each
        # backward, as a chunk takes several), and LightningOptimizer.step counts global_step.
        opt = self.optimizers()
        # what opt.zero_grad(set_to_none=True) does, without its per-call profiler record and
        # wrapper dispatch (about 15 us of a 2 ms step); it pays for Lightning's backward and
        # step hooks, so the loop stays at the plain PyTorch loop's speed
        for group in opt.param_groups:
            for p in group["params"]:
                p.grad = None
        self.manual_backward(loss)
        opt.step()
        return loss

    def validation_step(self, batch, batch_idx):
        return self._step(batch, batch["observed"], "val")

    def on_train_epoch_start(self) -> None:
        beta, lr = float(self.beta_schedule(self.current_epoch)), self.optimizers().param_groups[0]["lr"]
        self.log("beta", beta, on_epoch=True, on_step=False)
        self.log("lr", lr, on_epoch=True, on_step=False)
        self.record("beta", beta)
        self.record("lr", lr)
        self.model.on_train_epoch_start(self.current_epoch, self.embed_train)

    def embed_train(self) -> torch.Tensor:
        """Latent means of the whole training split, row i = batch index i."""
        train = self.trainer.datamodule.tensors["train"]
        return latent_means(self.model, train["x"], train["observed"])

    # A resumed run continues the random streams where the killed run left them, so it ends
    # with the same weights as an uninterrupted run (dropout and sampling use torch's global RNG).
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["rng_states"] = {"torch": torch.get_rng_state(), "mask": self.mask_generator.get_state()}
        # a resumed run names its origin; stopped_early: training ended here (early stopping), so
        # a resume from this checkpoint goes straight to scoring, as one at max_epochs does
        checkpoint["lithovae"] = {"mlflow_run_id": self.mlflow_run_id,
                                  "stopped_early": bool(self.trainer.should_stop)}
        checkpoint["history"] = [self.history[e] for e in sorted(self.history)]  # curves from epoch 0

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        states = checkpoint.get("rng_states")
        if states is not None:
            torch.set_rng_state(states["torch"])
            self.mask_generator.set_state(states["mask"])
        self.history = {row["epoch"]: dict(row) for row in checkpoint.get("history", [])}

    def configure_optimizers(self):
        opt = make_adam(self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        sched = self.lr_schedule.attach(opt)
        if sched is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": self.lr_schedule.monitor}}  # stepped by hand


class EarlyStop(pl.Callback):
    """Lightning's adapter of :class:`lithovae.training_rules.EarlyStopping`: asks the rule after
    each validation (before ``last.ckpt`` is written, which records the stop)."""

    def __init__(self, rule: EarlyStopping):
        self.rule = rule

    @property
    def state_key(self) -> str:
        # Lightning's own EarlyStopping key and state: a checkpoint written with it resumes here
        return f"EarlyStopping{{'monitor': '{self.rule.monitor}', 'mode': 'min'}}"

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        stop = self.rule.end_epoch(trainer.current_epoch, trainer.callback_metrics)
        # every DDP rank stops when any one would (as Lightning's EarlyStopping does)
        trainer.should_stop = trainer.should_stop or trainer.strategy.reduce_boolean_decision(stop, all=False)

    def state_dict(self) -> dict:
        return self.rule.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.rule.load_state_dict(state_dict)
