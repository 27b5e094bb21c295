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

    floor: float = 1e-4  # a weight is never below this (renormalisation needs positive weights)

    def __init__(self, n_tasks: int = 2, alpha: float = 0.5, eps: float = 1e-8) -> None:
        super().__init__()
        self.n_tasks, self.alpha, self.eps = n_tasks, float(alpha), eps
        self.weights = nn.Parameter(torch.ones(n_tasks))
        self.register_buffer("initial_losses", torch.full((n_tasks,), float("nan")))
        # the smallest each weight has been after renormalisation: a weight that reached the floor means a task
        # was switched off during training (reported in metrics.json, checked by the tests)
        self.register_buffer("min_weights", torch.ones(n_tasks))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # checkpoints written before min_weights
        state_dict.setdefault(prefix + "min_weights", torch.full((self.n_tasks,), float("nan")))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def weight_gradient(self, losses: torch.Tensor, grad_norms: torch.Tensor) -> dict[str, torch.Tensor]:
        """Gradient of L_G w.r.t. the weights, from unweighted task losses and gradient norms n_i.

        The first call records L_i(0). The loss ratio L_i(t) / L_i(0) is a training rate only for a positive loss:
        the default formulation's task losses (NLC, squared error, the confusion term) are >= 0. A formulation kept
        for comparison whose Fader loss contains lambda * log P(t|z) can reach zero or below; on such a step no
        ratio is defined and the weights get no gradient (``skipped`` = 1) instead of one made up by a clamp.
        v0.2 clamped the ratio to max(L, eps) / L(0): the Fader target became ~0 and its weight fell to the floor.
        """
        losses = losses.detach()
        grad_norms = grad_norms.detach()
        if torch.isnan(self.initial_losses).any():
            self.initial_losses.copy_(losses)
        w = self.weights.detach()
        g = w * grad_norms
        defined = (losses > self.eps).all() & (self.initial_losses > self.eps).all()
        ratios = losses.clamp_min(self.eps) / self.initial_losses.clamp_min(self.eps)
        inverse_rate = ratios / ratios.mean()
        target = g.mean() * inverse_rate**self.alpha
        grad = torch.where(defined, torch.sign(g - target) * grad_norms, torch.zeros_like(grad_norms))
        return {"grad": grad, "G": g, "target": target, "loss": (g - target).abs().sum(),
                "ratios": ratios, "skipped": (~defined).to(losses.dtype)}

    @torch.no_grad()
    def renormalise(self) -> None:
        """Keep weights positive and summing to the number of tasks (Algorithm 1)."""
        self.weights.clamp_(min=self.floor)
        self.weights.mul_(self.n_tasks / self.weights.sum())
        torch.minimum(self.min_weights, self.weights, out=self.min_weights)
