"""Ordered time points and the weight vectors through which a cell's time enters the network.

Each time point seen in training owns one row of the embedding. A cell's time is a weight vector over those
rows: one-hot for a seen time; for an unseen time between two learned ones, the two neighbours weighted by
linear interpolation on the time values (paper 3.2); outside the learned range, the nearest learned time
(with a warning). One mechanism for every case.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

_NUMBER = re.compile(r"[-+]?\d*\.?\d+")


class TimeError(ValueError):
    """A time value that cannot be placed on the learned time axis."""


def time_value(label: Any) -> float | None:
    """The number a time label stands for: 3 -> 3.0, 'day 3' -> 3.0, 'W2' -> 2.0; None if it has none."""
    if isinstance(label, (bool, np.bool_)):
        return None
    if isinstance(label, (int, float, np.integer, np.floating)):
        return None if np.isnan(label) else float(label)
    numbers = _NUMBER.findall(str(label))
    return float(numbers[0]) if len(numbers) == 1 else None


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

    @classmethod
    def from_labels(cls, labels: Iterable[Any]) -> "TimeAxis":
        unique = list(pd.unique(pd.Series(list(labels))))
        numbers = [time_value(x) for x in unique]
        if all(n is not None for n in numbers) and len(set(numbers)) == len(numbers):
            order = np.argsort(numbers, kind="stable")
            return cls(labels=[_plain(unique[i]) for i in order], values=[float(numbers[i]) for i in order])
        return cls(labels=sorted((_plain(u) for u in unique), key=str), values=None)

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

    def weights(self, label: Any, *, warn: bool = True) -> np.ndarray:
        """Weight vector over the embedding rows for one time label (see module docstring)."""
        w = np.zeros(self.n_times, dtype=np.float32)
        idx = self.index_of(label)
        if idx is not None:
            w[idx] = 1.0
            return w
        v = self.check(label)
        vals = np.asarray(self.values)
        if v < vals[0] or v > vals[-1]:
            nearest = int(np.argmin(np.abs(vals - v)))
            if warn:
                warnings.warn(f"time {label!r} lies outside the learned range [{self.labels[0]}, "
                              f"{self.labels[-1]}]; using the nearest learned time {self.labels[nearest]!r}",
                              stacklevel=2)
            w[nearest] = 1.0
            return w
        hi = int(np.searchsorted(vals, v))
        lo = hi - 1
        frac = (v - vals[lo]) / (vals[hi] - vals[lo])
        w[lo], w[hi] = 1.0 - frac, frac
        return w

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
        return {"labels": [_plain(x) for x in self.labels], "values": self.values}

    @classmethod
    def from_dict(cls, d: dict) -> "TimeAxis":
        return cls(labels=list(d["labels"]), values=None if d["values"] is None else list(d["values"]))


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
