"""What every Lightning model here shares: evaluation on whole splits and the checkpoint's data metadata.

Validation/test predictions are collected per batch and scored once per epoch with the vectorised metrics
(per-cell and per-protein Pearson over the whole split, not averages of per-batch values). The checkpoint
carries gene names and order, protein names and the RNA normalisation, so a new file can be aligned by name.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch

from crossmodalnet.reporting.metrics import regression_metrics

CHECKPOINT_KEY = "crossmodalnet"


class ProteinRegressor(L.LightningModule):
    """Base class: subclasses define ``forward(x, time_weights=None)`` and their training."""

    def __init__(self) -> None:
        super().__init__()
        self.gene_names: list[str] | None = None
        self.protein_names: list[str] | None = None
        self.preprocessing: dict | None = None  # how training genes were normalised (set by train.build_model)
        self.projection = None  # GeneProjection when trained on SVD components (data.preprocess.svd_components)
        self.conformal: dict | None = None  # prediction-interval calibration (crossmodalnet.inference.intervals), if any
        self._eval_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    # -- evaluation ------------------------------------------------------------------------------------------------
    def _collect(self, batch: dict[str, torch.Tensor]) -> None:
        self._eval_outputs.append((self(batch["x"], batch["time_weights"]).detach(), batch["y"]))

    def _epoch_metrics(self, prefix: str) -> None:
        if not self._eval_outputs:
            return
        pred = torch.cat([p for p, _ in self._eval_outputs])
        target = torch.cat([t for _, t in self._eval_outputs])
        self._eval_outputs.clear()
        self.log_dict(regression_metrics(pred, target, prefix=f"{prefix}/"), prog_bar=prefix == "val")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._collect(batch)

    def on_validation_epoch_end(self) -> None:
        self._epoch_metrics("val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._collect(batch)

    def on_test_epoch_end(self) -> None:
        self._epoch_metrics("test")

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self(batch["x"], batch["time_weights"])

    # -- the saved model (crossmodalnet.inference.manifest) ------------------------------------------------------------
    @classmethod
    def from_saved(cls, weights: str | Path, manifest: Any, map_location: str = "cpu") -> "ProteinRegressor":
        """A model rebuilt from its manifest's hyperparameters and the saved weights (a plain state dict)."""
        model = cls(**manifest.hyper_parameters)
        state = torch.load(str(weights), map_location=map_location, weights_only=True)
        model.load_state_dict(state)
        return model

    # -- checkpoint metadata (training state, for resuming) -----------------------------------------------------------------------------------------
    def checkpoint_metadata(self) -> dict:
        projection = getattr(self, "projection", None)
        return {"gene_names": self.gene_names, "protein_names": self.protein_names,
                "preprocessing": self.preprocessing,
                "projection": None if projection is None else projection.to_dict()}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = self.checkpoint_metadata()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        meta = checkpoint.get(CHECKPOINT_KEY, {})
        self.gene_names = meta.get("gene_names")
        self.protein_names = meta.get("protein_names")
        self.preprocessing = meta.get("preprocessing")
        from crossmodalnet.data.projection import GeneProjection

        self.projection = GeneProjection.from_dict(meta.get("projection"))


def adam(params, lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """Adam with the fused kernel where this torch build has one for the parameters' device.

    Same update as plain Adam; on CPU it is about 4x faster (one pass over each tensor instead of ~10), which
    matters because the first layer holds genes x latent parameters (scripts/benchmark.py).
    """
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError):  # older torch, or a device without a fused kernel
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
