"""The generator step's losses and gradients as small typed objects (paper Algorithm 1, the generator branch).

GradNorm needs each task's gradient norm at MLP1's first layer W, and the network needs the gradient of the
weighted loss ``w1 * NLC + w2 * second (+ extra)``. Three ways to get them, one class each, all answering
``norms`` (||dL_i/dW|| for the two GradNorm tasks) and ``apply(coefs, network)`` (set every generator
parameter's ``.grad`` to the weighted sum):

* :class:`CombinedGradients` (one process, the default): each task's gradient at the first layer's output h only,
  then one backward of the weighted loss -- two full backward passes' arithmetic, not three;
* :class:`PerTaskGradients` (data-parallel): every task's gradient of every parameter, averaged over ranks by
  :meth:`reduced` before the norms, because the combined path cannot mix ranks;
* :class:`AutogradGradients` (``gradnorm_mode=autograd``): plain per-task autograd, the reference the others are
  tested against.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Sequence

import torch
from torch import nn

from crossmodalnet.models.sync import all_reduce_mean

Grads = list[torch.Tensor | None]


@dataclass
class TaskLosses:
    """The generator step's loss terms (see ``CrossmodalNet.task_losses``)."""

    nlc: torch.Tensor                   # GradNorm task 1
    second: torch.Tensor                # GradNorm task 2: reconstruction, or Fader = reconstruction + lambda * adv
    extra: torch.Tensor | None          # the adversarial term at a fixed weight, when it sits outside GradNorm
    recon: torch.Tensor                 # the reconstruction alone (logged)
    adv: torch.Tensor | None            # the adversarial term alone (logged)
    pred: torch.Tensor                  # the predictions

    def differentiated(self) -> list[torch.Tensor]:
        """The losses that get their own gradient: the two GradNorm tasks and, if present, the extra term."""
        return [self.nlc, self.second] + ([self.extra] if self.extra is not None else [])

    def weighted(self, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
        total = w1 * self.nlc + w2 * self.second
        return total + self.extra if self.extra is not None else total

    def scaled(self, scale: float) -> "TaskLosses":
        """Every loss (not the predictions) times ``scale``: a rank's share of the global batch."""
        if scale == 1.0:
            return self
        return replace(self, **{f.name: getattr(self, f.name) * scale for f in fields(self)
                                if f.name != "pred" and getattr(self, f.name) is not None})

    def logged_values(self) -> list[tuple[str, torch.Tensor]]:
        return [(name, getattr(self, name)) for name in ("nlc", "second", "extra", "recon", "adv")
                if getattr(self, name) is not None]


@dataclass
class TaskGradients:
    """Base: the losses and GradNorm's first-layer norms (None until :meth:`reduced` computes them)."""

    losses: TaskLosses
    norms: torch.Tensor | None

    def reduced(self, module: Any) -> "TaskGradients":
        """Averaged over data-parallel ranks (nothing to do for a one-process path)."""
        return self

    def apply(self, coefs: Sequence[torch.Tensor], network: nn.Module) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass
class CombinedGradients(TaskGradients):
    """One process: the weighted loss's gradient from one backward (h's gradient ``delta`` for the first layer)."""

    x: torch.Tensor
    delta: torch.Tensor
    upper: list[nn.Parameter]
    upper_grad: Grads

    def apply(self, coefs: Sequence[torch.Tensor], network: nn.Module) -> None:
        layer = network.input_layer
        layer.weight.grad = dense_t_matmul(self.delta, self.x)
        layer.bias.grad = self.delta.sum(0)
        for p, g in zip(self.upper, self.upper_grad):
            p.grad = torch.zeros_like(p) if g is None else g.contiguous()


@dataclass
class PerTaskGradients(TaskGradients):
    """Data-parallel: each task's gradients, kept apart until they are averaged over ranks."""

    x: torch.Tensor
    deltas: list[torch.Tensor]          # each task's gradient at the first layer's output
    upper: list[nn.Parameter]
    upper_grads: list[Grads]            # each task's gradients of the parameters above the first layer
    first: list[torch.Tensor] | None = None   # each task's first-layer weight gradient, after reduction
    bias: list[torch.Tensor] | None = None

    def reduced(self, module: Any) -> "PerTaskGradients":
        """Every per-task gradient and loss averaged over ranks (one collective) before GradNorm takes norms; the
        first layer's gradients are formed explicitly (delta_i^T X), since the Gram trick cannot combine ranks."""
        tasks = [_dense(g, self.upper) for g in self.upper_grads]
        flat = ([dense_t_matmul(d, self.x) for d in self.deltas] + [d.sum(0) for d in self.deltas]
                + [g for task in tasks for g in task])
        losses, reduced_losses = _reduce_with_losses(module, flat, self.losses)
        n, k = len(tasks), len(tasks[0])
        first, bias = reduced_losses[:n], reduced_losses[n:2 * n]
        upper_grads = [reduced_losses[2 * n + i * k:2 * n + (i + 1) * k] for i in range(n)]
        return replace(self, losses=losses, first=first, bias=bias, upper_grads=upper_grads,
                       norms=torch.stack([first[0].norm(), first[1].norm()]))

    def apply(self, coefs: Sequence[torch.Tensor], network: nn.Module) -> None:
        layer = network.input_layer
        layer.weight.grad = combine(coefs, self.first, layer.weight)
        layer.bias.grad = combine(coefs, self.bias, layer.bias)
        for i, p in enumerate(self.upper):
            p.grad = combine(coefs, [g[i] for g in self.upper_grads], p)


@dataclass
class AutogradGradients(TaskGradients):
    """``gradnorm_mode=autograd``: each task's gradient of every generator parameter by plain autograd."""

    params: list[nn.Parameter]
    grads: list[Grads]

    def reduced(self, module: Any) -> "AutogradGradients":
        tasks = [_dense(g, self.params) for g in self.grads]
        losses, values = _reduce_with_losses(module, [g for task in tasks for g in task], self.losses)
        k = len(tasks[0])
        grads = [values[i * k:(i + 1) * k] for i in range(len(tasks))]
        return replace(self, losses=losses, grads=grads, norms=torch.stack([grads[0][0].norm(), grads[1][0].norm()]))

    def apply(self, coefs: Sequence[torch.Tensor], network: nn.Module) -> None:
        for i, p in enumerate(self.params):
            p.grad = combine(coefs, [g[i] for g in self.grads], p)


# -- arithmetic ---------------------------------------------------------------------------------------------------
def dense_t_matmul(delta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """delta^T @ x for a dense or sparse x, shape (d, g)."""
    if x.layout == torch.strided:
        return delta.t() @ x
    return (x.t() @ delta).t().contiguous()  # fused Adam needs a gradient laid out like its parameter


def _gram(x: torch.Tensor) -> torch.Tensor:
    return x @ x.t() if x.layout == torch.strided else (x @ x.to_dense().t())


def first_layer_norms(x: torch.Tensor, deltas: list[torch.Tensor]) -> torch.Tensor:
    """||delta_i^T X||_F for each task (the first layer's weight gradient), the cheaper of two ways.

    With b cells, g inputs and d first-layer units: explicit products cost 2 d b g multiply-adds; the Gram form,
    ||delta^T X||^2 = sum((delta delta^T) * (X X^T)), costs b^2 g + 2 b^2 d. Genes (g in the thousands) take the
    Gram form; a few hundred SVD components the explicit one."""
    b, g = x.shape
    d = deltas[0].shape[1]
    if b * g + 2 * b * d < 2 * d * g:
        gram = _gram(x)
        return torch.stack([((t @ t.t()) * gram).sum().clamp_min(0).sqrt() for t in deltas])
    return torch.stack([dense_t_matmul(t, x).norm() for t in deltas])


def combine(coefs: Sequence[torch.Tensor], grads: Grads, p: nn.Parameter) -> torch.Tensor:
    """sum_i coef_i * grad_i for one parameter (a task that does not reach it contributes zero)."""
    total = torch.zeros_like(p)
    for c, g in zip(coefs, grads):
        if g is not None:
            total = total + c * g
    return total.contiguous()  # fused Adam needs a gradient laid out like its parameter


def _dense(task_grads: Grads, params: Sequence[nn.Parameter]) -> list[torch.Tensor]:
    return [torch.zeros_like(p) if g is None else g for g, p in zip(task_grads, params)]


def _reduce_with_losses(module: Any, flat: list[torch.Tensor],
                        losses: TaskLosses) -> tuple[TaskLosses, list[torch.Tensor]]:
    """One collective for gradients and loss values; returns the averaged losses and the averaged gradients."""
    named = losses.logged_values()
    reduced = all_reduce_mean(module, flat + [value.detach() for _, value in named])
    averaged = dict(zip([name for name, _ in named], reduced[len(flat):]))
    return replace(losses, **averaged), reduced[:len(flat)]
