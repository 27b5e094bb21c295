"""Time as an input feature for the baselines (issue 18): one-hot, polynomial or natural-spline features of a
cell's time, fitted on the training cells and kept with the model so prediction at a new time works.

Why: the paper compares CrossmodalNet only with baselines that never see the time. A fair comparison hands every
baseline the time too, as the columns this module builds (``model.time_features``):

- ``none``: no time input (the paper's baselines).
- ``onehot``: one column per training time. It only knows the times seen in training: a cell at any other time is
  an error that names the time (use a numeric encoding there).
- ``poly``: ``u, u^2, ..., u^degree`` with ``u`` the numeric time standardised on the training cells; defined at
  every time, so it interpolates and extrapolates (as a polynomial does).
- ``spline``: a natural cubic spline basis in ``u`` (ESL eq. 5.4-5.5; knots at the distinct training times, or
  ``knots`` evenly spaced over their range), without its constant column: smooth between the knots and linear
  beyond the boundary knots, which keeps extrapolation tame.

The cells' times arrive as the time weights every model of the project reads (``crossmodalnet.data.timepoints``:
one-hot on the learned times for a seen time, interpolation weights for an unseen one inside the range, linear
extrapolation weights beyond it, so ``weights @ values`` is the numeric time itself). Every column is then
standardised on the training cells (mean 0, SD 1), so ridge penalties and network inputs see it on the scale of
everything else. A column that is constant on the training cells, or a linear combination of the columns
before it there (``u^2`` with only two training times), is dropped: it adds nothing in training, and at a new
time it would meet a direction no training cell fixed (an MLP's untrained initial weights). Numeric encodings need numeric
times; categorical conditions (e.g. donors) take ``onehot``.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from crossmodalnet.data.timepoints import TimeAxis

TIME_FEATURES = ("none", "onehot", "poly", "spline")


class TimeFeatureError(ValueError):
    """Time features that cannot be built for these cells; the message says which time and what to use."""


def natural_spline_basis(x: np.ndarray, knots: Sequence[float]) -> np.ndarray:
    """Natural cubic spline basis at ``x`` with K sorted ``knots``, without the constant: (n, K - 1) columns
    ``x, d_1 - d_{K-1}, ..., d_{K-2} - d_{K-1}``, ``d_k(x) = ((x - xi_k)_+^3 - (x - xi_K)_+^3) / (xi_K - xi_k)``.

    Every column is linear below the first and beyond the last knot (the natural spline's boundary condition)."""
    x = np.asarray(x, dtype=np.float64)
    knots = np.asarray(knots, dtype=np.float64)
    cols = [x]
    if len(knots) >= 3:
        last = knots[-1]

        def d(j: int) -> np.ndarray:
            return (np.clip(x - knots[j], 0, None) ** 3 - np.clip(x - last, 0, None) ** 3) / (last - knots[j])

        d_pen = d(len(knots) - 2)
        cols += [d(j) - d_pen for j in range(len(knots) - 2)]
    return np.stack(cols, axis=1)


class TimeFeatures:
    """``fit(weights, axis)`` on the training cells, then ``transform(weights)`` -> (cells x n_features) float32.

    ``weights``: (cells x learned times) time weights over ``axis`` (a TimeAxis or its ``to_dict()``)."""

    def __init__(self, kind: str = "none", degree: int = 2, knots: int | None = None) -> None:
        if kind not in TIME_FEATURES:
            raise ValueError(f"time_features must be one of {TIME_FEATURES}, got {kind!r}")
        if kind == "poly" and int(degree) < 1:
            raise ValueError(f"time_degree must be >= 1, got {degree}")
        if kind == "spline" and knots is not None and int(knots) < 2:
            raise ValueError(f"time_knots must be >= 2 or null (knots at the training times), got {knots}")
        self.kind, self.degree = kind, int(degree)
        self.knots = None if knots is None else int(knots)
        self.axis: TimeAxis | None = None
        self.t_mean_ = self.t_scale_ = 0.0
        self.knots_: np.ndarray | None = None
        self.center_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None
        self.keep_: np.ndarray | None = None   # columns not constant on the training cells

    @property
    def enabled(self) -> bool:
        return self.kind != "none"

    @property
    def fitted(self) -> bool:
        return self.center_ is not None

    @property
    def n_features(self) -> int:
        if not self.enabled:
            return 0
        if self.center_ is None:
            raise RuntimeError("time features: call fit() first")
        return len(self.center_)

    def fit(self, weights: np.ndarray, axis: TimeAxis | dict[str, Any]) -> "TimeFeatures":
        """Learn the encoding and the column scaling from the training cells' time weights."""
        if not self.enabled:
            return self
        self.axis = axis if isinstance(axis, TimeAxis) else TimeAxis.from_dict(axis)
        if self.axis.n_times < 2:
            raise TimeFeatureError(f"time_features={self.kind} needs at least 2 training times, got "
                                   f"{self.axis.labels}; use time_features=none")
        if self.kind != "onehot" and self.axis.values is None:
            raise TimeFeatureError(f"time_features={self.kind} needs numeric times; the training times "
                                   f"{self.axis.labels} are categorical: use time_features=onehot")
        weights = self._check_weights(weights)
        if self.kind != "onehot":
            t = self._numeric(weights)
            self.t_mean_, sd = float(t.mean()), float(t.std())
            self.t_scale_ = sd if sd > 0 else 1.0
            seen = (np.asarray(self.axis.values, dtype=np.float64) - self.t_mean_) / self.t_scale_
            self.knots_ = seen if self.knots is None else np.linspace(seen.min(), seen.max(), self.knots)
        raw = self._raw(weights)
        sd = raw.std(0)
        self.keep_ = _independent_columns((raw - raw.mean(0)) / np.where(sd > 0, sd, 1.0))
        if not self.keep_.any():
            raise TimeFeatureError(f"time_features={self.kind}: every time column is constant on the training "
                                   f"cells (training times {self.axis.labels})")
        self.center_ = raw.mean(0)[self.keep_]
        self.scale_ = sd[self.keep_]
        return self

    def transform(self, weights: np.ndarray) -> np.ndarray:
        """Standardised time features of these cells (cells x n_features)."""
        if not self.enabled:
            return np.zeros((len(weights), 0), dtype=np.float32)
        if not self.fitted:
            raise RuntimeError("time features: call fit() first")
        raw = self._raw(self._check_weights(weights))[:, self.keep_]
        return ((raw - self.center_) / self.scale_).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild the fitted features (stored in a checkpoint's hyperparameters)."""
        return {"kind": self.kind, "degree": self.degree, "knots": self.knots,
                "axis": None if self.axis is None else self.axis.to_dict(), "t_mean": self.t_mean_,
                "t_scale": self.t_scale_, "knots_": None if self.knots_ is None else self.knots_.tolist(),
                "center": None if self.center_ is None else self.center_.tolist(),
                "scale": None if self.scale_ is None else self.scale_.tolist(),
                "keep": None if self.keep_ is None else self.keep_.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TimeFeatures":
        out = cls(d["kind"], d["degree"], d["knots"])
        out.axis = None if d["axis"] is None else TimeAxis.from_dict(d["axis"])
        out.t_mean_, out.t_scale_ = float(d["t_mean"]), float(d["t_scale"])
        for key, attr in (("knots_", "knots_"), ("center", "center_"), ("scale", "scale_")):
            setattr(out, attr, None if d[key] is None else np.asarray(d[key], dtype=np.float64))
        out.keep_ = None if d.get("keep") is None else np.asarray(d["keep"], dtype=bool)
        return out

    # -- internals ------------------------------------------------------------------------------------------------
    def _check_weights(self, weights: np.ndarray) -> np.ndarray:
        w = np.asarray(weights.numpy() if hasattr(weights, "numpy") else weights, dtype=np.float64)
        if w.ndim != 2 or w.shape[1] != self.axis.n_times:
            raise TimeFeatureError(f"time weights must be (cells x {self.axis.n_times} learned times "
                                   f"{self.axis.labels}), got shape {w.shape}")
        if len(w) and np.any(np.abs(w).sum(1) == 0):
            raise TimeFeatureError(f"time_features={self.kind}: {int((np.abs(w).sum(1) == 0).sum())} cells have "
                                   "no time (all-zero time weights); this model needs each cell's time")
        return w

    def _numeric(self, w: np.ndarray) -> np.ndarray:
        return w @ np.asarray(self.axis.values, dtype=np.float64)

    def _raw(self, w: np.ndarray) -> np.ndarray:
        if self.kind == "onehot":
            seen = np.isclose(w, 1.0).sum(1) == 1
            seen &= np.isclose(np.abs(w).sum(1), 1.0)
            if not seen.all():
                bad = np.flatnonzero(~seen)
                unseen = (sorted({_plain(t) for t in np.round(self._numeric(w[bad]), 6)})
                          if self.axis.values is not None else "times not among them")
                raise TimeFeatureError(
                    f"time_features=onehot covers only the training times {self.axis.labels}; {len(bad)} cells "
                    f"are at unseen time(s) {unseen}: use time_features=poly or spline for unseen times")
            return w
        u = (self._numeric(w) - self.t_mean_) / self.t_scale_
        if self.kind == "poly":
            return np.stack([u ** k for k in range(1, self.degree + 1)], axis=1)
        return natural_spline_basis(u, self.knots_)


def _independent_columns(z: np.ndarray, tol: float = 1e-8) -> np.ndarray:
    """Greedy: keep a centred column when it raises the rank of the columns kept so far."""
    rows = np.unique(np.round(z, 12), axis=0)          # the distinct training times are all that matter
    keep = np.zeros(z.shape[1], dtype=bool)
    rank = 0
    for j in range(z.shape[1]):
        trial = keep.copy()
        trial[j] = True
        r = np.linalg.matrix_rank(rows[:, trial], tol=tol * max(1.0, float(np.abs(rows).max()))) if len(rows) else 0
        if r > rank:
            keep, rank = trial, r
    return keep


def _plain(x: float) -> float | int:
    return int(x) if float(x).is_integer() else float(x)
