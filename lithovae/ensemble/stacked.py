"""Train several runs of one architecture as one stacked computation.

The members' weights are stacked (``torch.func.stack_module_state``) and one
``vmap(functional_call(...))`` computes every member's forward pass and named loss terms on its
own mini-batch; one backward pass gives each member the gradient of its own loss (the members
share no weights, so the sum of their losses separates). Each member keeps its own training plan
(beta schedule, mask, alpha, learning rate, plateau schedule, early stopping, checkpoint policy),
its own shuffle order and mask draws, and writes its own checkpoints and history. The rules are
the single run's own objects (:mod:`lithovae.training_rules`, :mod:`lithovae.checkpointing`),
called here per member with the member's epoch metrics.

What equals a separate run of the same job, and what does not, is in :mod:`lithovae.ensemble`.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from torch.func import functional_call, stack_module_state, vmap

from lithovae.checkpointing import BEST, LAST, CheckpointPolicy
from lithovae.models.base import LatentModel, LossContext
from lithovae.training_rules import ADAM_BETAS, ADAM_EPS, EarlyStopping

# not at the top: hydra.utils is imported inside the check that resolves a job's model class

log = logging.getLogger("lithovae")

VAL_CHUNK_VALUES = 1 << 22  # rows per validation chunk x members x widest output stays below this


def stackable_class(model_class: type) -> str | None:
    """Why models of ``model_class`` cannot train stacked, or None when they can. A model whose
    ``on_train_epoch_start`` does work per model (VaDE's k-means initialisation, pseudo-labels,
    refitted classifiers) trains on its own: that hook changes the model object itself (its
    attributes, its mode, buffers sized by its own training split), while the stacked loop runs
    every member through one shared module with only the weights stacked."""
    if not (isinstance(model_class, type) and issubclass(model_class, LatentModel)):
        return f"{model_class!r} is not a LatentModel"
    if model_class.on_train_epoch_start is not LatentModel.on_train_epoch_start:
        return (f"{model_class.__name__} changes the model object at each epoch start "
                "(on_train_epoch_start), which one module shared by all members cannot")
    return None


def unstackable(cfg) -> str | None:
    """Why the job composed as ``cfg`` cannot be a member of a stacked group (it then runs on its
    own, as the basic launcher runs it), or None when it can. Every training rule (optimiser, LR
    schedule, early stopping, each checkpoint policy) is shared with a single run, so what is left
    is what one stacked computation on one device truly cannot hold."""
    from hydra.utils import get_class

    if cfg.get("ckpt_path") is not None:
        return ("ckpt_path: a resumed run continues the optimizer state in its Lightning checkpoint, "
                "which the stacked loop does not load")
    trainer = cfg.get("trainer", {})
    if "ddp" in str(trainer.get("strategy", "")) or str(trainer.get("devices", 1)) not in ("1", "auto"):
        return "trainer: a stacked group trains on one device, not with DDP or several devices"
    try:
        model_class = get_class(str(cfg.model._target_))
    except Exception:  # noqa: BLE001 - a broken model config fails in its own run, with its own error
        return f"model._target_: {cfg.model._target_} cannot be imported"
    reason = stackable_class(model_class)
    return None if reason is None else f"model: {reason}"


@dataclass
class Member:
    """One job of the group: its training plan, data module, policy, and what it records."""

    name: str
    plan: object           # lithovae.plan.TrainingPlan (used here without a Lightning trainer)
    dm: object             # lithovae.data.datamodule.LithoDataModule
    policy: CheckpointPolicy
    ckpt_dir: Path
    max_epochs: int
    early_stopping_patience: int | None
    on_epoch_end: Callable[[int, dict[str, float], int], None] | None = None  # (epoch, metrics, step)
    # filled while training
    epochs_trained: int = 0
    global_step: int = 0
    chunks: int = 0
    final_losses: dict[str, float] = field(default_factory=dict)
    stopped: bool = False
    lr: float = 0.0
    lr_holder: torch.optim.Optimizer | None = None  # a stand-in whose learning rate the schedule sets
    scheduler: object = None                        # the plan's LR schedule, attached to lr_holder
    early_stopping: EarlyStopping | None = None


class StackedAdam:
    """torch.optim.Adam (L2 weight decay, no amsgrad; :func:`lithovae.training_rules.make_adam`)
    over stacked parameters [M, ...], with a learning rate and weight decay per member; members
    not in ``active`` are left untouched (weights, moments and step count). Its own batched form
    of the update because one torch optimizer per member costs about 6x its time per step (51
    members); ``tests/test_ensemble.py`` holds it to torch's Adam."""

    def __init__(self, params: Sequence[Tensor], lr: Tensor, weight_decay: Tensor):
        self.params = list(params)
        self.lr, self.weight_decay = lr, weight_decay
        self.step_count = torch.zeros_like(lr)
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self, active: Tensor | None = None) -> None:
        beta1, beta2 = ADAM_BETAS
        if active is None:
            self.step_count += 1
        else:
            self.step_count += active.to(self.step_count.dtype)
        steps = self.step_count.clamp(min=1)
        step_size = self.lr / (1 - beta1 ** steps)
        bias2_sqrt = (1 - beta2 ** steps).sqrt()
        decay = bool((self.weight_decay != 0).any())
        views = [(-1,) + (1,) * (p.dim() - 1) for p in self.params]
        if active is None:  # every member steps: a few multi-tensor operations for all weights
            grads = [p.grad for p in self.params]
            if decay:
                grads = torch._foreach_add(grads, torch._foreach_mul(self.params, [self.weight_decay.view(v) for v in views]))
            torch._foreach_lerp_(self.exp_avg, grads, 1 - beta1)
            torch._foreach_mul_(self.exp_avg_sq, beta2)
            torch._foreach_addcmul_(self.exp_avg_sq, grads, grads, value=1 - beta2)
            denom = torch._foreach_sqrt(self.exp_avg_sq)
            torch._foreach_div_(denom, [bias2_sqrt.view(v) for v in views])
            torch._foreach_add_(denom, ADAM_EPS)
            update = torch._foreach_div(self.exp_avg, denom)
            torch._foreach_mul_(update, [step_size.view(v) for v in views])
            torch._foreach_sub_(self.params, update)
            return
        for p, m, v, shape in zip(self.params, self.exp_avg, self.exp_avg_sq, views):
            g = p.grad if not decay else p.grad + self.weight_decay.view(shape) * p
            keep = active.view(shape)
            m.copy_(torch.where(keep, torch.lerp(m, g, 1 - beta1), m))
            v.copy_(torch.where(keep, v * beta2 + (1 - beta2) * g * g, v))
            update = m * step_size.view(shape) / ((v.sqrt() / bias2_sqrt.view(shape)) + ADAM_EPS)
            p.sub_(torch.where(keep, update, torch.zeros_like(update)))


class ForwardAndLoss(torch.nn.Module):
    """One member's forward pass and named loss terms as one module call, so that
    ``functional_call`` puts the member's own weights and buffers in place for both: a loss may
    read them (the β-TCVAE's training-set size, a learned prior's parameters)."""

    PREFIX = "model."

    def __init__(self, model: LatentModel):
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, Tensor], visible: Tensor, ctx: LossContext) -> dict[str, Tensor]:
        return self.model.loss(batch, self.model(batch["x"], visible), visible, ctx)

    def call(self, params: dict[str, Tensor], buffers: dict[str, Tensor], batch, visible, ctx):
        """The terms with the model's ``params`` and ``buffers`` (named as in the model)."""
        return functional_call(self, ({self.PREFIX + k: v for k, v in params.items()},
                                      {self.PREFIX + k: v for k, v in buffers.items()}), (batch, visible, ctx))


class StackedTraining:
    """Train ``members`` (same architecture, same device) together; see the module docstring."""

    def __init__(self, members: list[Member], device: torch.device, progress: Callable[[str], None] = print):
        self.members, self.device, self.progress = members, device, progress
        models = [m.plan.model for m in members]
        self.base = copy.deepcopy(models[0]).to("meta")
        self.forward_and_loss = ForwardAndLoss(self.base)
        params, buffers = stack_module_state(models)
        self.params = {k: v.to(device).detach().requires_grad_(True) for k, v in params.items()}
        self.buffers = {k: v.to(device) for k, v in buffers.items()}
        plans = [m.plan for m in members]
        for member in members:
            member.lr = float(member.plan.lr)
            # the plan's own schedule, on a stand-in optimizer holding the member's learning rate
            member.lr_holder = torch.optim.SGD([torch.zeros(1)], lr=member.lr)
            member.scheduler = member.plan.lr_schedule.attach(member.lr_holder)
            if member.early_stopping_patience is not None:
                member.early_stopping = EarlyStopping(patience=member.early_stopping_patience)
        self.adam = StackedAdam(list(self.params.values()),
                                torch.tensor([p.lr for p in plans], device=device).float(),
                                torch.tensor([p.weight_decay for p in plans], device=device).float())
        self._data()
        # the masked-reconstruction term is computed only when some member weights it, as in a
        # separate run; then a shared float or a weight per member
        self._loss_shared_weight = vmap(self._member_loss, in_dims=(0, 0, 0, 0, 0, 0, None), randomness="different")
        self._loss_member_weight = vmap(self._member_loss, in_dims=(0, 0, 0, 0, 0, 0, 0), randomness="different")

    def _loss(self, params, buffers, batch, visible, beta, alpha, masked):
        fn = self._loss_member_weight if isinstance(masked, Tensor) else self._loss_shared_weight
        return fn(params, buffers, batch, visible, beta, alpha, masked)

    # -- data: the members' train/val rows, concatenated once --------------------------------------
    def _data(self) -> None:
        modules: list = []
        for member in self.members:
            if not any(member.dm is dm for dm in modules):
                modules.append(member.dm)
        offsets, start = {}, {"train": 0, "val": 0}
        self.rows = {}
        for split in ("train", "val"):
            parts = []
            for dm in modules:
                offsets[(id(dm), split)] = start[split]
                start[split] += len(dm.tensors[split]["x"])
                parts.append(dm.tensors[split])
            self.rows[split] = {k: torch.cat([p[k] for p in parts]).to(self.device) for k in parts[0]}
        self.offsets = offsets
        # one shuffle stream per distinct (data, seed): members that share both share the order,
        # drawn from the state a separate run's data module starts from
        self.orders: dict[tuple, torch.Generator] = {}
        self.order_of = []
        for member in self.members:
            key = (id(member.dm), member.plan.seed)
            if key not in self.orders:
                gen = torch.Generator()
                gen.manual_seed(member.plan.seed)
                self.orders[key] = gen
            self.order_of.append(key)

    def _epoch_batches(self) -> dict[tuple, list[Tensor]]:
        """Each order's mini-batches this epoch, as a separate run cuts them: one permutation,
        chunks of batch_size x steps_per_batch (a final chunk of one row dropped), each chunk
        cut into mini-batches of batch_size (a mini-batch of one row skipped)."""
        batches = {}
        for key, gen in self.orders.items():
            dm = next(m.dm for m, k in zip(self.members, self.order_of) if k == key)
            n, size = len(dm.tensors["train"]["x"]), dm.rank_batch_size()
            chunk = size * dm.steps_per_batch
            order = torch.randperm(n, generator=gen)
            chunks = list(order.split(chunk))
            if n > 1 and n % chunk == 1:
                chunks = chunks[:-1]
            batches[key] = [b for c in chunks for b in c.split(size) if len(b) > 1]
        return batches

    # -- one member's loss, vmapped over members --------------------------------------------------
    def _member_loss(self, params, buffers, batch, visible, beta, alpha, masked_weight):
        ctx = LossContext(beta=beta, alpha=alpha, masked_weight=masked_weight, epoch=self._epoch)
        return self.forward_and_loss.call(params, buffers, batch, visible, ctx)

    def _subset(self, tensors: dict[str, Tensor], sel: Tensor | None) -> dict[str, Tensor]:
        return tensors if sel is None else {k: v[sel] for k, v in tensors.items()}

    def _weights(self, sel: list[int], betas: list[float], batch: dict[str, Tensor]):
        """Per-member beta [S], alpha ([S] or [S, B]) and masked weight ([S] or a shared float)."""
        plans = [self.members[i].plan for i in sel]
        uniform = [plan.alpha.uniform() for plan in plans]
        if None not in uniform:  # no per-row weights: one number per member
            return self._beta_and_mask(sel, betas, plans, torch.tensor(uniform, device=self.device))
        alphas = [plan.alpha(plan.model.class_target({"y": batch["y"][j], "y_group": batch["y_group"][j]}))
                  for j, plan in enumerate(plans)]
        if all(isinstance(a, float) for a in alphas):
            alpha = torch.tensor(alphas, device=self.device)
        else:
            rows = batch["x"].shape[1]
            alpha = torch.stack([a if isinstance(a, Tensor) else torch.full((rows,), a, device=self.device)
                                 for a in alphas]).float()
        return self._beta_and_mask(sel, betas, plans, alpha)

    def _beta_and_mask(self, sel, betas, plans, alpha):
        weights = [float(plan.mask.masked_weight) for plan in plans]
        masked = weights[0] if len(set(weights)) == 1 else torch.tensor(weights, device=self.device)
        beta = torch.tensor([betas[i] for i in sel], device=self.device)
        return beta, alpha, masked

    def _gather(self, split: str, members: list[int], index: Tensor) -> dict[str, Tensor]:
        """Rows ``index`` [S, B] of each member's own split, as a batch [S, B, ...]."""
        offsets = torch.tensor([self.offsets[(id(self.members[i].dm), split)] for i in members],
                               device=self.device)
        rows = index.to(self.device) + offsets[:, None]
        return {k: v[rows] for k, v in self.rows[split].items()}

    def _visible(self, members: list[int], observed: Tensor) -> Tensor:
        # each member's mask from its own generator: the draws of a separate run
        return torch.stack([self.members[i].plan.mask(observed[j], self.members[i].plan.mask_generator
                                                      if observed.device.type == "cpu" else None)
                            for j, i in enumerate(members)])

    def probe(self) -> None:
        """One forward pass of every member on two training rows, without touching weights,
        statistics or the mask streams: fails fast when the model cannot be vmapped."""
        self._epoch = 0
        self.base.train()
        members = list(range(len(self.members)))
        batch = self._gather("train", members, torch.arange(2).expand(len(members), -1))
        beta, alpha, masked = self._weights(members, [0.0] * len(members), batch)
        buffers = {k: v.clone() for k, v in self.buffers.items()}
        with torch.no_grad():
            terms = self._loss(self.params, buffers, batch, batch["observed"], beta, alpha, masked)
        if "loss" not in terms or terms["loss"].shape != (len(members),):
            raise RuntimeError(f"the stacked loss has shape {tuple(terms['loss'].shape)}, not one value per member")

    # -- the loop --------------------------------------------------------------------------------
    def fit(self) -> None:
        max_epochs = max(m.max_epochs for m in self.members)
        for epoch in range(max_epochs):
            running = [i for i, m in enumerate(self.members) if not m.stopped and epoch < m.max_epochs]
            if not running:
                break
            started = time.perf_counter()
            self._train_epoch(epoch, running)
            val = self._validate(epoch, running)
            self._end_epoch(epoch, running, val)
            done = sum(1 for m in self.members if m.stopped or epoch + 1 >= m.max_epochs)
            self.progress(f"ensemble of {len(self.members)}: epoch {epoch + 1}/{max_epochs} in "
                          f"{time.perf_counter() - started:.1f} s ({len(running)} training, {done} done)")

    def _train_epoch(self, epoch: int, running: list[int]) -> None:
        self._epoch = epoch
        self.base.train()
        betas = [float(m.plan.beta_schedule(epoch)) for m in self.members]
        self._epoch_start = {i: {"beta": betas[i], "lr": self.members[i].lr} for i in running}
        for i in running:
            self.adam.lr[i] = self.members[i].lr
        batches = self._epoch_batches()
        n_steps = max(len(batches[self.order_of[i]]) for i in running)
        self._sums: dict[int, Tensor] = {}
        self._names: tuple[str, ...] = ()
        self._counts = dict.fromkeys(running, 0)
        all_members = len(running) == len(self.members)
        for step in range(n_steps):
            by_size: dict[int, list[int]] = {}
            for i in running:
                member_batches = batches[self.order_of[i]]
                if step < len(member_batches):
                    by_size.setdefault(len(member_batches[step]), []).append(i)
            for size, sel in by_size.items():
                index = torch.stack([batches[self.order_of[i]][step] for i in sel])
                whole = all_members and len(sel) == len(self.members)
                self._optimizer_step(sel, index, betas, whole)
            for i in running:
                if step < len(batches[self.order_of[i]]):
                    self.members[i].global_step += 1
        for i in running:
            m = self.members[i]
            size = m.dm.rank_batch_size() * m.dm.steps_per_batch
            m.chunks += -(-self._counts[i] // size) if self._counts[i] else 0

    def _optimizer_step(self, sel: list[int], index: Tensor, betas: list[float], whole: bool) -> None:
        batch = self._gather("train", sel, index)
        visible = self._visible(sel, batch["observed"])
        beta, alpha, masked = self._weights(sel, betas, batch)
        pick = None if whole else torch.tensor(sel, device=self.device)
        params = self._subset(self.params, pick)
        buffers = self._subset(self.buffers, pick)
        terms = self._loss(params, buffers, batch, visible, beta, alpha, masked)
        if pick is not None:  # BatchNorm's running statistics were updated on the copies
            for k, v in buffers.items():
                self.buffers[k][pick] = v
        for p in self.params.values():
            p.grad = None
        terms["loss"].sum().backward()
        if whole:
            self.adam.step()
        else:
            active = torch.zeros(len(self.members), dtype=torch.bool, device=self.device)
            active[pick] = True
            self.adam.step(active)
        self._names = tuple(terms)
        values = torch.stack([v.detach() for v in terms.values()], dim=1) * index.shape[1]  # [S, T]
        for j, i in enumerate(sel):
            self._sums[i] = values[j] if i not in self._sums else self._sums[i] + values[j]
            self._counts[i] += index.shape[1]

    @torch.no_grad()
    def _validate(self, epoch: int, running: list[int]) -> dict[int, dict[str, float]]:
        """Each running member's validation loss terms on its own validation rows (eval mode,
        every observed entry visible), weighted by chunk size as the single-run plan does."""
        self.base.eval()
        betas = [float(m.plan.beta_schedule(epoch)) for m in self.members]
        groups: dict[int, list[int]] = {}
        for i in running:
            groups.setdefault(id(self.members[i].dm), []).append(i)
        results = {}
        for members in groups.values():
            dm = self.members[members[0]].dm
            n = len(dm.tensors["val"]["x"])
            widest = max(self.base.data.n_classes, 64)
            chunk = max(256, min(dm.eval_batch_size, VAL_CHUNK_VALUES // (len(members) * widest)))
            pick = torch.tensor(members, device=self.device)
            params, buffers = self._subset(self.params, pick), self._subset(self.buffers, pick)
            sums, names = None, ()
            for start in range(0, n, chunk):
                rows = torch.arange(start, min(start + chunk, n))
                batch = self._gather("val", members, rows.expand(len(members), -1))
                beta, alpha, masked = self._weights(members, betas, batch)
                terms = self._loss(params, buffers, batch, batch["observed"], beta, alpha, masked)
                names = tuple(terms)
                values = torch.stack(list(terms.values()), dim=1) * len(rows)
                sums = values if sums is None else sums + values
            means = (sums / n).cpu().tolist()
            for j, i in enumerate(members):
                results[i] = {f"val/{name}": value for name, value in zip(names, means[j])}
        return results

    def _end_epoch(self, epoch: int, running: list[int], val: dict[int, dict[str, float]]) -> None:
        for i in running:
            m = self.members[i]
            train = (self._sums[i] / max(self._counts[i], 1)).cpu().tolist() if i in self._sums else []
            metrics = {f"train/{name}": value for name, value in zip(self._names, train)}
            metrics.update(val.get(i, {}))
            row = m.plan.history.setdefault(epoch, {"epoch": epoch})
            row.update(self._epoch_start[i])
            row.update(metrics)
            # in a single run's order: the policy's own measurements (PolicyCheckpoint), the LR
            # schedule (the plan), early stopping, then best.ckpt and last.ckpt
            measured = m.policy.measure(epoch, m.max_epochs, self.member_model(i), m.dm.tensors["val"],
                                        m.plan.seed)
            metrics.update(measured)
            row.update(measured)
            m.final_losses = {**m.final_losses, **metrics}  # as Lightning's callback metrics keep them
            m.epochs_trained = epoch + 1
            m.plan.lr_schedule.end_epoch(m.scheduler, metrics)
            m.lr = float(m.lr_holder.param_groups[0]["lr"])
            if m.early_stopping is not None:
                m.stopped = m.early_stopping.end_epoch(epoch, metrics)
            if m.policy.end_epoch(epoch, metrics):
                self._save(m, i, epoch, m.ckpt_dir / BEST)
            self._save(m, i, epoch, m.ckpt_dir / LAST)
            if m.on_epoch_end is not None:
                m.on_epoch_end(epoch, {**metrics, **self._epoch_start[i]}, m.chunks - 1)  # Lightning's step

    # -- checkpoints --------------------------------------------------------------------------------
    def member_model(self, i: int) -> LatentModel:
        """Member ``i``'s own model object (its plan's), holding its current stacked weights."""
        model = self.members[i].plan.model
        state = {k: v[i].detach() for k, v in {**self.params, **self.buffers}.items()}
        model.load_state_dict(state)
        return model

    def member_state_dict(self, i: int) -> dict[str, Tensor]:
        """Member ``i``'s weights under the keys of a single run's checkpoint (``model.*``)."""
        state = {f"model.{k}": v[i].detach().cpu().clone() for k, v in self.params.items()}
        state.update({f"model.{k}": v[i].detach().cpu().clone() for k, v in self.buffers.items()})
        return state

    def _save(self, m: Member, i: int, epoch: int, path: Path) -> None:
        """A checkpoint :func:`lithovae.evaluate.load_run_model` and :func:`lithovae.train.score_run`
        read like a single run's; it holds no optimizer state, so it cannot resume training."""
        payload = {"epoch": epoch, "global_step": m.global_step, "state_dict": self.member_state_dict(i),
                   "lithovae": {"mlflow_run_id": m.plan.mlflow_run_id, "ensemble": True},
                   "history": [m.plan.history[e] for e in sorted(m.plan.history)]}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            torch.save(payload, tmp)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
