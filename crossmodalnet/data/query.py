"""Inputs to predict and saliency: the same forms training accepts, read through :mod:`crossmodalnet.data.sources`.

A query is an .h5ad/.h5mu file or an in-memory AnnData/MuData. Its genes are read from the RNA part (an .h5ad
stays on disk, ``backed="r"``, and is streamed batch by batch); measured proteins, when it carries any (an obsm
key, the MuData's protein modality, or a CSV/TSV table keyed by barcode), are kept for scoring the predictions.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from crossmodalnet.data.sources import (is_mudata, mudata_modalities, proteins_from_obsm, read_file,
                                        read_protein_table)
from crossmodalnet.data.validate import PROTEIN_KEY, DataError

log = logging.getLogger("crossmodalnet")

# obsm keys tried, in order, for measured proteins when none is named (ours, then totalVI's)
PROTEIN_KEYS = (PROTEIN_KEY, "protein_expression")


@dataclass
class Query:
    """The cells to predict: ``rna`` (genes, obs with any MuData-level columns), measured ``proteins`` or None,
    and ``container`` (the AnnData or MuData as given) for outputs that extend the input."""

    rna: ad.AnnData
    proteins: pd.DataFrame | None
    container: Any
    where: str
    protein_source: str | None = None

    @property
    def is_mudata(self) -> bool:
        return is_mudata(self.container)

    def close(self) -> None:
        """Close a backed .h5ad (no-op otherwise)."""
        if isinstance(self.rna, ad.AnnData) and self.rna.isbacked:
            self.rna.file.close()


def read_query(data: Any, *, protein_key: str | None = None, protein_names_key: str | None = None,
               protein_table: str | Path | pd.DataFrame | None = None, rna_mod: str = "rna",
               protein_mod: str = "prot", backed: bool = True, default_protein_keys=PROTEIN_KEYS,
               where: str | None = None) -> Query:
    """Read a query in any supported form; see the module docstring.

    ``protein_key``: obsm key of measured proteins (an error when named and absent); unnamed, the keys in
    ``default_protein_keys`` are tried and a query without any is simply unlabelled.
    """
    if isinstance(data, (str, Path)):
        where = where or str(data)
        data = read_file(data, "input", backed=backed)
    where = where or "input"
    if is_mudata(data):
        rna, prot = mudata_modalities(data, rna_mod, protein_mod, where, need_protein=False)
        proteins = _modality_frame(prot, rna.obs_names) if prot is not None else None
        if protein_table is not None:
            proteins = read_protein_table(protein_table, rna.obs_names, where)
        source = f"{where}:{protein_mod}" if prot is not None else None
        return Query(rna, proteins, data, where, str(protein_table) if protein_table is not None else source)
    if not isinstance(data, ad.AnnData):
        raise DataError(f"expected an AnnData, a MuData or a file path, got {type(data).__name__}")
    if data.n_obs == 0:
        raise DataError(f"{where} has no cells")
    if protein_table is not None:
        return Query(data, read_protein_table(protein_table, data.obs_names, where), data, where, str(protein_table))
    if protein_key is not None:
        return Query(data, proteins_from_obsm(data, protein_key, protein_names_key, where), data, where,
                     f"{where} obsm[{protein_key!r}]")
    for key in dict.fromkeys(default_protein_keys):
        if key in data.obsm:
            try:
                return Query(data, proteins_from_obsm(data, key, protein_names_key, where), data, where,
                             f"{where} obsm[{key!r}]")
            except DataError as err:  # an unnamed array: not usable for scoring, say why once
                log.info("measured proteins not used: %s", err)
    return Query(data, None, data, where)


def _modality_frame(prot: ad.AnnData, cells: pd.Index) -> pd.DataFrame | None:
    """A protein modality's X as cells x proteins, in the RNA cells' order (NaN rows for cells it lacks)."""
    x = prot.X
    if x is None:
        return None
    x = x.toarray() if sp.issparse(x) else np.asarray(x)
    frame = pd.DataFrame(x, index=prot.obs_names, columns=prot.var_names.astype(str))
    shared = cells.intersection(frame.index)
    if len(shared) == 0:
        return None
    return frame.reindex(cells)
