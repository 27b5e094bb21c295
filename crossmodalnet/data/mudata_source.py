"""MuData input: one .h5mu with an RNA modality and a protein modality (muon's ``rna`` + ``prot`` convention)."""
from __future__ import annotations

from pathlib import Path

import anndata as ad

from crossmodalnet.data.sources import mudata_modalities, pair_modalities
from crossmodalnet.data.validate import DataError


def from_mudata(
    path: str | None = None,
    rna_mod: str = "rna",
    protein_mod: str = "prot",
    rna_layer: str | None = None,
    protein_layer: str | None = None,
    counts_layer: str | None = "counts",
) -> ad.AnnData:
    """Read ``path`` (.h5mu) into the canonical AnnData.

    Cells are those of the RNA modality (the protein modality must hold the same cells); obs columns of the
    MuData itself (e.g. a time column set with ``mdata.obs["day"] = ...``) are added to the RNA obs, so the
    time key may live in either place.
    """
    from crossmodalnet.data.sources import is_mudata, read_file

    if path is None:
        raise DataError("no input data: set data.source.path to a .h5mu file")
    file = Path(str(path)).expanduser()
    if not file.exists():
        raise DataError(f"MuData file not found: {file} (data.source.path)")
    if file.suffix != ".h5mu":
        raise DataError(f"data=mudata reads a .h5mu file, got {file}; use data=anndata for .h5ad files")
    mdata = read_file(file, "MuData")
    assert is_mudata(mdata)
    rna, prot = mudata_modalities(mdata, rna_mod, protein_mod, str(file))
    return pair_modalities(rna, prot, rna_layer=rna_layer, protein_layer=protein_layer, counts_layer=counts_layer,
                           rna_source=f"{file}:{rna_mod}", protein_source=f"{file}:{protein_mod}")
