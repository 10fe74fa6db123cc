"""The training rules both loops call (lithovae.training_rules, the checkpoint policies): each
rule's decisions, and the Lightning adapters deciding as Lightning's own callbacks did."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping as LightningEarlyStopping

from lithovae.alpha import AdaptiveAlpha, FixedAlpha, NoAlpha
from lithovae.checkpointing import HighestValidationARI, LowestValidationMetric
from lithovae.plan import EarlyStop
from lithovae.training_rules import EarlyStopping, PlateauSchedule

NAN = float("nan")


class _Scripted(pl.LightningModule):
    """Logs a given val/loss per epoch; trains one tiny step per epoch."""

    def __init__(self, losses):
        super().__init__()
        self.losses, self.w = losses, torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        return (self.w - 1).pow(2).sum()

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", torch.tensor(self.losses[self.current_epoch]), on_epoch=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return [torch.zeros(1)]

    def val_dataloader(self):
        return [torch.zeros(1)]


def _epochs_run(losses, callback) -> int:
    trainer = pl.Trainer(max_epochs=len(losses), callbacks=[callback], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         accelerator="cpu")
    trainer.fit(_Scripted(losses))
    return trainer.current_epoch


@pytest.mark.parametrize("losses", [[3.0, 2.0, 2.0, 1.5, 1.6, 1.7, 1.8, 1.0],
                                    [3.0, 2.0, NAN, 1.0, 0.5, 0.4],
                                    [1.0, 1.0, 1.0, 0.9, 0.9, 0.8, 0.7, 0.6]])
@pytest.mark.parametrize("patience", [0, 2])
def test_the_early_stopping_rule_stops_where_lightnings_early_stopping_does(losses, patience):
    ours = _epochs_run(losses, EarlyStop(EarlyStopping(patience=patience)))
    theirs = _epochs_run(losses, LightningEarlyStopping(monitor="val/loss", mode="min", patience=patience))
    assert ours == theirs
    # and the rule alone (as the stacked loop calls it) stops after the same epoch
    rule = EarlyStopping(patience=patience)
    stops = [e for e, loss in enumerate(losses) if rule.end_epoch(e, {"val/loss": loss})]
    assert (stops[0] + 1 if stops else len(losses)) == ours


def test_the_early_stopping_state_resumes_from_lightnings_own_keys():
    rule = EarlyStopping(patience=3)
    rule.load_state_dict({"wait_count": 2, "stopped_epoch": 0, "best_score": torch.tensor(0.5), "patience": 3})
    assert rule.end_epoch(7, {"val/loss": 0.6}) and (rule.wait, rule.stopped_epoch) == (3, 7)
    assert EarlyStop(rule).state_key == LightningEarlyStopping(monitor="val/loss", mode="min").state_key


def test_the_plateau_schedule_is_torchs_reduce_on_plateau_on_val_loss():
    opt = torch.optim.SGD([torch.zeros(1)], lr=1.0)
    assert PlateauSchedule(enabled=False, patience=0, factor=0.5).attach(opt) is None
    schedule = PlateauSchedule(enabled=True, patience=1, factor=0.5)
    sched = schedule.attach(opt)
    lrs = []
    for loss in (2.0, 1.0, 1.0, 1.0, NAN, 0.1):
        schedule.end_epoch(sched, {"val/loss": torch.tensor(loss)})
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5]  # NaN is one more bad epoch, not a reset


def test_policies_keep_the_best_finite_epoch_in_their_direction():
    lowest = LowestValidationMetric(metric="recon")
    kept = [lowest.end_epoch(e, {"val/recon": v, "val/loss": 0.0}) for e, v in enumerate([3.0, NAN, 2.0, 2.0, 5.0])]
    assert kept == [True, False, True, False, False] and lowest.best_epoch == 2

    ari = HighestValidationARI(every_n_epochs=2, k=2, n_init=1, max_rows=10)
    assert [ari.due(e, 5) for e in range(5)] == [False, True, False, True, True]
    ari._measured = (1, 0.4)  # what measure() leaves after epoch 1
    assert ari.end_epoch(1, {}) and ari.best_epoch == 1
    assert not ari.end_epoch(2, {"val/ari": 0.9})  # a stale logged value is not this epoch's score
    ari._measured = (3, 0.3)
    assert not ari.end_epoch(3, {}) and ari.best_score == 0.4


def test_alpha_strategies_declare_whether_every_row_gets_one_weight():
    target = torch.tensor([0, 1, -1, 1])
    for strategy in (NoAlpha(), FixedAlpha(value=0.3)):
        assert strategy.uniform() == strategy(target)
    adaptive = AdaptiveAlpha(base=0.1).bind([5, 3])
    assert adaptive.uniform() is None and not math.isclose(float(adaptive(target)[0]), float(adaptive(target)[1]))
