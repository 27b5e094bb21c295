"""dsb: denoised and scaled by background protein normalisation (Mulè, Martins & Tsang 2022), in numpy.

Two modes, as the R package ``dsb`` (the paper uses ``DSBNormalizeProtein`` v1.0.2):

* with empty droplets (``DSBNormalizeProtein``): log(x + 10) of each protein is centred and scaled by the mean
  and standard deviation of the same protein in empty droplets (the ambient background);
* without empty droplets (``ModelNegativeADTnorm``): log(x + 1) of each protein minus the mean of its negative
  (lower) population in a 2-component Gaussian mixture across cells.

Then, in both modes, step II ("denoise"): each cell's technical component is the mean of the lower
component of a 2-component mixture over that cell's proteins; with isotype controls it is the first principal
component of (isotype values, that mean), standardised as ``prcomp(scale = TRUE)`` does; it is regressed out
of every protein (``limma::removeBatchEffect`` with a covariate: x - beta * noise).

Everything that is estimated across cells (background, negative population, PCA, regression slopes, clip
quantiles) is fitted once on the training split (:meth:`DSB.fit`) and applied unchanged to each split
(:meth:`DSB.transform`), so ``fit(train).transform(train)`` is dsb on the training cells and no information
flows from validation/test cells into their own normalisation. The per-cell mixtures need no fit.

The 2-component mixtures are fitted for all cells (or all proteins) at once by a vectorised EM, choosing
between equal and unequal variances by BIC, as ``mclust::Mclust(G = 2)`` does for one-dimensional data; a
Python loop over 70,000 cells with scikit-learn would take tens of minutes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from crossmodalnet.data.validate import DataError

_LOG_2PI = np.log(2.0 * np.pi)
_CHUNK_ROWS = 4096


def two_component_mixture(x: np.ndarray, max_iter: int = 1000, tol: float = 1e-5) -> dict[str, np.ndarray]:
    """Fit a 1-D two-component Gaussian mixture to every row of ``x`` at once.

    Returns the per-row ``means`` (n, 2, sorted ascending), ``variances`` (n, 2), ``weights`` (n, 2) and
    ``bic`` of the model chosen by BIC between equal variances ("E") and unequal variances ("V").
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] < 2:
        raise ValueError(f"need a 2-D array with at least 2 values per row, got shape {x.shape}")
    if x.shape[0] > _CHUNK_ROWS:  # bound the (rows, 2, values) temporaries of the EM
        parts = [two_component_mixture(x[i:i + _CHUNK_ROWS], max_iter, tol)
                 for i in range(0, x.shape[0], _CHUNK_ROWS)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    fits = [_em(x, equal_var, max_iter, tol) for equal_var in (True, False)]
    choose_v = fits[1]["bic"] < fits[0]["bic"]
    out = {k: np.where(choose_v[:, None] if fits[0][k].ndim == 2 else choose_v, fits[1][k], fits[0][k])
           for k in ("means", "variances", "weights", "bic")}
    order = np.argsort(out["means"], axis=1)
    for k in ("means", "variances", "weights"):
        out[k] = np.take_along_axis(out[k], order, axis=1)
    return out


def negative_mean(x: np.ndarray) -> np.ndarray:
    """Mean of the lower mixture component of every row (the background / negative population)."""
    return two_component_mixture(x)["means"][:, 0]


def _em(x: np.ndarray, equal_var: bool, max_iter: int, tol: float) -> dict[str, np.ndarray]:
    n, m = x.shape
    row_var = x.var(axis=1)
    floor = np.maximum(row_var * 1e-6, 1e-10)
    # deterministic start: 1-D k-means from the quartiles (mclust starts from a hierarchical clustering)
    mu0, mu1 = np.quantile(x, [0.25, 0.75], axis=1)
    for _ in range(10):
        lower = np.abs(x - mu0[:, None]) <= np.abs(x - mu1[:, None])
        n_lo = lower.sum(1)
        mu0 = np.where(n_lo > 0, (x * lower).sum(1) / np.maximum(n_lo, 1), mu0)
        mu1 = np.where(n_lo < m, (x * ~lower).sum(1) / np.maximum(m - n_lo, 1), mu1)
    w1 = np.clip((m - n_lo) / m, 0.05, 0.95)
    means = np.stack([mu0, mu1], axis=1)
    variances = np.repeat(np.maximum(row_var / 2, floor)[:, None], 2, axis=1)
    weights = np.stack([1 - w1, w1], axis=1)
    loglik = np.full(n, -np.inf)
    active = np.arange(n)
    for _ in range(max_iter):
        xa, mu, var, w = x[active], means[active], variances[active], weights[active]
        lp0 = np.log(w[:, :1]) - 0.5 * (_LOG_2PI + np.log(var[:, :1])) - 0.5 * (xa - mu[:, :1]) ** 2 / var[:, :1]
        lp1 = np.log(w[:, 1:]) - 0.5 * (_LOG_2PI + np.log(var[:, 1:])) - 0.5 * (xa - mu[:, 1:]) ** 2 / var[:, 1:]
        log_norm = np.logaddexp(lp0, lp1)
        ll = log_norm.sum(1)
        r1 = np.exp(lp1 - log_norm)
        r0 = 1.0 - r1
        n1 = r1.sum(1) + 1e-12
        n0 = r0.sum(1) + 1e-12
        m0 = (r0 * xa).sum(1) / n0
        m1 = (r1 * xa).sum(1) / n1
        s0 = (r0 * (xa - m0[:, None]) ** 2).sum(1)
        s1 = (r1 * (xa - m1[:, None]) ** 2).sum(1)
        fl = floor[active]
        if equal_var:
            v = np.maximum((s0 + s1) / m, fl)
            v0 = v1 = v
        else:
            v0, v1 = np.maximum(s0 / n0, fl), np.maximum(s1 / n1, fl)
        converged = np.abs(ll - loglik[active]) <= tol * np.maximum(1.0, np.abs(ll))
        loglik[active] = ll
        means[active] = np.stack([m0, m1], axis=1)
        variances[active] = np.stack([v0, v1], axis=1)
        weights[active] = np.stack([n0, n1], axis=1) / m
        active = active[~converged]
        if active.size == 0:
            break
    n_params = 4 if equal_var else 5
    bic = -2.0 * loglik + n_params * np.log(m)
    return {"means": means, "variances": variances, "weights": weights, "bic": bic}


@dataclass
class DSB:
    """dsb fitted on one set of cells (the training split) and applied to any cells with the same proteins.

    ``empty`` (given to :meth:`fit`) selects the mode: a DataFrame of empty-droplet counts -> DSBNormalizeProtein,
    None -> ModelNegativeADTnorm. ``pseudocount`` defaults to the R package's: 10 with empty droplets, 1 without.
    ``isotype_pca_scale=False`` reproduces ``muon.prot.pp.dsb``, which skips the standardisation of the noise
    matrix that R's ``prcomp(scale = TRUE)`` does.
    """

    pseudocount: float | None = None
    denoise: bool = True
    isotype_controls: Sequence[str] | None = None
    scale: str = "standardize"
    quantile_clip: Sequence[float] | None = None
    isotype_pca_scale: bool = True
    proteins_: pd.Index | None = field(default=None, init=False)
    center_: np.ndarray | None = field(default=None, init=False)
    spread_: np.ndarray | None = field(default=None, init=False)
    noise_center_: np.ndarray | None = field(default=None, init=False)
    noise_scale_: np.ndarray | None = field(default=None, init=False)
    loading_: np.ndarray | None = field(default=None, init=False)
    beta_: np.ndarray | None = field(default=None, init=False)
    clip_: tuple[np.ndarray, np.ndarray] | None = field(default=None, init=False)
    with_empty_: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if self.scale not in ("standardize", "mean_subtract"):
            raise DataError(f"dsb scale must be 'standardize' or 'mean_subtract', got {self.scale!r}")
        if self.pseudocount is not None and self.pseudocount <= 0:
            raise DataError(f"dsb pseudocount must be > 0, got {self.pseudocount}")
        if self.isotype_controls is not None:
            self.isotype_controls = [str(i) for i in self.isotype_controls]
            if not self.isotype_controls:
                self.isotype_controls = None
        if self.quantile_clip is not None:
            lo, hi = (float(q) for q in self.quantile_clip)
            if not 0 <= lo < hi <= 1:
                raise DataError(f"dsb quantile_clip must be two quantiles 0 <= low < high <= 1, got "
                                f"{list(self.quantile_clip)}")

    # -- fit / transform ---------------------------------------------------------------------------------------
    def fit(self, cells: pd.DataFrame, empty: pd.DataFrame | None = None) -> "DSB":
        """Estimate background, technical-component model and regression slopes on ``cells`` (raw counts)."""
        counts = self._counts(cells, "cells")
        self.proteins_ = pd.Index(cells.columns.astype(str))
        self._check_isotypes(self.proteins_)
        self.with_empty_ = empty is not None
        pc = self._pseudocount()
        log_cells = np.log(counts + pc)
        if empty is not None:
            missing = self.proteins_.difference(pd.Index(empty.columns.astype(str)))
            if len(missing):
                raise DataError(f"empty droplets lack {len(missing)} of the cells' proteins, e.g. "
                                f"{missing[:5].tolist()}")
            if len(empty) < 2:
                raise DataError(f"dsb needs at least 2 empty droplets, got {len(empty)}")
            empty = empty.set_axis(empty.columns.astype(str), axis=1)[self.proteins_]
            log_empty = np.log(self._counts(empty, "empty droplets") + pc)
            self.center_ = log_empty.mean(0)
            sd = log_empty.std(0, ddof=1)
            if self.scale == "standardize" and (sd <= 0).any():
                flat = self.proteins_[sd <= 0][:5].tolist()
                raise DataError(f"proteins {flat} are constant in the empty droplets: dsb cannot scale them "
                                f"(use scale=mean_subtract)")
            self.spread_ = sd if self.scale == "standardize" else np.ones_like(sd)
        else:
            self.center_ = negative_mean(log_cells.T)
            self.spread_ = np.ones(len(self.proteins_))
        norm = (log_cells - self.center_) / self.spread_
        if self.denoise:
            noise = self._fit_noise(norm)
            xc = noise - noise.mean()
            denom = float(xc @ xc)
            self.beta_ = (xc @ (norm - norm.mean(0))) / denom if denom > 0 else np.zeros(norm.shape[1])
            norm = norm - np.outer(noise, self.beta_)
        if self.quantile_clip is not None:
            self.clip_ = (np.quantile(norm, self.quantile_clip[0], axis=0),
                          np.quantile(norm, self.quantile_clip[1], axis=0))
        return self

    def transform(self, cells: pd.DataFrame) -> pd.DataFrame:
        """dsb values of ``cells`` with the parameters fitted on the training cells."""
        if self.proteins_ is None:
            raise RuntimeError("DSB.transform called before fit")
        names = pd.Index(cells.columns.astype(str))
        if not names.equals(self.proteins_):
            missing = self.proteins_.difference(names)
            raise DataError(f"proteins differ from those dsb was fitted on (missing e.g. {missing[:5].tolist()})")
        norm = (np.log(self._counts(cells, "cells") + self._pseudocount()) - self.center_) / self.spread_
        if self.denoise:
            norm = norm - np.outer(self._noise(norm), self.beta_)
        if self.clip_ is not None:
            norm = np.clip(norm, self.clip_[0], self.clip_[1])
        return pd.DataFrame(norm.astype(np.float32), index=cells.index, columns=self.proteins_)

    def fit_transform(self, cells: pd.DataFrame, empty: pd.DataFrame | None = None) -> pd.DataFrame:
        return self.fit(cells, empty).transform(cells)

    # -- technical component ---------------------------------------------------------------------------------
    def _noise_matrix(self, norm: np.ndarray) -> np.ndarray:
        background = negative_mean(norm)[:, None]
        if not self.isotype_controls:
            return background
        iso = self.proteins_.get_indexer(self.isotype_controls)
        return np.hstack([norm[:, iso], background])

    def _fit_noise(self, norm: np.ndarray) -> np.ndarray:
        mat = self._noise_matrix(norm)
        if mat.shape[1] == 1:
            return mat[:, 0]
        self.noise_center_ = mat.mean(0)
        sd = mat.std(0, ddof=1) if self.isotype_pca_scale else np.ones(mat.shape[1])
        self.noise_scale_ = np.where(sd > 0, sd, 1.0)
        z = (mat - self.noise_center_) / self.noise_scale_
        _, _, vt = np.linalg.svd(z, full_matrices=False)
        self.loading_ = vt[0]
        return z @ self.loading_

    def _noise(self, norm: np.ndarray) -> np.ndarray:
        mat = self._noise_matrix(norm)
        if mat.shape[1] == 1:
            return mat[:, 0]
        return ((mat - self.noise_center_) / self.noise_scale_) @ self.loading_

    # -- helpers ---------------------------------------------------------------------------------------------
    def _pseudocount(self) -> float:
        if self.pseudocount is not None:
            return float(self.pseudocount)
        return 10.0 if self.with_empty_ else 1.0

    def _check_isotypes(self, proteins: pd.Index) -> None:
        if not self.isotype_controls:
            return
        if not self.denoise:
            raise DataError("isotype controls are only used by dsb's denoising step; set denoise=true or "
                            "drop isotype_controls")
        absent = [i for i in self.isotype_controls if i not in proteins]
        if absent:
            hint = [p for p in proteins if "iso" in p.lower() or "igg" in p.lower()][:8]
            raise DataError(f"isotype controls {absent} named in the config are not among the proteins"
                            + (f"; candidates present: {hint}" if hint else ""))

    @staticmethod
    def _counts(frame: pd.DataFrame, what: str) -> np.ndarray:
        values = frame.to_numpy(dtype=np.float64)
        if values.shape[0] == 0:
            raise DataError(f"dsb got no {what}")
        if not np.isfinite(values).all():
            raise DataError(f"dsb input ({what}) contains NaN/inf")
        if (values < 0).any():
            row, col = np.argwhere(values < 0)[0]
            raise DataError(f"dsb needs raw ADT counts, but {what} hold negative values (e.g. cell "
                            f"{frame.index[row]!r}, protein {frame.columns[col]!r}): already normalised?")
        return values


def dsb(cells: pd.DataFrame, empty: pd.DataFrame | None = None, **kwargs) -> pd.DataFrame:
    """dsb on one set of cells (fit and apply on the same cells): the R package's behaviour."""
    return DSB(**kwargs).fit_transform(cells, empty)
