"""LightGBM (one gradient-boosted tree model per protein) with a randomised, cross-validated hyperparameter
search whose budget comes from the config (paper A.5: "randomized cross-validation").

The search picks one set of hyperparameters shared by all proteins; to bound its cost it runs on
``search_proteins`` randomly chosen proteins (all when null) and ``n_iter`` x ``cv`` fits each. The final
model is then fitted on every protein with the chosen values.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
from scipy import stats
from sklearn.model_selection import KFold, RandomizedSearchCV
from sklearn.multioutput import MultiOutputRegressor

from crossmodalnet.baselines.base import Baseline, Matrix

log = logging.getLogger(__name__)

DEFAULT_SPACE: dict[str, Any] = {
    "n_estimators": [100, 200, 400],
    "learning_rate": {"dist": "loguniform", "low": 0.02, "high": 0.2},
    "num_leaves": [15, 31, 63],
    "min_child_samples": [10, 20, 40],
    "colsample_bytree": [0.3, 0.6, 1.0],
    "reg_lambda": {"dist": "loguniform", "low": 1e-3, "high": 10.0},
}


def _distribution(spec: Any):
    """A list is a choice; {dist: uniform|loguniform|randint, low, high} a scipy distribution."""
    if isinstance(spec, (list, tuple)):
        return list(spec)
    if isinstance(spec, dict):
        kind, low, high = spec.get("dist"), spec.get("low"), spec.get("high")
        if kind == "uniform":
            return stats.uniform(low, high - low)
        if kind == "loguniform":
            return stats.loguniform(low, high)
        if kind == "randint":
            return stats.randint(low, high + 1)
        raise ValueError(f"lightgbm search space: unknown dist {kind!r} (use uniform, loguniform or randint)")
    return [spec]


class LightGBMBaseline(Baseline):
    name = "lightgbm"

    def __init__(self, n_iter: int = 8, cv: int = 3, search_proteins: int | None = 8,
                 search_space: dict[str, Any] | None = None, n_jobs: int = 1,
                 base_params: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if n_iter < 0 or cv < 2:
            raise ValueError(f"lightgbm: need n_iter >= 0 and cv >= 2, got n_iter={n_iter}, cv={cv}")
        self.n_iter, self.cv, self.search_proteins = int(n_iter), int(cv), search_proteins
        self.search_space = dict(DEFAULT_SPACE if search_space is None else search_space)
        self.n_jobs = int(n_jobs)
        self.base_params = {"n_estimators": 200, "learning_rate": 0.05, "verbose": -1, **(base_params or {})}
        self.best_params_: dict[str, Any] = {}
        self.search_score_: float | None = None
        self.model: MultiOutputRegressor | None = None

    def _regressor(self, **params: Any):
        from lightgbm import LGBMRegressor  # imported here: it is slow to import

        return LGBMRegressor(**{**self.base_params, **params, "random_state": self.seed,
                                "n_jobs": self.n_jobs, "verbose": -1})

    def _fit(self, x: Matrix, y: np.ndarray, x_val, y_val) -> None:
        x = x.astype(np.float32) if hasattr(x, "astype") else x
        if self.n_iter > 0 and self.search_space:
            self.best_params_ = self._search(x, y)
        self.model = MultiOutputRegressor(self._regressor(**self.best_params_))
        self.model.fit(x, y)

    def _search(self, x: Matrix, y: np.ndarray) -> dict[str, Any]:
        rng = np.random.default_rng(self.seed)
        k = y.shape[1] if not self.search_proteins else min(int(self.search_proteins), y.shape[1])
        cols = np.sort(rng.choice(y.shape[1], size=k, replace=False))
        space = {f"estimator__{name}": _distribution(spec) for name, spec in self.search_space.items()}
        search = RandomizedSearchCV(
            MultiOutputRegressor(self._regressor()), space, n_iter=self.n_iter, scoring="neg_mean_squared_error",
            cv=KFold(self.cv, shuffle=True, random_state=self.seed), random_state=self.seed, refit=False,
            n_jobs=1)
        search.fit(x, y[:, cols])
        self.search_score_ = float(search.best_score_)
        best = {name.removeprefix("estimator__"): _plain(v) for name, v in search.best_params_.items()}
        log.info("lightgbm search (%d candidates x %d folds on %d proteins): best %s, cv MSE %.4f",
                 self.n_iter, self.cv, k, best, -self.search_score_)
        return best

    def _predict(self, x: Matrix) -> np.ndarray:
        x = x.astype(np.float32) if hasattr(x, "astype") else x
        return self.model.predict(x)

    def params(self) -> dict[str, Any]:
        out = {f"best_{k}": v for k, v in self.best_params_.items() if isinstance(v, (int, float))}
        if self.search_score_ is not None:
            out["search_cv_mse"] = -self.search_score_
        return out


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v
