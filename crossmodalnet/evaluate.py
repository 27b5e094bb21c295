"""Evaluation beyond the test loop: reference numbers that make a run's metrics interpretable.

``extra_metrics`` is called by :func:`crossmodalnet.train.train` after testing; every key it returns lands
in ``metrics.json``.
"""
from __future__ import annotations

import numpy as np

from crossmodalnet.data.datamodule import CiteDataModule
from crossmodalnet.data.validate import PROTEIN_KEY
from crossmodalnet.metrics import regression_metrics


def train_mean_baseline(dm: CiteDataModule, split: str = "test") -> dict[str, float]:
    """Metrics of a predictor that outputs each protein's training mean for every cell."""
    train = dm.splits["train"].obsm[PROTEIN_KEY].to_numpy(dtype=np.float64)
    target = dm.splits[split].obsm[PROTEIN_KEY].to_numpy(dtype=np.float64)
    pred = np.broadcast_to(train.mean(0), target.shape)
    metrics = regression_metrics(pred, target, prefix=f"{split}/baseline_train_mean/")
    metrics.pop(f"{split}/baseline_train_mean/pearson_protein")  # undefined: a constant per protein
    return metrics


def extra_metrics(model, dm: CiteDataModule, cfg) -> dict[str, float]:
    """Reference numbers for the held-out split, added to metrics.json."""
    return train_mean_baseline(dm, "test")
