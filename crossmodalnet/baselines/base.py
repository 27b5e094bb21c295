"""One fit/predict interface for the non-Lightning baselines (paper A.5), so every method sees the same data.

A baseline is fitted on the data module's preprocessed training split (genes as CSR, proteins as a matrix)
and predicts a (cells x proteins) array. ``train(cfg)`` builds it from ``cfg.model`` exactly like a
LightningModule (it receives and may ignore ``n_genes``, ``n_proteins``, ``time_axis``) and writes the same
run dir, so the table scripts treat every method alike.
"""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import scipy.sparse as sp

log = logging.getLogger(__name__)


class BaselineUnavailable(RuntimeError):
    """A baseline whose third-party package cannot be used here; the message says exactly why."""


Matrix = np.ndarray | sp.spmatrix


class Baseline(ABC):
    """fit(x, y, x_val, y_val) -> self; predict(x) -> (cells x proteins) float32 array.

    ``x``: cells x genes (CSR or dense), already preprocessed by the data module; ``y``: cells x proteins.
    """

    name: str = "baseline"
    # data.preprocess.svd_components=auto gives this model SVD components above 5,000 genes; False for models that
    # reduce or model the genes themselves (SVD + ridge, scIPENN): auto then keeps the genes for them
    auto_svd_input: bool = True

    def __init__(self, n_genes: int | None = None, n_proteins: int | None = None,
                 time_axis: dict | None = None, seed: int = 0, **ignored: Any) -> None:
        warn_ignored(self.name, ignored)
        self.n_genes, self.n_proteins, self.seed = n_genes, n_proteins, int(seed)
        self.gene_names: list[str] | None = None
        self.protein_names: list[str] | None = None
        self.fitted_ = False

    def fit(self, x: Matrix, y: np.ndarray, x_val: Matrix | None = None,
            y_val: np.ndarray | None = None) -> "Baseline":
        x, y = self._check_xy(x, y)
        self._fit(x, y, x_val, None if y_val is None else np.asarray(y_val, dtype=np.float64))
        self.fitted_ = True
        return self

    def predict(self, x: Matrix) -> np.ndarray:
        if not self.fitted_:
            raise RuntimeError(f"{self.name}: call fit() before predict()")
        if self.n_genes is not None and x.shape[1] != self.n_genes:
            raise ValueError(f"{self.name}: expected {self.n_genes} genes, got {x.shape[1]}")
        pred = np.asarray(self._predict(x), dtype=np.float32)
        if pred.shape != (x.shape[0], self.n_proteins):
            raise RuntimeError(f"{self.name}: prediction has shape {pred.shape}, expected "
                               f"({x.shape[0]}, {self.n_proteins})")
        return pred

    def save(self, path: Path) -> Path:
        """Persist the fitted model (joblib); returns the path written."""
        joblib.dump(self, path)
        return Path(path)

    def params(self) -> dict[str, Any]:
        """Hyperparameters actually used (after any search), for metrics.json."""
        return {}

    # -- to implement ------------------------------------------------------------------------------------------
    @abstractmethod
    def _fit(self, x: Matrix, y: np.ndarray, x_val: Matrix | None, y_val: np.ndarray | None) -> None: ...

    @abstractmethod
    def _predict(self, x: Matrix) -> np.ndarray: ...

    # -- helpers -------------------------------------------------------------------------------------------------
    def _check_xy(self, x: Matrix, y: np.ndarray) -> tuple[Matrix, np.ndarray]:
        y = np.asarray(y, dtype=np.float64)
        if y.ndim != 2 or x.shape[0] != y.shape[0]:
            raise ValueError(f"{self.name}: x has {x.shape[0]} cells but y has shape {y.shape}")
        if x.shape[0] < 2:
            raise ValueError(f"{self.name}: need at least 2 training cells, got {x.shape[0]}")
        if self.n_genes is None:
            self.n_genes = x.shape[1]
        elif x.shape[1] != self.n_genes:
            raise ValueError(f"{self.name}: expected {self.n_genes} genes, got {x.shape[1]}")
        if self.n_proteins is None:
            self.n_proteins = y.shape[1]
        elif y.shape[1] != self.n_proteins:
            raise ValueError(f"{self.name}: expected {self.n_proteins} proteins, got {y.shape[1]}")
        if sp.issparse(x):
            x = sp.csr_matrix(x)
        return x, y


def warn_ignored(name: str, ignored: dict[str, Any]) -> None:
    """Experiments written for CrossmodalNet may set its hyperparameters (latent_dim, dis_*): say they are unused."""
    if ignored:
        log.warning("%s ignores hyperparameters it does not have: %s", name, ", ".join(sorted(ignored)))


def as_dense(x: Matrix, dtype=np.float32) -> np.ndarray:
    """Dense copy for the few models that need one (sciPENN)."""
    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=dtype)
