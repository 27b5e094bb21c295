"""What time adds: the learned time effect for each protein and each time point (issue 18, item 8).

For a set of cells, the model predicts every protein with the cells' time set to ``t`` (through the same public
prediction path as ``crossmodalnet.inference.predict``: the time is resolved by ``resolve_time`` and fed to the
model's forward), for every ``t`` asked for. The time effect of protein p at time t is

    effect[p, t] = mean over cells of yhat_p(x, t)  -  reference_p

with the reference ``"mean"`` (the average of the same mean over the learned times: the effects of the learned times
sum to zero, which is the part of the time that is identifiable: a shared shift of every time row is absorbed by
MLP2's BatchNorm), ``"none"`` (the basal prediction, no time input) or one time label. Nothing here looks at how
the time enters the model (lookup rows + interpolation, or a continuous encoding): only the forward pass is used,
so the table means the same thing for every encoding.

On the drift simulator the truth is known (``uns["simulation"]``); :func:`score_time_effects` compares the two
per protein (Pearson across times) and overall (Pearson over every protein x time entry), each table centred per
protein on its mean over the learned times.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from crossmodalnet.errors import DataError

REFERENCES = ("mean", "none")
DEFAULT_MAX_CELLS = 1024  # cells the effect is averaged over (a seeded subset): the mean of 1,024 cells is stable


def time_kind(axis, label: Any) -> str:
    """``learned``, ``interpolated`` (between two learned times) or ``extrapolated`` (outside the learned range)."""
    if axis.index_of(label) is not None:
        return "learned"
    value = axis.check(label)  # TimeError for a time that cannot be placed (categorical, wrong unit)
    return "interpolated" if axis.values[0] <= value <= axis.values[-1] else "extrapolated"


def _times(model, times: Iterable[Any] | None) -> list[Any]:
    axis = model.time_axis
    out = list(axis.labels) if times is None else list(times)
    if not out:
        raise DataError("time_effects needs at least one time")
    return out


def has_time_input(model) -> bool:
    """A network that takes the time (CrossmodalNet, whatever its time encoding); not an MLP or a fit/predict
    baseline."""
    return (isinstance(model, torch.nn.Module) and getattr(model, "uses_time", True)
            and getattr(model, "time_axis", None) is not None)


def _check_model(model) -> None:
    if not has_time_input(model):
        raise DataError(f"{type(model).__name__} has no time input: it has no time effect to report")


def effects_from_means(means: pd.DataFrame, reference: Any, basal: np.ndarray | None) -> pd.DataFrame:
    """Mean predictions (proteins x times) -> effects against ``reference`` (see the module docstring)."""
    if isinstance(reference, str) and reference == "mean":
        learned = [c for c in means.columns if means.attrs["kind"][c] == "learned"]
        if not learned:
            raise DataError("reference='mean' averages over the learned times, and none was asked for: include "
                            "the learned times or pick another reference")
        ref = means[learned].mean(1).to_numpy()
    elif isinstance(reference, str) and reference == "none":
        ref = basal
    else:
        ref = None
        for c in means.columns:
            if str(c) == str(reference):
                ref = means[c].to_numpy()
        if ref is None:
            raise DataError(f"reference time {reference!r} is not among the times {list(means.columns)}")
    out = means.sub(ref, axis=0)
    out.attrs = {**means.attrs, "reference": str(reference)}
    return out


def _mean_predictions(model, forward: Callable[[np.ndarray | None], np.ndarray], n_cells: int,
                      times: Sequence[Any], reference: Any) -> tuple[pd.DataFrame, np.ndarray | None]:
    """Per time, the cells' mean prediction (proteins x times), and the basal one when the reference is "none";
    ``forward(time_weights or None)`` returns cells x proteins."""
    from crossmodalnet.inference.predict import resolve_time

    axis = model.time_axis
    obs = pd.DataFrame(index=pd.RangeIndex(n_cells).astype(str))
    means, kinds = {}, {}
    for t in times:
        kinds[str(t)] = time_kind(axis, t)
        with warnings.catch_warnings():  # "outside the learned range": recorded as kind="extrapolated" instead
            warnings.simplefilter("ignore", UserWarning)
            _, weights = resolve_time(model, obs, time=t)
        means[str(t)] = forward(weights).mean(0)
    names = [str(p) for p in model.protein_names]
    frame = pd.DataFrame(means, index=pd.Index(names, name="protein"))
    frame.columns.name = "time"
    frame.attrs = {"kind": kinds, "n_cells": int(n_cells)}
    basal = forward(None).mean(0) if isinstance(reference, str) and reference == "none" else None
    return frame, basal


def time_effects_from_inputs(model, inputs, times: Iterable[Any] | None = None, reference: Any = "mean",
                             batch_size: int = 1024) -> pd.DataFrame:
    """Time effects (proteins x times) on cells given as the model reads them (CSR genes or dense SVD scores,
    e.g. a data module's ``model_input(split)``). See :func:`time_effects` for the output."""
    _check_model(model)
    times = _times(model, times)
    n = inputs.shape[0]
    if n == 0:
        raise DataError("time_effects needs at least one cell")

    def forward(weights: np.ndarray | None) -> np.ndarray:
        out = []
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                for start in range(0, n, batch_size):
                    block = inputs[start:start + batch_size]
                    block = block.toarray() if hasattr(block, "toarray") else np.asarray(block)
                    tw = None if weights is None else torch.from_numpy(weights[start:start + batch_size])
                    out.append(model(torch.from_numpy(block.astype(np.float32)), tw).double().numpy())
        finally:
            model.train(was_training)
        return np.concatenate(out)

    means, basal = _mean_predictions(model, forward, n, times, reference)
    return effects_from_means(means, reference, basal)


def time_effects(model, adata, times: Iterable[Any] | None = None, reference: Any = "mean", *,
                 max_cells: int | None = DEFAULT_MAX_CELLS, seed: int = 0, **predict_kwargs) -> pd.DataFrame:
    """What the model's time adds to each protein: a DataFrame proteins x times.

    ``adata``: cells as for :func:`crossmodalnet.inference.predict.predict` (genes matched by name, normalised as
    the model was trained); at most ``max_cells`` of them (a seeded subset). ``times``: the learned times by
    default; unseen times are interpolated (or, outside the learned range, treated as the encoding treats them).
    ``reference``: ``"mean"`` (over the learned times; default), ``"none"`` (the basal prediction) or a time.
    ``attrs``: ``kind`` per time (learned / interpolated / extrapolated), ``reference``, ``n_cells``.
    Extra keyword arguments go to ``predict`` (``layer``, ``normalize``, ``min_shared``, ``batch_size``).
    """
    from crossmodalnet.inference.predict import predict

    model = _load(model)
    _check_model(model)
    times = _times(model, times)
    if adata.n_obs == 0:
        raise DataError("time_effects needs at least one cell")
    if max_cells is not None and adata.n_obs > max_cells:
        rows = np.sort(np.random.default_rng(seed).choice(adata.n_obs, max_cells, replace=False))
        adata = adata[rows]

    def at(time: Any, mode: str | None = None) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            out = predict(model, adata, time=time, time_mode=mode, **predict_kwargs)
        return np.asarray(out.X, dtype=np.float64)

    axis = model.time_axis
    names = [str(p) for p in model.protein_names]
    frame = pd.DataFrame({str(t): at(t).mean(0) for t in times}, index=pd.Index(names, name="protein"))
    frame.columns.name = "time"
    basal = at(None, "none").mean(0) if isinstance(reference, str) and reference == "none" else None
    frame.attrs = {"kind": {str(t): time_kind(axis, t) for t in times}, "n_cells": int(adata.n_obs)}
    return effects_from_means(frame, reference, basal)


def _load(model):
    if hasattr(model, "time_axis") or hasattr(model, "predict"):
        return model
    from crossmodalnet.inference.predict import load_model

    return load_model(model)


def top_proteins(effects: pd.DataFrame, k: int = 20) -> list[str]:
    """The ``k`` proteins whose effect varies most over the times (range of the row), largest first."""
    spread = (effects.max(1) - effects.min(1)).sort_values(ascending=False, kind="stable")
    return [str(p) for p in spread.index[:k]]


# -- scoring against a known truth (the drift simulator) ---------------------------------------------------------
def _centre(frame: pd.DataFrame, kinds: dict[str, str] | None) -> pd.DataFrame:
    """Each protein's row minus its mean over the learned times (all times when kinds are unknown)."""
    cols = [c for c in frame.columns if kinds is None or kinds.get(str(c), "learned") == "learned"] or list(frame)
    return frame.sub(frame[cols].mean(1), axis=0)


def score_time_effects(learned: pd.DataFrame, truth: pd.DataFrame, prefix: str = "time_effects/",
                       min_truth_range: float = 1e-8) -> dict[str, float]:
    """How well learned time effects follow the true ones (both proteins x times; matched by name).

    Each table is centred per protein on its own mean over the learned times (whatever reference the learned table
    was computed against), so a constant offset per protein never counts: only how the effect changes with time. Returns ``{prefix}pearson_overall`` (over every
    protein x time entry), ``{prefix}slope`` (least squares of learned on true: 1 = the true size), ``{prefix}rmse``
    beside ``{prefix}true_rms`` (the error of predicting no time effect), and with three or more times ``{prefix}pearson_protein_mean`` / ``_median`` (per protein,
    Pearson across times, over proteins whose true effect varies), ``{prefix}n_proteins_scored``, ``{prefix}n_times``.
    """
    truth = match_times(truth, learned.columns)
    times = [c for c in learned.columns if c in set(truth.columns)]
    proteins = [p for p in learned.index if p in set(truth.index)]
    if len(times) < 2 or not proteins:
        raise DataError(f"learned and true time effects share {len(times)} times and {len(proteins)} proteins; "
                        "scoring needs two times and one protein")
    kinds = learned.attrs.get("kind")
    a = _centre(learned.loc[proteins, times], kinds).to_numpy(np.float64)
    b = _centre(truth.loc[proteins, times], kinds).to_numpy(np.float64)
    out = {f"{prefix}n_times": float(len(times)), f"{prefix}pearson_overall": _pearson(a.ravel(), b.ravel())}
    # the size as well as the shape: least-squares slope of learned on true (1 = the full true effect, 0 = none)
    # and the root mean square error, both over every protein x time entry
    out[f"{prefix}slope"] = float((a * b).sum() / (b * b).sum()) if (b * b).sum() > 0 else float("nan")
    out[f"{prefix}rmse"] = float(np.sqrt(np.mean((a - b) ** 2)))
    out[f"{prefix}true_rms"] = float(np.sqrt(np.mean(b ** 2)))
    for j, t in enumerate(times):  # an unseen time: does the model shift each protein the right way there?
        if kinds is not None and kinds.get(t, "learned") != "learned":
            out[f"{prefix}at_{_key(t)}/pearson_across_proteins"] = _pearson(a[:, j], b[:, j])
    if len(times) >= 3:
        varies = np.ptp(b, axis=1) > min_truth_range
        r = np.array([_pearson(a[i], b[i]) for i in np.flatnonzero(varies)])
        r = r[np.isfinite(r)]
        out[f"{prefix}n_proteins_scored"] = float(len(r))
        if len(r):
            out[f"{prefix}pearson_protein_mean"] = float(r.mean())
            out[f"{prefix}pearson_protein_median"] = float(np.median(r))
    return {k: v for k, v in out.items() if np.isfinite(v)}


def match_times(truth: pd.DataFrame, labels: Iterable[Any]) -> pd.DataFrame:
    """``truth`` with columns renamed to the matching ``labels`` (same text, or the same number: 3.0 = "3")."""
    from crossmodalnet.data.timepoints import time_value

    truth = truth.copy()
    truth.index = truth.index.map(str)
    names = {}
    for col in truth.columns:
        for label in labels:
            if str(label) == str(col) or (time_value(label) is not None and time_value(label) == time_value(col)):
                names[col] = str(label)
                break
        else:
            names[col] = str(col)
    return truth.rename(columns=names)


def _key(label: Any) -> str:
    import re

    return re.sub(r"[\s/]+", "_", str(label).strip())


def true_time_effects(adata) -> pd.DataFrame | None:
    """The simulator's true time effect (``uns["simulation"]["time_effect"]``: the noise-free protein of a cell at
    the reference basal state at each time, centred over times) as proteins x times; None without a truth."""
    sim = adata.uns.get("simulation") if adata is not None else None
    if not sim or "time_effect" not in sim or "time_points" not in sim:
        return None
    effect = np.asarray(sim["time_effect"], dtype=np.float64)  # (times, proteins)
    times = [_label(v) for v in np.asarray(sim["time_points"], dtype=np.float64)]
    proteins = [str(p) for p in adata.obsm["protein"].columns]
    if effect.shape != (len(times), len(proteins)):
        raise DataError(f"uns['simulation']['time_effect'] has shape {effect.shape}, expected (times, proteins) = "
                        f"({len(times)}, {len(proteins)})")
    frame = pd.DataFrame(effect.T, index=pd.Index(proteins, name="protein"), columns=times)
    frame.columns.name = "time"
    return frame


def _label(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


# -- inside a training run ----------------------------------------------------------------------------------------
def run_time_effects(model, dm, run_dir=None, split: str = "train", max_cells: int = DEFAULT_MAX_CELLS,
                     seed: int = 0) -> tuple[pd.DataFrame | None, dict[str, float], pd.DataFrame | None]:
    """A training run's time effects: on a seeded subset of ``max_cells`` cells of ``split`` (the population the
    model learned), at the learned times, the held-out time and, on the simulator, every simulated time it can
    place. Writes ``run_dir/time_effects.csv`` (proteins x times); returns (effects, metrics, truth), the metrics
    scored against the simulator's truth when it exists (``time_effects/...``), else empty."""
    from crossmodalnet.data.timepoints import TimeError

    if not has_time_input(model) or model.time_axis.n_times < 2:
        return None, {}, None
    axis = model.time_axis
    truth = true_time_effects(dm.adata)
    times = list(axis.labels)
    extra = [] if dm.holdout_time is None else [dm.holdout_time]
    if truth is not None:
        extra += list(truth.columns)
    for t in extra:
        try:
            time_kind(axis, t)
        except TimeError:  # categorical axis, other unit: not placeable
            continue
        if not any(_same_time(t, s) for s in times):
            times.append(t)
    if axis.values is not None:
        from crossmodalnet.data.timepoints import time_value

        times.sort(key=lambda t: time_value(t))
    inputs = dm.model_input(split)
    if inputs.shape[0] > max_cells:
        rows = np.sort(np.random.default_rng(seed).choice(inputs.shape[0], max_cells, replace=False))
        inputs = inputs[rows]
    effects = time_effects_from_inputs(model, inputs, times)
    if run_dir is not None:
        from pathlib import Path

        if Path(run_dir).is_dir():
            effects.to_csv(Path(run_dir) / "time_effects.csv")
    metrics = score_time_effects(effects, truth) if truth is not None else {}
    return effects, metrics, truth


def read_time_effects(path, axis=None) -> pd.DataFrame | None:
    """A run's ``time_effects.csv`` (proteins x times) with ``attrs["kind"]`` per time when ``axis`` (the model's
    TimeAxis) is given; None when the file does not exist."""
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        return None
    frame = pd.read_csv(path, index_col=0)
    frame.index = frame.index.map(str)
    frame.columns = frame.columns.map(str)
    frame.attrs = {"kind": {c: time_kind(axis, _plain_label(c, axis)) for c in frame.columns} if axis else {}}
    return frame


def _plain_label(column: str, axis) -> Any:
    """The axis label a CSV column stands for (columns are written as text: "3" for the learned time 3)."""
    for label in axis.labels:
        if str(label) == column:
            return label
    return column


def _same_time(a: Any, b: Any) -> bool:
    from crossmodalnet.data.timepoints import time_value

    return str(a) == str(b) or (time_value(a) is not None and time_value(a) == time_value(b))


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else float("nan")
