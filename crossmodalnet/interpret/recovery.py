"""Ground-truth checks of gene rankings: the simulator's causal genes and, on real data, each protein's own gene.

The simulator records, per protein, the genes that drive it (``uns["simulation"]["causal_genes"]``: the coding
gene first, then the regulators). A ranking per protein (saliency, or the baseline: |Pearson(gene, protein)|
over cells) is scored by AUROC (causal vs all other genes) and precision@k with k = number of causal genes,
then averaged over proteins. On real CITE-seq the only gene known to drive a protein is its coding gene
(:mod:`crossmodalnet.interpret.coding_genes`): :func:`coding_gene_ranks` gives its rank under a ranking.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.stats import rankdata

from crossmodalnet.data.validate import DataError


def causal_sets(adata_or_uns) -> dict[str, list[str]]:
    """protein -> causal gene names from the simulator's ground truth."""
    uns = adata_or_uns.uns if hasattr(adata_or_uns, "uns") else adata_or_uns
    sim = uns.get("simulation") if isinstance(uns, Mapping) else None
    if sim is None or "causal_genes" not in sim:
        raise DataError("no simulator ground truth: uns['simulation']['causal_genes'] is missing")
    return {str(p): [str(g) for g in row] for p, row in zip(sim["protein_names"], sim["causal_genes"])}


def gene_protein_correlation(genes, proteins: np.ndarray) -> np.ndarray:
    """Pearson correlation of every gene with every protein over cells, (proteins x genes), sparse-friendly.

    A gene or protein that is constant over the cells gets 0.
    """
    n = genes.shape[0]
    y = np.asarray(proteins, dtype=np.float64)
    yc = y - y.mean(0)
    if sp.issparse(genes):
        g = sp.csr_matrix(genes, dtype=np.float64)
        mean = np.asarray(g.mean(0)).ravel()
        sq = np.asarray(g.multiply(g).sum(0)).ravel()
        cov = np.asarray(g.T @ yc).T                                 # sum_i x_ig (y_ip - ybar_p)
    else:
        g = np.asarray(genes, dtype=np.float64)
        mean, sq = g.mean(0), (g * g).sum(0)
        cov = yc.T @ g
    var_g = np.clip(sq - n * mean**2, 0, None)
    var_y = (yc * yc).sum(0)
    denom = np.sqrt(np.outer(var_y, var_g))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(denom > 0, cov / denom, 0.0)
    return r


def ranking_recovery(scores: pd.DataFrame, causal: dict[str, Sequence[str]]) -> pd.DataFrame:
    """Per protein: AUROC and precision@k (k = number of causal genes present) of ``scores`` (proteins x genes,
    higher = more important), and the rank of the coding gene (first causal gene)."""
    genes = pd.Index(scores.columns.astype(str))
    rows = []
    for protein, values in zip(scores.index.astype(str), scores.to_numpy(dtype=np.float64)):
        if protein not in causal:
            continue
        positive = genes.isin(causal[protein])
        k = int(positive.sum())
        if k == 0 or k == len(genes):
            continue
        ranks = rankdata(values)                                    # ascending, ties averaged
        auroc = (ranks[positive].sum() - k * (k + 1) / 2) / (k * (len(genes) - k))
        order = np.argsort(-values, kind="stable")
        coding = causal[protein][0]
        coding_rank = int(np.flatnonzero(genes[order] == coding)[0]) + 1 if coding in genes else np.nan
        rows.append({"protein": protein, "auroc": float(auroc), "precision_at_k": float(positive[order[:k]].mean()),
                     "k": k, "coding_gene_rank": coding_rank})
    if not rows:
        raise DataError("no protein of the ranking has causal genes among the ranked genes")
    return pd.DataFrame(rows).set_index("protein")


def summarise(per_protein: pd.DataFrame, prefix: str) -> dict[str, float]:
    """Averages over proteins: auroc, precision_at_k and the fraction whose coding gene ranks first."""
    return {f"{prefix}auroc": float(per_protein["auroc"].mean()),
            f"{prefix}precision_at_k": float(per_protein["precision_at_k"].mean()),
            f"{prefix}coding_gene_top1": float((per_protein["coding_gene_rank"] == 1).mean())}


def compare_with_correlation(saliency_scores: pd.DataFrame, genes, proteins: np.ndarray,
                             causal: dict[str, Sequence[str]], prefix: str = "") -> dict[str, float]:
    """Saliency vs the correlation baseline on the same cells: averaged recovery metrics of both.

    ``genes``: cells x genes (columns in the order of ``saliency_scores.columns``); ``proteins``: cells x proteins
    (columns in the order of ``saliency_scores.index``).
    """
    corr = pd.DataFrame(np.abs(gene_protein_correlation(genes, proteins)), index=saliency_scores.index,
                        columns=saliency_scores.columns)
    out = summarise(ranking_recovery(saliency_scores, causal), f"{prefix}saliency_")
    out.update(summarise(ranking_recovery(corr, causal), f"{prefix}correlation_"))
    return out


def coding_gene_ranks(scores: pd.DataFrame, coding: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """Per protein of ``scores`` (proteins x genes, higher = more important) with a coding gene among the ranked
    genes: the rank (1 = top, ties: the earlier gene first) of its best-ranked coding gene, that gene, how many of
    its coding genes were ranked and the number of genes ranked. Proteins without one are left out."""
    genes = pd.Index(scores.columns.astype(str))
    rows = []
    for protein, values in zip(scores.index.astype(str), scores.to_numpy(dtype=np.float64)):
        present = [g for g in coding.get(protein, ()) if g in genes]
        if not present:
            continue
        rank = pd.Series(rankdata(-values, method="ordinal"), index=genes)[present]
        rows.append({"protein": protein, "gene": str(rank.idxmin()), "rank": int(rank.min()),
                     "n_coding_ranked": len(present), "n_genes": len(genes)})
    if not rows:
        raise DataError("no protein of the ranking has a coding gene among the ranked genes")
    return pd.DataFrame(rows).set_index("protein")
