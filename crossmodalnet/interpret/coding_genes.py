"""Which gene codes for a measured surface protein: a curated table shipped with the package.

A saliency ranking is only checkable on real data where the answer is known for at least some proteins: the
protein's own gene (CD3 -> CD3E/CD3D/CD3G, CD56 -> NCAM1, HLA-DR -> HLA-DRA, ...). The table
(``data/coding_genes.tsv``) covers the Open Problems BMMC / Kaggle 2022 CITE-seq panel and common TotalSeq names;
glycan epitopes (CD57, CD15) and isotype controls are left out on purpose: no gene codes for them.
"""
from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources
from typing import Iterable, Sequence

import pandas as pd

# suffixes that CITE-seq pipelines append to antibody names ("CD3_PROT", "CD4-TotalSeqB", "CD8a_ADT")
_SUFFIX = re.compile(r"[_\- ]?(prot|adt|totalseq[abc]?|antibody|ab)$", re.IGNORECASE)


@lru_cache(maxsize=1)
def coding_gene_table() -> pd.DataFrame:
    """The curated table: index = protein name, columns ``genes`` (tuple of symbols, main chain first), ``note``."""
    text = resources.files("crossmodalnet.interpret").joinpath("data/coding_genes.tsv").read_text()
    rows = [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")]
    header, body = rows[0], rows[1:]
    frame = pd.DataFrame([r + [""] * (len(header) - len(r)) for r in body], columns=header).set_index("protein")
    frame["genes"] = [tuple(g for g in s.split(";") if g) for s in frame["genes"]]
    return frame


def _key(name: str) -> str:
    return _SUFFIX.sub("", str(name).strip()).lower()


def coding_genes(proteins: Iterable[str], table: pd.DataFrame | None = None) -> dict[str, tuple[str, ...]]:
    """protein -> its coding gene symbols, for the proteins the table knows (matched case-insensitively, common
    antibody suffixes such as ``_PROT`` or ``-TotalSeqB`` ignored). Unknown proteins are left out."""
    table = coding_gene_table() if table is None else table
    lookup = {_key(p): genes for p, genes in table["genes"].items()}
    out = {}
    for protein in proteins:
        genes = lookup.get(_key(protein))
        if genes:
            out[str(protein)] = tuple(genes)
    return out


def coding_gene_status(proteins: Sequence[str], model_genes: Iterable[str],
                       input_genes: Iterable[str] | None = None) -> pd.DataFrame:
    """One row per (protein, coding gene) of the table: is the gene among the model's genes, and if not, why.

    ``reason``: ``ranked`` (the model has it), ``not in the checkpoint's genes`` (removed by the gene filter or
    absent from the training file) or, with ``input_genes``, ``not in the input file either``.
    """
    model_set = {str(g) for g in model_genes}
    input_set = None if input_genes is None else {str(g) for g in input_genes}
    rows = []
    for protein, genes in coding_genes(proteins).items():
        for gene in genes:
            if gene in model_set:
                reason = "ranked"
            elif input_set is not None and gene not in input_set:
                reason = "not in the checkpoint's genes nor in the input file"
            else:
                reason = ("not in the checkpoint's genes (removed by the gene filter, e.g. min_cells / n_top_genes, "
                          "or absent from the training file)")
            rows.append({"protein": protein, "gene": gene, "in_model": gene in model_set, "reason": reason})
    return pd.DataFrame(rows, columns=["protein", "gene", "in_model", "reason"])
