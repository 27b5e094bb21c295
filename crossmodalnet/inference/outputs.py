"""What predict hands back to a scanpy/muon user: predictions that keep the query's annotations, a score against
measured proteins when the query has them, and the three ways of writing the result (a predictions .h5ad, the
input with ``obsm["protein_predicted"]``, or a MuData with a ``prot_pred`` modality).
"""
from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from crossmodalnet.data.counts import looks_like_counts
from crossmodalnet.data.query import Query
from crossmodalnet.errors import DataError
from crossmodalnet.utils.atomic import atomic_path, atomic_text

log = logging.getLogger("crossmodalnet")

PREDICTED_KEY = "protein_predicted"   # obsm key of the predictions in the input object
PREDICTED_MOD = "prot_pred"           # MuData modality of the predictions

from crossmodalnet.inference.annotations import TRAINING_KEYS, keep_annotations  # noqa: E402,F401  (public here too)
def score(pred: ad.AnnData, measured: pd.DataFrame, model: Any = None, source: str | None = None) -> dict | None:
    """Score predictions against the query's measured proteins (the proteins both have; cells with all of them
    measured): mean per-cell and per-protein Pearson, MSE, and each protein's Pearson and MSE.

    Adds ``layers["measured"]`` (NaN where not measured), ``obs["measured_pearson"]``,
    ``var["measured_pearson"]``/``var["measured_mse"]`` and ``uns["crossmodalnet"]["scores"]`` to ``pred``.
    Returns the summary (None when no protein is shared).
    """
    from crossmodalnet.reporting.metrics import pearson_per_cell, pearson_per_protein

    names = list(pred.var_names)
    shared = [p for p in names if p in measured.columns]
    if not shared:
        log.info("the query's measured proteins share no name with the model's (e.g. %s vs %s): not scored",
                 list(measured.columns[:3]), names[:3])
        return None
    values, note = on_training_scale(measured, shared, model, source)
    log.debug("scores: %s", note)  # the console scripts print it with the scores
    rows = np.isfinite(values).all(1)
    if rows.sum() < 2:
        log.info("fewer than 2 cells have every shared protein measured: not scored")
        return None
    cols = [names.index(p) for p in shared]
    p_x = np.asarray(pred.X, dtype=np.float64)[rows][:, cols]
    t_x = values[rows]
    per_cell = pearson_per_cell(p_x, t_x)
    per_protein = pearson_per_protein(p_x, t_x)
    mse_protein = ((p_x - t_x) ** 2).mean(0)
    full = np.full((pred.n_obs, pred.n_vars), np.nan, dtype=np.float32)
    full[:, cols] = values
    pred.layers["measured"] = full
    pred.obs["measured_pearson"] = np.nan
    pred.obs.loc[pred.obs_names[rows], "measured_pearson"] = per_cell
    pred.var["measured_pearson"] = np.nan
    pred.var["measured_mse"] = np.nan
    pred.var.loc[shared, "measured_pearson"] = per_protein
    pred.var.loc[shared, "measured_mse"] = mse_protein
    summary = {
        "n_cells": int(rows.sum()), "n_proteins": len(shared),
        "pearson_cell": float(per_cell.mean()) if len(shared) > 1 else float("nan"),
        "pearson_protein": float(per_protein.mean()), "mse": float(((p_x - t_x) ** 2).mean()),
        "proteins_not_measured": [p for p in names if p not in shared],
        "measured_from": source or "", "note": note,
        "per_protein": {p: {"pearson": float(r), "mse": float(m)} for p, r, m in zip(shared, per_protein, mse_protein)},
    }
    info = dict(pred.uns.get("crossmodalnet", {}))
    info["scores"] = {k: v for k, v in summary.items() if k != "per_protein"}  # per protein: in var
    pred.uns["crossmodalnet"] = info
    return summary


def on_training_scale(measured: pd.DataFrame, shared: list[str], model: Any,
                      source: str | None = None) -> tuple[np.ndarray, str]:
    """The query's measured values of ``shared`` proteins on the scale the model was trained on, and one line
    saying which matrix was used and how.

    Raw ADT counts go through the training run's own normalisation: CLR per cell (``protein=clr``), or the dsb
    transform fitted on the training cells (``protein=dsb``/``dsb_no_empty``, stored with the model as
    ``preprocessing["dsb_state"]``; it needs every protein of the panel). Values that are not counts are compared
    as given (the query must then hold values on the training scale already).
    """
    pre = (getattr(model, "preprocessing", None) or {}) if model is not None else {}
    protein = pre.get("protein", "as_is")
    where = source or "the measured proteins"
    values = measured[shared].to_numpy(dtype=np.float64)
    counts = looks_like_counts(values)
    if protein == "clr" and counts:  # the same per-cell CLR training used
        from crossmodalnet.data.preprocess import clr

        values = clr(pd.DataFrame(values, columns=shared)).to_numpy(dtype=np.float64)
        return values, f"raw ADT counts in {where}, CLR-normalised per cell as in training (protein=clr)"
    if protein in ("dsb", "dsb_no_empty") and counts:
        state = pre.get("dsb_state")
        panel = list(state.get("proteins_") or []) if state else []
        if state and panel and all(p in measured.columns for p in panel):
            from crossmodalnet.data.dsb import DSB

            frame = DSB.from_state(state).transform(measured[panel].astype(np.float64))
            return (frame[shared].to_numpy(dtype=np.float64),
                    f"raw ADT counts in {where}, normalised with the training run's fitted dsb (protein={protein})")
        why = ("the model was saved without its dsb state (trained before it was recorded)" if not state else
               f"the query lacks {len([p for p in panel if p not in measured.columns])} of the panel's proteins dsb "
               "needs")
        log.warning("the measured proteins in %s look like raw ADT counts but the model predicts %s-normalised "
                    "values and %s: scored as given (Pearson per protein is comparable in rank, MSE is not)",
                    where, protein, why)
        return values, f"raw counts in {where} compared as given ({why}); the model predicts protein={protein} values"
    return values, f"{where} compared as given; the model predicts protein={protein} values"


def raw_counts_for_scoring(model: Any, adata: Any) -> tuple[pd.DataFrame | None, str | None]:
    """The query's raw ADT counts (``obsm["protein_counts"]``, the key training reads them from) when the model
    normalised proteins from raw counts (dsb, CLR); None otherwise."""
    from crossmodalnet.data.preprocess import PROTEIN_COUNTS_KEY

    pre = (getattr(model, "preprocessing", None) or {}) if model is not None else {}
    if pre.get("protein") not in ("clr", "dsb", "dsb_no_empty") or adata is None:
        return None, None
    obsm = getattr(adata, "obsm", None)
    if obsm is None or PROTEIN_COUNTS_KEY not in obsm:
        return None, None
    value = obsm[PROTEIN_COUNTS_KEY]
    if not isinstance(value, pd.DataFrame):
        return None, None
    return value, f"obsm[{PROTEIN_COUNTS_KEY!r}]"


def write_scores(summary: dict, output: Path) -> Path:
    """The scores as JSON beside the output file: ``<output stem>_scores.json``."""
    path = output.with_name(f"{output.stem}_scores.json")
    return atomic_text(path, json.dumps(summary, indent=2, sort_keys=True, default=float))


def predictions_frame(pred: ad.AnnData) -> pd.DataFrame:
    """cells x proteins DataFrame of the predicted values."""
    return pd.DataFrame(np.asarray(pred.X), index=pred.obs_names, columns=list(pred.var_names))


def add_to_input(data: Any, pred: ad.AnnData, key: str = PREDICTED_KEY) -> Any:
    """Put the predictions into the input object (in place) and return it: ``obsm[key]`` (a DataFrame) of an
    AnnData, with what ``uns["crossmodalnet"]`` of the predictions records in ``uns[key]``, or the ``prot_pred``
    modality of a MuData."""
    from crossmodalnet.data.sources import is_mudata, quiet_mudata

    if is_mudata(data):
        with quiet_mudata():
            data.mod[PREDICTED_MOD] = pred
            data.update()
        return data
    if not isinstance(data, ad.AnnData):
        raise DataError(f"cannot add predictions to a {type(data).__name__}; give an AnnData or MuData")
    if data.isbacked:
        raise DataError("cannot add predictions to a backed AnnData; load it into memory first")
    frame = predictions_frame(pred)
    if not frame.index.equals(data.obs_names):
        frame = frame.reindex(data.obs_names)
    data.obsm[key] = frame
    data.uns[key] = copy.deepcopy(dict(pred.uns.get("crossmodalnet", {})))  # model, times, training scale, scores
    return data


def write_prediction(pred: ad.AnnData, query: Query, output: Path, into_input: bool = False) -> str:
    """Write ``pred`` to ``output``: .h5mu -> a MuData with the query's RNA (or all its modalities) and
    ``prot_pred``; .h5ad with ``into_input`` -> the query AnnData with ``obsm["protein_predicted"]``; .h5ad ->
    the predictions alone. Returns a one-line description of what was written."""
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix == ".h5mu":
        import mudata as md

        from crossmodalnet.data.sources import quiet_mudata

        with quiet_mudata():
            if query.is_mudata:
                mdata = query.container
                mdata.mod[PREDICTED_MOD] = pred
                mdata.update()
            else:
                mdata = md.MuData({"rna": _in_memory(query.rna), PREDICTED_MOD: pred})
            with atomic_path(output) as tmp:  # written whole, then renamed: never a half-written file
                mdata.write_h5mu(tmp)
        return f"MuData with modalities {list(mdata.mod)} ({PREDICTED_MOD}: {pred.n_obs} cells x {pred.n_vars} proteins)"
    if output.suffix != ".h5ad":
        raise DataError(f"--output must end in .h5ad or .h5mu, got {output.name}")
    if into_input:
        if query.is_mudata:
            raise DataError("--add-to-input with a .h5mu input: write a MuData (--output x.h5mu) instead")
        adata = add_to_input(_in_memory(query.rna), pred)
        with atomic_path(output) as tmp:
            adata.write_h5ad(tmp)
        return f"the input ({adata.n_obs} cells x {adata.n_vars} genes) with obsm[{PREDICTED_KEY!r}]"
    with atomic_path(output) as tmp:
        pred.write_h5ad(tmp)
    return f"{pred.n_obs} cells x {pred.n_vars} proteins"


def _in_memory(adata: ad.AnnData) -> ad.AnnData:
    return adata.to_memory() if adata.isbacked else adata.copy()


def predict_query(model, query: Query, *, score_measured: bool = True, **predict_kwargs) -> tuple[ad.AnnData, dict | None]:
    """:func:`crossmodalnet.inference.predict.predict` on a :class:`Query`, then its annotations kept and, when it carries
    measured proteins, the predictions scored. Returns (predictions, score summary or None)."""
    from crossmodalnet.inference.predict import predict

    predict_kwargs.setdefault("where", query.where)
    pred = predict(model, query.rna, **predict_kwargs)
    keep_annotations(pred, query, model)
    summary = None
    if score_measured:
        measured, source = raw_counts_for_scoring(model, query.rna)  # the training run's own starting point
        if measured is None:
            measured, source = query.proteins, query.protein_source
        if measured is not None:
            summary = score(pred, measured, model, source)
    return pred, summary
