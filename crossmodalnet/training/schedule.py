"""Fewer wasted epochs: a smoothed validation metric for early stopping, and reduce-on-plateau learning rates.

The validation split is small (5% of cells), so its per-cell Pearson jumps from epoch to epoch; a patience counted
on the raw value either stops on a lucky spike or waits out many flat epochs. :class:`PlateauSchedule` keeps an
exponential moving average of the monitored metric, publishes it as ``<monitor>_smooth`` for
:class:`~lightning.pytorch.callbacks.EarlyStopping`, and when the average has not improved for ``lr_patience``
validations multiplies the learning rate of every optimiser by ``factor``. It sets the optimisers' learning rates
directly, so it works for every model, including CrossmodalNet's manual optimisation (three optimisers: network,
discriminator, GradNorm weights), where a Lightning LR scheduler would have to be stepped by hand.

List it before ``early_stopping`` in ``configs/callbacks`` (callbacks run in that order): EarlyStopping reads the
smoothed value this callback has just written. The best checkpoint is still chosen on the raw metric.
"""
from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch

log = logging.getLogger("crossmodalnet")


class PlateauSchedule(L.Callback):
    """EMA of ``monitor`` as ``<monitor>_smooth``; learning rates x ``factor`` after ``lr_patience`` flat epochs.

    ``smoothing``: weight of the previous average (0 = no smoothing); ``lr_patience``: validations without an
    improvement of the average by more than ``threshold`` before the learning rates drop (null = never);
    ``min_lr``: floor for every learning rate.
    """

    def __init__(self, monitor: str = "val/pearson_cell", mode: str = "max", smoothing: float = 0.5,
                 lr_patience: int | None = 3, factor: float = 0.5, min_lr: float = 1e-5,
                 threshold: float = 1e-4) -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"PlateauSchedule mode must be 'max' or 'min', got {mode!r}")
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"PlateauSchedule smoothing must be in [0, 1), got {smoothing}")
        if not 0.0 < factor <= 1.0:
            raise ValueError(f"PlateauSchedule factor must be in (0, 1], got {factor}")
        if lr_patience is not None and lr_patience < 1:
            raise ValueError(f"PlateauSchedule lr_patience must be >= 1 or null, got {lr_patience}")
        self.monitor, self.mode, self.smoothing = monitor, mode, float(smoothing)
        self.lr_patience, self.factor, self.min_lr = lr_patience, float(factor), float(min_lr)
        self.threshold = float(threshold)
        self.smoothed_key = f"{monitor}_smooth"
        self.average: float | None = None
        self.best: float | None = None
        self.wait = 0
        self.reductions = 0

    def _improved(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best + self.threshold if self.mode == "max" else value < self.best - self.threshold

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        self.average = value if self.average is None else (self.smoothing * self.average
                                                           + (1.0 - self.smoothing) * value)
        trainer.callback_metrics[self.smoothed_key] = torch.tensor(self.average)
        if self._improved(self.average):
            self.best, self.wait = self.average, 0
            return
        self.wait += 1
        if self.lr_patience is not None and self.wait >= self.lr_patience:
            self.wait = 0
            lrs = self.scale_learning_rates(trainer)
            self.reductions += 1
            log.info("epoch %d: %s plateaued at %.4f (smoothed); learning rates x %.2f -> %s",
                     trainer.current_epoch, self.monitor, self.average, self.factor,
                     ", ".join(f"{lr:.2e}" for lr in lrs))

    def scale_learning_rates(self, trainer: L.Trainer) -> list[float]:
        """Multiply every optimiser's learning rates by ``factor`` (not below ``min_lr``); the new rates."""
        out = []
        for opt in trainer.optimizers:
            for group in opt.param_groups:
                group["lr"] = max(group["lr"] * self.factor, self.min_lr)
                out.append(group["lr"])
        return out

    def state_dict(self) -> dict[str, Any]:  # a resumed run continues the same average and counters
        return {"average": self.average, "best": self.best, "wait": self.wait, "reductions": self.reductions}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.average = state_dict.get("average")
        self.best = state_dict.get("best")
        self.wait = int(state_dict.get("wait", 0))
        self.reductions = int(state_dict.get("reductions", 0))
