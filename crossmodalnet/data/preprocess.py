"""Normalisation applied after the split (paper A.2): fitted on the training cells only where a fit exists."""
from __future__ import annotations

from dataclasses import dataclass, field

import anndata as ad
import numpy as np
import scipy.sparse as sp

from crossmodalnet.data.simulate import log_normalize_counts
from crossmodalnet.data.validate import DataError

RNA_METHODS = ("as_is", "log_normalize")
PROTEIN_METHODS = ("as_is",)


@dataclass
class Preprocessor:
    """RNA: ``as_is`` (X is already normalised) or ``log_normalize`` (from ``layers['counts']``, to
    ``target_sum`` then log1p); optional gene filter ``min_cells`` fitted on the training split.
    Protein: ``as_is``."""

    rna: str = "as_is"
    protein: str = "as_is"
    target_sum: float = 1e4
    min_cells: int = 0
    genes_: np.ndarray | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.rna not in RNA_METHODS:
            raise DataError(f"unknown RNA normalisation {self.rna!r}; choose one of {RNA_METHODS}")
        if self.protein not in PROTEIN_METHODS:
            raise DataError(f"unknown protein normalisation {self.protein!r}; choose one of {PROTEIN_METHODS}")

    def fit(self, train: ad.AnnData) -> "Preprocessor":
        if self.rna == "log_normalize" and "counts" not in train.layers:
            raise DataError("rna=log_normalize needs raw counts in layers['counts']; set "
                            "data.preprocess.rna=as_is if X is already normalised")
        if self.min_cells > 0:
            source = train.layers["counts"] if "counts" in train.layers else train.X
            detected = np.asarray((source > 0).sum(0)).ravel()
            keep = detected >= self.min_cells
            if not keep.any():
                raise DataError(f"no gene is detected in >= {self.min_cells} training cells (data.preprocess."
                                f"min_cells); lower it")
            self.genes_ = train.var_names[keep].to_numpy()
        else:
            self.genes_ = train.var_names.to_numpy()
        return self

    def transform(self, adata: ad.AnnData) -> ad.AnnData:
        if self.genes_ is None:
            raise RuntimeError("Preprocessor.transform called before fit")
        out = adata.copy()
        if self.rna == "log_normalize":  # library size over all genes, before any gene filter
            out.X = log_normalize_counts(out.layers["counts"], self.target_sum)
        if len(self.genes_) != out.n_vars:
            out = out[:, self.genes_].copy()
        out.X = sp.csr_matrix(out.X, dtype=np.float32)
        return out
