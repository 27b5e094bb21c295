"""Experiment loggers that never block a run: Weights & Biases goes offline unless the user has set it up."""
from __future__ import annotations

import os
from pathlib import Path

import logging

from lightning.pytorch.loggers import WandbLogger

log = logging.getLogger("crossmodalnet")


class OfflineWandbLogger(WandbLogger):
    """A WandbLogger that, when the run is offline, says in one line at the end where it went and how to upload
    it (wandb itself is silenced: ``WANDB_SILENT``)."""

    def finalize(self, status: str) -> None:
        # where the run lives, read before super() closes it: <save_dir>/wandb/offline-run-<time>-<id>
        run_dir = None
        if self._experiment is not None:
            try:
                run_dir = Path(self._experiment.dir).parent
            except Exception:  # a disabled or already closed run has no directory
                run_dir = None
        super().finalize(status)
        if run_dir is not None and self._offline:
            log.info("wandb: offline run saved in %s; upload it with `wandb sync %s`", run_dir, run_dir)


def wandb_configured() -> bool:
    """True when the user asked for online logging or has logged in (API key in the env or ~/.netrc)."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "disabled", "dryrun"):
        return False
    if mode == "online" or os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path.home() / ".netrc"
    return netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def wandb_logger(project: str = "crossmodalnet", save_dir: str = ".", offline: bool | None = None,
                 **kwargs) -> WandbLogger:
    """A WandbLogger that is offline (files under ``save_dir/wandb``) unless wandb is configured, so it never
    asks for a key or waits on the network. ``offline=True/False`` forces the mode."""
    if offline is None:
        offline = not wandb_configured()
    os.environ.setdefault("WANDB_SILENT", "true")
    return OfflineWandbLogger(project=project, save_dir=save_dir, offline=offline, **kwargs)
