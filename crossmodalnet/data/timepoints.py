"""Ordered time points and the weight vectors through which a cell's time enters the network.

Each time point seen in training owns one row of the embedding. A cell's time is a weight vector over those
rows: one-hot for a seen time; for an unseen time between two learned ones, the two neighbours weighted by
linear interpolation on the time values (paper 3.2). Outside the learned range (with a warning) it depends on the
axis' ``extrapolation``: ``"nearest"``, the nearest learned time (one-hot; the paper's lookup table); otherwise
(``"extrapolate"``, or ``None`` when the model is not known yet, as in the data module) the two end points weighted
for linear extrapolation, ``(1 - f, f)`` with f < 0 or f > 1. The weights always sum to 1 and ``weights @ values``
is the time itself, so a model with a continuous time encoding reads the exact time from them, and a lookup model
set to ``nearest`` maps them back to the nearest row (crossmodalnet.models.time_encoding). One mechanism for
every case.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from crossmodalnet.errors import DataError

# A time label is numeric when it is a number, optionally with a time unit before or after it ("3", "day 3",
# "D3", "W2", "week-2", "48h", "E10.5"). Anything else ("pbmc5k", "s1d2", "run10x") is a categorical label:
# a digit inside a name is not a time.
_UNITS = {
    "": "", "d": "day", "day": "day", "days": "day", "w": "week", "wk": "week", "wks": "week", "week": "week",
    "weeks": "week", "h": "hour", "hr": "hour", "hrs": "hour", "hour": "hour", "hours": "hour",
    "min": "minute", "mins": "minute", "minute": "minute", "minutes": "minute", "mo": "month", "month": "month",
    "months": "month", "y": "year", "yr": "year", "year": "year", "years": "year", "t": "timepoint",
    "tp": "timepoint", "time": "timepoint", "timepoint": "timepoint", "e": "embryonic day",
    "p": "postnatal day", "dpi": "day", "hpi": "hour", "dpf": "day", "hpf": "hour",
}
_LABEL = re.compile(r"^\s*(?:(?P<pre>[A-Za-z]+)[\s_\-:]*)?(?P<num>[-+]?(?:\d+\.?\d*|\.\d+))\s*(?P<post>[A-Za-z]*)\s*$")


class TimeError(DataError):
    """A time value that cannot be placed on the learned time axis (a DataError: ``error: ...``, exit 2)."""


def _parse(label: Any) -> tuple[float, str] | None:
    """(value, unit) of a time label, unit "" for a bare number; None when the label is not a time."""
    if isinstance(label, (bool, np.bool_)):
        return None
    if isinstance(label, (int, float, np.integer, np.floating)):
        return None if np.isnan(label) else (float(label), "")
    m = _LABEL.match(str(label))
    if m is None:
        return None
    pre, post = (m["pre"] or "").lower(), m["post"].lower()
    if (pre and post) or (pre or post) not in _UNITS:
        return None
    return float(m["num"]), _UNITS[pre or post]


def time_value(label: Any) -> float | None:
    """The number a time label stands for: 3 -> 3.0, 'day 3' -> 3.0, 'W2' -> 2.0; None for 'pbmc5k' or 'late'."""
    parsed = _parse(label)
    return None if parsed is None else parsed[0]


def time_unit(label: Any) -> str | None:
    """The unit of a numeric time label ('week 3' -> 'week', 3 -> ''), None for a categorical label."""
    parsed = _parse(label)
    return None if parsed is None else parsed[1]


def time_mask(values: pd.Series, keep: Sequence[Any], what: str) -> np.ndarray:
    """Cells whose time is one of ``keep`` (matched as text, or by number: 3 matches "day 3").

    Raises TimeError naming ``what`` and the values present when nothing matches.
    """
    wanted_str = {str(k) for k in keep}
    wanted_num = {time_value(k) for k in keep} - {None}
    mask = np.array([str(v) in wanted_str or time_value(v) in wanted_num for v in values], dtype=bool)
    if not mask.any():
        raise TimeError(f"none of the times {list(keep)} occur in {what}; present: "
                        f"{sorted(pd.unique(values.astype(str)))}")
    return mask


def parse_time_column(values: pd.Series, column: str) -> pd.Series:
    """Validate a time column and return it as labels (strings for text, numbers kept as numbers).

    Raises on missing values and on a column that mixes numbers with text that carries no number.
    """
    if values.isna().any():
        bad = values.index[values.isna()][:3].tolist()
        raise TimeError(f"time column {column!r} has {int(values.isna().sum())} missing values (e.g. cells {bad})")
    kinds = {type(v).__name__ for v in values.tolist()}
    numeric = all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                  for v in values.tolist())
    if not numeric and len(kinds) > 1:
        raise TimeError(f"time column {column!r} mixes types {sorted(kinds)}; use one type (e.g. all numbers)")
    return values


@dataclass
class TimeAxis:
    """The learned time points, in order, with their numeric values (None when the labels are categorical)."""

    labels: list[Any]
    values: list[float] | None
    extrapolation: str | None = None   # beyond the learned range: "nearest" | "extrapolate" | None (see module doc)

    @classmethod
    def from_labels(cls, labels: Iterable[Any], order: Sequence[Any] | None = None,
                    categorical: bool = False) -> "TimeAxis":
        """The axis of the times in ``labels``: numeric times ordered by value, anything else categorical.

        ``order`` (``data.time_order``) gives the order explicitly; the axis stays numeric (interpolation
        allowed) only when those labels are numeric and increasing. ``categorical`` (``data.time_categorical``)
        declares the labels unordered conditions even when they look like numbers: no interpolation.
        """
        unique = list(pd.unique(pd.Series(list(labels))))
        if order is not None:
            return cls._ordered(unique, list(order), categorical)
        numbers = [time_value(x) for x in unique]
        if categorical:
            return cls(labels=sorted((_plain(u) for u in unique), key=str), values=None)
        if all(n is not None for n in numbers) and len(set(numbers)) == len(numbers):
            order = np.argsort(numbers, kind="stable")
            return cls(labels=[_plain(unique[i]) for i in order], values=[float(numbers[i]) for i in order])
        return cls(labels=sorted((_plain(u) for u in unique), key=str), values=None)

    @classmethod
    def _ordered(cls, unique: list[Any], order: list[Any], categorical: bool) -> "TimeAxis":
        missing = [u for u in unique if not any(_same(o, u) for o in order)]
        if missing:
            raise TimeError(f"times {[_plain(m) for m in missing]} occur in the data but not in data.time_order "
                            f"{order}; list every time")
        labels = [_plain(next(u for u in unique if _same(o, u))) for o in order if any(_same(o, u) for u in unique)]
        numbers = [time_value(x) for x in labels]
        if categorical or any(n is None for n in numbers):
            return cls(labels=labels, values=None)
        if any(b <= a for a, b in zip(numbers, numbers[1:])):
            raise TimeError(f"data.time_order {order} contradicts the times' numeric values {numbers}; reorder it, "
                            "or set data.time_categorical=true to treat the times as unordered conditions")
        return cls(labels=labels, values=[float(n) for n in numbers])

    @property
    def categorical(self) -> bool:
        """True when the times are conditions without numeric values: nothing is interpolated between them."""
        return self.values is None

    @property
    def n_times(self) -> int:
        return len(self.labels)

    def index_of(self, label: Any) -> int | None:
        """Row of the embedding a label owns, or None for an unseen time."""
        for i, known in enumerate(self.labels):
            if _same(known, label):
                return i
        if self.values is not None:
            v = time_value(label)
            if v is not None and v in self.values:
                return self.values.index(v)
        return None

    def check(self, label: Any, outside_range: str = "nearest") -> float | None:
        """Raise TimeError unless ``label`` can be placed on the axis; return its value when it is unseen.

        ``outside_range="error"`` also refuses a time beyond the learned range (default: the nearest is used).
        """
        self._check_unit(label)
        if self.index_of(label) is not None:
            return None
        if self.values is None:
            raise TimeError(f"time {label!r} was not seen in training and the learned times {self.labels} are "
                            "categorical, so it cannot be interpolated")
        v = time_value(label)
        if v is None:
            raise TimeError(f"time {label!r} has no numeric value; learned times are {self.labels}")
        if outside_range == "error" and not self.values[0] <= v <= self.values[-1]:
            raise TimeError(f"time {label!r} lies outside the learned range [{self.labels[0]}, {self.labels[-1]}]")
        return v

    def _check_unit(self, label: Any) -> None:
        """'week 3' against learned days (or against plain numbers) is refused, not read as 3."""
        if self.values is None or any(isinstance(k, str) and str(label) == k for k in self.labels):
            return
        unit = time_unit(label)
        learned = {time_unit(k) for k in self.labels}
        if unit and unit not in learned:
            shown = " or ".join(sorted(f"{u}s" if u else "plain numbers" for u in learned))
            raise TimeError(f"time {label!r} is given in {unit}s but the learned times {self.labels} are "
                            f"{shown}; give the time on the training scale (e.g. {self.labels[0]!r})")

    def weights(self, label: Any, *, warn: bool = True) -> np.ndarray:
        """Weight vector over the embedding rows for one time label (see module docstring)."""
        w = np.zeros(self.n_times, dtype=np.float32)
        self._check_unit(label)
        idx = self.index_of(label)
        if idx is not None:
            w[idx] = 1.0
            return w
        v = self.check(label)
        vals = np.asarray(self.values)
        if v < vals[0] or v > vals[-1]:
            nearest = int(np.argmin(np.abs(vals - v)))
            if warn:
                warnings.warn(self._outside_message(label, nearest), stacklevel=2)
            if self.extrapolation == "nearest" or self.n_times < 2:
                w[nearest] = 1.0
                return w
            lo, hi = (0, 1) if v < vals[0] else (self.n_times - 2, self.n_times - 1)
            frac = (v - vals[lo]) / (vals[hi] - vals[lo])
            w[lo], w[hi] = 1.0 - frac, frac
            return w
        hi = int(np.searchsorted(vals, v))
        lo = hi - 1
        frac = (v - vals[lo]) / (vals[hi] - vals[lo])
        w[lo], w[hi] = 1.0 - frac, frac
        return w

    def _outside_message(self, label: Any, nearest: int) -> str:
        where = f"time {label!r} lies outside the learned range [{self.labels[0]}, {self.labels[-1]}]"
        if self.extrapolation == "nearest" or self.n_times < 2:
            return f"{where}; using the nearest learned time {self.labels[nearest]!r}"
        if self.extrapolation == "extrapolate":
            return f"{where}; extrapolating the model's time effect beyond it (model.time_extrapolation=extrapolate)"
        return (f"{where}; a model with model.time_extrapolation=nearest uses the nearest learned time "
                f"{self.labels[nearest]!r}, one with extrapolate continues its time effect beyond it")

    def nearest_weights(self, label: Any) -> np.ndarray:
        """One-hot on the nearest learned time (a baseline for interpolation on unseen times)."""
        w = np.zeros(self.n_times, dtype=np.float32)
        idx = self.index_of(label)
        if idx is None:
            v = time_value(label)
            if self.values is None or v is None:
                raise TimeError(f"time {label!r} cannot be matched to learned times {self.labels}")
            idx = int(np.argmin(np.abs(np.asarray(self.values) - v)))
        w[idx] = 1.0
        return w

    def weight_matrix(self, labels: Sequence[Any], mode: str = "interpolate") -> np.ndarray:
        """(n_cells, n_times) weights; computed once per unique label, so cost is independent of cell count.

        ``mode``: "interpolate" (default), "nearest" or "none" (all zeros: no time embedding).
        """
        labels = list(labels)
        out = np.zeros((len(labels), self.n_times), dtype=np.float32)
        if mode == "none":
            return out
        codes, uniques = pd.factorize(pd.Series(labels, dtype=object))
        for code, label in enumerate(uniques):
            row = self.weights(label) if mode == "interpolate" else self.nearest_weights(label)
            out[codes == code] = row
        return out

    def index_vector(self, labels: Sequence[Any]) -> np.ndarray:
        """Embedding row per cell, -1 for an unseen time (used as the discriminator's target)."""
        codes, uniques = pd.factorize(pd.Series(list(labels), dtype=object))
        lookup = np.array([-1 if (i := self.index_of(u)) is None else i for u in uniques], dtype=np.int64)
        return lookup[codes]

    def to_dict(self) -> dict:
        out = {"labels": [_plain(x) for x in self.labels], "values": self.values, "categorical": self.categorical}
        if self.extrapolation is not None:
            out["extrapolation"] = self.extrapolation
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "TimeAxis":
        return cls(labels=list(d["labels"]), values=None if d["values"] is None else list(d["values"]),
                   extrapolation=d.get("extrapolation"))


def _plain(x: Any) -> Any:
    """numpy scalars -> Python scalars, so the axis serialises cleanly into configs and checkpoints."""
    return x.item() if isinstance(x, np.generic) else x


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return str(a) == str(b)
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return a == b
