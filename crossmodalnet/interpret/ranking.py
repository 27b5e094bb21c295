"""Ranking rules on top of summed attributions: the expression-matched null, rank intervals, seed ensembles.

Why: a gene's summed attribution grows with how much and how often it is expressed (gradient x input scales by
the expression itself), so abundant housekeeping genes top every list regardless of relevance. The
expression-matched null scores each gene against the genes most like it in mean and sparsity (its neighbours in
the rank space of both), so a gene ranks high only if the model uses it more than genes of its kind.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree
from scipy.stats import rankdata

NULLS = ("none", "expression_matched")
NULL_NEIGHBOURS = 50          # genes of similar mean and sparsity that make a gene's null
MAD_SCALE = 1.4826            # MAD -> sd under normality


def gene_stats(total: np.ndarray, total_sq: np.ndarray, nonzero: np.ndarray, n: int,
               genes: Sequence[str]) -> pd.DataFrame:
    """Per gene over ``n`` cells: mean, sd (population), fraction of cells expressing it."""
    n = max(int(n), 1)
    mean = np.asarray(total, np.float64) / n
    sd = np.sqrt(np.clip(np.asarray(total_sq, np.float64) / n - mean**2, 0.0, None))
    return pd.DataFrame({"mean": mean, "sd": sd, "frac_expressed": np.asarray(nonzero, np.float64) / n},
                        index=pd.Index([str(g) for g in genes], name="gene"))


def matched_neighbours(stats: pd.DataFrame, k: int = NULL_NEIGHBOURS) -> np.ndarray:
    """For every gene, the indices of the ``k`` other genes nearest to it in (rank of mean, rank of fraction
    expressed), both scaled to [0, 1]; shape (genes, k). Ties in distance go to the lower index."""
    g = len(stats)
    k = int(min(k, g - 1))
    if k < 1:
        raise ValueError("the expression-matched null needs at least 2 genes")
    pts = np.column_stack([rankdata(stats["mean"]) / g, rankdata(stats["frac_expressed"]) / g])
    _, idx = cKDTree(pts).query(pts, k=k + 1)
    out = np.empty((g, k), dtype=np.int64)
    for i, row in enumerate(np.atleast_2d(idx)):                # drop the gene itself (not always first on ties)
        out[i] = [j for j in row if j != i][:k]
    return out


def expression_matched(scores: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """Robust z-score of each gene's score against its expression-matched neighbours' scores, per protein:
    (s_g - median(s_nbrs)) / (1.4826 MAD(s_nbrs)). ``scores``: (..., genes); ``neighbours``: (genes, k)."""
    s = np.asarray(scores, dtype=np.float64)
    nb = s[..., neighbours]                                     # (..., genes, k)
    med = np.median(nb, axis=-1)
    mad = MAD_SCALE * np.median(np.abs(nb - med[..., None]), axis=-1)
    floor = 1e-12 + 1e-6 * np.abs(s).max(axis=-1, keepdims=True)  # a flat neighbourhood is not a division by zero
    return (s - med) / np.maximum(mad, floor)


def apply_null(scores: np.ndarray, null: str, stats: pd.DataFrame | None,
               neighbours: np.ndarray | None = None) -> np.ndarray:
    """``scores`` (..., genes) under ``null`` (:data:`NULLS`)."""
    if null not in NULLS:
        raise ValueError(f"null must be one of {NULLS}, got {null!r}")
    if null == "none":
        return np.asarray(scores, dtype=np.float64)
    if stats is None:
        raise ValueError("the expression-matched null needs the genes' mean and fraction expressed (gene_stats)")
    return expression_matched(scores, matched_neighbours(stats) if neighbours is None else neighbours)


def ranks(scores: np.ndarray) -> np.ndarray:
    """1 = highest score, along the last axis (ties: the earlier gene first)."""
    return rankdata(-np.asarray(scores, dtype=np.float64), method="ordinal", axis=-1).astype(np.int64)


def rank_interval(replicate_scores: np.ndarray, genes: np.ndarray, level: float = 0.9,
                  k: int | None = None) -> pd.DataFrame:
    """Rank of ``genes`` (indices) in each replicate ranking (replicates x genes): the central ``level`` interval
    and, with ``k``, the fraction of replicates that put the gene in the top ``k``."""
    r = ranks(np.asarray(replicate_scores))[:, genes]
    lo, hi = np.quantile(r, [(1 - level) / 2, (1 + level) / 2], axis=0, method="nearest")
    out = pd.DataFrame({"rank_lo": lo.astype(int), "rank_hi": hi.astype(int)})
    if k is not None:
        out[f"in_top{k}"] = (r <= k).mean(0)
    return out


ENSEMBLE = ("mean", "mean_rank")


def ensemble_scores(frames: Sequence[pd.DataFrame], how: str = "mean") -> pd.DataFrame:
    """Rankings of several models (seeds, an ensemble) combined into one, over the proteins and genes all members
    share (gene filters fit on each training split can differ by a few genes). ``how="mean"``: the mean of each
    member's scores divided by that protein's largest |score| (members on different scales weigh the same; a gene
    strong in one member and weak in others keeps some credit); ``"mean_rank"``: minus the mean rank (robust to
    one member's outliers). Higher = better either way."""
    if not frames:
        raise ValueError("no rankings to combine")
    if how not in ENSEMBLE:
        raise ValueError(f"how must be one of {ENSEMBLE}, got {how!r}")
    proteins = [p for p in frames[0].index if all(p in f.index for f in frames[1:])]
    genes = [g for g in frames[0].columns if all(g in f.columns for f in frames[1:])]
    if not proteins or not genes:
        raise ValueError("rankings to combine must share proteins and genes")
    members = [f.loc[proteins, genes].to_numpy(dtype=np.float64) for f in frames]
    if how == "mean_rank":
        combined = -np.mean([ranks(m) for m in members], axis=0)
    else:
        combined = np.mean([m / np.maximum(np.abs(m).max(1, keepdims=True), 1e-300) for m in members], axis=0)
    return pd.DataFrame(combined, index=pd.Index(proteins, name=frames[0].index.name),
                        columns=pd.Index(genes, name=frames[0].columns.name))


def mean_rank_scores(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """:func:`ensemble_scores` by mean rank."""
    return ensemble_scores(frames, "mean_rank")


def ensemble_top(frames: Sequence[pd.DataFrame], protein: str, k: int = 10, level: float = 0.9,
                 how: str = "mean") -> pd.DataFrame:
    """The top ``k`` genes of ``protein`` in the combined ranking (:func:`ensemble_scores`), with the ``level``
    interval of each gene's rank over the members (``rank_lo``, ``rank_hi``) and the fraction of members that put it
    in the top k: the seed-to-seed stability of the list."""
    table = ensemble_scores(frames, how)
    combined = table.loc[protein].sort_values(ascending=False, kind="stable")
    genes = combined.index[:k]
    idx = table.columns.get_indexer(genes)
    member = np.stack([f.loc[protein, table.columns].to_numpy(dtype=np.float64) for f in frames])
    out = pd.DataFrame({"protein": protein, "gene": genes, "rank": np.arange(1, len(genes) + 1),
                        "score": combined.iloc[:k].to_numpy()})
    return pd.concat([out, rank_interval(member, idx, level, k).set_axis(out.index)], axis=1)
