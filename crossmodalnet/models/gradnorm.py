"""GradNorm (Chen et al. 2018) for two tasks, with the closed-form weight gradient.

With G_i = ||grad_W (w_i L_i)|| = w_i n_i (n_i = ||grad_W L_i||, w_i > 0) and the target
T_i = mean(G) r_i^alpha held constant (as in GradNorm), L_G = sum_i |G_i - T_i| has
dL_G/dw_i = sign(G_i - T_i) n_i. No second-order graph is needed, so GradNorm's loss can never leak into
the network's gradients: it only ever produces a gradient for the task weights.
"""
from __future__ import annotations

import torch
from torch import nn


class GradNorm(nn.Module):
    """Task weights w (initialised to 1, renormalised to sum to the number of tasks) and their update rule."""

    def __init__(self, n_tasks: int = 2, alpha: float = 0.5, eps: float = 1e-8) -> None:
        super().__init__()
        self.n_tasks, self.alpha, self.eps = n_tasks, float(alpha), eps
        self.weights = nn.Parameter(torch.ones(n_tasks))
        self.register_buffer("initial_losses", torch.full((n_tasks,), float("nan")))

    def weight_gradient(self, losses: torch.Tensor, grad_norms: torch.Tensor) -> dict[str, torch.Tensor]:
        """Gradient of L_G w.r.t. the weights, from unweighted task losses and gradient norms n_i.

        The first call records L_i(0). Loss ratios use max(L, eps): the Fader loss contains
        lambda * log P(t|z) <= 0 and may reach zero or below, where a raw ratio would give NaN under ** alpha.
        """
        losses = losses.detach()
        grad_norms = grad_norms.detach()
        if torch.isnan(self.initial_losses).any():
            self.initial_losses.copy_(losses)
        w = self.weights.detach()
        g = w * grad_norms
        ratios = losses.clamp_min(self.eps) / self.initial_losses.clamp_min(self.eps)
        inverse_rate = ratios / ratios.mean()
        target = g.mean() * inverse_rate**self.alpha
        grad = torch.sign(g - target) * grad_norms
        return {"grad": grad, "G": g, "target": target, "loss": (g - target).abs().sum()}

    @torch.no_grad()
    def renormalise(self) -> None:
        """Keep weights positive and summing to the number of tasks (Algorithm 1)."""
        self.weights.clamp_(min=1e-4)
        self.weights.mul_(self.n_tasks / self.weights.sum())
