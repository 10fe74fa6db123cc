"""What a training run prints: Lightning's progress bar on a terminal only, otherwise one line
every few epochs; and none of the third-party lines that every run printed and that say nothing
about it (device availability, an advert, a deprecation inside Lightning)."""

from __future__ import annotations

import logging
import sys
import time
import warnings

from pytorch_lightning.callbacks import Callback, TQDMProgressBar

# not at the top: mlflow is imported inside the function that quiets it: it takes seconds to import
# and a run with logger=none never needs it

# Lightning's INFO lines on every fit: "GPU available: False", "TPU available", a litlogger tip,
# "`Trainer.fit` stopped: max_epochs reached"; its warnings still show
# and MLflow's INFO lines ("Creating initial MLflow database tables", "Validating input example")
INFO_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero",
                "lightning.pytorch.utilities.rank_zero", "mlflow")
# a deprecation raised inside pytorch_lightning's own code (utilities/_pytree.py), not by lithovae;
# a hint on every run of a machine with SLURM installed, where lithovae's launcher runs the jobs
THIRD_PARTY_WARNINGS = (r".*isinstance\(treespec, LeafSpec\)", r"The `srun` command is available on your system")
LINES_PER_RUN = 10  # epoch lines when output is not a terminal


def quiet_third_party() -> None:
    import mlflow  # noqa: F401 - first: importing it sets its loggers' levels

    for name in INFO_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for message in THIRD_PARTY_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


class EpochLines(Callback):
    """One line every ``every`` epochs (and the last): epoch, losses, β and time, for a log file.
    An epoch's line is printed once its train loss exists: the module logs it in its own
    ``on_train_epoch_end``, which Lightning calls after the callbacks' one."""

    SHOWN = ("train/loss", "val/loss", "beta")

    def __init__(self, every: int):
        self.every = max(1, int(every))
        self.started, self.printed = None, set()

    def on_train_start(self, trainer, pl_module):
        self.started = time.perf_counter()

    def _line(self, trainer, pl_module, epoch: int, last: bool = False) -> None:
        if epoch < 0 or epoch in self.printed or ((epoch + 1) % self.every and not last):
            return
        self.printed.add(epoch)
        values = getattr(pl_module, "history", {}).get(epoch) or trainer.callback_metrics
        shown = [f"{key} {float(values[key]):.4g}" for key in self.SHOWN if key in values]
        print(f"epoch {epoch + 1}/{trainer.max_epochs}  " + "  ".join(shown)
              + f"  ({time.perf_counter() - self.started:.0f} s)", file=sys.stdout, flush=True)

    def on_train_epoch_start(self, trainer, pl_module):
        self._line(trainer, pl_module, trainer.current_epoch - 1)

    def on_train_end(self, trainer, pl_module):
        self._line(trainer, pl_module, trainer.current_epoch - 1, last=True)


def progress_callback(max_epochs: int | None, terminal: bool | None = None) -> Callback:
    """The progress bar on a terminal; epoch lines (about ``LINES_PER_RUN`` a run) elsewhere."""
    if terminal is None:
        terminal = sys.stdout.isatty()
    if terminal:
        return TQDMProgressBar(refresh_rate=1)  # a step is a chunk of 32 mini-batches
    return EpochLines(max(1, (max_epochs or LINES_PER_RUN) // LINES_PER_RUN))
