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

The 2-component mixtures are fitted for all cells (or all proteins) at once by a vectorised EM that follows
``mclust::Mclust(x, G = 2)`` for one-dimensional data, as dsb calls it: mclust's start (quantile classes),
convergence rule and model set (equal "E" or unequal "V" variances, chosen by BIC), and a singular fit (a
component collapsed onto tied values, as the exact zeros of log(x + 1) counts give) is rejected rather than
chosen; ``scripts/validate_dsb_mclust.py`` compares it with R. A Python loop over 70,000 cells with
scikit-learn would take tens of minutes.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from crossmodalnet.data.validate import DataError

_LOG_2PI = np.log(2.0 * np.pi)
_CHUNK_ROWS = 4096


def two_component_mixture(x: np.ndarray, max_iter: int = 1000, tol: float = 1e-5) -> dict[str, np.ndarray]:
    """Fit a 1-D two-component Gaussian mixture to every row of ``x`` at once, as ``mclust::Mclust(x, G = 2)``.

    Both of mclust's one-dimensional models are fitted, equal variances ("E") and unequal variances ("V"), from
    mclust's start (the two quantile classes of ``mclust:::qclass``) with its convergence rule, and the one with
    the better BIC is kept. As in mclust, a fit in which a component's variance collapses (a spike on tied values,
    e.g. the exact zeros of log(x + 1) counts) or a component empties is singular: its BIC is undefined and it
    is never chosen, so such rows fall back to "E". Without this the singular fit has an unbounded likelihood
    and would always win.

    Returns per row ``means`` (n, 2, sorted ascending), ``variances`` (n, 2), ``weights`` (n, 2), ``bic``
    (-2 loglik + p log m of the chosen model; inf where none) and ``model``: 0 = "E", 1 = "V", -1 = both
    singular (mclust returns no fit; the "E" estimates are reported).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] < 2:
        raise ValueError(f"need a 2-D array with at least 2 values per row, got shape {x.shape}")
    if x.shape[0] > _CHUNK_ROWS:  # bound the (rows, 2, values) temporaries of the EM
        parts = [two_component_mixture(x[i:i + _CHUNK_ROWS], max_iter, tol)
                 for i in range(0, x.shape[0], _CHUNK_ROWS)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    upper = x >= _qclass_split(x)[:, None]
    fit_e, fit_v = (_em(x, upper, equal_var, max_iter, tol) for equal_var in (True, False))
    bic_e = np.where(fit_e["singular"], np.inf, fit_e["bic"])
    bic_v = np.where(fit_v["singular"], np.inf, fit_v["bic"])
    choose_v = bic_v < bic_e
    out = {k: np.where(choose_v[:, None] if fit_e[k].ndim == 2 else choose_v, fit_v[k], fit_e[k])
           for k in ("means", "variances", "weights")}
    out["bic"] = np.minimum(bic_e, bic_v)
    out["model"] = np.where(choose_v, 1, np.where(np.isfinite(bic_e), 0, -1)).astype(np.int8)
    order = np.argsort(out["means"], axis=1, kind="stable")
    for k in ("means", "variances", "weights"):
        out[k] = np.take_along_axis(out[k], order, axis=1)
    return out


def negative_mean(x: np.ndarray) -> np.ndarray:
    """Mean of the lower mixture component of every row (the background / negative population)."""
    return two_component_mixture(x)["means"][:, 0]


def _qclass_split(x: np.ndarray) -> np.ndarray:
    """Per row, the value at which ``mclust:::qclass(x, 2)`` splits the values into its two start classes.

    qclass takes the quantiles at 0, 1/2, 1; while ties leave fewer than three distinct ones it takes more
    evenly spaced quantiles (0, 1/3, 2/3, 1, ...), dropping the points before the smallest gaps when it gets more
    than three. Values >= the middle one form the upper class.
    """
    xs = np.sort(x, axis=1)
    n, m = xs.shape
    split = xs[:, -1].copy()  # rows with fewer than 2 distinct values: everything in the upper class
    todo = np.arange(n)
    for n_q in range(3, m + 2):
        if todo.size == 0:
            break
        h = np.linspace(0.0, 1.0, n_q) * (m - 1)  # R's quantile type 7, numpy's default
        lo = np.floor(h).astype(int)
        hi = np.minimum(lo + 1, m - 1)
        rows = xs[todo]
        q = rows[:, lo] + (h - lo) * (rows[:, hi] - rows[:, lo])
        distinct = 1 + (np.diff(q, axis=1) > 0).sum(1)
        for i in np.flatnonzero(distinct >= 3):
            u = np.unique(q[i])
            if u.size > 3:
                u = np.delete(u, np.argsort(np.diff(u), kind="stable")[:u.size - 3])
            split[todo[i]] = u[1]
        todo = todo[distinct < 3]
    return split


def _em(x: np.ndarray, upper: np.ndarray, equal_var: bool, max_iter: int, tol: float) -> dict[str, np.ndarray]:
    """EM from the hard start classes ``upper``, as mclust's ``me`` (M-step first, stop on relative loglik change).

    A row is singular (mclust: "sigma-squared falls below threshold" / "mixing proportion fell below threshold")
    once a variance falls to ``floor`` (1e-6 of the row's variance: a point mass on the data's scale) or a
    component's weight to ~0; its EM stops there.
    """
    n, m = x.shape
    floor = np.maximum(x.var(axis=1) * 1e-6, 1e-12)
    r1 = upper.astype(np.float64)  # responsibility of the upper component (the lower one's is 1 - r1)
    means = np.zeros((n, 2))
    variances = np.ones((n, 2))
    weights = np.full((n, 2), 0.5)
    singular = np.zeros(n, dtype=bool)
    loglik = np.full(n, np.nan)
    hold = np.full(n, np.inf)
    active = np.arange(n)
    finishing = np.zeros(n, dtype=bool)  # converged: one last M-step from the final responsibilities, as mclust
    for _ in range(max_iter + 1):
        # M-step on the active rows
        xa = x[active]
        r0 = 1.0 - r1
        n1 = r1.sum(1)
        n0 = m - n1
        m0 = (r0 * xa).sum(1) / np.maximum(n0, 1e-300)
        m1 = (r1 * xa).sum(1) / np.maximum(n1, 1e-300)
        s0 = (r0 * (xa - m0[:, None]) ** 2).sum(1)
        s1 = (r1 * (xa - m1[:, None]) ** 2).sum(1)
        if equal_var:
            v0 = v1 = (s0 + s1) / m
        else:
            v0, v1 = s0 / np.maximum(n0, 1e-300), s1 / np.maximum(n1, 1e-300)
        fl = floor[active]
        bad = (v0 <= fl) | (v1 <= fl) | (np.minimum(n0, n1) <= 1e-10)
        v0, v1 = np.maximum(v0, fl), np.maximum(v1, fl)
        means[active] = np.stack([m0, m1], axis=1)
        variances[active] = np.stack([v0, v1], axis=1)
        weights[active] = np.stack([n0, n1], axis=1) / m
        singular[active[bad]] = True
        go_on = ~bad & ~finishing[active]
        if not go_on.any():
            break
        active, xa = active[go_on], xa[go_on]
        m0, m1, v0, v1, n0, n1 = (a[go_on, None] for a in (m0, m1, v0, v1, n0, n1))
        # E-step and log-likelihood at these parameters: log p(x) = lp0 + softplus(lp1 - lp0)
        lp0 = np.log(np.maximum(n0, 1e-300) / m) - 0.5 * (_LOG_2PI + np.log(v0)) - 0.5 * (xa - m0) ** 2 / v0
        lp1 = np.log(np.maximum(n1, 1e-300) / m) - 0.5 * (_LOG_2PI + np.log(v1)) - 0.5 * (xa - m1) ** 2 / v1
        d = lp1 - lp0
        softplus = np.maximum(d, 0.0) + np.log1p(np.exp(-np.abs(d)))
        ll = (lp0 + softplus).sum(1)
        loglik[active] = ll
        finishing[active] = np.abs(hold[active] - ll) / (1.0 + np.abs(ll)) <= tol
        hold[active] = ll
        r1 = np.exp(d - softplus)
    n_params = 4 if equal_var else 5
    bic = -2.0 * loglik + n_params * np.log(m)
    return {"means": means, "variances": variances, "weights": weights, "bic": bic, "singular": singular}


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
            fit = two_component_mixture(log_cells.T)
            no_fit = fit["model"] < 0
            if no_fit.any():  # mclust finds no non-singular fit (e.g. two distinct values): dsb leaves it uncentred
                warnings.warn(f"dsb: no background mixture could be fitted for {int(no_fit.sum())} protein(s) "
                              f"{self.proteins_[no_fit][:5].tolist()}; left uncentred (log(x + pseudocount)), "
                              f"as the R package does", stacklevel=2)
            self.center_ = np.where(no_fit, 0.0, fit["means"][:, 0])
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

    # -- saved with a model -----------------------------------------------------------------------------------
    _ARRAYS = ("center_", "spread_", "noise_center_", "noise_scale_", "loading_", "beta_")

    def state(self) -> dict:
        """The fitted transform as plain lists and numbers (JSON), so a saved model can normalise a query's raw
        ADT counts exactly as its training cells were (crossmodalnet.inference.outputs.score)."""
        out = {"pseudocount": self.pseudocount, "denoise": self.denoise, "isotype_controls": self.isotype_controls,
               "scale": self.scale, "isotype_pca_scale": self.isotype_pca_scale, "with_empty_": self.with_empty_,
               "proteins_": None if self.proteins_ is None else [str(p) for p in self.proteins_],
               "clip_": None if self.clip_ is None else [np.asarray(c).tolist() for c in self.clip_]}
        out.update({k: None if getattr(self, k) is None else np.asarray(getattr(self, k)).tolist()
                    for k in self._ARRAYS})
        return out

    @classmethod
    def from_state(cls, state: dict) -> "DSB":
        """The transform :meth:`state` described."""
        dsb = cls(pseudocount=state.get("pseudocount"), denoise=bool(state.get("denoise", True)),
                  isotype_controls=state.get("isotype_controls"), scale=state.get("scale", "standardize"),
                  isotype_pca_scale=bool(state.get("isotype_pca_scale", True)))
        dsb.with_empty_ = bool(state.get("with_empty_", False))
        dsb.proteins_ = None if state.get("proteins_") is None else pd.Index(state["proteins_"])
        for key in cls._ARRAYS:
            value = state.get(key)
            setattr(dsb, key, None if value is None else np.asarray(value, dtype=np.float64))
        clip = state.get("clip_")
        dsb.clip_ = None if clip is None else (np.asarray(clip[0]), np.asarray(clip[1]))
        return dsb

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
