"""The Lightning side of a Ray Tune trial: report the validation metrics of every epoch to Tune."""
from __future__ import annotations

import lightning as L
from ray import tune


class TuneReportCallback(L.Callback):
    """Reports the validation metrics to Ray Tune after every validation (one Tune iteration = one epoch)."""

    def __init__(self, prefix: str = "val/") -> None:
        self.prefix = prefix
        self.last: dict[str, float] = {}

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(self.prefix)}
        if not metrics:
            return
        metrics["epoch"] = trainer.current_epoch + 1
        self.last = metrics
        tune.report(metrics)
