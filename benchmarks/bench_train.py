"""Training throughput: the framework's loop against a plain PyTorch loop.

Same model (the v2_6_7 VAE), same data tensors, same batch size (512), same
process. Both run the training epochs only (validation off); the first epoch
of each is a warm-up that is not timed. The two loops alternate over several
rounds and the medians are compared, because a shared machine is noisy.

    python benchmarks/bench_train.py [--scale small|default] [--epochs 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import lithovae
import lithovae.config  # noqa: F401 - registers the train schema the config composes with
from lithovae.alpha import NoAlpha
from lithovae.data.datamodule import LithoDataModule
from lithovae.masking import NoMask
from lithovae.models.base import LossContext
from lithovae.models.vae import VAE
from lithovae.plan import TrainingPlan, make_adam


def preset_config(scale: str) -> DictConfig:
    """The v2_6_7 preset, as ``python -m lithovae.train experiment=v2_6_7`` composes it: the
    model, beta schedule, data and datamodule options (the constructors have no defaults)."""
    conf = Path(lithovae.__file__).parent / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return compose(config_name="train", overrides=["experiment=v2_6_7", f"data.scale={scale}"])


def make_model(cfg: DictConfig, spec) -> VAE:
    torch.manual_seed(0)
    return instantiate(cfg.model, _partial_=True, _convert_="all")(data=spec)


def plain_loop(cfg: DictConfig, dm: LithoDataModule, epochs: int) -> float:
    """Samples/s of a hand-written loop: randperm, index, forward, loss, step."""
    model = make_model(cfg, dm.data_spec())
    opt = make_adam(model.parameters(), lr=cfg.optimizer.lr, weight_decay=cfg.optimizer.weight_decay)
    beta = instantiate(cfg.beta, _convert_="all")
    train = dm.tensors["train"]
    n = len(train["x"])
    timed, seconds = 0, 0.0
    for epoch in range(epochs + 1):
        started = time.perf_counter()
        for rows in torch.randperm(n).split(dm.batch_size):
            batch = {k: v[rows] for k, v in train.items()}
            out = model(batch["x"], batch["observed"])
            loss = model.loss(batch, out, batch["observed"], LossContext(beta=beta(epoch)))["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if epoch > 0:
            seconds += time.perf_counter() - started
            timed += n
    return timed / seconds


class EpochTimer(pl.Callback):
    def __init__(self):
        self.seconds, self.samples, self._start = 0.0, 0, 0.0

    def on_train_epoch_start(self, trainer, pl_module):
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch > 0:
            self.seconds += time.perf_counter() - self._start
            self.samples += len(trainer.datamodule.tensors["train"]["x"])


def framework_loop(cfg: DictConfig, dm: LithoDataModule, epochs: int) -> float:
    """Samples/s of lithovae's TrainingPlan under a Lightning Trainer."""
    plan = TrainingPlan(make_model(cfg, dm.data_spec()), instantiate(cfg.beta, _convert_="all"),
                        NoMask(), NoAlpha(), lr=cfg.optimizer.lr, weight_decay=cfg.optimizer.weight_decay,
                        reduce_on_plateau=False,  # no validation in the timed loop: nothing to step on
                        plateau_patience=cfg.lr_scheduler.patience, plateau_factor=cfg.lr_scheduler.factor,
                        seed=cfg.seed)
    timer = EpochTimer()
    trainer = pl.Trainer(max_epochs=epochs + 1, accelerator="cpu", devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, num_sanity_val_steps=0, callbacks=[timer])
    trainer.fit(plan, datamodule=dm)
    return timer.samples / timer.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="default", choices=["small", "default"])
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per round (after one warm-up)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of both loops")
    parser.add_argument("--data-dir", default="outputs/data")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (training default: 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = preset_config(args.scale)  # the defaults, as `python -m lithovae.train` has them
    source = instantiate(cfg.data, _convert_="all")
    path, _ = source.prepare(Path(args.data_dir), log=lambda *a: None)
    dm = LithoDataModule(path, seed=cfg.seed, **OmegaConf.to_container(cfg.datamodule))
    dm.setup()
    n = dm.stats["n_train"]
    print(f"v2_6_7 VAE, {source.name}: {n:,} training bins, batch {dm.batch_size}, {args.epochs} timed epochs, "
          f"{torch.get_num_threads()} torch threads")
    plain, framework = [], []
    for r in range(args.rounds):
        plain.append(plain_loop(cfg, dm, args.epochs))
        framework.append(framework_loop(cfg, dm, args.epochs))
        print(f"round {r + 1}: plain {plain[-1]:10,.0f}  lithovae {framework[-1]:10,.0f} samples/s")
    baseline, ours = statistics.median(plain), statistics.median(framework)
    print(f"plain PyTorch loop : {baseline:12,.0f} samples/s (median of {args.rounds})")
    print(f"lithovae (Lightning): {ours:12,.0f} samples/s (median of {args.rounds})")
    print(f"ratio lithovae / plain = {ours / baseline:.2f}x (target >= 0.80x)")


if __name__ == "__main__":
    main()
