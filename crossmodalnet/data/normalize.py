"""Library-size normalisation of gene counts, shared by the simulator, preprocessing and prediction.

Its own module so that reading data does not import the simulator (and its random machinery) to normalise.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def log_normalize_counts(counts: sp.csr_matrix, target_sum: float = 1e4) -> sp.csr_matrix:
    """Library-size normalisation to ``target_sum`` then log1p, staying sparse (Seurat's LogNormalize)."""
    counts = sp.csr_matrix(counts, dtype=np.float32)
    size = np.asarray(counts.sum(1)).ravel()
    size[size == 0] = 1.0
    scaled = sp.diags((target_sum / size).astype(np.float32)) @ counts
    scaled = sp.csr_matrix(scaled)
    scaled.data = np.log1p(scaled.data)
    return scaled
