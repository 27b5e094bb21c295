"""Gene set enrichment (GSEA prerank, via gseapy) of a saliency ranking against a user's .gmt file, offline.

The paper ran GSEA with KEGG on the CD38 and Tim3 saliency rankings (Figure S4); here the gene sets come from
any local .gmt file (e.g. Reactome, KEGG, MSigDB exports), so nothing is downloaded.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from crossmodalnet.data.validate import DataError


def read_gmt(path: str | Path) -> dict[str, list[str]]:
    """Gene sets of a .gmt file: name <tab> description <tab> gene <tab> gene ..."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"gene set file not found: {path}")
    sets: dict[str, list[str]] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.rstrip("\n").split("\t")
        if len(parts) < 3:
            raise DataError(f"{path}:{n} is not a .gmt line (name, description, genes separated by tabs)")
        sets[parts[0]] = [g for g in parts[2:] if g]
    if not sets:
        raise DataError(f"gene set file {path} holds no gene sets")
    return sets


@dataclass
class GseaResult:
    """``table``: one row per tested set (term, es, nes, pval, fdr, size, lead_genes), best NES first;
    ``running``: term -> (running enrichment score over the ranking, hit positions); ``ranking``: the input."""

    table: pd.DataFrame
    running: dict[str, tuple[np.ndarray, np.ndarray]] = field(repr=False)
    ranking: pd.Series = field(repr=False)


def gsea_prerank(ranking: pd.Series, gene_sets: str | Path | dict[str, list[str]], *, top: int | None = None,
                 min_size: int = 5, max_size: int = 500, permutation_num: int = 200, seed: int = 0,
                 threads: int = 1) -> GseaResult:
    """GSEA prerank of a gene ranking (index = genes, values = scores, higher = more important).

    ``top`` keeps only the highest-scoring genes (the paper used the top 100 saliency genes).
    """
    import gseapy

    if not isinstance(ranking, pd.Series) or ranking.empty:
        raise DataError("ranking must be a non-empty pandas Series indexed by gene names")
    rnk = ranking.astype(float).dropna().sort_values(ascending=False)
    rnk.index = rnk.index.astype(str)
    if top is not None:
        rnk = rnk.iloc[:top]
    sets = read_gmt(gene_sets) if not isinstance(gene_sets, dict) else gene_sets
    ranked = set(rnk.index)
    usable = {k: v for k, v in sets.items() if min_size <= len(ranked.intersection(v)) <= max_size}
    if not usable:
        best = max((len(ranked.intersection(v)) for v in sets.values()), default=0)
        raise DataError(f"no gene set shares between {min_size} and {max_size} genes with the ranking of "
                        f"{len(rnk)} genes (largest overlap: {best}); do the gene names match the .gmt "
                        f"(e.g. ranking genes {list(rnk.index[:3])})?")
    res = gseapy.prerank(rnk=rnk, gene_sets=usable, min_size=min_size, max_size=max_size,
                         permutation_num=permutation_num, outdir=None, seed=seed, threads=threads,
                         no_plot=True, verbose=False)
    rows, running = [], {}
    for term, r in res.results.items():
        rows.append({"term": term, "es": float(r["es"]), "nes": float(r["nes"]), "pval": float(r["pval"]),
                     "fdr": float(r["fdr"]), "size": len(r["hits"]), "lead_genes": r["lead_genes"]})
        running[term] = (np.asarray(r["RES"], dtype=float), np.asarray(r["hits"], dtype=int))
    table = pd.DataFrame(rows).sort_values(["nes", "pval"], ascending=[False, True], ignore_index=True)
    return GseaResult(table, running, rnk)


GSEA_DIRECTIONS = ("up", "any")


def saliency_gsea(result, protein: str, gene_sets: str | Path | dict[str, list[str]], *, by: str | None = None,
                  null: str | None = None, direction: str = "up", top: int | None = None,
                  **options) -> GseaResult:
    """GSEA prerank of one protein's saliency ranking (a :class:`~crossmodalnet.interpret.saliency.SaliencyResult`).

    ``direction="up"`` (default) orders genes by the size of their score signed by their association with the
    predicted protein, so the sets enriched at the top are those of genes the model uses that go *up* where the
    protein is high (an importance ranking alone mixes a protein's positive and negative markers: for CD3 the B-cell
    and monocyte MHC class II genes that mark the cells without it). ``"any"``: the ranking as it is. ``top=100``:
    the paper's setting (only the 100 highest-ranked genes). ``options``: see :func:`gsea_prerank`.
    """
    if direction not in GSEA_DIRECTIONS:
        raise ValueError(f"direction must be one of {GSEA_DIRECTIONS}, got {direction!r}")
    kwargs = {k: v for k, v in (("by", by), ("null", null)) if v is not None}
    ranking = result.ranking(protein, **kwargs)
    if direction == "up":
        if getattr(result, "association", None) is None:
            raise ValueError("direction='up' needs the genes' association with the predicted protein; this result "
                             "has none (use direction='any')")
        sign = np.sign(result.association.loc[protein, ranking.index].to_numpy())
        ranking = pd.Series(ranking.abs().to_numpy() * np.where(sign == 0, 1.0, sign), index=ranking.index)
    return gsea_prerank(ranking, gene_sets, top=top, **options)
