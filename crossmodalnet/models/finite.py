"""Stop training at the first non-finite loss or gradient, naming the epoch, the step and the term.

The models call :func:`check_finite` on their loss terms in each training step; the run-level pieces (the
gradient callback, metric checks, ``failed.txt``) are in :mod:`crossmodalnet.training.guards`.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping

import lightning as L
import torch

from crossmodalnet.errors import DataError

HINT = "check the input data (docs/checks.md) or lower the learning rate; nothing was saved as a finished run"


class NonFiniteError(DataError):
    """A loss, gradient or metric became NaN/inf: the run stops instead of training on garbage."""


def position(module: L.LightningModule) -> tuple[int, int]:
    """(epoch, step) of the training batch being processed; step counts batches over the run, from 1."""
    trainer = getattr(module, "_trainer", None)
    if trainer is None:  # a model used outside a Trainer (unit tests, notebooks)
        return 0, 0
    return int(trainer.current_epoch), int(trainer.fit_loop.total_batch_idx) + 1


def _describe(value: float) -> str:
    return "NaN" if math.isnan(value) else ("+inf" if value > 0 else "-inf")


def check_finite(terms: Mapping[str, torch.Tensor], epoch: int, step: int) -> None:
    """Raise :class:`NonFiniteError` naming the first term (e.g. ``{"NLC": nlc, "Fader": fader}``) that is not
    finite. Terms are scalars (or small tensors); the check is one ``isfinite`` and one sync."""
    if not terms:
        return
    tensors = [torch.as_tensor(t) for t in terms.values()]
    device = tensors[0].device  # one device for the stacked check (a python float joins the first tensor's)
    flat = [t.detach().reshape(-1).float().to(device) for t in tensors]
    if bool(torch.isfinite(torch.cat(flat)).all()):
        return
    for name, values in zip(terms, flat):
        bad = values[~torch.isfinite(values)]
        if bad.numel():
            raise NonFiniteError(f"training stopped at epoch {epoch}, step {step}: the {name} loss is "
                                 f"{_describe(float(bad[0]))}; {HINT}")


def check_gradients(named_grads: Iterable[tuple[str, torch.Tensor]], term: str, epoch: int, step: int) -> None:
    """Raise :class:`NonFiniteError` when a gradient about to be applied holds NaN/inf (one sync for all)."""
    named = [(n, g) for n, g in named_grads if g is not None]
    if not named:
        return
    norms = torch.stack([torch.linalg.vector_norm(g.detach().float()) for _, g in named])
    if bool(torch.isfinite(norms).all()):
        return
    finite = torch.isfinite(norms).tolist()
    name = next(n for (n, _), ok in zip(named, finite) if not ok)
    raise NonFiniteError(f"training stopped at epoch {epoch}, step {step}: the {term} gradient is not finite "
                         f"(parameter {name}); {HINT}")
