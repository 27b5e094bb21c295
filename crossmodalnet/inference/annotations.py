"""Predictions keep the query's annotations: what a scanpy/muon user put on the cells (UMAP, neighbours, uns)
travels to the predicted-protein AnnData, and the training normalisation is recorded beside it."""
from __future__ import annotations

import copy
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from crossmodalnet.data.query import Query

# uns entries indexed by genes: meaningless on a cells x proteins object
GENE_INDEXED_UNS = ("hvg", "rank_genes_groups", "log1p", "highly_variable_genes")
TRAINING_KEYS = ("rna", "target_sum", "protein", "time_key", "protein_key")


def keep_annotations(pred: ad.AnnData, query: Query, model: Any = None) -> ad.AnnData:
    """Copy the query's gene-free annotations into ``pred`` (in place): obsm (X_umap, X_pca, ...), obsp, uns
    (without gene-indexed entries), and, for a MuData, its own obsm/uns; record the training normalisation in
    ``uns["crossmodalnet"]["training"]``."""
    cells = pred.obs_names
    sources = [query.rna]
    if query.is_mudata:
        sources.append(query.container)
    for src in sources:
        rows = pd.Index(src.obs_names).get_indexer(cells)
        if (rows < 0).any():
            continue
        identity = bool((rows == np.arange(len(rows))).all())
        for key, value in src.obsm.items():
            if key in pred.obsm:
                continue
            if isinstance(value, pd.DataFrame):
                pred.obsm[key] = (value if identity else value.iloc[rows]).set_axis(cells).copy()
            else:
                arr = value.toarray() if hasattr(value, "toarray") else np.asarray(value)
                pred.obsm[key] = arr if identity else arr[rows]
        if identity:
            for key, value in src.obsp.items():
                if key not in pred.obsp:
                    pred.obsp[key] = value
        for key, value in src.uns.items():
            if key not in pred.uns and key not in GENE_INDEXED_UNS:
                pred.uns[key] = copy.deepcopy(value)
    if model is not None:
        pre = getattr(model, "preprocessing", None) or {}
        info = dict(pred.uns.get("crossmodalnet", {}))
        info["training"] = {k: pre[k] for k in TRAINING_KEYS if pre.get(k) is not None}
        info["training"].setdefault("protein", "as_is")
        pred.uns["crossmodalnet"] = info
    return pred
