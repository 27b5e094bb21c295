"""Prediction intervals per cell and protein by split-conformal calibration (Vovk et al.; Lei et al. 2018).

After training, the model predicts the calibration cells, which it never fitted: those of ``data.split.calibration``
when cells were set aside for it, else the validation cells (which also chose the checkpoint: a selection on one
number, per-cell Pearson, whose effect on coverage is measured in docs/uncertainty.md and, in every run with a
calibration split, in ``test/interval/val_calibrated/*``). Their absolute residuals
``|y - yhat|`` (per protein) are exchangeable with those of new cells from the same distribution, so the
``ceil((n + 1) * level)``-th smallest of the ``n`` calibration residuals is a half-width ``q`` for which
``[yhat - q, yhat + q]`` covers a new value with probability >= ``level`` (finite-sample guarantee, marginal
over cells; per protein here). With ``method="scaled"`` each residual is first divided by a per-protein scale
``s(yhat) = max(a + b * yhat, floor)`` fitted on the *training* cells' absolute residuals (so the calibration
cells stay untouched), and the interval is ``yhat -+ q * s(yhat)``: wider where the model errs more.

The guarantee holds only for cells exchangeable with the calibration cells: a held-out time point (or donor,
or another lab's file) is a distribution shift and its coverage must be measured, not assumed (metrics.json
reports it for ``data.holdout_time`` runs). With few validation cells the quantiles are noisy: the coverage
of one calibration draw is Beta(k, n + 1 - k) distributed, sd about sqrt(level (1 - level) / n).

The calibration is stored in the saved model's manifest (crossmodalnet.inference.manifest) and as
``calibration.npz`` in the run dir; :func:`crossmodalnet.inference.predict.predict` applies it with ``interval=0.9`` as ``layers["lower"]`` and
``layers["upper"]``.
"""
from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("crossmodalnet")

from crossmodalnet.inference.split_predictions import predict_split  # noqa: E402
FILE_NAME = "calibration.npz"
METHODS = ("absolute", "scaled")


@dataclass
class ConformalCalibration:
    """Sorted nonconformity scores of the calibration cells, per protein (cells x proteins, ascending)."""

    proteins: list[str]
    scores: np.ndarray
    method: str = "absolute"
    scale_coef: np.ndarray | None = None  # (2, proteins): intercept a and slope b of s(yhat) = a + b * yhat
    scale_floor: np.ndarray | None = None  # (proteins,): s(yhat) never falls below this
    source: str = "val"  # the split calibrated on: "val" (also chose the checkpoint) or "calibration" (set aside)

    @property
    def n_cells(self) -> int:
        return int(self.scores.shape[0])

    def quantile(self, level: float) -> np.ndarray:
        """Per-protein score quantile with the finite-sample correction: the ceil((n+1) level)-th smallest score.

        Where ``level`` needs more cells than there are (k > n) the interval is infinite, with a warning.
        """
        check_level(level)
        n = self.n_cells
        k = math.ceil((n + 1) * level)
        if k > n:
            warnings.warn(f"a {level:.0%} interval needs at least {min_cells(level)} calibration "
                          f"cells, there are {n}: the intervals are infinite", stacklevel=2)
            return np.full(self.scores.shape[1], np.inf)
        return self.scores[k - 1].astype(np.float64)

    def scale(self, pred: np.ndarray) -> np.ndarray:
        """The per-cell, per-protein scale s(yhat) (ones for ``method="absolute"``)."""
        if self.method == "absolute" or self.scale_coef is None:
            return np.ones_like(pred, dtype=np.float64)
        a, b = self.scale_coef
        return np.maximum(a + b * np.asarray(pred, dtype=np.float64), self.scale_floor)

    def interval(self, pred: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds (cells x proteins) around predictions ``pred`` at nominal ``level``."""
        pred = np.asarray(pred, dtype=np.float64)
        if pred.ndim != 2 or pred.shape[1] != len(self.proteins):
            raise ValueError(f"predictions have shape {pred.shape}; the calibration covers "
                             f"{len(self.proteins)} proteins")
        half = self.quantile(level)[None, :] * self.scale(pred)
        return (pred - half).astype(np.float32), (pred + half).astype(np.float32)

    # -- storage -------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = {"proteins": np.asarray(self.proteins, dtype=str), "scores": self.scores.astype(np.float32),
               "method": np.asarray(self.method), "source": np.asarray(self.source)}
        if self.scale_coef is not None:
            out["scale_coef"] = self.scale_coef.astype(np.float64)
            out["scale_floor"] = self.scale_floor.astype(np.float64)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ConformalCalibration":
        coef = d.get("scale_coef")
        floor = d.get("scale_floor")
        return cls([str(p) for p in np.asarray(d["proteins"]).tolist()], np.asarray(d["scores"], np.float32),
                   str(np.asarray(d["method"])), None if coef is None else np.asarray(coef, np.float64),
                   None if floor is None else np.asarray(floor, np.float64),
                   str(np.asarray(d.get("source", "val"))))

    def save(self, path: str | Path) -> Path:
        from crossmodalnet.utils.atomic import atomic_write

        return atomic_write(path, lambda f: np.savez_compressed(f, **self.to_dict()), binary=True)

    @classmethod
    def load(cls, path: str | Path) -> "ConformalCalibration":
        with np.load(Path(path), allow_pickle=False) as z:
            return cls.from_dict({k: z[k] for k in z.files})


def min_cells(level: float) -> int:
    """The fewest calibration cells with a finite ``level`` interval: the smallest n with ceil((n+1) level) <= n
    (9 for 90%, 19 for 95%)."""
    n = 1
    while math.ceil((n + 1) * level) > n:
        n += 1
    return n


def check_level(level: float) -> float:
    """A nominal coverage strictly between 0 and 1 (0.9 = a 90% interval)."""
    from crossmodalnet.data.validate import DataError

    try:
        value = float(level)
    except (TypeError, ValueError):
        raise DataError(f"interval level must be a number between 0 and 1 (e.g. 0.9), got {level!r}") from None
    if not 0 < value < 1:
        raise DataError(f"interval level must be between 0 and 1 (e.g. 0.9 for 90% intervals), got {level!r}")
    return value


def fit_scale(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per protein, least squares of |residual| on the prediction: s(yhat) = a + b yhat, floored at 10% of the
    mean |residual| (a scale must stay positive). Returns ((2, proteins) coefficients, (proteins,) floor)."""
    pred, res = np.asarray(pred, np.float64), np.abs(np.asarray(target, np.float64) - pred)
    mean_p, mean_r = pred.mean(0), res.mean(0)
    var_p = ((pred - mean_p) ** 2).mean(0)
    cov = ((pred - mean_p) * (res - mean_r)).mean(0)
    slope = np.where(var_p > 1e-12, cov / np.maximum(var_p, 1e-12), 0.0)
    intercept = mean_r - slope * mean_p
    floor = np.maximum(0.1 * mean_r, 1e-6)
    return np.stack([intercept, slope]), floor


def calibrate(pred: np.ndarray, target: np.ndarray, proteins: list[str], method: str = "absolute",
              scale_pred: np.ndarray | None = None, scale_target: np.ndarray | None = None,
              max_cells: int | None = 10_000, seed: int = 0) -> ConformalCalibration:
    """Calibration from held-out cells' predictions and measured values (cells x proteins).

    ``method="scaled"`` needs ``scale_pred``/``scale_target`` from *other* cells (the training split) to fit
    the scale. ``max_cells`` keeps a seeded random subset (bounds the size stored with the model).
    """
    from crossmodalnet.data.validate import DataError

    if method not in METHODS:
        raise DataError(f"uncertainty.method must be one of {METHODS}, got {method!r}")
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    if pred.shape != target.shape or pred.ndim != 2:
        raise ValueError(f"predictions {pred.shape} and measured values {target.shape} must be cells x proteins")
    if pred.shape[0] == 0:
        raise DataError("no calibration cells: the validation split is empty (data.split.val > 0 is needed for "
                        "prediction intervals)")
    if max_cells is not None and pred.shape[0] > max_cells:
        rows = np.sort(np.random.default_rng(seed).choice(pred.shape[0], max_cells, replace=False))
        pred, target = pred[rows], target[rows]
    coef = floor = None
    if method == "scaled":
        if scale_pred is None or scale_target is None:
            raise ValueError("method='scaled' needs scale_pred and scale_target (training cells)")
        coef, floor = fit_scale(scale_pred, scale_target)
    cal = ConformalCalibration(list(map(str, proteins)), np.empty(0), method, coef, floor)
    scores = np.abs(target - pred) / cal.scale(pred)
    cal.scores = np.sort(scores, axis=0).astype(np.float32)
    return cal


def coverage_metrics(cal: ConformalCalibration, pred: np.ndarray, target: np.ndarray, level: float,
                     prefix: str = "test/interval/") -> dict[str, float]:
    """Empirical coverage (mean, min, sd over proteins) and mean width of ``level`` intervals on scored cells."""
    lower, upper = cal.interval(pred, level)
    target = np.asarray(target, np.float64)
    inside = (target >= lower) & (target <= upper)
    per_protein = inside.mean(0)
    return {f"{prefix}level": float(level), f"{prefix}coverage": float(per_protein.mean()),
            f"{prefix}coverage_min_protein": float(per_protein.min()),
            f"{prefix}coverage_sd_protein": float(per_protein.std()),
            f"{prefix}mean_width": float(np.mean(upper.astype(np.float64) - lower)),
            f"{prefix}n_calibration_cells": float(cal.n_cells)}


# -- with a trained model and its data module ------------------------------------------------------------------
def calibration_split(dm) -> str:
    """The split the intervals are calibrated on: ``calibration`` when ``data.split.calibration`` set cells aside,
    else ``val`` (the cells that also chose the checkpoint and stopped training)."""
    part = dm.splits.get("calibration")
    return "calibration" if part is not None and part.n_obs > 0 else "val"


def fit_and_score(model, dm, settings: dict | None = None) -> tuple[ConformalCalibration | None, dict[str, float]]:
    """Calibrate on the calibration cells (``data.split.calibration``), else the validation cells, and score
    ``settings["level"]`` intervals on the test cells.

    With a separate calibration split, the intervals the validation cells would give are scored on the same test
    cells as well (``test/interval/val_calibrated/*``): the measured effect of reusing the cells that chose the
    checkpoint. Returns (None, {}) when the calibration split is empty. ``settings``: level, method, max_cells
    (cfg.uncertainty).
    """
    from crossmodalnet.data.validate import PROTEIN_KEY

    settings = dict(settings or {})
    level = check_level(settings.get("level", 0.9))
    method = settings.get("method", "absolute")
    source = calibration_split(dm)
    if dm.splits[source].n_obs == 0:
        log.warning("no validation cells: prediction intervals are not calibrated")
        return None, {}

    def measured(split: str) -> np.ndarray:
        return dm.splits[split].obsm[PROTEIN_KEY].to_numpy(dtype=np.float64)

    extra = {}
    if method == "scaled":
        extra = {"scale_pred": predict_split(model, dm, "train"), "scale_target": measured("train")}

    def fit(split: str) -> ConformalCalibration:
        cal = calibrate(predict_split(model, dm, split), measured(split), dm.protein_names, method,
                        max_cells=settings.get("max_cells", 10_000), **extra)
        cal.source = split
        return cal

    cal = fit(source)
    metrics: dict[str, float] = {}
    needed = min_cells(level)
    if cal.n_cells < needed:  # the interval would be infinite: metrics.json holds finite numbers only
        log.warning("%d %s cells calibrate prediction intervals; a %.0f%% interval needs at least %d, so it is not "
                    "scored (raise data.split.%s or lower uncertainty.level)", cal.n_cells,
                    "validation" if source == "val" else "calibration", 100 * level, needed, source)
        return cal, metrics
    if dm.splits["test"].n_obs:
        test_pred, test_y = predict_split(model, dm, "test"), measured("test")
        metrics = coverage_metrics(cal, test_pred, test_y, level)
        metrics["test/interval/separate_calibration"] = float(source == "calibration")
        if source == "calibration" and dm.splits["val"].n_obs >= needed:
            metrics.update(coverage_metrics(fit("val"), test_pred, test_y, level,
                                            prefix="test/interval/val_calibrated/"))
    return cal, metrics


def find_calibration(model) -> ConformalCalibration | None:
    """The model's calibration: from its saved model's manifest, else ``calibration.npz`` in its run dir."""
    cal = getattr(model, "conformal", None)
    if isinstance(cal, ConformalCalibration):
        return cal
    if isinstance(cal, dict):
        return ConformalCalibration.from_dict(cal)
    path = getattr(model, "checkpoint_path", None) or getattr(model, "model_path", None)
    if path:
        path = Path(path)
        for folder in (path.parent, path.parent.parent):
            if (folder / FILE_NAME).is_file():
                return ConformalCalibration.load(folder / FILE_NAME)
    return None


def add_intervals(out, model, level: float) -> None:
    """``layers["lower"]``/``layers["upper"]`` of a prediction AnnData (X = predictions), level in uns."""
    from crossmodalnet.data.validate import DataError

    level = check_level(level)
    cal = find_calibration(model)
    if cal is None:
        raise DataError("this model carries no conformal calibration (train it again with this version; "
                        "calibration needs validation cells, data.split.val > 0)")
    names = [str(p) for p in out.var_names]
    if names != cal.proteins:
        raise DataError(f"the calibration covers proteins {cal.proteins[:3]}..., the predictions "
                        f"{names[:3]}...; the calibration belongs to another model")
    lower, upper = cal.interval(np.asarray(out.X), level)
    out.layers["lower"], out.layers["upper"] = lower, upper
    out.uns.setdefault("crossmodalnet", {})["interval"] = {
        "level": level, "method": cal.method, "n_calibration_cells": cal.n_cells,
        "calibrated_on": cal.source,
        "note": f"split-conformal, calibrated on the {'validation' if cal.source == 'val' else cal.source} cells; "
                "valid for cells like them"}
