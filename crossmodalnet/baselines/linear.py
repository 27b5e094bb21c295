"""Linear and ridge regression with scikit-learn defaults (as in the paper), and truncated SVD + ridge
(the simple, strong baseline of the 2022 Kaggle multimodal competition and scLinear)."""
from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.decomposition import TruncatedSVD
from sklearn.linear_model import LinearRegression, Ridge

from crossmodalnet.baselines.base import Baseline, Matrix


class LinearBaseline(Baseline):
    """Ordinary least squares, one model for all proteins (sparse genes stay sparse)."""

    name = "linear"

    def __init__(self, fit_intercept: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model = LinearRegression(fit_intercept=fit_intercept)

    def _fit(self, x: Matrix, y: np.ndarray, x_val, y_val) -> None:
        self.model.fit(x, y)

    def _predict(self, x: Matrix) -> np.ndarray:
        return self.model.predict(x)


class RidgeBaseline(Baseline):
    """L2-regularised least squares; alpha=1.0 is scikit-learn's default (the paper kept the defaults)."""

    name = "ridge"

    def __init__(self, alpha: float = 1.0, fit_intercept: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model = Ridge(alpha=alpha, fit_intercept=fit_intercept, random_state=self.seed)

    def _fit(self, x: Matrix, y: np.ndarray, x_val, y_val) -> None:
        self.model.fit(x, y)

    def _predict(self, x: Matrix) -> np.ndarray:
        return self.model.predict(x)

    def params(self) -> dict[str, Any]:
        return {"alpha": float(self.model.alpha)}


class SVDRidgeBaseline(Baseline):
    """Truncated SVD of the genes (fit on train) followed by ridge on the components.

    ``n_components`` is capped below min(cells, genes), so tiny data still works. Time columns
    (``time_features``) skip the SVD and join the components as they are.
    """

    name = "svd_ridge"
    auto_svd_input = False  # its own treatment of the genes: svd_components=auto keeps them

    def __init__(self, n_components: int = 128, alpha: float = 1.0, n_iter: int = 5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if n_components < 1:
            raise ValueError(f"svd_ridge: n_components must be >= 1, got {n_components}")
        self.n_components, self.alpha, self.n_iter = int(n_components), float(alpha), int(n_iter)
        self.svd: TruncatedSVD | None = None
        self.ridge = Ridge(alpha=self.alpha)

    def _fit(self, x: Matrix, y: np.ndarray, x_val, y_val) -> None:
        genes, time = self.split_time(x)
        k = min(self.n_components, min(genes.shape) - 1)
        if k < 1:
            raise ValueError(f"svd_ridge: need at least 2 cells and 2 genes, got {genes.shape}")
        self.svd = TruncatedSVD(n_components=k, n_iter=self.n_iter, random_state=self.seed)
        self.ridge.fit(np.hstack([self.svd.fit_transform(genes), time]), y)

    def _predict(self, x: Matrix) -> np.ndarray:
        genes, time = self.split_time(x)
        return self.ridge.predict(np.hstack([self.svd.transform(genes), time]))

    def params(self) -> dict[str, Any]:
        return {"n_components": int(self.svd.n_components) if self.svd else self.n_components,
                "alpha": self.alpha}
