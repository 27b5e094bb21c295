"""Predict surface proteins for new scRNA-seq with a trained checkpoint: ``predict(model, adata, time=...)`` and the
``crossmodalnet-predict`` console script.

The checkpoint written by ``train()`` carries what a new file needs to be read the way the training data was:
gene names and order, protein names, the learned time axis and the RNA normalisation. A new file's genes are
aligned by *name* (reordered; missing genes zero-filled with a warning that counts them; too few shared genes is
an error), raw counts are normalised as in training, and cells are streamed in batches straight from the (CSR or
backed) matrix, so a large file never becomes one dense array. The input is never modified.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from crossmodalnet.utils.lazy import lazy
from crossmodalnet.inference.load import as_model, check_model, load_model  # noqa: F401  (public here too)
from crossmodalnet.errors import DataError
from crossmodalnet.utils.config_dir import CONFIG_DIR

# imported on first use: `crossmodalnet-predict --help` must not wait seconds for them (tests/test_cli_speed.py)
ad = lazy("anndata")
pd = lazy("pandas")
sp = lazy("scipy.sparse")
torch = lazy("torch")
if TYPE_CHECKING:
    from crossmodalnet.data.timepoints import TimeAxis

log = logging.getLogger("crossmodalnet")


def log_normalize_counts(*args, **kwargs):
    """:func:`crossmodalnet.data.normalize.log_normalize_counts`, imported when first needed (scipy is slow to load)."""
    from crossmodalnet.data.normalize import log_normalize_counts as normalize

    return normalize(*args, **kwargs)

CONFIG_FILE = Path(CONFIG_DIR) / "predict.yaml"
# Fallbacks when configs/predict.yaml is not around (an installed, non-editable package).
DEFAULTS: dict[str, Any] = {"batch_size": 1024, "min_shared_genes": 0.5, "time_mode": "interpolate",
                            "outside_range": "nearest"}
TIME_MODES = ("interpolate", "nearest", "none")
NORMALIZE = ("as_is", "log_normalize")


def defaults() -> dict[str, Any]:
    """Prediction defaults: ``configs/predict.yaml`` over the built-in fallbacks."""
    out = dict(DEFAULTS)
    if CONFIG_FILE.exists():
        from omegaconf import OmegaConf
        out.update(OmegaConf.to_container(OmegaConf.load(CONFIG_FILE), resolve=True))
    return out


# -- gene alignment and normalisation ------------------------------------------------------------------------------
@dataclass
class GeneAlignment:
    """Where each of the model's genes comes from in the input: ``src`` input columns -> ``dst`` model columns."""

    n_model: int
    src: np.ndarray
    dst: np.ndarray
    missing: list[str]
    identity: bool

    @property
    def n_shared(self) -> int:
        return len(self.dst)


def align_genes(model_genes: list[str], input_genes, min_shared: float = 0.5, where: str = "input") -> GeneAlignment:
    """Match the input's genes to the model's by name; warn on missing genes, fail when too few are shared.

    ``min_shared`` is a fraction (<= 1) of the model's genes or an absolute count (> 1).
    """
    names = pd.Index([str(g) for g in input_genes])
    if not names.is_unique:
        dup = names[names.duplicated()][:3].tolist()
        raise DataError(f"gene names (var_names) are not unique in {where}, e.g. {dup}")
    model_genes = [str(g) for g in model_genes]
    pos = names.get_indexer(model_genes)
    present = pos >= 0
    n_model, n_shared = len(model_genes), int(present.sum())
    needed = min_shared * n_model if min_shared <= 1 else min_shared
    if n_shared < max(needed, 1):
        raise DataError(
            f"{where} shares only {n_shared} of the checkpoint's {n_model} genes (need >= {int(np.ceil(needed))}, "
            f"min_shared_genes={min_shared}); the checkpoint was trained on a different gene set "
            f"(checkpoint genes e.g. {model_genes[:3]}, input genes e.g. {names[:3].tolist()})")
    missing = [g for g, ok in zip(model_genes, present) if not ok]
    if missing:
        warnings.warn(f"{len(missing)} of the checkpoint's {n_model} genes are missing from {where} and are "
                      f"zero-filled (e.g. {missing[:5]})", stacklevel=3)
    identity = not missing and len(names) == n_model and bool((pos == np.arange(n_model)).all())
    return GeneAlignment(n_model, pos[present].astype(np.int64), np.flatnonzero(present), missing, identity)


def _align_csr(raw: sp.csr_matrix, al: GeneAlignment) -> sp.csr_matrix:
    """The model's gene columns of a CSR block, staying sparse (missing genes are implicit zeros)."""
    sub = raw[:, al.src].tocoo()
    return sp.csr_matrix((sub.data, (sub.row, al.dst[sub.col])), shape=(raw.shape[0], al.n_model),
                         dtype=np.float32)


def _rows(matrix, start: int, stop: int):
    """Rows [start, stop) of an in-memory or backed matrix, as CSR or a dense float32 array."""
    block = matrix[start:stop]
    if sp.issparse(block):
        return sp.csr_matrix(block, dtype=np.float32)
    return np.asarray(block, dtype=np.float32)


@dataclass
class GeneSource:
    """The input matrix the model reads, and how each batch is normalised and aligned."""

    matrix: Any
    method: str
    target_sum: float
    alignment: GeneAlignment
    description: str
    obs_names: Any = None           # cell and gene names of the input, named in data errors
    var_names: Any = None
    where: str = "input"
    integer_counts: bool = True     # raw counts must be whole numbers (as in training)
    ranges: RangeMonitor | None = None

    def batches(self, batch_size: int, sparse: bool = False) -> Iterator[tuple[int, int, Any]]:
        """(start, stop, float32 block of the model's genes) for consecutive blocks of cells: dense, or CSR where
        the input is sparse and ``sparse`` (a model on SVD components projects CSR directly: densifying 22,050
        genes per cell cost more than the whole network). After the last block, cells far outside the training
        range (if any) are reported in one warning."""
        from crossmodalnet.utils.progress import MIN_CELLS, progress

        n = self.matrix.shape[0]
        starts = range(0, n, batch_size)  # a progress bar on large inputs (predict and saliency both read here)
        for start in progress(starts, len(starts), f"{n:,} cells", show=n >= MIN_CELLS):
            stop = min(start + batch_size, n)
            yield start, stop, self.block(start, stop, sparse=sparse)
        if self.ranges is not None:
            self.ranges.report(n, self.where)

    def block(self, start: int, stop: int, sparse: bool = False):
        raw = _rows(self.matrix, start, stop)
        self._check(raw, start, stop)
        if self.method == "log_normalize":  # library size over all of the file's genes, as in training
            raw = log_normalize_counts(sp.csr_matrix(raw), self.target_sum)
        al = self.alignment
        if sparse and sp.issparse(raw):
            out = raw if al.identity else _align_csr(raw, al)
            if self.ranges is not None and not self.ranges.update_sparse(out, start, self.obs_names):
                self.ranges.update(out.toarray(), start, self.obs_names)  # a gene whose zeros are out of range
            return out
        if al.identity:
            out = raw.toarray() if sp.issparse(raw) else np.ascontiguousarray(raw)
        else:
            out = np.zeros((stop - start, al.n_model), dtype=np.float32)
            sub = raw[:, al.src]
            out[:, al.dst] = sub.toarray() if sp.issparse(sub) else sub
        if self.ranges is not None:
            self.ranges.update(out, start, self.obs_names)
        return out

    def _check(self, raw, start: int, stop: int) -> None:
        """The input's values as read, before normalisation: the same checks as the training data."""
        from crossmodalnet.data.validate import MAX_ABS_VALUE, check_matrix

        if self.obs_names is None or self.var_names is None:
            return
        cells = self.obs_names[start:stop]
        if self.method == "log_normalize":
            check_matrix(raw, self.description, cells, self.var_names, self.where, counts=True,
                         integer=self.integer_counts,
                         hint="the model normalises raw counts (rna=log_normalize): give it raw counts")
        else:
            check_matrix(raw, self.description, cells, self.var_names, self.where, bound=MAX_ABS_VALUE,
                         hint="the model reads this matrix as given (rna=as_is): normalise it like the "
                              "training data")


class RangeMonitor:
    """Counts cells holding a gene value far outside what the training data held, and keeps the worst one.

    "Far": beyond the gene's training min/max by more than its training range (at least a tenth of the range of
    all genes, so a narrow gene is not flagged for every small value). Genes with no training variance (min =
    max, e.g. never expressed in the training cells) are left out of that count: any other value would be "far",
    and a gene the training cells never expressed says nothing about extrapolation by itself; how many of them
    take other values is reported in the same line. Values are reported, never clipped: the network extrapolates,
    and the user decides.
    """

    def __init__(self, lo, hi, gene_names: list[str]) -> None:
        self.lo, self.hi = np.asarray(lo, np.float32), np.asarray(hi, np.float32)
        span = float(self.hi.max() - self.lo.min()) if self.hi.size else 0.0
        self.tolerance = np.maximum(self.hi - self.lo, 0.1 * span if span > 0 else 1.0).astype(np.float32)
        self.constant = self.hi <= self.lo  # no training variance: checked separately
        self.gene_names = gene_names
        self.n_cells = 0
        self.worst: tuple[float, str, int, float] | None = None  # (excess in tolerances, cell, gene column, value)
        self.constant_changed = np.zeros(self.lo.shape, dtype=bool)  # constant genes seen at another value
        self._zero_far: bool | None = None  # does a 0 lie far outside some varying gene's training range?

    def _excess(self, values: np.ndarray, cols) -> np.ndarray:
        """How far beyond the gene's training range, in tolerances, minus one (> 0: far out); -inf for constant
        genes."""
        excess = np.maximum(values - self.hi[cols], self.lo[cols] - values) / self.tolerance[cols] - 1.0
        return np.where(self.constant[cols], -np.inf, excess)

    def update(self, block: np.ndarray, start: int, obs_names) -> None:
        """Count the block's cells with a far-out value; keep the most extreme one."""
        if self.constant.any():
            changed = (block[:, self.constant] != self.lo[self.constant]).any(axis=0)
            self.constant_changed[self.constant] |= changed
        excess = self._excess(block, slice(None))
        far = excess > 0
        rows = far.any(axis=1)
        if not rows.any():
            return
        self.n_cells += int(rows.sum())
        r, c = divmod(int(np.argmax(np.where(far, excess, -np.inf))), block.shape[1])
        if self.worst is None or excess[r, c] > self.worst[0]:
            cell = str(obs_names[start + r]) if obs_names is not None else f"row {start + r}"
            self.worst = (float(excess[r, c]), cell, c, float(block[r, c]))

    def update_sparse(self, block: sp.csr_matrix, start: int, obs_names) -> bool:
        """``update`` on CSR without densifying: stored values are scored, and the implicit zeros need none when
        zero lies within every varying gene's tolerance and constant genes were 0 in training (log-normalised
        data: training minimum 0). False = not decided here: the caller falls back to the dense block."""
        if self._zero_far is None:
            zero_excess = self._excess(np.zeros_like(self.lo), slice(None))
            self._zero_far = bool((zero_excess > 0).any() or (self.lo[self.constant] != 0).any())
        if self._zero_far:
            return False
        cols = block.indices
        stored = block.data
        if self.constant.any():
            hit = self.constant[cols] & (stored != 0)
            self.constant_changed[cols[hit]] = True
        excess = self._excess(stored, cols)
        far = excess > 0
        if not far.any():
            return True
        entry_rows = np.repeat(np.arange(block.shape[0]), np.diff(block.indptr))
        self.n_cells += int(np.unique(entry_rows[far]).size)
        i = int(np.argmax(np.where(far, excess, -np.inf)))
        if self.worst is None or excess[i] > self.worst[0]:
            r = int(entry_rows[i])
            cell = str(obs_names[start + r]) if obs_names is not None else f"row {start + r}"
            self.worst = (float(excess[i]), cell, int(cols[i]), float(stored[i]))
        return True

    def constant_note(self) -> str:
        """'' or a clause naming the genes without training variance that take other values here."""
        n = int(self.constant_changed.sum())
        if not n:
            return ""
        names = [self.gene_names[i] for i in np.flatnonzero(self.constant_changed)[:3]]
        return (f"{n} genes constant in the training cells (e.g. {', '.join(map(repr, names))}) take other values "
                f"here and are not counted")

    def report(self, n_total: int, where: str) -> None:
        """One line per call: a warning with the count of far-out cells and the worst example, with the number of
        training-constant genes that vary here in the same line; those alone are an info line, not a warning."""
        note = self.constant_note()
        if not self.n_cells:
            if note:
                log.info("gene values of %s: %s", where, note)
            return
        _, cell, g, value = self.worst
        warnings.warn(f"{self.n_cells} of {n_total} cells of {where} hold gene values far outside the training "
                      f"range (beyond a gene's training min/max by more than its training range); worst: cell "
                      f"{cell!r}, gene {self.gene_names[g]!r} = {value:g} (training range [{self.lo[g]:g}, "
                      f"{self.hi[g]:g}]); their predictions extrapolate: check that the input is normalised like "
                      f"the training data" + (f" ({note})" if note else ""), stacklevel=4)


def gene_source(model, adata: ad.AnnData, layer: str | None = None, normalize: str | None = None,
                counts_layer: str = "counts", min_shared: float | None = None, where: str = "input") -> GeneSource:
    """Pick the matrix to read (X, ``layer`` or raw counts) and the normalisation the checkpoint asks for."""
    pre = getattr(model, "preprocessing", None) or {}
    method = normalize or pre.get("rna", "as_is")
    if method not in NORMALIZE:
        raise ValueError(f"normalize must be one of {NORMALIZE}, got {method!r}")
    target_sum = float(pre.get("target_sum", 1e4))
    if layer is not None:
        if layer not in adata.layers:
            raise DataError(f"layer {layer!r} not found in {where}; layers: {list(adata.layers.keys())}")
        matrix, desc = adata.layers[layer], f"layers[{layer!r}]"
    elif method == "log_normalize" and counts_layer in adata.layers:
        matrix, desc = adata.layers[counts_layer], f"layers[{counts_layer!r}]"
    else:
        matrix, desc = adata.X, "X"
    if matrix is None:
        raise DataError(f"{where} has no gene matrix {desc}")
    if sp.issparse(matrix) and matrix.format != "csr":
        matrix = sp.csr_matrix(matrix)  # row slicing of CSC/COO is slow
    first = _rows(matrix, 0, min(matrix.shape[0], 512))
    from crossmodalnet.data.counts import looks_like_counts

    # counts with a few bad entries still count as counts: the block checks then name each bad entry
    counts = looks_like_counts(first, tolerance=0.01)
    if method == "log_normalize" and not counts:
        raise DataError(f"the model was trained on log-normalised raw counts, but {where} {desc} does not hold "
                        f"raw counts; put them in layers[{counts_layer!r}] (or pass layer=...)")
    if method == "as_is" and counts:
        warnings.warn(f"{where} {desc} holds integer counts, but the model was trained on the matrix as given "
                      "(preprocess.rna=as_is); if training used normalised values, pass normalize='log_normalize'",
                      stacklevel=3)
    min_shared = defaults()["min_shared_genes"] if min_shared is None else min_shared
    alignment = align_genes(model.gene_names, adata.var_names, min_shared, where)
    lo, hi = pre.get("gene_min"), pre.get("gene_max")  # absent in checkpoints written before they were recorded
    ranges = (RangeMonitor(lo, hi, [str(g) for g in model.gene_names])
              if lo is not None and hi is not None and len(lo) == len(hi) == alignment.n_model else None)
    return GeneSource(matrix, method, target_sum, alignment, desc, obs_names=adata.obs_names,
                      var_names=adata.var_names, where=where, integer_counts=bool(pre.get("integer_counts", True)),
                      ranges=ranges)


# -- time ----------------------------------------------------------------------------------------------------------
def resolve_time(model, obs: pd.DataFrame, time: Any = None, time_key: str | None = None,
                 time_mode: str = "interpolate", outside_range: str = "nearest",
                 where: str = "input") -> tuple[list[Any], np.ndarray]:
    """Per-cell time labels and the weight matrix (cells x learned times) the network gets.

    ``time``: one label for every cell; ``time_key``: an obs column. With neither, a one-time model uses its only
    time and otherwise the training time column is used when the input has it. Unseen times between learned ones
    are interpolated; outside the learned range the nearest learned time is used with a warning, or an error with
    ``outside_range="error"``. ``time_mode="none"`` leaves the time embedding out (the basal prediction).
    """
    axis: TimeAxis = model.time_axis
    n = len(obs)
    if time_mode not in TIME_MODES:
        raise ValueError(f"time_mode must be one of {TIME_MODES}, got {time_mode!r}")
    if outside_range not in ("nearest", "error"):
        raise ValueError(f"outside_range must be 'nearest' or 'error', got {outside_range!r}")
    if time is not None and time_key is not None:
        raise ValueError("give either time (one time for all cells) or time_key (an obs column), not both")
    if time_mode == "none" or not getattr(model, "uses_time", True):  # MLPs and baselines have no time input
        if time_mode != "none" and (time is not None or time_key is not None):
            log.info("the model has no time input; the requested time is not used")
        return ["none"] * n, np.zeros((n, axis.n_times), dtype=np.float32)
    if time is not None:
        labels = [time] * n
    elif time_key is not None:
        if time_key not in obs.columns:
            raise DataError(f"time column {time_key!r} not found in obs of {where}; columns: {list(obs.columns)}")
        column = obs[time_key]
        if column.isna().any():
            raise DataError(f"time column {time_key!r} of {where} has {int(column.isna().sum())} missing values")
        labels = column.tolist()
    elif axis.n_times == 1:
        labels = [axis.labels[0]] * n
    else:
        train_key = (getattr(model, "preprocessing", None) or {}).get("time_key")
        if not (train_key and train_key in obs.columns):
            raise DataError(f"the model learned times {axis.labels}: pass time=... (e.g. --time "
                            f"{axis.labels[0]}) or time_key=... (an obs column of {where}), or time_mode='none'")
        log.info("using the training time column %r of %s", train_key, where)
        labels = obs[train_key].tolist()
    for label in pd.unique(pd.Series(labels, dtype=object)):
        axis.check(label, outside_range)
    return labels, axis.weight_matrix(labels, mode=time_mode)


# -- prediction -------------------------------------------------------------------------------------------------------
def predict(model, adata: ad.AnnData, time: Any = None, time_key: str | None = None, *,
            time_mode: str | None = None, outside_range: str | None = None, batch_size: int | None = None,
            layer: str | None = None, normalize: str | None = None, min_shared: float | None = None,
            where: str = "input", interval: float | None = None) -> ad.AnnData:
    """Predicted proteins for the cells of ``adata`` (not modified).

    ``model``: a trained model (CrossmodalNet, MLP, or a loaded baseline) or its checkpoint/run dir. Returns
    AnnData with the input's cells, obs, obsm (``X_umap``, ...), obsp and gene-free uns, predicted proteins in
    ``X``, protein names in ``var_names``, the requested time in ``obs["prediction_time"]``, the weights over
    learned times actually used in ``obsm["time_weights"]`` and the training normalisation in
    ``uns["crossmodalnet"]["training"]``.

    ``interval=0.9``: 90% split-conformal prediction intervals (calibrated on the training run's validation
    cells, crossmodalnet/inference/intervals.py) in ``layers["lower"]`` / ``layers["upper"]``.
    """
    cfg = defaults()
    time_mode = time_mode or cfg["time_mode"]
    outside_range = outside_range or cfg["outside_range"]
    batch_size = int(batch_size or cfg["batch_size"])
    model = as_model(model)
    if not getattr(model, "uses_time", True):
        time_mode = "none"  # MLPs and fit/predict baselines: no time input
    if adata.n_obs == 0:
        raise DataError(f"{where} has no cells")
    if not adata.obs_names.is_unique:  # one prediction per cell name, or the output's rows are ambiguous
        dup = adata.obs_names[adata.obs_names.duplicated()][:3].tolist()
        raise DataError(f"cell names (obs_names) are not unique in {where}, e.g. {dup}; make them unique "
                        f"(adata.obs_names_make_unique())")
    source = gene_source(model, adata, layer=layer, normalize=normalize, min_shared=min_shared, where=where)
    labels, weights = resolve_time(model, adata.obs, time, time_key, time_mode, outside_range, where)
    from crossmodalnet.data.projection import model_input  # genes, or their SVD scores (svd_components)

    was_training = model.training
    model.eval()
    pred = np.empty((adata.n_obs, len(model.protein_names)), dtype=np.float32)
    w_all = torch.from_numpy(weights)
    try:
        with torch.inference_mode():
            # an SVD-input model projects CSR blocks as they are (no densified genes)
            for start, stop, x in source.batches(batch_size, sparse=getattr(model, "projection", None) is not None):
                tw = None if time_mode == "none" else w_all[start:stop]
                pred[start:stop] = model(torch.from_numpy(model_input(model, x)), tw).numpy()  # SVD: projected
    finally:
        model.train(was_training)
    obs = adata.obs.copy()
    obs["prediction_time"] = pd.Categorical([str(t) for t in labels])
    out = ad.AnnData(X=pred, obs=obs, var=pd.DataFrame(index=pd.Index(model.protein_names, name="protein")))
    out.obsm["time_weights"] = pd.DataFrame(weights, index=obs.index,
                                            columns=[str(t) for t in model.time_axis.labels])
    out.uns["crossmodalnet"] = {
        "checkpoint": str(getattr(model, "checkpoint_path", "")), "time_mode": time_mode,
        "learned_times": [str(t) for t in model.time_axis.labels], "gene_matrix": source.description,
        "normalization": source.method, "n_model_genes": source.alignment.n_model,
        "n_missing_genes": len(source.alignment.missing),
        "n_cells_outside_training_range": source.ranges.n_cells if source.ranges is not None else -1}
    from crossmodalnet.data.query import Query
    from crossmodalnet.inference.annotations import keep_annotations

    keep_annotations(out, Query(adata, None, adata, where), model)  # obsm (X_umap), obsp, uns; training scale
    if interval is not None:
        from crossmodalnet.inference.intervals import add_intervals

        add_intervals(out, model, interval)
    return out


