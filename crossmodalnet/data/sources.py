"""Data sources: each returns one AnnData in the canonical form (genes in X, proteins in obsm["protein"]).

Sources are selected in ``configs/data/*.yaml`` through ``source._target_``.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from crossmodalnet.data.counts import looks_like_counts
from crossmodalnet.data.simulate import simulate_cite
from crossmodalnet.data.validate import PROTEIN_KEY, SOURCE_FILES_KEY, DataError


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
    if arr.dtype == np.float16:  # scipy.sparse has no float16; float32 holds every float16 value exactly
        arr = arr.astype(np.float32)
    return sp.csr_matrix(arr)


def from_anndata(
    path: str | None = None,
    rna_path: str | None = None,
    protein_path: str | None = None,
    rna_layer: str | None = None,
    protein_layer: str | None = None,
    counts_layer: str | None = "counts",
    protein_key: str = PROTEIN_KEY,
    protein_names_key: str | None = None,
    protein_table: str | None = None,
    rna_mod: str = "rna",
    protein_mod: str = "prot",
) -> ad.AnnData:
    """Read one file (.h5ad, or .h5mu with ``rna``/``prot`` modalities), or two .h5ad files (RNA, protein).

    One .h5ad: proteins in ``obsm[protein_key]`` (a DataFrame, or an array whose names are in
    ``uns[protein_names_key]``), or in ``protein_table`` (a CSV/TSV of cells x proteins keyed by barcode).
    ``rna_layer``/``protein_layer`` pick the matrix used (None = X). Raw RNA counts, when present in
    ``counts_layer``, are carried along as ``layers["counts"]`` for normalisation after the split.
    """
    if path is not None and (rna_path is not None or protein_path is not None):
        raise DataError("give either data.source.path (one file) or data.source.rna_path + "
                        "data.source.protein_path, not both")
    options = dict(protein_key=protein_key, protein_names_key=protein_names_key, protein_table=protein_table,
                   rna_mod=rna_mod, protein_mod=protein_mod, rna_layer=rna_layer, protein_layer=protein_layer,
                   counts_layer=counts_layer)
    if path is not None:
        return canonical(read_file(path, "data"), where=str(path), **options)
    if rna_path is None or protein_path is None:
        raise DataError("no input data: set data.source.path (one .h5ad with proteins in obsm, or a .h5mu) or "
                        "both data.source.rna_path and data.source.protein_path")
    rna = _read_h5ad(rna_path, "RNA")
    prot = _read_h5ad(protein_path, "protein")
    return pair_modalities(rna, prot, rna_layer=rna_layer, protein_layer=protein_layer,
                           counts_layer=counts_layer, rna_source=str(rna_path), protein_source=str(protein_path))


@contextmanager
def quiet_mudata():
    """mudata's notices about its own future defaults and shared var names: noise to a user, hidden here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module="mudata")
        warnings.filterwarnings("ignore", message=".*var_names are intersecting.*")
        warnings.filterwarnings("ignore", message=".*pull_on_update.*")
        yield


def is_mudata(obj: Any) -> bool:
    """A MuData object (checked by type name, so mudata is only imported when one is used)."""
    return type(obj).__name__ == "MuData" and hasattr(obj, "mod")


def read_file(path: str | Path, what: str = "data", backed: bool = False):
    """An .h5ad (AnnData, optionally backed: X stays on disk) or .h5mu (MuData) file, with one-line errors."""
    file = Path(str(path)).expanduser()
    if not file.exists():
        raise DataError(f"{what} file not found: {file}")
    if file.suffix == ".h5mu":
        import mudata as md

        try:
            with quiet_mudata():
                return md.read_h5mu(file)
        except Exception as err:  # h5py/mudata raise many types for a broken file
            raise DataError(f"cannot read {what} file {file} as .h5mu: {err}") from None
    try:
        adata = ad.read_h5ad(file, backed="r" if backed else None)
    except Exception as err:  # h5py/anndata raise many types for a broken file
        raise DataError(f"cannot read {what} file {file} as .h5ad: {err}") from None
    if adata.n_obs == 0:
        raise DataError(f"{what} file {file} is empty (0 cells)")
    return adata


def canonical(
    data: Any,
    *,
    protein_key: str = PROTEIN_KEY,
    protein_names_key: str | None = None,
    protein_table: str | Path | pd.DataFrame | None = None,
    rna_mod: str = "rna",
    protein_mod: str = "prot",
    rna_layer: str | None = None,
    protein_layer: str | None = None,
    counts_layer: str | None = "counts",
    where: str = "input",
) -> ad.AnnData:
    """Any supported input as the canonical AnnData (genes in X, proteins in ``obsm["protein"]``).

    ``data``: an AnnData (proteins in ``obsm[protein_key]``, or ``protein_table``), a MuData (``rna_mod`` +
    ``protein_mod``; obs columns of the MuData itself, e.g. the time, join the RNA obs), or a file path of either.
    """
    if isinstance(data, (str, Path)):
        where = str(data)
        data = read_file(data, "data")
    if is_mudata(data):
        rna, prot = mudata_modalities(data, rna_mod, protein_mod, where, need_protein=True)
        return pair_modalities(rna, prot, rna_layer=rna_layer, protein_layer=protein_layer,
                               counts_layer=counts_layer, rna_source=f"{where}:{rna_mod}",
                               protein_source=f"{where}:{protein_mod}")
    if not isinstance(data, ad.AnnData):
        raise DataError(f"expected an AnnData, a MuData or a file path, got {type(data).__name__}")
    if protein_table is not None:
        proteins = read_protein_table(protein_table, data.obs_names, where)
    else:
        proteins = proteins_from_obsm(data, protein_key, protein_names_key, where)
    out = ad.AnnData(X=_as_csr(_matrix(data, rna_layer, where, "data")), obs=data.obs.copy(),
                     var=data.var.copy())
    out.obsm[PROTEIN_KEY] = proteins
    out.uns[SOURCE_FILES_KEY] = {"rna": str(where), "protein": str(protein_table or where)}  # named in errors
    if counts_layer and counts_layer in data.layers:
        out.layers["counts"] = _as_csr(data.layers[counts_layer])
    counts = data.obsm.get("protein_counts")
    if isinstance(counts, pd.DataFrame):  # raw ADT, for dsb/clr after the split
        out.obsm["protein_counts"] = counts
    elif looks_like_counts(proteins.to_numpy()):  # totalVI's obsm["protein_expression"] holds raw counts
        out.obsm["protein_counts"] = proteins.copy()
    return out


def mudata_modalities(mdata, rna_mod: str, protein_mod: str, where: str,
                      need_protein: bool = True) -> tuple[ad.AnnData, ad.AnnData | None]:
    """The RNA modality (with the MuData's own obs columns, e.g. a time set on ``mdata.obs``) and the protein
    modality of a MuData; a missing modality is an error naming those present."""
    mods = list(mdata.mod)
    if rna_mod not in mdata.mod:
        raise DataError(f"{where} has no modality {rna_mod!r} (data.source.rna_mod / --rna-mod); modalities: {mods}")
    if protein_mod not in mdata.mod and need_protein:
        raise DataError(f"{where} has no modality {protein_mod!r} (data.source.protein_mod / --protein-mod); "
                        f"modalities: {mods}")
    rna = mdata.mod[rna_mod]
    prefixes = tuple(f"{m}:" for m in mdata.mod)
    shared = [c for c in mdata.obs.columns if not str(c).startswith(prefixes) and c not in rna.obs.columns]
    if shared:  # a new AnnData sharing the matrices: the user's MuData is not modified
        obs = rna.obs.copy()
        global_obs = mdata.obs.loc[rna.obs_names, shared]
        for col in shared:
            obs[col] = global_obs[col].to_numpy()
        rna = ad.AnnData(X=rna.X, obs=obs, var=rna.var, layers=dict(rna.layers), obsm=dict(rna.obsm),
                         uns=dict(rna.uns))
    return rna, mdata.mod.get(protein_mod)


def proteins_from_obsm(adata: ad.AnnData, key: str = PROTEIN_KEY, names_key: str | None = None,
                       where: str = "input") -> pd.DataFrame:
    """``obsm[key]`` as a cells x proteins DataFrame: a DataFrame as it is, an array with its protein names
    from ``uns[names_key]`` (default: ``uns[key + "_names"]`` or ``uns["protein_names"]`` when present)."""
    if key not in adata.obsm:
        raise DataError(f"{where} has no obsm[{key!r}] (data.source.protein_key / protein_key=); obsm keys: "
                        f"{list(adata.obsm.keys())}. Name the key that holds the proteins, give a protein table "
                        "(data.source.protein_table), or pass data.source.rna_path + data.source.protein_path for "
                        "separate files")
    value = adata.obsm[key]
    if isinstance(value, pd.DataFrame):
        frame = value
    else:
        values = value.toarray() if sp.issparse(value) else np.asarray(value)
        if values.ndim != 2:
            raise DataError(f"obsm[{key!r}] of {where} must be cells x proteins, got shape {values.shape}")
        names = _protein_names(adata, key, names_key, values.shape[1], where)
        frame = pd.DataFrame(values, index=adata.obs_names, columns=names)
    frame = frame.copy()
    frame.index = adata.obs_names
    frame.columns = frame.columns.astype(str)
    return frame


def _protein_names(adata: ad.AnnData, key: str, names_key: str | None, n: int, where: str) -> list[str]:
    candidates = [names_key] if names_key else [f"{key}_names", "protein_names"]
    for cand in candidates:
        if cand in adata.uns:
            names = [str(x) for x in np.asarray(adata.uns[cand]).ravel()]
            if len(names) != n:
                raise DataError(f"uns[{cand!r}] of {where} lists {len(names)} protein names but obsm[{key!r}] has "
                                f"{n} columns")
            return names
    if names_key:
        raise DataError(f"{where} has no uns[{names_key!r}] (data.source.protein_names_key); uns keys: "
                        f"{list(adata.uns.keys())}")
    raise DataError(f"obsm[{key!r}] of {where} is an array without protein names: name the uns key that lists "
                    f"them (data.source.protein_names_key / protein_names_key=; uns keys: {list(adata.uns.keys())}),"
                    " or store a DataFrame with protein names as columns")


def read_protein_table(table: str | Path | pd.DataFrame, obs_names: pd.Index, where: str = "input") -> pd.DataFrame:
    """A cells x proteins table (CSV/TSV, optionally gzipped; first column = cell barcode) in ``obs_names`` order.

    A table laid out proteins x cells (barcodes as columns) is transposed. Cells without a row are an error.
    """
    if isinstance(table, pd.DataFrame):
        frame, name = table, "protein table"
    else:
        file = Path(str(table)).expanduser()
        name = str(file)
        if not file.exists():
            raise DataError(f"protein table not found: {file} (data.source.protein_table / --protein-table)")
        sep = "\t" if any(s in (".tsv", ".txt", ".tab") for s in file.suffixes) else ","
        try:
            frame = pd.read_csv(file, sep=sep, index_col=0)
        except Exception as err:  # pandas raises many types for a malformed table
            raise DataError(f"cannot read protein table {file}: {err}") from None
    frame.index = frame.index.astype(str)
    frame.columns = frame.columns.astype(str)
    cells = pd.Index(obs_names.astype(str))
    if not cells.isin(frame.index).any() and cells.isin(frame.columns).any():
        frame = frame.T  # proteins x cells
    missing = cells[~cells.isin(frame.index)]
    if len(missing):
        raise DataError(f"{len(missing)} of {len(cells)} cells of {where} have no row in the protein table {name} "
                        f"(e.g. {missing[:3].tolist()}; table barcodes e.g. {frame.index[:3].tolist()})")
    if not frame.index.is_unique:
        dup = frame.index[frame.index.duplicated()][:3].tolist()
        raise DataError(f"barcodes repeat in the protein table {name}, e.g. {dup}")
    non_numeric = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if non_numeric:
        raise DataError(f"protein table {name} has non-numeric columns {non_numeric[:5]}; it must hold one row per "
                        "cell (barcode first) and one numeric column per protein")
    out = frame.loc[cells].astype(np.float64)
    out.index = obs_names
    return out


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
    out.uns[SOURCE_FILES_KEY] = {"rna": str(rna_source), "protein": str(protein_source)}  # named in data errors
    if counts_layer and counts_layer in rna.layers:
        out.layers["counts"] = _as_csr(rna.layers[counts_layer])
    if counts_layer and counts_layer in prot.layers:
        counts = prot.layers[counts_layer]
        counts = counts.toarray() if sp.issparse(counts) else np.asarray(counts)
        out.obsm["protein_counts"] = pd.DataFrame(counts, index=out.obs_names,
                                                  columns=prot.var_names.astype(str))
    return out


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
