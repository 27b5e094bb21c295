"""The learned time embedding E (one row per learned time) in PCA coordinates, with unseen times placed by the
same interpolation the network uses (paper 3.2, Figure S2)."""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import pandas as pd


def embedding_matrix(model) -> np.ndarray:
    """E, learned times x latent dimensions."""
    return model.network.time_embedding.detach().cpu().numpy().astype(np.float64)


def interpolated_embedding(model, time: Any) -> np.ndarray:
    """The time representation T the network adds for ``time``: its weight vector over learned times @ E."""
    return model.time_axis.weights(time) @ embedding_matrix(model)


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
