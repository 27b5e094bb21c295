"""A test helper loaded by `python train.py` itself (``+callbacks.kill._target_=tests.killer.KillAfterEpoch``):
SIGKILL this process at the end of a given epoch, after that epoch's checkpoints/last.ckpt is written — a run
killed at a known point, with no chance to clean up (tests/test_resume.py)."""
from __future__ import annotations

import os
import signal

import lightning as L


class KillAfterEpoch(L.Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # ModelCheckpoint writes last.ckpt in on_train_epoch_end (after every other callback's hook), so the
        # start of the next epoch is the first moment at which epoch `self.epoch` is on disk
        if trainer.current_epoch == self.epoch + 1:
            os.kill(os.getpid(), signal.SIGKILL)
