"""Checks on a paired RNA + protein AnnData, with messages that name the file, column, gene or cell at fault."""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from crossmodalnet.data.timepoints import parse_time_column

PROTEIN_KEY = "protein"
# uns key where a loader records the file each modality came from ({"rna": path, "protein": path}), for messages
SOURCE_FILES_KEY = "crossmodalnet_source_files"


from crossmodalnet.errors import DataError  # noqa: E402,F401  (defined in a light module; re-exported here)


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
    empty = [i for i, name in enumerate(adata.var_names) if not str(name).strip() or str(name) == "nan"]
    if empty:  # a new file's genes are matched to the model's by name: a nameless gene cannot be
        raise DataError(f"{len(empty)} genes have an empty name{where} (e.g. column {empty[0]} of X); name them")
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


# -- values of the matrices a step actually uses -------------------------------------------------------------------
# Beyond this magnitude a matrix the network reads as given (genes with rna=as_is, proteins with protein=as_is, or
# anything after normalisation) is refused: log-normalised counts stay below log1p(target_sum) (9.2 for 1e4),
# z-scored data below sqrt(n_cells) (1,000 for a million cells), CLR/dsb values in the tens. A larger value is a
# corrupt entry or an unnormalised matrix, and float32 batch statistics of it overflow to inf.
MAX_ABS_VALUE = 1e6
# Raw counts above this are not counts of one gene in one cell (and float32 no longer holds them exactly).
MAX_COUNT = 1e9


def _is_numeric(x) -> bool:
    dtype = getattr(x, "dtype", None)
    return (dtype is not None and np.issubdtype(dtype, np.number) and not np.issubdtype(dtype, np.complexfloating)
            and not np.issubdtype(dtype, np.bool_))


def _entries(x) -> tuple[np.ndarray, callable]:
    """The stored values of a dense or sparse matrix and a function mapping a flat position to (row, col)."""
    if sp.issparse(x):
        csr = x if sp.isspmatrix_csr(x) or isinstance(x, sp.csr_array) else sp.csr_matrix(x)
        indptr, indices = csr.indptr, csr.indices

        def locate(pos: int) -> tuple[int, int]:
            return int(np.searchsorted(indptr, pos, side="right") - 1), int(indices[pos])
        return np.asarray(csr.data), locate
    arr = np.asarray(x)
    if arr.ndim != 2:
        arr = arr.reshape(arr.shape[0], -1)
    flat = arr.reshape(-1)
    n_cols = arr.shape[1]
    return flat, lambda pos: (int(pos // n_cols), int(pos % n_cols))


def check_matrix(x, what: str, obs_names, var_names, source: str | None = None, *, counts: bool = False,
                 integer: bool = True, bound: float | None = MAX_ABS_VALUE, feature: str = "gene",
                 hint: str = "") -> None:
    """Raise :class:`DataError` on the first problem of a matrix a step uses, naming file, matrix, cell, feature.

    Always: numeric and finite. ``counts``: non-negative, integer (unless ``integer=False``) and at most
    ``MAX_COUNT``. Otherwise: ``|value| <= bound`` (None: no bound). ``hint`` is appended to value errors.
    """
    where = _where(source)
    if not _is_numeric(x):
        raise DataError(f"{what}{where} is not numeric (dtype {getattr(x, 'dtype', type(x).__name__)})")
    values, locate = _entries(x)
    if values.size == 0:
        return
    obs_names, var_names = pd.Index(obs_names), pd.Index(var_names)

    def fail(mask: np.ndarray, problem: str, tail: str = "") -> None:
        n = int(mask.sum())
        pos = int(np.flatnonzero(mask)[0])
        row, col = locate(pos)
        raise DataError(f"{what}{where} {problem}: {n} value{'s' if n != 1 else ''}, e.g. {values[pos]:g} at cell "
                        f"{obs_names[row]!r}, {feature} {var_names[col]!r}{tail}")

    floating = np.issubdtype(values.dtype, np.floating)
    if floating:
        finite = np.isfinite(values)
        if not finite.all():
            fail(~finite, "contains NaN/inf")
    tail = f"; {hint}" if hint else ""
    if counts:
        if (values < 0).any():
            fail(values < 0, "must hold raw counts but has negative values", tail)
        if integer and floating:
            frac = values != np.floor(values)
            if frac.any():
                fail(frac, "must hold raw counts but has non-integer values", tail)
        if (values > MAX_COUNT).any():
            fail(values > MAX_COUNT, f"holds counts above {MAX_COUNT:g}, which no cell has for one {feature}", tail)
    elif bound is not None:
        big = np.abs(values) > bound
        if big.any():
            fail(big, f"holds values beyond +-{bound:g}, far outside any normalised expression (docs/checks.md)",
                 tail)


def value_ranges(x) -> dict[str, list[float]]:
    """Per-column training min and max (zeros of a sparse matrix included), kept in the checkpoint so that
    prediction can report new cells far outside what the model was trained on."""
    if sp.issparse(x):
        lo, hi = np.asarray(x.min(axis=0).todense()).ravel(), np.asarray(x.max(axis=0).todense()).ravel()
    else:
        arr = np.asarray(x)
        lo, hi = arr.min(axis=0), arr.max(axis=0)
    return {"gene_min": lo.astype(float).tolist(), "gene_max": hi.astype(float).tolist()}
