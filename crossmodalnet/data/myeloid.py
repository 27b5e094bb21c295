"""Myeloid CITE-seq data of Keenan et al. 2022 (Cell Reports; GEO GSE210065): PBMCs of biliary-cancer patients
at three time points of anti-PD-1 treatment, 99 ADT.

Three user-downloaded files in ``data_dir`` (names set in ``configs/data/myeloid.yaml``): raw RNA counts, raw ADT
counts and the cell metadata (timepoint, response, cell_type, patient, ...). Matrices may be .h5ad (cells x
features), a 10x .h5 (RNA and "Antibody Capture" in one file), or a .csv/.tsv table (optionally gzipped; GEO
tables are usually features x cells: ``orientation: features_x_cells``). Config-driven filters keep the cells the
paper uses (CD14+ monocyte sub-populations of responding patients, weeks 1, 2 and 3); times are ordered
numerically ("W1" < "W2" < "W3").
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from crossmodalnet.data.files import require_files
from crossmodalnet.data.timepoints import time_mask, time_value
from crossmodalnet.data.validate import PROTEIN_KEY, DataError

log = logging.getLogger(__name__)

GEO_URL = ("GEO series GSE210065 (https://www.ncbi.nlm.nih.gov/geo/query/acc.cgi?acc=GSE210065, Keenan et al. "
           "2022): its supplementary RNA count matrix, ADT count matrix and cell metadata")
ORIENTATIONS = ("cells_x_features", "features_x_cells")


def read_counts(path: Path, orientation: str = "features_x_cells", modality: str | None = None) -> ad.AnnData:
    """A count matrix as AnnData (cells x features, CSR), from .h5ad, 10x .h5 or a .csv/.tsv(.gz) table.

    ``modality`` picks "Gene Expression" or "Antibody Capture" rows of a 10x .h5; ``orientation`` applies to
    tables only (.h5ad and 10x files say their own orientation).
    """
    name = path.name.lower()
    try:
        if name.endswith(".h5ad"):
            adata = ad.read_h5ad(path)
        elif name.endswith(".h5"):
            import scanpy as sc

            adata = sc.read_10x_h5(path, gex_only=False)
            if modality is not None:
                types = adata.var.get("feature_types")
                if types is None or modality not in set(types):
                    raise DataError(f"{path} has no {modality!r} features (feature_types: "
                                    f"{sorted(set(types)) if types is not None else 'none'})")
                adata = adata[:, (types == modality).to_numpy()].copy()
        elif re.search(r"\.(csv|tsv|txt)(\.gz)?$", name):
            if orientation not in ORIENTATIONS:
                raise DataError(f"orientation must be one of {ORIENTATIONS}, got {orientation!r}")
            sep = "," if ".csv" in name else "\t"
            table = pd.read_csv(path, sep=sep, index_col=0)
            if orientation == "features_x_cells":
                table = table.T
            adata = ad.AnnData(X=sp.csr_matrix(table.to_numpy(dtype=np.float32)),
                               obs=pd.DataFrame(index=table.index.astype(str)),
                               var=pd.DataFrame(index=table.columns.astype(str)))
        else:
            raise DataError(f"{path}: unsupported format; use .h5ad, a 10x .h5, or .csv/.tsv(.gz)")
    except DataError:
        raise
    except Exception as err:  # readers raise many types for a broken file
        raise DataError(f"cannot read {path}: {err}") from None
    adata.var_names_make_unique()
    return adata


def apply_filters(obs: pd.DataFrame, filters: Mapping[str, Any] | None, source: str) -> np.ndarray:
    """Boolean mask of the cells kept by every filter: ``column: [values]`` or ``column: "regex:PATTERN"``."""
    keep = np.ones(len(obs), dtype=bool)
    for column, rule in (filters or {}).items():
        if rule is None:
            continue
        if column not in obs.columns:
            raise DataError(f"filter column {column!r} not found in {source}; columns: {list(obs.columns)}")
        values = obs[column].astype(str)
        if isinstance(rule, str) and rule.startswith("regex:"):
            try:
                mask = values.str.contains(rule[len("regex:"):], regex=True).to_numpy()
            except re.error as err:
                raise DataError(f"filter {column}: bad regular expression {rule!r}: {err}") from None
        else:
            wanted = {str(v) for v in ([rule] if isinstance(rule, (str, int, float)) else rule)}
            mask = values.isin(wanted).to_numpy()
        if not (keep & mask).any():
            present = sorted(values[keep].unique().tolist())[:20]
            raise DataError(f"filter {column}={rule!r} keeps no cell of {source}; values present: {present}")
        keep &= mask
    return keep


def select_times(obs: pd.DataFrame, time_key: str, times: Sequence[Any] | None, source: str) -> np.ndarray:
    if time_key not in obs.columns:
        raise DataError(f"time column {time_key!r} (data.time_key) not found in {source}; columns: "
                        f"{list(obs.columns)}")
    if times is None:
        return np.ones(len(obs), dtype=bool)
    wanted = {time_value(t) for t in times}
    if None in wanted:
        raise DataError(f"data.source.times must be numbers (week 1 -> 1), got {list(times)}")
    return time_mask(obs[time_key], list(times), f"{time_key!r} of {source}")  # a TimeError is a DataError: one line, exit 2


def load_myeloid(
    data_dir: str,
    rna: str = "rna_counts.h5ad",
    adt: str = "adt_counts.h5ad",
    obs: str = "cell_metadata.csv",
    orientation: str = "features_x_cells",
    cell_column: str | None = None,
    time_key: str = "timepoint",
    times: Sequence[Any] | None = (1, 2, 3),
    filters: Mapping[str, Any] | None = None,
) -> ad.AnnData:
    """The myeloid CITE-seq cells the paper uses, as one canonical AnnData with raw counts.

    X and ``layers["counts"]`` hold raw RNA counts (normalise with ``preprocess.rna=log_normalize``);
    ``obsm["protein"]`` and ``obsm["protein_counts"]`` the raw ADT counts (``preprocess.protein=dsb_no_empty``).
    ``cell_column``: the metadata column with cell barcodes (None: the first column).
    """
    folder = require_files("Myeloid (Keenan et al. 2022)", data_dir, sorted({rna, adt, obs}), GEO_URL)
    try:
        meta = pd.read_csv(folder / obs, index_col=None)
    except Exception as err:  # pandas raises many types for a broken csv
        raise DataError(f"cannot read cell metadata {folder / obs}: {err}") from None
    column = cell_column or meta.columns[0]
    if column not in meta.columns:
        raise DataError(f"cell column {column!r} not found in {folder / obs}; columns: {list(meta.columns)}")
    meta = meta.set_index(meta[column].astype(str)).drop(columns=[column])
    meta.index.name = None
    if not meta.index.is_unique:
        dup = meta.index[meta.index.duplicated()][:3].tolist()
        raise DataError(f"{folder / obs} lists some cells twice, e.g. {dup}")
    keep = select_times(meta, time_key, times, str(folder / obs)) & apply_filters(meta, filters, str(folder / obs))
    meta = meta[keep]
    rna_ad = read_counts(folder / rna, orientation, "Gene Expression")
    adt_ad = read_counts(folder / adt, orientation, "Antibody Capture")
    for part, name in ((rna_ad, rna), (adt_ad, adt)):
        missing = meta.index.difference(part.obs_names)
        if len(missing):
            raise DataError(f"{folder / name} lacks {len(missing)} of the {len(meta)} selected cells of "
                            f"{obs} (e.g. {missing[:3].tolist()}); cell ids must match the metadata")
    log.info("myeloid: %d cells kept (times %s, filters %s)", len(meta), times, dict(filters or {}))
    counts = sp.csr_matrix(rna_ad[meta.index].X, dtype=np.float32)
    out = ad.AnnData(X=counts, obs=meta.copy(), var=pd.DataFrame(index=rna_ad.var_names.astype(str)))
    out.layers["counts"] = counts
    prot = adt_ad[meta.index].X
    prot = prot.toarray() if sp.issparse(prot) else np.asarray(prot)
    frame = pd.DataFrame(prot.astype(np.float32), index=out.obs_names, columns=adt_ad.var_names.astype(str))
    out.obsm[PROTEIN_KEY] = frame
    out.obsm["protein_counts"] = frame.copy()
    return out
