"""One rule for "these values are raw counts": non-negative whole numbers with a maximum above 1.

Used wherever the package must tell raw counts from normalised values: a new file's gene matrix at predict time,
measured proteins of a query, a protein matrix handed in by a user (totalVI keeps raw ADT counts in obsm).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

SAMPLE_VALUES = 200_000  # enough to tell, without reading a whole matrix


def looks_like_counts(values, tolerance: float = 0.0) -> bool:
    """Whether ``values`` (dense or sparse) hold raw counts: at least ``1 - tolerance`` of the finite values
    (the first :data:`SAMPLE_VALUES`) are non-negative whole numbers, and the largest exceeds 1. Non-finite values are
    left out (the input checks name them); non-numeric values are never counts."""
    data = values.data if sp.issparse(values) else np.asarray(values).ravel()
    data = data[:SAMPLE_VALUES]
    if not np.issubdtype(data.dtype, np.number) or np.issubdtype(data.dtype, np.bool_):
        return False
    data = data[np.isfinite(data)]
    if data.size == 0:
        return False
    whole = (data >= 0) & (data == np.round(data))
    return bool(np.mean(whole) >= 1.0 - tolerance and data.max() > 1)
