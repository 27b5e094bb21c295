"""Predictions for one split of a data module: what training's diagnostics, the calibration and the run's
predictions.h5ad all score (one place, one return type)."""
from __future__ import annotations

import numpy as np


def predict_split(model, dm, split: str) -> np.ndarray:
    """Predictions (cells x proteins) of a Lightning model or a fit/predict baseline for one split."""
    if hasattr(model, "predict") and not hasattr(model, "training_step"):  # a Baseline
        return np.asarray(model.predict(dm.model_input(split), dm.datasets[split].time_weights.numpy()),
                          dtype=np.float64)  # genes or SVD scores; the time weights only read with time features
    import torch

    was_training = model.training
    model.eval()
    preds = []
    try:
        with torch.inference_mode():
            for batch in dm.loader(dm.datasets[split], shuffle=False):
                preds.append(model(batch["x"], batch["time_weights"]).double().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(preds) if preds else np.zeros((0, dm.n_proteins))
