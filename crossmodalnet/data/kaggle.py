"""HSPC CITE-seq data of the Kaggle competition "Open Problems in Single-Cell Analysis" (2022), as downloaded.

The competition's .h5 files are pandas HDF5 "fixed" frames: one group (e.g. ``/train_cite_inputs``) with datasets
``axis0`` (column names: genes or proteins), ``axis1`` (row names: cell ids), ``block0_items`` and
``block0_values`` (the matrix, cells x columns, float32). :func:`read_frame_csr` reads ``block*_values`` in row
chunks of bounded size straight into one CSR matrix, so the 70,988 x 22,050 inputs never exist as a dense
matrix (6.3 GB); peak memory stays near the size of the CSR result.

Files (https://www.kaggle.com/competitions/open-problems-multimodal/data):
``train_cite_inputs.h5`` (genes, library-size normalised + log1p), ``train_cite_targets.h5`` (140 proteins, dsb),
``metadata.csv`` (cell_id, day, donor, cell_type, technology), and, where downloaded, the raw counts
``train_cite_inputs_raw.h5`` / ``train_cite_targets_raw.h5``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from crossmodalnet.data.files import require_files
from crossmodalnet.data.timepoints import time_mask
from crossmodalnet.data.validate import PROTEIN_KEY, DataError

log = logging.getLogger(__name__)

KAGGLE_URL = ("the Kaggle competition 'Open Problems - Multimodal Single-Cell Integration' "
              "(https://www.kaggle.com/competitions/open-problems-multimodal/data; "
              "`kaggle competitions download -c open-problems-multimodal`, then unzip)")
DEFAULT_CHUNK_BYTES = 128 * 2**20


@dataclass
class FrameLayout:
    """Where the parts of one pandas "fixed" frame live inside an HDF5 file."""

    key: str
    index: pd.Index  # axis1: row names (cells)
    columns: pd.Index  # axis0: column names
    blocks: list[tuple[str, np.ndarray]]  # (dataset path, column positions of its items)


def _decode(values: np.ndarray) -> pd.Index:
    values = np.asarray(values)
    if values.dtype.kind == "S":
        return pd.Index(np.char.decode(values, "utf-8").astype(object))
    if values.dtype.kind == "O":
        return pd.Index([v.decode("utf-8") if isinstance(v, bytes) else v for v in values])
    return pd.Index(values)


def frame_layout(f: h5py.File, path: str | Path, key: str | None = None) -> FrameLayout:
    """Find and check the frame in an open file; :class:`DataError` when it is not in the Kaggle layout."""
    frames = []
    f.visititems(lambda name, obj: frames.append(name) if isinstance(obj, h5py.Group) and {
        "axis0", "axis1", "block0_values"} <= set(obj.keys()) else None)
    if key is not None:
        key = key.strip("/")
        if key not in frames:
            raise DataError(f"{path}: no pandas frame under key {key!r}; frames in the file: {frames or 'none'}")
    elif len(frames) == 1:
        key = frames[0]
    elif not frames:
        content: list[str] = []
        f.visit(content.append)
        table = [n for n in content if n.endswith("/table")]
        hint = (" It looks like a pandas 'table' format file: re-save it with df.to_hdf(path, key=..., format='fixed')."
                if table else "")
        raise DataError(f"{path} is not in the Kaggle layout (a pandas HDF5 'fixed' frame with datasets axis0 = "
                        f"column names, axis1 = cell ids, block0_values = the matrix); it holds "
                        f"{content[:8] or 'nothing'}.{hint}")
    else:
        raise DataError(f"{path} holds several pandas frames {frames}; say which one with the key argument")
    group = f[key]
    columns = _decode(group["axis0"][()])
    index = _decode(group["axis1"][()])
    n_blocks = int(group.attrs.get("nblocks", 1))
    blocks = []
    covered = np.zeros(len(columns), dtype=bool)
    for b in range(n_blocks):
        values_key, items_key = f"block{b}_values", f"block{b}_items"
        if values_key not in group:
            raise DataError(f"{path}: frame {key!r} says it has {n_blocks} blocks but {values_key} is missing")
        ds = group[values_key]
        items = _decode(group[items_key][()]) if items_key in group else columns
        if ds.ndim != 2 or ds.shape != (len(index), len(items)):
            raise DataError(f"{path}: {key}/{values_key} has shape {ds.shape}, expected (cells, columns) = "
                            f"({len(index)}, {len(items)}) from axis1 and {items_key}")
        if not np.issubdtype(ds.dtype, np.number):
            raise DataError(f"{path}: {key}/{values_key} is not numeric (dtype {ds.dtype}); a Kaggle matrix "
                            f"holds numbers only")
        positions = columns.get_indexer(items)
        if (positions < 0).any():
            raise DataError(f"{path}: {items_key} names columns that are not in axis0, e.g. "
                            f"{items[positions < 0][:3].tolist()}")
        covered[positions] = True
        blocks.append((f"{key}/{values_key}", positions))
    if not covered.all():
        raise DataError(f"{path}: columns {columns[~covered][:3].tolist()} of axis0 are in no block")
    return FrameLayout(key=key, index=index, columns=columns, blocks=blocks)


def _open(path: str | Path) -> h5py.File:
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"file not found: {path}")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise DataError(f"{path} is not an HDF5 file (the Kaggle .h5 layout): {err}") from None


def read_frame_csr(path: str | Path, key: str | None = None, rows: np.ndarray | None = None,
                   chunk_bytes: int = DEFAULT_CHUNK_BYTES, dtype=np.float32
                   ) -> tuple[sp.csr_matrix, pd.Index, pd.Index]:
    """Read a Kaggle-layout frame as (CSR matrix, row names, column names), ``chunk_bytes`` of rows at a time.

    ``rows``: a boolean mask (or sorted positions) of the rows to keep, applied chunk by chunk.
    Each chunk's non-zeros go into large fixed-size segments; at the end the segments are copied into the final
    arrays one by one and released, so the peak stays near one CSR matrix plus one dense chunk.
    """
    with _open(path) as f:
        layout = frame_layout(f, path, key)
        n_rows, n_cols = len(layout.index), len(layout.columns)
        keep = _row_mask(rows, n_rows, path)
        datasets = [(f[name], pos) for name, pos in layout.blocks]
        itemsize = max(ds.dtype.itemsize for ds, _ in datasets)
        step = max(1, int(chunk_bytes // max(1, n_cols * itemsize)))
        buf = np.empty((min(step, n_rows), n_cols), dtype=np.result_type(*(ds.dtype for ds, _ in datasets)))
        values = _Segments(dtype)
        columns = _Segments(np.int32)
        row_nnz: list[np.ndarray] = []
        for start in range(0, n_rows, step):
            stop = min(start + step, n_rows)
            sel = keep[start:stop]
            if not sel.any():
                continue
            chunk = buf[: stop - start]
            for ds, pos in datasets:
                if len(datasets) == 1:
                    ds.read_direct(chunk, np.s_[start:stop])
                else:
                    chunk[:, pos] = ds[start:stop]
            dense = chunk if sel.all() else chunk[sel]
            flat = np.flatnonzero(dense)  # row-major positions of the non-zeros (NaN counts as non-zero)
            row_nnz.append(np.count_nonzero(dense, axis=1))
            values.append(np.take(dense.ravel(), flat))
            columns.append(flat % n_cols)
            del flat, dense
        del buf
    counts = np.concatenate(row_nnz) if row_nnz else np.zeros(0, dtype=np.int64)
    total = int(counts.sum())
    index_dtype = np.int32 if total < np.iinfo(np.int32).max else np.int64
    indptr = np.zeros(len(counts) + 1, dtype=index_dtype)
    np.cumsum(counts, out=indptr[1:])
    data = values.collect()
    indices = columns.collect(index_dtype)
    matrix = sp.csr_matrix((data, indices, indptr), shape=(len(counts), n_cols), copy=False)
    return matrix, layout.index[keep], layout.columns


class _Segments:
    """An append-only 1-D array stored as large fixed-size segments.

    Segments are big enough (128 MB) that the allocator maps them from the OS and returns each one when it is
    freed; small per-chunk arrays would stay in the heap after ``del`` and double the peak memory.
    """

    SIZE_BYTES = 128 * 2**20

    def __init__(self, dtype) -> None:
        self.dtype = np.dtype(dtype)
        self.seg_len = self.SIZE_BYTES // self.dtype.itemsize
        self.segments: list[np.ndarray] = []
        self.fill = self.seg_len
        self.total = 0

    def append(self, values: np.ndarray) -> None:
        at = 0
        while at < len(values):
            if self.fill == self.seg_len:
                self.segments.append(np.empty(self.seg_len, dtype=self.dtype))
                self.fill = 0
            n = min(len(values) - at, self.seg_len - self.fill)
            self.segments[-1][self.fill:self.fill + n] = values[at:at + n]
            self.fill += n
            at += n
        self.total += len(values)

    def collect(self, dtype=None) -> np.ndarray:
        """One contiguous array; the segments are released as they are copied."""
        out = np.empty(self.total, dtype=dtype or self.dtype)
        at = 0
        self.segments.reverse()
        while self.segments:
            seg = self.segments.pop()
            n = min(self.seg_len, self.total - at)
            out[at:at + n] = seg[:n]
            at += n
            del seg
        return out


def read_frame(path: str | Path, key: str | None = None) -> pd.DataFrame:
    """A small Kaggle-layout frame (e.g. the 140 protein targets) as a dense DataFrame."""
    with _open(path) as f:
        layout = frame_layout(f, path, key)
        values = np.empty((len(layout.index), len(layout.columns)), dtype=np.float32)
        for name, pos in layout.blocks:
            values[:, pos] = f[name][()]
    return pd.DataFrame(values, index=layout.index, columns=layout.columns)


def read_index(path: str | Path, key: str | None = None) -> pd.Index:
    """Row names (cell ids) of a Kaggle-layout frame without reading the matrix."""
    with _open(path) as f:
        return frame_layout(f, path, key).index


def _row_mask(rows, n_rows: int, path) -> np.ndarray:
    if rows is None:
        return np.ones(n_rows, dtype=bool)
    rows = np.asarray(rows)
    if rows.dtype == bool:
        if rows.shape != (n_rows,):
            raise ValueError(f"row mask has {rows.shape[0]} entries, {path} has {n_rows} rows")
        return rows
    mask = np.zeros(n_rows, dtype=bool)
    mask[rows] = True
    return mask


# -- the HSPC data set ------------------------------------------------------------------------------------------
def read_metadata(path: Path, cells: pd.Index, source: str, time_key: str) -> pd.DataFrame:
    """Metadata rows for ``cells`` (in that order); every cell of the matrix must have one."""
    try:
        meta = pd.read_csv(path)
    except Exception as err:  # pandas raises many types for a broken csv
        raise DataError(f"cannot read metadata {path}: {err}") from None
    if "cell_id" not in meta.columns:
        raise DataError(f"metadata {path} has no 'cell_id' column; columns: {list(meta.columns)}")
    if time_key not in meta.columns:
        raise DataError(f"metadata {path} has no time column {time_key!r} (data.time_key); columns: "
                        f"{list(meta.columns)}")
    meta["cell_id"] = meta["cell_id"].astype(str)
    if meta["cell_id"].duplicated().any():
        dup = meta.loc[meta["cell_id"].duplicated(), "cell_id"].head(3).tolist()
        raise DataError(f"metadata {path} lists some cells twice, e.g. {dup}")
    meta = meta.set_index("cell_id")
    missing = cells.difference(meta.index)
    if len(missing):
        raise DataError(f"metadata {path} has no row for {len(missing)} of the {len(cells)} cells in {source} "
                        f"(e.g. {missing[:3].tolist()}): is it the metadata of the same download?")
    out = meta.loc[cells]
    out.index.name = None
    return out


def _select_times(values: pd.Series, keep: Sequence[Any] | None, key: str, source: str) -> np.ndarray:
    if keep is None:
        return np.ones(len(values), dtype=bool)
    return time_mask(values, keep, f"{key!r} of {source}")  # a TimeError is a DataError: one line, exit 2


def load_hspc(
    data_dir: str,
    inputs: str = "train_cite_inputs.h5",
    targets: str = "train_cite_targets.h5",
    metadata: str = "metadata.csv",
    inputs_raw: str = "train_cite_inputs_raw.h5",
    targets_raw: str = "train_cite_targets_raw.h5",
    raw_rna: bool = False,
    raw_protein: bool = False,
    days: Sequence[Any] | None = (2, 3, 4),
    time_key: str = "day",
    cache: str | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> ad.AnnData:
    """The HSPC CITE-seq training cells as one canonical AnnData (genes CSR in X, proteins in obsm).

    ``raw_rna``: read ``inputs_raw`` (counts) instead of the normalised inputs; X and ``layers["counts"]`` then hold
    the counts (normalise after the split with ``preprocess.rna=log_normalize``). ``raw_protein``: read
    ``targets_raw``; ``obsm["protein"]`` and ``obsm["protein_counts"]`` hold the counts (``preprocess.protein=
    dsb_no_empty``). ``days`` keeps those time points (the paper: 2, 3, 4). ``cache``: an .h5ad written by
    ``scripts/prepare_hspc.py``; used when it exists.
    """
    folder = Path(str(data_dir)).expanduser()
    if cache:
        cache_path = Path(str(cache)).expanduser()
        if not cache_path.is_absolute():  # relative to the data folder
            cache_path = folder / cache_path
        if cache_path.exists():
            return _select_days(read_cache(cache_path, raw_rna, raw_protein), days, time_key, str(cache_path))
    rna_file = inputs_raw if raw_rna else inputs
    prot_file = targets_raw if raw_protein else targets
    require_files("HSPC (Kaggle Open Problems 2022, CITE-seq)", folder, [rna_file, prot_file, metadata],
                  KAGGLE_URL)
    cells = read_index(folder / rna_file)
    if not cells.is_unique:
        raise DataError(f"{folder / rna_file}: cell ids are not unique, e.g. {cells[cells.duplicated()][:3].tolist()}")
    obs = read_metadata(folder / metadata, cells, rna_file, time_key)
    keep = _select_times(obs[time_key], days, time_key, str(folder / metadata))
    log.info("HSPC: reading %s (%d of %d cells, days %s)", rna_file, int(keep.sum()), len(cells), days)
    x, cell_ids, genes = read_frame_csr(folder / rna_file, rows=keep, chunk_bytes=chunk_bytes)
    proteins = read_frame(folder / prot_file)
    missing = cell_ids.difference(proteins.index)
    if len(missing):
        raise DataError(f"{folder / prot_file} lacks {len(missing)} of the cells of {rna_file} "
                        f"(e.g. {missing[:3].tolist()})")
    proteins = proteins.loc[cell_ids]
    proteins.columns = proteins.columns.astype(str)
    adata = ad.AnnData(X=x, obs=obs.loc[cell_ids].copy(), var=pd.DataFrame(index=genes.astype(str)))
    if raw_rna:
        adata.layers["counts"] = x
    adata.obsm[PROTEIN_KEY] = proteins
    if raw_protein:
        adata.obsm["protein_counts"] = proteins.copy()
    adata.uns["hspc"] = {"raw_rna": bool(raw_rna), "raw_protein": bool(raw_protein)}
    return adata


def _select_days(adata: ad.AnnData, days, time_key: str, source: str) -> ad.AnnData:
    if time_key not in adata.obs.columns:
        raise DataError(f"{source} has no obs column {time_key!r} (data.time_key)")
    keep = _select_times(adata.obs[time_key], days, time_key, source)
    return adata if keep.all() else adata[keep].copy()


def write_cache(adata: ad.AnnData, path: str | Path) -> Path:
    """Write the canonical AnnData for fast later loads (raw counts are stored once, not as X and layer)."""
    path = Path(path).expanduser()
    counts = None
    if "counts" in adata.layers and adata.uns.get("hspc", {}).get("raw_rna"):
        counts = adata.layers["counts"]  # the same matrix as X: restored on read
        del adata.layers["counts"]
    try:
        adata.write_h5ad(path)
    finally:
        if counts is not None:
            adata.layers["counts"] = counts
    return path


def read_cache(path: Path, raw_rna: bool, raw_protein: bool) -> ad.AnnData:
    try:
        adata = ad.read_h5ad(path)
    except Exception as err:  # h5py/anndata raise many types for a broken file
        raise DataError(f"cannot read the HSPC cache {path}: {err}; delete it and rerun "
                        f"scripts/prepare_hspc.py") from None
    flags = dict(adata.uns.get("hspc", {}))
    want = {"raw_rna": bool(raw_rna), "raw_protein": bool(raw_protein)}
    got = {k: bool(flags.get(k, False)) for k in want}
    if got != want:
        raise DataError(f"the HSPC cache {path} was prepared with {got}, but the config asks for {want}: rerun "
                        f"scripts/prepare_hspc.py with matching --raw-rna/--raw-protein and another --out, or set "
                        f"data.source.cache=null")
    if want["raw_rna"]:
        adata.layers["counts"] = adata.X
    return adata
