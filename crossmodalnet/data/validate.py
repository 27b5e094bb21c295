"""Checks on a paired RNA + protein AnnData, with messages that name the file, column, gene or cell at fault."""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from crossmodalnet.data.timepoints import parse_time_column

PROTEIN_KEY = "protein"


class DataError(ValueError):
    """Input data that cannot be used as given; the message says what and where."""


def _where(source: str | None) -> str:
    return f" in {source}" if source else ""


def _first_bad_cells(mask_rows: np.ndarray, obs_names: pd.Index, n: int = 3) -> list[str]:
    return obs_names[np.flatnonzero(mask_rows)[:n]].tolist()


def validate_cite(adata: AnnData, time_key: str | None, source: str | None = None) -> None:
    """Raise :class:`DataError` unless ``adata`` is a usable CITE-seq AnnData in the canonical form."""
    where = _where(source)
    if adata.n_obs == 0:
        raise DataError(f"no cells{where}: the data set is empty")
    if adata.n_vars == 0:
        raise DataError(f"no genes{where}: the data set has 0 variables")
    if not adata.obs_names.is_unique:
        dup = adata.obs_names[adata.obs_names.duplicated()][:3].tolist()
        raise DataError(f"cell names (obs_names) are not unique{where}, e.g. {dup}")
    if not adata.var_names.is_unique:
        dup = adata.var_names[adata.var_names.duplicated()][:3].tolist()
        raise DataError(f"gene names (var_names) are not unique{where}, e.g. {dup}")
    if PROTEIN_KEY not in adata.obsm:
        raise DataError(f"no proteins{where}: expected a DataFrame in obsm[{PROTEIN_KEY!r}] "
                        f"(obsm has {list(adata.obsm.keys())})")
    proteins = adata.obsm[PROTEIN_KEY]
    if not isinstance(proteins, pd.DataFrame):
        raise DataError(f"obsm[{PROTEIN_KEY!r}]{where} must be a DataFrame whose columns are protein names")
    if proteins.shape[1] == 0:
        raise DataError(f"no proteins{where}: obsm[{PROTEIN_KEY!r}] has 0 columns")
    if not proteins.columns.is_unique:
        dup = proteins.columns[proteins.columns.duplicated()][:3].tolist()
        raise DataError(f"protein names collide{where}: {dup} appear more than once")
    _check_protein_names(proteins.columns, where)
    counts = adata.obsm.get("protein_counts")
    if isinstance(counts, pd.DataFrame) and not pd.Index(counts.columns).equals(pd.Index(proteins.columns)):
        only_counts = list(counts.columns.difference(proteins.columns))[:5]
        only_values = list(proteins.columns.difference(counts.columns))[:5]
        raise DataError(f"raw protein counts (obsm['protein_counts']){where} name other proteins than "
                        f"obsm[{PROTEIN_KEY!r}]: only in counts {only_counts}, only in values {only_values} "
                        f"(or the same names in another order)")
    non_numeric = [c for c in proteins.columns if not pd.api.types.is_numeric_dtype(proteins[c])]
    if non_numeric:
        raise DataError(f"protein columns{where} are not numeric: {non_numeric[:5]}")
    _check_finite(proteins.to_numpy(), "proteins", adata.obs_names, proteins.columns, where)
    _check_genes(adata.X, adata.obs_names, adata.var_names, where)
    if time_key is not None:
        if time_key not in adata.obs.columns:
            raise DataError(f"time column {time_key!r} not found in obs{where}; "
                            f"available columns: {list(adata.obs.columns)}")
        try:
            parse_time_column(adata.obs[time_key], time_key)
        except ValueError as err:
            raise DataError(f"{err}{where}") from None


def _check_protein_names(names: pd.Index, where: str) -> None:
    """Names that differ only by case, surrounding spaces or type (1 vs "1") would be one protein downstream."""
    keys: dict[str, object] = {}
    for name in names:
        key = str(name).strip().lower()
        if not key:
            raise DataError(f"a protein has an empty name{where}")
        if key in keys:
            raise DataError(f"protein names collide{where}: {keys[key]!r} and {name!r} differ only by case, "
                            f"spaces or type; rename one")
        keys[key] = name


def _check_genes(x, obs_names: pd.Index, var_names: pd.Index, where: str) -> None:
    if x is None:
        raise DataError(f"no gene matrix X{where}")
    dtype = x.dtype
    if not np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.bool_):
        raise DataError(f"gene matrix X{where} is not numeric (dtype {dtype})")
    if sp.issparse(x):
        data = x.data
        if not np.isfinite(data).all():
            csr = sp.csr_matrix(x)
            bad_entries = ~np.isfinite(csr.data)
            rows = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))[bad_entries]
            cols = csr.indices[bad_entries]
            raise DataError(f"genes contain {int(bad_entries.sum())} NaN/inf values{where}, e.g. cell "
                            f"{obs_names[rows[0]]!r}, gene {var_names[cols[0]]!r}")
    else:
        _check_finite(np.asarray(x), "genes", obs_names, var_names, where)


def _check_finite(values: np.ndarray, what: str, obs_names: pd.Index, columns, where: str) -> None:
    finite = np.isfinite(values)
    if not finite.all():
        rows, cols = np.nonzero(~finite)
        raise DataError(f"{what} contain {int((~finite).sum())} NaN/inf values{where}, e.g. cell "
                        f"{obs_names[rows[0]]!r}, {what[:-1]} {columns[cols[0]]!r}")
