"""Train/validation/test splits: in-distribution (stratified by time) and out-of-distribution (hold out a time)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from crossmodalnet.data.timepoints import time_value
from crossmodalnet.data.validate import DataError
from crossmodalnet.utils.atomic import atomic_path

SPLITS = ("train", "val", "test")
CALIBRATION = "calibration"  # optional fourth split: cells only the conformal intervals see (data.split.calibration)


@dataclass
class Split:
    """Row positions of each split into the full data set; ``calibration`` is empty unless asked for."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    calibration: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def items(self):
        out = [("train", self.train), ("val", self.val), ("test", self.test)]
        if len(self.calibration):
            out.append((CALIBRATION, self.calibration))
        return tuple(out)

    def to_frame(self, obs_names: Sequence[str]) -> pd.DataFrame:
        labels = np.empty(len(obs_names), dtype=object)
        for name, idx in self.items():
            labels[idx] = name
        return pd.DataFrame({"cell": list(obs_names), "split": labels})

    def save(self, path: Path, obs_names: Sequence[str]) -> None:
        with atomic_path(path) as tmp:  # written whole, then renamed
            self.to_frame(obs_names).to_csv(tmp, index=False)


def _fraction_counts(n: int, val: float, test: float, calibration: float = 0.0) -> tuple[int, int, int, int]:
    n_val = max(1, int(round(n * val))) if val > 0 else 0
    n_test = max(1, int(round(n * test))) if test > 0 else 0
    n_cal = max(1, int(round(n * calibration))) if calibration > 0 else 0
    return n - n_val - n_test - n_cal, n_val, n_test, n_cal


def stratified_split(times: Sequence[Any], train: float = 0.8, val: float = 0.05, test: float = 0.15,
                     seed: int = 0, calibration: float = 0.0) -> Split:
    """Random split where every time point keeps its proportion in train, val and test (paper A.3).

    ``calibration`` > 0 sets that fraction aside for the conformal intervals alone (never trained on, never used
    to choose the checkpoint). The train/val/test cells do not depend on it beyond the fractions: with
    ``calibration=0`` the split is the one this function always made."""
    _check_fractions(train, val, test, calibration)
    times = pd.Series(list(times), dtype=object).astype(str)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {s: [] for s in (*SPLITS, CALIBRATION)}
    for label, positions in times.groupby(times, sort=True).indices.items():
        n_train, n_val, n_test, _ = _fraction_counts(len(positions), val, test, calibration)
        if n_train < 1:
            raise DataError(f"time point {label!r} has {len(positions)} cells: too few for a "
                            f"{train:.0%}/{val:.0%}/{test:.0%}{f'/{calibration:.0%}' if calibration else ''} split "
                            f"(needs at least {(val > 0) + (test > 0) + (calibration > 0) + 1})")
        perm = rng.permutation(positions)
        parts["train"].append(perm[:n_train])
        parts["val"].append(perm[n_train:n_train + n_val])
        parts["test"].append(perm[n_train + n_val:n_train + n_val + n_test])
        parts[CALIBRATION].append(perm[n_train + n_val + n_test:])
    return Split(**{k: np.sort(np.concatenate(v)).astype(np.int64) for k, v in parts.items()})


def holdout_split(times: Sequence[Any], holdout_time: Any, train: float = 0.8, val: float = 0.05,
                  seed: int = 0, calibration: float = 0.0) -> Split:
    """Every cell of ``holdout_time`` goes to test; the rest is split into train/val (and calibration), stratified
    by time, in the ratio of their fractions."""
    labels = pd.Series(list(times), dtype=object)
    is_held = _matches(labels, holdout_time)
    if not is_held.any():
        raise DataError(f"holdout_time={holdout_time!r} matches no cell; time points present: "
                        f"{sorted(labels.astype(str).unique().tolist())}")
    if is_held.all():
        raise DataError(f"holdout_time={holdout_time!r} holds out every cell: nothing is left to train on")
    rest = np.flatnonzero(~is_held)
    # the test share goes to the held-out time; train/val(/calibration) keep their ratio (80:5 by default)
    total = train + val + calibration
    inner = stratified_split(labels.iloc[rest].tolist(), train=train / total, val=val / total, test=0.0,
                             seed=seed, calibration=calibration / total)
    return Split(train=rest[inner.train], val=rest[inner.val], test=np.flatnonzero(is_held).astype(np.int64),
                 calibration=rest[inner.calibration])


def _matches(labels: pd.Series, holdout: Any) -> np.ndarray:
    as_str = labels.astype(str).to_numpy() == str(holdout)
    if as_str.any():
        return as_str
    target = time_value(holdout)
    if target is None:
        return as_str
    return np.array([time_value(v) == target for v in labels], dtype=bool)


def _check_fractions(train: float, val: float, test: float, calibration: float = 0.0) -> None:
    if min(train, val, test, calibration) < 0 or train <= 0 or abs(train + val + test + calibration - 1.0) > 1e-6:
        extra = f", calibration={calibration}" if calibration else ""
        raise DataError(f"split fractions must be non-negative, train > 0 and sum to 1; "
                        f"got train={train}, val={val}, test={test}{extra}")
