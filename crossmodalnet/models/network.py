"""The CrossmodalNet network (paper 2.3.1): MLP1 -> z, z + time representation, MLP2 -> proteins; discriminator on z.

A plain ``nn.Module``: no training logic here (that lives in :mod:`crossmodalnet.models.crossmodalnet`).

The time enters through ``time_features(w) @ time_embedding`` (:mod:`crossmodalnet.models.time_encoding`), split
into one term per *injection*:

- ``add_latent`` (paper): ``MLP2(z + T)``. MLP2 starts with Linear -> BatchNorm, which removes the part of T
  shared by the cells of a batch: only differences between times reach the proteins, and with the lookup table the
  midpoint of two learned times equals "no time".
- ``after_bn``: a per-time bias added after that BatchNorm (before the ReLU), where nothing cancels it.
- ``film``: a per-time scale and shift of that BatchNorm's output, ``(1 + gamma(t)) * BN(W z) + beta(t)``.
- ``output``: a per-protein, per-time gain and offset of the prediction, ``(1 + a(t)) * MLP2(.) + b(t)``.

Several can be combined (``"film+output"``). Every term is zero at initialisation with ``time_init_std=0`` and
zero for "no time" (all-zero weights), so the basal prediction is MLP2(z) in every arrangement.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from crossmodalnet.models.time_encoding import TimeEncoder

TIME_INJECTIONS = ("add_latent", "after_bn", "film", "output")


def _norm(dim: int, batch_norm: bool) -> nn.Module:
    return nn.BatchNorm1d(dim) if batch_norm else nn.Identity()


def first_layer(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """x @ W^T + b for a dense or a sparse (CSR/COO) batch; a sparse batch is never densified."""
    if x.layout == torch.strided:
        return layer(x)
    return torch.addmm(layer.bias, x, layer.weight.t()) if layer.bias is not None else x @ layer.weight.t()


def parse_injection(spec: str | Sequence[str]) -> tuple[str, ...]:
    """``"film+output"`` or ``["film", "output"]`` -> ("film", "output"), checked and in canonical order."""
    parts = [p.strip() for p in (spec.split("+") if isinstance(spec, str) else spec) if str(p).strip()]
    bad = [p for p in parts if p not in TIME_INJECTIONS]
    if bad or not parts:
        raise ValueError(f"time_injection must be one or more of {TIME_INJECTIONS} joined by '+', got {spec!r}")
    return tuple(p for p in TIME_INJECTIONS if p in parts)


class CrossmodalNetwork(nn.Module):
    """MLP1 = Linear(g,d)-BN-ReLU-Dropout-Linear(d,d)-BN; time terms = phi(w) @ E (E: k x width);
    MLP2 = Linear(d,d)-BN-ReLU-Linear(d,p); discriminator = Linear(d,h)-BN-ReLU-Linear(h,c) on z.

    With the defaults (lookup, add_latent) E is the paper's c x d time embedding and the network is the paper's."""

    def __init__(self, n_genes: int, n_proteins: int, n_times: int, latent_dim: int = 512,
                 dropout: float = 0.05, batch_norm: bool = True, dis_hidden: int = 128,
                 time_init_std: float = 0.0, time_encoding: str = "lookup",
                 time_injection: str | Sequence[str] = "add_latent", time_values: Sequence[float] | None = None,
                 time_extrapolation: str = "nearest", time_knots: int | None = None, time_frequencies: int = 3,
                 time_hidden: int = 16, time_degree: int = 2) -> None:
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
        self.time_encoder = TimeEncoder(time_encoding, time_values, n_times, time_extrapolation, time_knots,
                                        time_frequencies, time_hidden, time_degree)
        self.injections = parse_injection(time_injection)
        widths = {"add_latent": latent_dim, "after_bn": latent_dim, "film": 2 * latent_dim, "output": 2 * n_proteins}
        self.term_slices: dict[str, slice] = {}
        start = 0
        for name in self.injections:
            self.term_slices[name] = slice(start, start + widths[name])
            start += widths[name]
        self.time_embedding = nn.Parameter(torch.randn(self.time_encoder.n_features, start) * time_init_std)
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
        """phi(w) @ E, every injection's terms side by side (cells x width); None for no time weights.

        Lookup + add_latent: one row of E for a seen time, an interpolation for an unseen one."""
        if time_weights is None:
            return None
        if time_weights.shape != (n, self.n_times):
            raise ValueError(f"time_weights must have shape ({n}, {self.n_times}), got {tuple(time_weights.shape)}")
        return self.time_encoder(time_weights.to(self.time_embedding.dtype)) @ self.time_embedding

    def time_terms(self, time_weights: torch.Tensor | None, n: int) -> dict[str, torch.Tensor]:
        """Each injection's time term, e.g. {"film": (n, 2d)}; empty for no time weights."""
        rep = self.time_representation(time_weights, n)
        return {} if rep is None else {name: rep[:, s] for name, s in self.term_slices.items()}

    def decode(self, z: torch.Tensor, time_weights: torch.Tensor | None = None) -> torch.Tensor:
        terms = self.time_terms(time_weights, z.shape[0])
        linear, norm, act, out_layer = self.decoder
        if "add_latent" in terms:
            z = z + terms["add_latent"]
        h = norm(linear(z))
        if "film" in terms:
            gamma, beta = terms["film"].chunk(2, dim=1)
            h = h * (1.0 + gamma) + beta
        if "after_bn" in terms:
            h = h + terms["after_bn"]
        y = out_layer(act(h))
        if "output" in terms:
            gain, offset = terms["output"].chunk(2, dim=1)
            y = y * (1.0 + gain) + offset
        return y

    def forward(self, x: torch.Tensor, time_weights: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted proteins; without ``time_weights`` the time embedding is left out (basal prediction)."""
        return self.decode(self.encode(x), time_weights)

    def time_parameters(self) -> list[nn.Parameter]:
        """The time embedding and the time encoder's own parameters (the ``mlp`` encoding's first layer)."""
        return [self.time_embedding, *self.time_encoder.parameters()]

    def generator_parameters(self) -> list[nn.Parameter]:
        """MLP1, time parameters and MLP2: everything the generator step updates."""
        return [*self.input_layer.parameters(), *self.encoder_rest.parameters(), *self.time_parameters(),
                *self.decoder.parameters()]
