"""Hooks for tests that must stop a run at an exact point, not at a point that depends on how fast it trains.

``+callbacks.kill._target_=crossmodalnet.training.hooks.KillAfterEpoch +callbacks.kill.epoch=1`` kills the process (no
clean-up) once epoch index 1 is on disk (tests/test_resume.py);
``python train.py +callbacks.hold._target_=crossmodalnet.training.hooks.HoldAtEpoch +callbacks.hold.epoch=2
+callbacks.hold.release_file=/tmp/go`` waits before the first batch of epoch index 2 (after every callback has
handled the end of epoch index 1, e.g. a Ray Tune report with its checkpoint) until ``release_file`` exists.
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import lightning as L


class HoldAtEpoch(L.Callback):
    """Wait, once, before the first batch of epoch ``epoch`` (0-based) of a run whose directory contains
    ``match`` ("" = every run), until ``release_file`` exists or ``timeout`` seconds have passed."""

    def __init__(self, epoch: int, release_file: str, match: str = "", timeout: float = 120.0) -> None:
        self.epoch, self.release_file, self.match, self.timeout = int(epoch), Path(release_file), match, timeout
        self.held = False

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if self.held or batch_idx != 0 or trainer.current_epoch != self.epoch:
            return
        if self.match and self.match not in str(trainer.default_root_dir):
            return
        self.held = True
        end = time.monotonic() + self.timeout
        while not self.release_file.exists() and time.monotonic() < end:
            time.sleep(0.05)


class KillAfterEpoch(L.Callback):
    """SIGKILL this process at the start of epoch ``epoch + 1``: the first moment at which epoch ``epoch``'s
    checkpoints/last.ckpt is on disk (ModelCheckpoint writes it in on_train_epoch_end, after every other hook)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch + 1:
            os.kill(os.getpid(), signal.SIGKILL)
