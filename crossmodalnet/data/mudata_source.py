"""MuData input: one .h5mu with an RNA modality and a protein modality (muon's ``rna`` + ``prot`` convention)."""
from __future__ import annotations

from pathlib import Path

import anndata as ad

from crossmodalnet.data.sources import pair_modalities
from crossmodalnet.data.validate import DataError


def from_mudata(
    path: str,
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
    import mudata as md

    file = Path(str(path)).expanduser()
    if not file.exists():
        raise DataError(f"MuData file not found: {file} (data.source.path)")
    try:
        mdata = md.read_h5mu(file)
    except Exception as err:  # h5py/mudata raise many types for a broken file
        raise DataError(f"cannot read {file} as .h5mu: {err}") from None
    for mod, key in ((rna_mod, "rna_mod"), (protein_mod, "protein_mod")):
        if mod not in mdata.mod:
            raise DataError(f"{file} has no modality {mod!r} (data.source.{key}); modalities: {list(mdata.mod)}")
    rna, prot = mdata.mod[rna_mod], mdata.mod[protein_mod]
    out = pair_modalities(rna, prot, rna_layer=rna_layer, protein_layer=protein_layer, counts_layer=counts_layer,
                          rna_source=f"{file}:{rna_mod}", protein_source=f"{file}:{protein_mod}")
    prefixes = {f"{m}:" for m in mdata.mod}
    shared = [c for c in mdata.obs.columns
              if not any(str(c).startswith(p) for p in prefixes) and c not in out.obs.columns]
    if shared:
        global_obs = mdata.obs.loc[out.obs_names, shared]
        for col in shared:
            out.obs[col] = global_obs[col].to_numpy()
    return out
