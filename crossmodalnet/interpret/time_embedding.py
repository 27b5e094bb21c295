"""The learned time embedding E (one row per learned time) in PCA coordinates, with unseen times placed by the
same interpolation the network uses (paper 3.2, Figure S2)."""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import pandas as pd


def _representation(model, weights: np.ndarray) -> np.ndarray:
    """The network's time terms for rows of time weights (for the paper's lookup + add_latent: weights @ E)."""
    import torch

    net = model.network
    w = torch.as_tensor(np.atleast_2d(weights), dtype=net.time_embedding.dtype, device=net.time_embedding.device)
    with torch.no_grad():
        return net.time_representation(w, w.shape[0]).cpu().numpy().astype(np.float64)


def embedding_matrix(model) -> np.ndarray:
    """The time representation at each learned time, learned times x width (the paper's E for lookup + add_latent;
    a continuous time encoding's curve evaluated at the learned times otherwise)."""
    return _representation(model, np.eye(model.time_axis.n_times))


def interpolated_embedding(model, time: Any) -> np.ndarray:
    """The time representation the network uses for ``time`` (lookup: its weight vector over learned times @ E)."""
    return _representation(model, model.time_axis.weights(time))[0]


def time_embedding_pca(model, extra_times: Iterable[Any] = ()) -> pd.DataFrame:
    """PC1/PC2 of the learned rows (PCA fitted on them alone) plus projected ``extra_times``.

    Columns: time, PC1, PC2, kind ("learned" or "interpolated"); ``attrs["explained_variance_ratio"]``.
    With two learned times there is one direction only, and PC2 is 0.
    """
    axis = model.time_axis
    emb = embedding_matrix(model)
    centre = emb.mean(0)
    _, s, vt = np.linalg.svd(emb - centre, full_matrices=False)
    comps = np.zeros((2, emb.shape[1]))
    n_comp = min(2, int((s > 1e-12 * max(s.max(initial=0), 1e-300)).sum()))
    comps[:n_comp] = vt[:n_comp]
    rows = [(t, "learned", e) for t, e in zip(axis.labels, emb)]
    rows += [(t, "interpolated", interpolated_embedding(model, t)) for t in extra_times]
    coords = np.stack([e for *_, e in rows]) - centre
    pcs = coords @ comps.T
    out = pd.DataFrame({"time": [str(t) for t, *_ in rows], "PC1": pcs[:, 0], "PC2": pcs[:, 1],
                        "kind": [k for _, k, _ in rows]})
    var = s**2
    out.attrs["explained_variance_ratio"] = (var[:2] / var.sum()).tolist() if var.sum() > 0 else [0.0, 0.0]
    return out
