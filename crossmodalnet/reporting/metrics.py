"""Evaluation metrics: vectorised Pearson correlations (per cell, per protein) and MSE.

Everything works on whole matrices at once, torch or numpy, with no Python loop over cells.
"""
from __future__ import annotations

import numpy as np
import torch


def rowwise_pearson(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Pearson correlation between matching rows of two (n, p) tensors.

    A row with zero variance (constant prediction or target) yields 0 rather than NaN: ``eps`` sits inside
    the square roots, so the value *and* its gradient stay finite.
    """
    if pred.shape != target.shape:
        raise ValueError(f"shape mismatch: prediction {tuple(pred.shape)} vs target {tuple(target.shape)}")
    pred_c = pred - pred.mean(dim=1, keepdim=True)
    target_c = target - target.mean(dim=1, keepdim=True)
    cov = (pred_c * target_c).sum(dim=1)
    pred_norm = torch.sqrt((pred_c * pred_c).sum(dim=1) + eps)
    target_norm = torch.sqrt((target_c * target_c).sum(dim=1) + eps)
    return cov / (pred_norm * target_norm)


def _as_tensor(a) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a.detach().to(torch.float64)
    return torch.as_tensor(np.asarray(a), dtype=torch.float64)


def pearson_per_cell(pred, target) -> np.ndarray:
    """Correlation across proteins for every cell (the paper's and Kaggle's metric), shape (n_cells,)."""
    return rowwise_pearson(_as_tensor(pred), _as_tensor(target)).numpy()


def pearson_per_protein(pred, target) -> np.ndarray:
    """Correlation across cells for every protein, shape (n_proteins,)."""
    return rowwise_pearson(_as_tensor(pred).T, _as_tensor(target).T).numpy()


def regression_metrics(pred, target, prefix: str = "") -> dict[str, float]:
    """The three numbers every run reports: mean per-cell Pearson, mean per-protein Pearson and MSE."""
    p, t = _as_tensor(pred), _as_tensor(target)
    return {
        f"{prefix}pearson_cell": float(rowwise_pearson(p, t).mean()),
        f"{prefix}pearson_protein": float(rowwise_pearson(p.T, t.T).mean()),
        f"{prefix}mse": float(((p - t) ** 2).mean()),
    }
