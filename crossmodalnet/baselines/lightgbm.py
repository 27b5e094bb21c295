"""LightGBM (one gradient-boosted tree model per protein) with a randomised, cross-validated hyperparameter
search whose budget comes from the config (paper A.5: "randomized cross-validation").

The search picks one set of hyperparameters shared by all proteins; to bound its cost it runs on
``search_proteins`` randomly chosen proteins (all when null) and ``n_iter`` candidates x ``cv`` folds each. The final
model is then fitted on every protein with the chosen values.

Where the time goes, and what this module does about it: boosting rounds are nearly all of it (on BMMC, 480 cells x
997 genes, one booster: binning 0.085 s, 100 / 200 / 400 rounds 0.72 / 1.50 / 2.84 s of CPU), so

- the number of rounds is chosen by early stopping instead of being searched as ``n_estimators``: on the held-out
  fold of each search candidate (stopping ``early_stopping_rounds`` after its best round, at most ``max_rounds``);
  the final fit then gives every protein the search's best number (``final_rounds: search``), or stops each protein
  on the validation cells (``final_rounds: validation``; noisier with few validation cells);
- the genes are binned once (one LightGBM ``Dataset``, labels swapped per protein; the folds are its subsets, built
  once: ``lightgbm.cv`` re-subsets the data on every call, 11x slower here) instead of once per protein and fold;
- LightGBM runs on ``n_jobs`` threads (1 by default: several threads thrash on shared cores) with its row/column
  layout fixed (``force_col_wise``) and without ``deterministic`` (7x slower, measured).

Same machine, same process, default budget (8 candidates x 3 folds on 8 proteins), CPU seconds: BMMC 233.9 -> 58.5 s
(4.0x) at test per-cell Pearson 0.818 -> 0.817 (per protein 0.612 -> 0.610); simulator (1,000 cells x 500 genes x
20 proteins) 186.8 -> 95.9 s (1.9x) at 0.926 -> 0.924.

Progress goes to the ``crossmodalnet.baselines.lightgbm`` logger at INFO: one line per search candidate and one
per ``log_every`` proteins of the final fit, with the time so far and an estimate of what is left.
"""
from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy import stats

from crossmodalnet.baselines.base import Baseline, Matrix

log = logging.getLogger(__name__)

DEFAULT_SPACE: dict[str, Any] = {
    "learning_rate": {"dist": "loguniform", "low": 0.02, "high": 0.2},
    "num_leaves": [15, 31, 63],
    "min_child_samples": [10, 20, 40],
    "colsample_bytree": [0.3, 0.6, 1.0],
    "reg_lambda": {"dist": "loguniform", "low": 1e-3, "high": 10.0},
}
# scikit-learn names of the search space and base_params -> LightGBM's own
_NATIVE = {"colsample_bytree": "feature_fraction", "min_child_samples": "min_data_in_leaf",
           "reg_lambda": "lambda_l2", "reg_alpha": "lambda_l1", "subsample": "bagging_fraction",
           "subsample_freq": "bagging_freq", "min_child_weight": "min_sum_hessian_in_leaf",
           "min_split_gain": "min_gain_to_split"}
# parameters fixed when the Dataset is built (binning); the boosters must pass the same values
_DATASET_KEYS = ("max_bin", "min_data_in_bin", "bin_construct_sample_cnt")
FINAL_ROUNDS = ("validation", "search")


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
    # svd_components=auto keeps the genes: trees split on single genes, and on BMMC (same search, same seed) the genes
    # gave test per-cell Pearson 0.812 against 0.802 on 128 SVD components (issue 18 saw 0.866 vs 0.801 on PBMC)
    auto_svd_input = False

    def __init__(self, n_iter: int = 8, cv: int = 3, search_proteins: int | None = 8,
                 search_space: dict[str, Any] | None = None, n_jobs: int = 1,
                 base_params: dict[str, Any] | None = None, max_rounds: int = 400,
                 early_stopping_rounds: int | None = 10, final_rounds: str = "search",
                 log_every: int = 20, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if n_iter < 0 or cv < 2:
            raise ValueError(f"lightgbm: need n_iter >= 0 and cv >= 2, got n_iter={n_iter}, cv={cv}")
        if final_rounds not in FINAL_ROUNDS:
            raise ValueError(f"lightgbm: final_rounds must be one of {FINAL_ROUNDS}, got {final_rounds!r}")
        if max_rounds < 1 or (early_stopping_rounds is not None and early_stopping_rounds < 1):
            raise ValueError(f"lightgbm: need max_rounds >= 1 and early_stopping_rounds >= 1 (or null), got "
                             f"{max_rounds}, {early_stopping_rounds}")
        self.n_iter, self.cv, self.search_proteins = int(n_iter), int(cv), search_proteins
        self.search_space = dict(DEFAULT_SPACE if search_space is None else search_space)
        self.n_jobs = int(n_jobs)
        self.base_params = {"learning_rate": 0.05, **(base_params or {})}
        self.max_rounds, self.final_rounds = int(max_rounds), final_rounds
        self.early_stopping_rounds = None if early_stopping_rounds is None else int(early_stopping_rounds)
        self.log_every = max(1, int(log_every))
        self.best_params_: dict[str, Any] = {}
        self.search_score_: float | None = None
        self.search_rounds_: int | None = None
        self.boosters_: list = []
        self.rounds_: list[int] = []

    # -- parameters --------------------------------------------------------------------------------------------
    def _native(self, params: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """LightGBM's own parameters for ``base_params`` + ``params`` (scikit-learn names translated), and the
        number of boosting rounds: ``n_estimators`` where given (at most ``max_rounds``), else ``max_rounds``;
        with early stopping a cap, the stopping round decides."""
        merged = {**self.base_params, **params}
        n_estimators = merged.pop("n_estimators", None)  # a fixed number of rounds, or a cap under early stopping
        cap = self.max_rounds if n_estimators is None else min(int(n_estimators), self.max_rounds)
        native = {_NATIVE.get(k, k): v for k, v in merged.items()}
        native.update(objective=native.get("objective", "regression"), verbose=-1, num_threads=self.n_jobs,
                      seed=self.seed, feature_pre_filter=False, force_col_wise=True)
        return native, cap

    def _dataset_params(self) -> dict[str, Any]:
        native, _ = self._native({})
        return {k: native[k] for k in (*_DATASET_KEYS, "feature_pre_filter", "verbose") if k in native}

    # -- fit ---------------------------------------------------------------------------------------------------
    def _fit(self, x: Matrix, y: np.ndarray, x_val, y_val) -> None:
        import lightgbm as lgb  # imported here: it is slow to import

        start = time.perf_counter()
        data = lgb.Dataset(_float32(x), label=y[:, 0], params=self._dataset_params(), free_raw_data=False)
        data.construct()  # binned once; every protein and fold reuses the bins
        if self.n_iter > 0 and self.search_space:
            self.best_params_ = self._search(data, y)
        params, cap = self._native(self.best_params_)
        val = None
        use_val = (self.final_rounds == "validation" and self.early_stopping_rounds is not None
                   and x_val is not None and y_val is not None and len(y_val) >= 2)
        if use_val:
            val = lgb.Dataset(_float32(x_val), label=y_val[:, 0], reference=data, free_raw_data=False,
                              params=self._dataset_params())  # the reference's bins and parameters
            val.construct()
        elif self.search_rounds_ is not None:
            cap = min(cap, self.search_rounds_)  # the search's best number of rounds
        how = ("early stopping on the validation cells, at most %d rounds" % cap if use_val
               else "%d rounds" % cap)
        log.info("lightgbm: fitting %d proteins (%s)", y.shape[1], how)
        self.boosters_, self.rounds_ = [], []
        t0 = time.perf_counter()
        for j in range(y.shape[1]):
            data.set_label(y[:, j])
            if val is not None:
                val.set_label(y_val[:, j])
                booster = lgb.train({**params, "metric": "l2"}, data, num_boost_round=cap, valid_sets=[val],
                                    callbacks=[lgb.early_stopping(self.early_stopping_rounds, verbose=False)])
                rounds = int(booster.best_iteration or booster.current_iteration())
            else:
                booster = lgb.train(params, data, num_boost_round=cap)
                rounds = int(booster.current_iteration())
            booster.free_dataset()
            self.boosters_.append(booster)
            self.rounds_.append(rounds)  # prediction uses these rounds (the best on the validation cells)
            done = j + 1
            if done % self.log_every == 0 or done == y.shape[1]:
                spent = time.perf_counter() - t0
                log.info("lightgbm: %d/%d proteins fitted (%.0f s%s)", done, y.shape[1], spent,
                         f", about {spent / done * (y.shape[1] - done):.0f} s left" if done < y.shape[1] else "")
        log.info("lightgbm: fitted in %.1f s; rounds per protein: median %d (%d-%d)", time.perf_counter() - start,
                 int(np.median(self.rounds_)), min(self.rounds_), max(self.rounds_))

    def _search(self, data, y: np.ndarray) -> dict[str, Any]:
        """Random search of ``n_iter`` candidates, each scored by ``cv``-fold cross-validated MSE (with early
        stopping on the held-out fold) on ``search_proteins`` proteins; returns the best candidate."""
        import lightgbm as lgb
        from sklearn.model_selection import KFold, ParameterSampler

        rng = np.random.default_rng(self.seed)
        k = y.shape[1] if not self.search_proteins else min(int(self.search_proteins), y.shape[1])
        cols = np.sort(rng.choice(y.shape[1], size=k, replace=False))
        space = {name: _distribution(spec) for name, spec in self.search_space.items()}
        # the folds are subsets of the binned Dataset, built once; labels are swapped per protein (lightgbm.cv
        # re-subsets the data on every call: measured 11x slower than this loop on the simulator)
        folds = [(data.subset(sorted(tr)).construct(), data.subset(sorted(te)).construct(), tr, te)
                 for tr, te in KFold(self.cv, shuffle=True, random_state=self.seed).split(np.zeros(y.shape[0]))]
        best: tuple[float, dict, int] | None = None
        t0 = time.perf_counter()
        candidates = list(ParameterSampler(space, self.n_iter, random_state=self.seed))
        for i, candidate in enumerate(candidates, start=1):
            candidate = {name: _plain(v) for name, v in candidate.items()}
            params, cap = self._native(candidate)
            scores, rounds = [], []
            for j in cols:
                for fit_part, held_out, tr, te in folds:
                    fit_part.set_label(y[tr, j])
                    held_out.set_label(y[te, j])
                    score, n = self._fit_fold(lgb, params, cap, fit_part, held_out)
                    scores.append(score)
                    rounds.append(n)
            score, n_rounds = float(np.mean(scores)), int(np.ceil(np.mean(rounds)))
            if best is None or score < best[0]:
                best = (score, candidate, n_rounds)
            log.info("lightgbm search %d/%d: cv MSE %.4f in %d rounds (best %.4f) (%.0f s)", i, len(candidates),
                     score, n_rounds, best[0], time.perf_counter() - t0)
        score, candidate, n_rounds = best
        self.search_score_, self.search_rounds_ = -score, n_rounds
        log.info("lightgbm search (%d candidates x %d folds on %d proteins): best %s, %d rounds, cv MSE %.4f",
                 self.n_iter, self.cv, k, candidate, n_rounds, score)
        return candidate

    def _fit_fold(self, lgb, params: dict, cap: int, fit_part, held_out) -> tuple[float, int]:
        """(held-out MSE at the best round, that round) of one fold: early stopping on the held-out cells, or
        all ``cap`` rounds without it."""
        curve: dict = {}
        callbacks = [lgb.record_evaluation(curve)]
        if self.early_stopping_rounds is not None:
            callbacks.append(lgb.early_stopping(self.early_stopping_rounds, verbose=False))
        lgb.train({**params, "metric": "l2"}, fit_part, num_boost_round=cap, valid_sets=[held_out],
                  valid_names=["held_out"], callbacks=callbacks)
        mse = np.asarray(curve["held_out"]["l2"])
        return float(mse.min()), int(np.argmin(mse)) + 1

    # -- predict -----------------------------------------------------------------------------------------------
    def _predict(self, x: Matrix) -> np.ndarray:
        x = _float32(x)
        if getattr(self, "model", None) is not None and not self.boosters_:  # saved before the native fit
            return self.model.predict(x)
        return np.column_stack([b.predict(x, num_iteration=n) for b, n in zip(self.boosters_, self.rounds_)])

    def params(self) -> dict[str, Any]:
        out = {f"best_{k}": v for k, v in self.best_params_.items() if isinstance(v, (int, float))}
        if self.search_score_ is not None:
            out["search_cv_mse"] = -self.search_score_
        if self.search_rounds_ is not None:
            out["search_rounds"] = self.search_rounds_
        if self.rounds_:
            out["median_rounds"] = float(np.median(self.rounds_))
        return out


def _float32(x: Matrix) -> Matrix:
    if sp.issparse(x):
        return sp.csr_matrix(x, dtype=np.float32)
    return np.asarray(x, dtype=np.float32)


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v
