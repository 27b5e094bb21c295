"""One fit/predict interface for the non-Lightning baselines (paper A.5), so every method sees the same data.

A baseline is fitted on the data module's preprocessed training split (genes as CSR, proteins as a matrix)
and predicts a (cells x proteins) array. ``train(cfg)`` builds it from ``cfg.model`` exactly like a
LightningModule (it receives and may ignore ``n_genes``, ``n_proteins``, ``time_axis``) and writes the same
run dir, so the table scripts treat every method alike.

Time as an input (issue 18): ``time_features`` = ``onehot`` / ``poly`` / ``spline``
(:mod:`crossmodalnet.data.time_features`) appends standardised time columns to every cell's input, built from the
cells' time weights (the same ones the Lightning models read), fitted on the training cells and kept with the model,
so ``predict(x, time_weights)`` works at any time the encoding covers. ``none`` (default) is the paper's baseline.
A subclass that transforms the genes itself (SVD + ridge, scIPENN) finds the time columns after the first
``n_genes`` columns of ``x`` (:meth:`Baseline.split_time`).
"""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import scipy.sparse as sp

from crossmodalnet.data.time_features import TimeFeatures
from crossmodalnet.data.timepoints import TimeAxis
from crossmodalnet.utils.settings import warn_ignored  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)


class BaselineUnavailable(RuntimeError):
    """A baseline whose third-party package cannot be used here; the message says exactly why."""


Matrix = np.ndarray | sp.spmatrix


class Baseline(ABC):
    """fit(x, y, x_val, y_val, time_weights, val_time_weights) -> self; predict(x, time_weights) -> (cells x
    proteins) float32 array.

    ``x``: cells x genes (CSR or dense), already preprocessed by the data module; ``y``: cells x proteins;
    ``time_weights``: cells x learned times (only read with ``time_features`` other than ``none``).
    """

    name: str = "baseline"
    # data.preprocess.svd_components=auto gives this model SVD components above 5,000 genes; False for models that
    # reduce or model the genes themselves (SVD + ridge, scIPENN): auto then keeps the genes for them
    auto_svd_input: bool = True

    def __init__(self, n_genes: int | None = None, n_proteins: int | None = None,
                 time_axis: dict | None = None, seed: int = 0, time_features: str = "none", time_degree: int = 2,
                 time_knots: int | None = None, **ignored: Any) -> None:
        warn_ignored(self.name, ignored)
        self.n_genes, self.n_proteins, self.seed = n_genes, n_proteins, int(seed)
        self.gene_names: list[str] | None = None
        self.protein_names: list[str] | None = None
        self.time_encoder = TimeFeatures(time_features, time_degree, time_knots)
        # the learned time axis; numeric encodings continue past its ends, so prediction extrapolates the time
        self.time_axis = TimeAxis.from_dict(time_axis) if time_axis else None
        if self.time_axis is not None:
            self.time_axis.extrapolation = "nearest" if time_features in ("none", "onehot") else "extrapolate"
        self.fitted_ = False

    @property
    def uses_time(self) -> bool:
        """Whether the cells' time is an input (``time_features`` other than ``none``)."""
        return self.time_encoder.enabled

    def fit(self, x: Matrix, y: np.ndarray, x_val: Matrix | None = None, y_val: np.ndarray | None = None,
            time_weights: np.ndarray | None = None, val_time_weights: np.ndarray | None = None) -> "Baseline":
        x, y = self._check_xy(x, y)
        if self.uses_time:
            if self.time_axis is None:
                raise ValueError(f"{self.name}: time_features={self.time_encoder.kind} needs the learned time axis "
                                 "(time_axis=..., as train() passes it)")
            self.time_encoder.fit(self._time_input(time_weights, "training"), self.time_axis)
            x = self.with_time(x, time_weights, "training")
            if x_val is not None:
                x_val = self.with_time(x_val, val_time_weights, "validation")
        self._fit(x, y, x_val, None if y_val is None else np.asarray(y_val, dtype=np.float64))
        self.fitted_ = True
        return self

    def predict(self, x: Matrix, time_weights: np.ndarray | None = None) -> np.ndarray:
        if not self.fitted_:
            raise RuntimeError(f"{self.name}: call fit() before predict()")
        if self.n_genes is not None and x.shape[1] != self.n_genes:
            raise ValueError(f"{self.name}: expected {self.n_genes} genes, got {x.shape[1]}")
        n_cells = x.shape[0]
        if self.uses_time:
            x = self.with_time(x, time_weights, "predicted")
        pred = np.asarray(self._predict(x), dtype=np.float32)
        if pred.shape != (n_cells, self.n_proteins):
            raise RuntimeError(f"{self.name}: prediction has shape {pred.shape}, expected "
                               f"({n_cells}, {self.n_proteins})")
        return pred

    # -- time as an input --------------------------------------------------------------------------------------
    def with_time(self, x: Matrix, time_weights: np.ndarray | None, which: str = "predicted") -> Matrix:
        """``x`` with the cells' standardised time columns appended (CSR stays CSR)."""
        feats = self.time_encoder.transform(self._time_input(time_weights, which))
        if len(feats) != x.shape[0]:
            raise ValueError(f"{self.name}: {x.shape[0]} cells but {len(feats)} rows of time weights")
        if sp.issparse(x):
            return sp.hstack([x, sp.csr_matrix(feats)], format="csr")
        return np.hstack([np.asarray(x), feats.astype(np.asarray(x).dtype, copy=False)])

    def split_time(self, x: Matrix) -> tuple[Matrix, np.ndarray]:
        """(genes, time columns) of an input built by :meth:`with_time` (no time columns: an empty block)."""
        if not self.uses_time:
            return x, np.zeros((x.shape[0], 0), dtype=np.float32)
        genes, time = x[:, : self.n_genes], x[:, self.n_genes:]
        return genes, np.asarray(time.toarray() if sp.issparse(time) else time, dtype=np.float32)

    def _time_input(self, time_weights: np.ndarray | None, which: str) -> np.ndarray:
        if time_weights is None:
            raise ValueError(f"{self.name} takes the time as input (time_features={self.time_encoder.kind}): "
                             f"pass the {which} cells' time weights")
        return time_weights

    def save(self, path: Path) -> Path:
        """Persist the fitted model (joblib, written whole then renamed); returns the path written."""
        from crossmodalnet.utils.atomic import atomic_write

        return atomic_write(path, lambda f: joblib.dump(self, f), binary=True)

    @classmethod
    def from_saved(cls, path: Path, manifest: Any = None, map_location: str = "cpu") -> "Baseline":
        """The baseline saved at ``path`` by :meth:`save`; the manifest (crossmodalnet.inference.manifest) names
        its genes, proteins and preprocessing."""
        from crossmodalnet.errors import DataError

        try:
            model = joblib.load(path)
        except Exception as err:  # pickle/joblib raise many types for a foreign or broken file
            raise DataError(f"cannot load {path} as a saved {cls.__name__}: {err}") from None
        if not isinstance(model, cls):
            raise DataError(f"{path} holds a {type(model).__name__}, not the {cls.__name__} its manifest names")
        if manifest is not None:
            model.gene_names, model.protein_names = manifest.gene_names, manifest.protein_names
            model.preprocessing = manifest.preprocessing
            model.conformal = manifest.calibration
        return model

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


def as_dense(x: Matrix, dtype=np.float32) -> np.ndarray:
    """Dense copy for the few models that need one (sciPENN)."""
    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=dtype)
