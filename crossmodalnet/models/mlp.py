"""MLP baselines (paper Tables 1-2: MLP+MSE and MLP+NLC): CrossmodalNet's MLP1 + MLP2 body trained on one
loss, without the time embedding, the discriminator or GradNorm.

The body is :class:`~crossmodalnet.models.network.CrossmodalNetwork` itself with its time embedding and
discriminator removed, so the two models differ only in what the paper ablates.

``time_features`` (issue 18: time-aware baselines; :mod:`crossmodalnet.data.time_features`) gives the MLP the
time as input: the standardised time columns are concatenated to the genes, i.e. MLP1's first layer gets
``W_genes x + W_time f(t)``. The features are fitted on the learned time points (each once), which the checkpoint's
``time_axis`` holds, so a loaded model rebuilds them exactly.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from crossmodalnet.data.time_features import TimeFeatures
from crossmodalnet.data.timepoints import TimeAxis
from crossmodalnet.utils.settings import warn_ignored
from crossmodalnet.models.sync import all_reduce_mean, loss_scale
from crossmodalnet.models.finite import check_finite, position
from crossmodalnet.models.losses import nlc_loss
from crossmodalnet.models.base import ProteinRegressor, adam
from crossmodalnet.models.network import CrossmodalNetwork, first_layer

LOSSES = ("mse", "nlc")


class MLP(ProteinRegressor):
    """MLP2(MLP1(x)) trained with Adam on ``loss`` = "mse" or "nlc"; defaults follow Table S1's MLP rows."""

    def __init__(
        self,
        n_genes: int,
        n_proteins: int,
        time_axis: dict | None = None,   # the learned times; read only with time_features other than "none"
        loss: str = "mse",
        latent_dim: int = 512,
        dropout: float = 0.05,
        batch_norm: bool = True,
        lr: float = 1e-3,
        weight_decay: float = 5e-6,
        nlc_eps: float = 1e-6,
        nlc_reduction: str = "mean",
        time_features: str = "none",
        time_degree: int = 2,
        time_knots: int | None = None,
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
        self.time_features = TimeFeatures(time_features, time_degree, time_knots)
        self.uses_time = self.time_features.enabled
        self.time_input: nn.Linear | None = None
        if self.uses_time:
            if not time_axis:
                raise ValueError(f"MLP: time_features={time_features} needs the learned time axis (time_axis=...)")
            self.time_axis = TimeAxis.from_dict(time_axis)
            self.time_axis.extrapolation = "nearest" if time_features == "onehot" else "extrapolate"
            self.time_features.fit(np.eye(self.time_axis.n_times), self.time_axis)   # each learned time once
            self.time_input = nn.Linear(self.time_features.n_features, latent_dim, bias=False)

    def forward(self, x: torch.Tensor, time_weights: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted proteins; ``time_weights`` (cells x learned times) is read only with time features."""
        if self.time_input is None:
            return self.network.decoder(self.network.encode(x))
        if time_weights is None:
            raise ValueError(f"MLP takes the time as input (time_features={self.time_features.kind}): "
                             "pass the cells' time weights")
        feats = torch.from_numpy(self.time_features.transform(time_weights.detach().cpu().numpy()))
        h = first_layer(x, self.network.input_layer) + self.time_input(feats.to(self.time_input.weight))
        return self.network.decoder(self.network.encoder_rest(h))

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.hparams.loss == "nlc":
            return nlc_loss(pred, target, eps=self.hparams.nlc_eps, reduction=self.hparams.nlc_reduction)
        return F.mse_loss(pred, target)

    def configure_optimizers(self):
        return adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.loss(self(batch["x"], batch["time_weights"]), batch["y"])
        # stop before a NaN reaches the weights; the rank-averaged value, so every rank of a DDP run stops together
        check_finite({self.hparams.loss.upper(): all_reduce_mean(self, [loss.detach()])[0]}, *position(self))
        self.log(f"train/{self.hparams.loss}", loss.detach(), on_step=False, on_epoch=True,
                 batch_size=batch["y"].shape[0])
        self.log("train/loss", loss.detach(), on_step=False, on_epoch=True, batch_size=batch["y"].shape[0])
        # data-parallel: DDP averages the ranks' gradients; scaled by this rank's share of the global batch, that
        # average is the gradient of the global batch's mean loss (1.0 on one process)
        return loss * loss_scale(self, batch["y"].shape[0])
