"""MLP baselines (paper Tables 1-2: MLP+MSE and MLP+NLC): CrossmodalNet's MLP1 + MLP2 body trained on one
loss, without the time embedding, the discriminator or GradNorm.

The body is :class:`~crossmodalnet.models.network.CrossmodalNetwork` itself with its time embedding and
discriminator removed, so the two models differ only in what the paper ablates.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from crossmodalnet.baselines.base import warn_ignored
from crossmodalnet.distributed import all_reduce_mean, loss_scale
from crossmodalnet.guards import check_finite, position
from crossmodalnet.losses import nlc_loss
from crossmodalnet.models.base import ProteinRegressor, adam
from crossmodalnet.models.network import CrossmodalNetwork

LOSSES = ("mse", "nlc")


class MLP(ProteinRegressor):
    """MLP2(MLP1(x)) trained with Adam on ``loss`` = "mse" or "nlc"; defaults follow Table S1's MLP rows."""

    def __init__(
        self,
        n_genes: int,
        n_proteins: int,
        time_axis: dict | None = None,   # accepted for a common constructor; an MLP ignores time
        loss: str = "mse",
        latent_dim: int = 512,
        dropout: float = 0.05,
        batch_norm: bool = True,
        lr: float = 1e-3,
        weight_decay: float = 5e-6,
        nlc_eps: float = 1e-6,
        nlc_reduction: str = "mean",
        **ignored: Any,   # CrossmodalNet-only settings from a shared experiment (dis_*, gradnorm_*): logged, unused
    ) -> None:
        super().__init__()
        warn_ignored(f"MLP+{loss.upper()}", ignored)
        if loss not in LOSSES:
            raise ValueError(f"MLP loss must be one of {LOSSES}, got {loss!r}")
        self.save_hyperparameters()
        self.network = CrossmodalNetwork(n_genes, n_proteins, n_times=1, latent_dim=latent_dim,
                                         dropout=dropout, batch_norm=batch_norm, dis_hidden=1)
        self.network.time_embedding = None   # no time embedding ...
        self.network.discriminator = None    # ... and no adversary
        self.optimizer_terms = (loss.upper(),)  # what guards.FiniteGuard names a non-finite gradient after

    def forward(self, x: torch.Tensor, time_weights: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted proteins; ``time_weights`` is accepted (same call as CrossmodalNet) and ignored."""
        return self.network.decoder(self.network.encode(x))

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.hparams.loss == "nlc":
            return nlc_loss(pred, target, eps=self.hparams.nlc_eps, reduction=self.hparams.nlc_reduction)
        return F.mse_loss(pred, target)

    def configure_optimizers(self):
        return adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.loss(self(batch["x"]), batch["y"])
        # stop before a NaN reaches the weights; the rank-averaged value, so every rank of a DDP run stops together
        check_finite({self.hparams.loss.upper(): all_reduce_mean(self, [loss.detach()])[0]}, *position(self))
        self.log(f"train/{self.hparams.loss}", loss.detach(), on_step=False, on_epoch=True,
                 batch_size=batch["y"].shape[0])
        self.log("train/loss", loss.detach(), on_step=False, on_epoch=True, batch_size=batch["y"].shape[0])
        # data-parallel: DDP averages the ranks' gradients; scaled by this rank's share of the global batch, that
        # average is the gradient of the global batch's mean loss (1.0 on one process)
        return loss * loss_scale(self, batch["y"].shape[0])
