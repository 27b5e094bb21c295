"""Training losses: negative log correlation (NLC), the Fader generator loss and the discriminator loss."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from crossmodalnet.metrics import rowwise_pearson


def nlc_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-6, reduction: str = "mean") -> torch.Tensor:
    """Negative log correlation, per cell (paper eq. in 2.4).

    L_i = -log(max((corr(yhat_i, y_i) + 1) / 2, eps)). ``reduction="sum"`` is the paper's formula; the default
    ``"mean"`` keeps the loss independent of batch size (GradNorm rebalances the scale either way).
    A constant row has correlation 0 (finite value and gradient), never NaN.
    """
    corr = rowwise_pearson(pred, target)
    per_cell = -torch.log(torch.clamp((corr + 1.0) / 2.0, min=eps))
    if reduction == "mean":
        return per_cell.mean()
    if reduction == "sum":
        return per_cell.sum()
    if reduction == "none":
        return per_cell
    raise ValueError(f"unknown reduction {reduction!r}: use 'mean', 'sum' or 'none'")


def fader_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    dis_logits: torch.Tensor | None,
    time_index: torch.Tensor | None,
    dis_lambda: float,
) -> torch.Tensor:
    """MSE reconstruction + lambda * log P(t | z) (paper 2.3.3): minimising it also fools the discriminator.

    ``log P(t|z) = -CE(logits, t)``. Without a discriminator (a single time point) it is plain MSE.
    """
    mse = F.mse_loss(pred, target)
    if dis_logits is None or dis_lambda == 0.0:
        return mse
    return mse - dis_lambda * F.cross_entropy(dis_logits, time_index)


def discriminator_loss(logits: torch.Tensor, time_index: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the time point given the basal latent z (paper 2.3.2)."""
    return F.cross_entropy(logits, time_index)


def gradient_penalty(logits: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Mean squared gradient of the summed discriminator logits w.r.t. z (as in CPA and the authors' code)."""
    (grad,) = torch.autograd.grad(logits.sum(), z, create_graph=True)
    return grad.pow(2).mean()
