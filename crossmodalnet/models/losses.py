"""Training losses: negative log correlation (NLC), the Fader generator loss and the discriminator loss."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from crossmodalnet.reporting.metrics import rowwise_pearson


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


RECONSTRUCTIONS = ("mse", "sq_norm")
ADVERSARIAL_LOSSES = ("flip", "confusion")


def reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "sq_norm") -> torch.Tensor:
    """The Fader reconstruction term.

    ``"sq_norm"``: the paper's ``mean_i ||yhat_i - y_i||^2`` (per-cell squared norm, p times ``"mse"``);
    ``"mse"``: ``F.mse_loss`` (mean over cells and proteins), as in the authors' code. The choice also sets how
    strong ``dis_lambda`` is relative to the reconstruction.
    """
    if kind == "sq_norm":
        return (pred - target).pow(2).sum(dim=1).mean()
    if kind == "mse":
        return F.mse_loss(pred, target)
    raise ValueError(f"unknown reconstruction {kind!r}: use one of {RECONSTRUCTIONS}")


def adversarial_loss(dis_logits: torch.Tensor, time_index: torch.Tensor, kind: str = "confusion") -> torch.Tensor:
    """What the generator minimises to hide the time from the discriminator (before ``dis_lambda``).

    ``"flip"``: ``log P(t|z) = -CE(logits, t)`` (paper 2.3.3 and the authors' code): unbounded below, so the
    generator is also rewarded for making the discriminator confidently *wrong*, which still encodes time, and the
    Fader loss can go negative (GradNorm's loss ratio is then undefined).
    ``"confusion"``: ``KL(uniform || P(.|z)) = -mean_k log P(k|z) - log c >= 0``, zero exactly when the
    discriminator sees every time as equally likely: time-invariance is the optimum, and the term never goes
    negative (domain confusion, Tzeng et al. 2015; Alvi et al. 2018).
    """
    if kind == "flip":
        return -F.cross_entropy(dis_logits, time_index)
    if kind == "confusion":
        log_p = F.log_softmax(dis_logits, dim=1)
        return -log_p.mean(dim=1).mean() - math.log(dis_logits.shape[1])
    raise ValueError(f"unknown adversarial loss {kind!r}: use one of {ADVERSARIAL_LOSSES}")


def discriminator_loss(logits: torch.Tensor, time_index: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the time point given the basal latent z (paper 2.3.2)."""
    return F.cross_entropy(logits, time_index)


def gradient_penalty(logits: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Mean squared gradient of the summed discriminator logits w.r.t. z (as in CPA and the authors' code)."""
    (grad,) = torch.autograd.grad(logits.sum(), z, create_graph=True)
    return grad.pow(2).mean()
