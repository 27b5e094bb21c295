"""Data sources: each returns one AnnData in the canonical form (genes in X, proteins in obsm["protein"]).

Sources are selected in ``configs/data/*.yaml`` through ``source._target_``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from crossmodalnet.data.simulate import simulate_cite
from crossmodalnet.data.validate import PROTEIN_KEY, DataError


def simulated(**kwargs: Any) -> ad.AnnData:
    """The built-in time-resolved simulator (the default data set)."""
    return simulate_cite(**kwargs)


def _read_h5ad(path: str | Path, what: str) -> ad.AnnData:
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{what} file not found: {path}")
    try:
        adata = ad.read_h5ad(path)
    except Exception as err:  # h5py/anndata raise many types for a broken file
        raise DataError(f"cannot read {what} file {path} as .h5ad: {err}") from None
    if adata.n_obs == 0:
        raise DataError(f"{what} file {path} is empty (0 cells)")
    return adata


def _matrix(adata: ad.AnnData, layer: str | None, path: Path | str, what: str):
    if layer is None:
        return adata.X
    if layer not in adata.layers:
        raise DataError(f"layer {layer!r} not found in {what} file {path}; layers: {list(adata.layers.keys())}")
    return adata.layers[layer]


def _as_csr(x) -> sp.csr_matrix:
    if sp.issparse(x):
        return sp.csr_matrix(x)
    arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.number):
        return arr  # validate_cite reports the dtype
    return sp.csr_matrix(arr)


def from_anndata(
    path: str | None = None,
    rna_path: str | None = None,
    protein_path: str | None = None,
    rna_layer: str | None = None,
    protein_layer: str | None = None,
    counts_layer: str | None = "counts",
) -> ad.AnnData:
    """Read one .h5ad with ``obsm["protein"]``, or two .h5ad files (RNA, protein) with the same cells.

    ``rna_layer``/``protein_layer`` pick the matrix used (None = X). Raw RNA counts, when present in
    ``counts_layer``, are carried along as ``layers["counts"]`` for normalisation after the split.
    """
    if path is not None and (rna_path is not None or protein_path is not None):
        raise DataError("give either data.path (one file) or data.rna_path + data.protein_path, not both")
    if path is not None:
        adata = _read_h5ad(path, "data")
        if PROTEIN_KEY not in adata.obsm:
            raise DataError(f"{path} has no obsm[{PROTEIN_KEY!r}]; put proteins there as a DataFrame, or pass "
                            f"data.rna_path and data.protein_path for separate files")
        out = ad.AnnData(X=_as_csr(_matrix(adata, rna_layer, path, "data")), obs=adata.obs.copy(),
                         var=adata.var.copy())
        out.obsm[PROTEIN_KEY] = _protein_frame(adata.obsm[PROTEIN_KEY], adata.obs_names)
        if counts_layer and counts_layer in adata.layers:
            out.layers["counts"] = _as_csr(adata.layers[counts_layer])
        if isinstance(adata.obsm.get("protein_counts"), pd.DataFrame):  # raw ADT, for dsb after the split
            out.obsm["protein_counts"] = adata.obsm["protein_counts"]
        return out
    if rna_path is None or protein_path is None:
        raise DataError("no input data: set data.path (one .h5ad with obsm['protein']) or both "
                        "data.rna_path and data.protein_path")
    rna = _read_h5ad(rna_path, "RNA")
    prot = _read_h5ad(protein_path, "protein")
    return pair_modalities(rna, prot, rna_layer=rna_layer, protein_layer=protein_layer,
                           counts_layer=counts_layer, rna_source=str(rna_path), protein_source=str(protein_path))


def pair_modalities(rna: ad.AnnData, prot: ad.AnnData, rna_layer: str | None = None,
                    protein_layer: str | None = None, counts_layer: str | None = "counts",
                    rna_source: str = "RNA", protein_source: str = "protein") -> ad.AnnData:
    """Join an RNA AnnData and a protein AnnData of the same cells into the canonical form.

    Cells may come in a different order (they are matched by name); differing cell sets are an error.
    """
    rna_cells, prot_cells = pd.Index(rna.obs_names), pd.Index(prot.obs_names)
    if not rna_cells.equals(prot_cells):
        only_rna = rna_cells.difference(prot_cells)
        only_prot = prot_cells.difference(rna_cells)
        if len(only_rna) or len(only_prot):
            raise DataError(
                f"cell names differ between {rna_source} and {protein_source}: {len(only_rna)} cells only in "
                f"RNA (e.g. {only_rna[:3].tolist()}), {len(only_prot)} only in protein "
                f"(e.g. {only_prot[:3].tolist()})")
        prot = prot[rna_cells]
    prot_x = _matrix(prot, protein_layer, protein_source, "protein")
    prot_x = prot_x.toarray() if sp.issparse(prot_x) else np.asarray(prot_x)
    out = ad.AnnData(X=_as_csr(_matrix(rna, rna_layer, rna_source, "RNA")), obs=rna.obs.copy(),
                     var=rna.var.copy())
    out.obsm[PROTEIN_KEY] = pd.DataFrame(prot_x, index=out.obs_names, columns=prot.var_names.astype(str))
    if counts_layer and counts_layer in rna.layers:
        out.layers["counts"] = _as_csr(rna.layers[counts_layer])
    if counts_layer and counts_layer in prot.layers:
        counts = prot.layers[counts_layer]
        counts = counts.toarray() if sp.issparse(counts) else np.asarray(counts)
        out.obsm["protein_counts"] = pd.DataFrame(counts, index=out.obs_names,
                                                  columns=prot.var_names.astype(str))
    return out


def _protein_frame(proteins, obs_names) -> pd.DataFrame:
    if isinstance(proteins, pd.DataFrame):
        return proteins
    raise DataError(f"obsm[{PROTEIN_KEY!r}] must be a DataFrame with protein names as columns, "
                    f"got {type(proteins).__name__}")


BMMC_URL = ("the Open Problems NeurIPS 2021 multimodal benchmark (GEO GSE194122; the 600-cell 'BMMC CITE starter' "
            "is resources_test/common/openproblems_bmmc_cite_starter/ in github.com/openproblems-bio/"
            "neurips2021_multimodal_viash): rna.h5ad and adt.h5ad with raw counts in layers['counts']")


def bmmc(data_dir: str, rna: str = "rna.h5ad", protein: str = "adt.h5ad", rna_layer: str | None = None,
         protein_layer: str | None = None, counts_layer: str | None = "counts") -> ad.AnnData:
    """The BMMC CITE-seq starter (two .h5ad files of the same cells) from a user-provided folder."""
    from crossmodalnet.data.files import require_files

    folder = require_files("BMMC CITE-seq", data_dir, [rna, protein], BMMC_URL)
    return from_anndata(rna_path=str(folder / rna), protein_path=str(folder / protein), rna_layer=rna_layer,
                        protein_layer=protein_layer, counts_layer=counts_layer)
