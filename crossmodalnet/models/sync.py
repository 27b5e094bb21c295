"""Tensor-level pieces of data-parallel training that the models' manual optimisation needs (docs/distributed.md).

CrossmodalNet sets its gradients by hand, which DDP's reducer never sees, so the model reduces them itself through
the Lightning strategy. On one process every helper returns at once. The callbacks and the global BatchNorm live
in :mod:`crossmodalnet.training.distributed`.
"""
from __future__ import annotations

from typing import Sequence

import lightning as L
import torch


def world_size(module: L.LightningModule | None) -> int:
    """Processes training this model (1 outside a Trainer or on one device)."""
    trainer = getattr(module, "_trainer", None) if module is not None else None
    return int(trainer.world_size) if trainer is not None else 1


def loss_scale(module: L.LightningModule, n_local: int) -> float:
    """``world * n_local / n_global``: multiply a rank's mean loss by it before differentiating, so that the mean
    over ranks of the gradients is the gradient of the mean loss over the global batch. 1.0 on one process."""
    world = world_size(module)
    if world == 1:
        return 1.0
    n = torch.tensor([float(n_local)], device=module.device)
    total = module.trainer.strategy.reduce(n, reduce_op="sum")
    return float(world * n_local / float(total.item()))


def all_reduce_mean(module: L.LightningModule, tensors: Sequence[torch.Tensor | None]) -> list[torch.Tensor | None]:
    """The mean over ranks of each tensor (``None`` stays ``None``), with one collective; the inputs on one
    process. Every rank must call it with tensors of the same shapes in the same order."""
    if world_size(module) == 1:
        return list(tensors)
    present = [t for t in tensors if t is not None]
    if not present:
        return list(tensors)
    flat = torch.cat([t.detach().reshape(-1).to(present[0].dtype) for t in present])
    flat = module.trainer.strategy.reduce(flat, reduce_op="sum") / world_size(module)
    out, offset = [], 0
    for t in tensors:
        if t is None:
            out.append(None)
            continue
        out.append(flat[offset:offset + t.numel()].view_as(t).to(t.dtype))
        offset += t.numel()
    return out


def sync_gradients(module: L.LightningModule, params) -> None:
    """Replace each parameter's ``.grad`` by its mean over ranks (one collective; nothing on one process)."""
    if world_size(module) == 1:
        return
    params = [p for p in params if p.grad is not None]
    for p, g in zip(params, all_reduce_mean(module, [p.grad for p in params])):
        p.grad = g.contiguous()
