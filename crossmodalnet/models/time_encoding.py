"""Time features for CrossmodalNet: the paper's lookup table, or a smooth function of the numeric time.

A cell's time reaches the network as a weight vector ``w`` over the learned time points (TimeAxis): one-hot for a
seen time, two neighbours for an unseen time inside the learned range, and, outside it, the two end points weighted
so that ``w @ values`` is the time itself (linear extrapolation weights, summing to 1). All-zero weights mean "no
time". Every encoder maps ``w`` to features ``phi`` (cells x k) that are zero for "no time"; the network multiplies
them by a learned matrix (``CrossmodalNetwork.time_embedding``, k x width) to get each injection's time terms.

- ``lookup`` (paper 2.3.1 / 3.2): ``phi = w``, so ``phi @ E`` is a row of E, or the linear interpolation of two.
- ``spline``: natural cubic spline basis in the time (ESL eq. 5.4-5.5), knots at the learned times (or
  ``knots`` evenly spaced): the learned values at the knots joined by a natural cubic spline, which is linear
  beyond the boundary knots (its extrapolation).
- ``poly``: ``[1, x, x^2, ..., x^D]`` (``degree`` D, default 2: the (t, t^2) features of the time-aware
  baselines); the polynomial continues beyond the learned range.
- ``fourier``: ``[1, x, sin(pi k x), cos(pi k x)]``, k = 1..K, x the time scaled to [0, 1] over the learned range;
  beyond it the periodic terms keep their boundary value and the trend term ``x`` continues.
- ``mlp``: a small network on x, ``[1, x, SiLU(a_j x + b_j)]`` (j = 1..H, a, b learned; the network's second layer
  is ``time_embedding``); SiLU units are asymptotically linear, so it extrapolates (close to) linearly.

Outside the learned range ``extrapolation="nearest"`` gives every encoder the value at the nearest learned time (the
paper's choice for its table), ``"extrapolate"`` continues it as above (for ``lookup``: the line through the two end
rows). Categorical times (no numeric values) always use the lookup table.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

TIME_ENCODINGS = ("lookup", "spline", "poly", "fourier", "mlp")
EXTRAPOLATIONS = ("nearest", "extrapolate")


def natural_spline_basis(x: torch.Tensor, knots: torch.Tensor) -> torch.Tensor:
    """Natural cubic spline basis at ``x`` (n,) with K sorted ``knots``: (n, K) columns 1, x, d_k - d_{K-1}.

    d_k(x) = ((x - xi_k)_+^3 - (x - xi_K)_+^3) / (xi_K - xi_k). Every column is linear below the first and beyond
    the last knot (a natural spline's boundary condition), which is what makes its extrapolation linear."""
    k = knots.numel()
    cols = [torch.ones_like(x)]
    if k >= 2:
        cols.append(x)
    if k >= 3:
        last = knots[-1]

        def d(j: int) -> torch.Tensor:
            return ((x - knots[j]).clamp_min(0) ** 3 - (x - last).clamp_min(0) ** 3) / (last - knots[j])

        d_pen = d(k - 2)
        cols += [d(j) - d_pen for j in range(k - 2)]
    return torch.stack(cols, dim=1)


class TimeEncoder(nn.Module):
    """``w`` (cells x learned times) -> features (cells x ``n_features``), zero where ``w`` is all zero."""

    def __init__(self, encoding: str, values: Sequence[float] | None, n_times: int,
                 extrapolation: str = "nearest", knots: int | None = None, frequencies: int = 3,
                 hidden: int = 16, degree: int = 2) -> None:
        super().__init__()
        if encoding not in TIME_ENCODINGS:
            raise ValueError(f"time_encoding must be one of {TIME_ENCODINGS}, got {encoding!r}")
        if extrapolation not in EXTRAPOLATIONS:
            raise ValueError(f"time_extrapolation must be one of {EXTRAPOLATIONS}, got {extrapolation!r}")
        if values is not None and len(values) != n_times:
            raise ValueError(f"{len(values)} time values for {n_times} learned times")
        self.requested = encoding
        # categorical times (no numbers) and a single time have nothing to be smooth in: the lookup table
        self.encoding = encoding if values is not None and n_times >= 2 else "lookup"
        self.extrapolation = extrapolation
        self.n_times = n_times
        vals = torch.tensor(values if values is not None else [0.0] * n_times, dtype=torch.float32)
        self.numeric = values is not None
        self.register_buffer("values", vals, persistent=False)
        lo, hi = (float(vals.min()), float(vals.max())) if self.numeric else (0.0, 1.0)
        self.lo, self.span = lo, (hi - lo) if hi > lo else 1.0
        if self.encoding == "spline":
            if knots is not None and int(knots) < 2:
                raise ValueError(f"time_knots must be >= 2 or null (at the learned times), got {knots}")
            k = ((vals - lo) / self.span).tolist() if knots is None else torch.linspace(0, 1, int(knots)).tolist()
            self.register_buffer("knots", torch.tensor(sorted(k), dtype=torch.float32), persistent=False)
            self.n_features = len(k)
        elif self.encoding == "poly":
            if int(degree) < 1:
                raise ValueError(f"time_degree must be >= 1, got {degree}")
            self.degree = int(degree)
            self.n_features = 1 + self.degree
        elif self.encoding == "fourier":
            if int(frequencies) < 1:
                raise ValueError(f"time_frequencies must be >= 1, got {frequencies}")
            self.frequencies = int(frequencies)
            self.n_features = 2 + 2 * self.frequencies
        elif self.encoding == "mlp":
            if int(hidden) < 1:
                raise ValueError(f"time_hidden must be >= 1, got {hidden}")
            g = torch.Generator().manual_seed(0)   # fixed: kinks spread over the range whatever the global seed
            slope = torch.randn(int(hidden), generator=g) * 4.0
            centre = torch.rand(int(hidden), generator=g)
            self.slope = nn.Parameter(slope)
            self.offset = nn.Parameter(-slope * centre)
            self.n_features = 2 + int(hidden)
        else:
            self.n_features = n_times

    # -- the numeric time a weight vector stands for -------------------------------------------------------------
    def scaled_time(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, s): the time ``w @ values / s`` scaled to [0, 1] over the learned range, and s = sum(w) (0: no time)."""
        s = w.sum(1)
        safe = torch.where(s.abs() > 1e-8, s, torch.ones_like(s))
        t = (w @ self.values.to(w.dtype)) / safe
        return (t - self.lo) / self.span, s

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.encoding == "lookup":
            return self._lookup(w)
        x, s = self.scaled_time(w)
        if self.extrapolation == "nearest":
            x = x.clamp(0.0, 1.0)
        return s.unsqueeze(1) * self.features(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """phi at scaled times ``x`` (n,), for one unit of time weight."""
        if self.encoding == "spline":
            return natural_spline_basis(x, self.knots.to(x.dtype))
        if self.encoding == "poly":
            return torch.stack([x ** j for j in range(self.degree + 1)], dim=1)
        if self.encoding == "fourier":
            xc = x.clamp(0.0, 1.0)   # periodic terms hold their boundary value beyond the learned range
            k = torch.arange(1, self.frequencies + 1, dtype=x.dtype, device=x.device) * math.pi
            return torch.cat([torch.ones_like(x)[:, None], x[:, None], torch.sin(xc[:, None] * k),
                              torch.cos(xc[:, None] * k)], dim=1)
        if self.encoding == "mlp":
            hidden = nn.functional.silu(x[:, None] * self.slope + self.offset)
            return torch.cat([torch.ones_like(x)[:, None], x[:, None], hidden], dim=1)
        raise AssertionError(self.encoding)

    def _lookup(self, w: torch.Tensor) -> torch.Tensor:
        """phi = w; with ``nearest``, a weight vector pointing outside the learned range becomes the nearest row."""
        if not self.numeric or self.extrapolation == "extrapolate" or self.n_times < 2:
            return w
        x, s = self.scaled_time(w)
        outside = (x < -1e-6) | (x > 1 + 1e-6)
        if not bool(outside.any()):
            return w
        t = x * self.span + self.lo
        nearest = (t[:, None] - self.values.to(w.dtype)[None, :]).abs().argmin(1)
        onehot = nn.functional.one_hot(nearest, self.n_times).to(w.dtype) * s.unsqueeze(1)
        return torch.where(outside.unsqueeze(1), onehot, w)
