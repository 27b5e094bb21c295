"""The CrossmodalNet network (paper 2.3.1): MLP1 -> z, z + time embedding, MLP2 -> proteins; discriminator on z.

A plain ``nn.Module``: no training logic here (that lives in :mod:`crossmodalnet.models.crossmodalnet`).
"""
from __future__ import annotations

import torch
from torch import nn


def _norm(dim: int, batch_norm: bool) -> nn.Module:
    return nn.BatchNorm1d(dim) if batch_norm else nn.Identity()


def first_layer(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """x @ W^T + b for a dense or a sparse (CSR/COO) batch; a sparse batch is never densified."""
    if x.layout == torch.strided:
        return layer(x)
    return torch.addmm(layer.bias, x, layer.weight.t()) if layer.bias is not None else x @ layer.weight.t()


class CrossmodalNetwork(nn.Module):
    """MLP1 = Linear(g,d)-BN-ReLU-Dropout-Linear(d,d)-BN; T = time_weights @ E (E: c x d);
    MLP2 = Linear(d,d)-BN-ReLU-Linear(d,p); discriminator = Linear(d,h)-BN-ReLU-Linear(h,c) on z."""

    def __init__(self, n_genes: int, n_proteins: int, n_times: int, latent_dim: int = 512,
                 dropout: float = 0.05, batch_norm: bool = True, dis_hidden: int = 128,
                 time_init_std: float = 0.0) -> None:
        super().__init__()
        if min(n_genes, n_proteins, n_times, latent_dim) < 1:
            raise ValueError(f"sizes must be positive: genes={n_genes}, proteins={n_proteins}, "
                             f"times={n_times}, latent_dim={latent_dim}")
        self.n_genes, self.n_proteins, self.n_times = n_genes, n_proteins, n_times
        # MLP1, split so the first layer (GradNorm's W) can take a sparse input and be reached directly
        self.input_layer = nn.Linear(n_genes, latent_dim)
        self.encoder_rest = nn.Sequential(
            _norm(latent_dim, batch_norm), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(latent_dim, latent_dim), _norm(latent_dim, batch_norm))
        self.time_embedding = nn.Parameter(torch.randn(n_times, latent_dim) * time_init_std)
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, latent_dim), _norm(latent_dim, batch_norm), nn.ReLU(),
            nn.Linear(latent_dim, n_proteins))
        self.discriminator = nn.Sequential(
            nn.Linear(latent_dim, dis_hidden), _norm(dis_hidden, batch_norm), nn.ReLU(),
            nn.Linear(dis_hidden, n_times))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Basal latent state z = MLP1(x)."""
        return self.encoder_rest(first_layer(x, self.input_layer))

    def time_representation(self, time_weights: torch.Tensor | None, n: int) -> torch.Tensor | None:
        """T = time_weights @ E: one row for a seen time, an interpolation for an unseen one, None for none."""
        if time_weights is None:
            return None
        if time_weights.shape != (n, self.n_times):
            raise ValueError(f"time_weights must have shape ({n}, {self.n_times}), got {tuple(time_weights.shape)}")
        return time_weights @ self.time_embedding

    def decode(self, z: torch.Tensor, time_weights: torch.Tensor | None = None) -> torch.Tensor:
        t = self.time_representation(time_weights, z.shape[0])
        return self.decoder(z if t is None else z + t)

    def forward(self, x: torch.Tensor, time_weights: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted proteins; without ``time_weights`` the time embedding is left out (basal prediction)."""
        return self.decode(self.encode(x), time_weights)

    def generator_parameters(self) -> list[nn.Parameter]:
        """MLP1, time embedding and MLP2: everything the generator step updates."""
        return [*self.input_layer.parameters(), *self.encoder_rest.parameters(), self.time_embedding,
                *self.decoder.parameters()]
