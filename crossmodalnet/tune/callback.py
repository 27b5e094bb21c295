"""The Lightning side of a Ray Tune trial: report the validation metrics of every epoch to Tune, with the epoch's
checkpoint, through Tune's own checkpoint API (``ray.tune.report(metrics, checkpoint=...)``).

Tune keeps the checkpoint with the trial; a trial that was interrupted (Ctrl+C, a lost node) or paused by a
scheduler gets it back from ``ray.tune.get_checkpoint()`` and ``crossmodalnet.tune.sweep._trial`` resumes ``train``
from it (``ckpt_path``), so it continues from its last epoch instead of epoch 0.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import lightning as L
from ray import tune

#: the file inside a trial's Tune checkpoint
CHECKPOINT_FILE = "last.ckpt"


class TuneReportCallback(L.Callback):
    """Reports the validation metrics to Ray Tune once per epoch (one Tune iteration = one epoch), with the
    epoch's ``last.ckpt`` as the Tune checkpoint (set ``checkpoint=False`` to report metrics only)."""

    def __init__(self, prefix: str = "val/", checkpoint: bool = True) -> None:
        self.prefix = prefix
        self.checkpoint = checkpoint
        self.last: dict[str, float] = {}
        self._pending: dict[str, float] | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(self.prefix)}
        if not metrics:
            return
        metrics["epoch"] = trainer.current_epoch + 1
        self._pending = metrics

    # ModelCheckpoint writes an epoch's last.ckpt in on_train_epoch_end, after every other callback's hook: the
    # epoch is reported (with that file) at the start of the next epoch, or at the end of training
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report(trainer)

    def _report(self, trainer: L.Trainer) -> None:
        if self._pending is None:
            return
        metrics, self._pending = self._pending, None
        self.last = metrics
        last = _last_checkpoint(trainer) if self.checkpoint else None
        if last is None:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="crossmodalnet_tune_ckpt_") as tmp:
            shutil.copy2(last, Path(tmp) / CHECKPOINT_FILE)   # Tune persists (copies) it during report()
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))


def _last_checkpoint(trainer: L.Trainer) -> Path | None:
    cb = trainer.checkpoint_callback
    path = getattr(cb, "last_model_path", "") if cb is not None else ""
    return Path(path) if path and Path(path).is_file() else None
