"""Experiment loggers that never block a run: Weights & Biases goes offline unless the user has set it up."""
from __future__ import annotations

import os
from pathlib import Path

from lightning.pytorch.loggers import WandbLogger


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
    return WandbLogger(project=project, save_dir=save_dir, offline=offline, **kwargs)
