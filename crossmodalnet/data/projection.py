"""A reduced gene input: truncated SVD of the normalised genes, fitted on the training cells only.

The standard input reduction of the 2022 Kaggle CITE winners and scLinear. Every model then reads ``k``
centred, scaled component scores instead of ``g`` genes, so the first layer costs ``k x latent`` instead of
``g x latent`` per cell. The projection is one affine map ``z = x @ components_.T - offset_`` (the SVD's right
singular vectors, divided by the scores' standard deviation on the training cells), so

- new files are projected exactly like training cells (the map is stored in the saved model's manifest, beside
  the gene names used to align a new file's columns), and
- saliency goes back to genes by the chain rule: ``d y / d x = (d y / d z) @ components_``.

The SVD is randomised (Halko et al.) and runs on the CSR matrix as is: the gene matrix is never densified whole;
projecting new cells densifies a block of rows only above DENSE_BLOCK_DENSITY non-zeros; sparser blocks (droplet
data) go through torch's sparse kernel as CSR.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from crossmodalnet.data.validate import DataError

log = logging.getLogger(__name__)

# Rows densified at once when projecting CSR input (bounded memory: block x genes float32)
PROJECT_BLOCK_ROWS = 4096
# Above this fraction of non-zeros a CSR matrix is multiplied as densified row blocks (BLAS) instead of by the
# sparse product (torch's sparse kernel). Measured (2 cores, 4,096 cells x 22,050 genes at 15% x 128 components): the sparse product took
# 0.7-1.2 s, densifying the block alone 0.9-2.1 s, so droplet data (5-20%) stay sparse.
DENSE_BLOCK_DENSITY = 0.5
SCALES = ("global", "component")
# x.T @ y sums per-chunk products: chunks of this many rows, independent of the thread count (reproducible sums)
T_CHUNK_ROWS = 4096


@dataclass
class GeneProjection:
    """Truncated SVD of cells x genes (fit on training cells), centred and scaled scores as the model input.

    ``n_iter``: power iterations of the randomised SVD; ``max_cells``: fit on at most this many training cells
    (a seeded random subset: the fit cost is linear in cells, and gene loadings from 20,000 cells are what the
    model needs); ``scale``: scores are centred on the fitting cells, then ``global`` divides all of them by one
    number (their root-mean-square standard deviation: inputs of order 1, the leading components keep their
    larger variance) and ``component`` gives each unit variance (whitening: noisy trailing components then count
    as much as the leading ones).
    """

    n_components: int
    n_iter: int = 3
    max_cells: int | None = 20_000
    seed: int = 0
    scale: str = "global"
    components_: np.ndarray | None = field(default=None, repr=False)   # (k, genes) float32
    offset_: np.ndarray | None = field(default=None, repr=False)       # (k,) float32
    singular_values_: np.ndarray | None = field(default=None, repr=False)
    n_fit_cells_: int = 0

    def __post_init__(self) -> None:
        if int(self.n_components) < 1:
            raise DataError(f"data.preprocess.svd_components must be >= 1 or null, got {self.n_components}")
        if int(self.n_iter) < 0:
            raise DataError(f"data.preprocess.svd_n_iter must be >= 0, got {self.n_iter}")
        if self.scale not in SCALES:
            raise DataError(f"data.preprocess.svd_scale must be one of {SCALES}, got {self.scale!r}")
        if self.max_cells is not None and int(self.max_cells) < 2:
            raise DataError(f"data.preprocess.svd_max_cells must be >= 2 or null, got {self.max_cells}")

    # -- fit -----------------------------------------------------------------------------------------------------
    def fit(self, x) -> "GeneProjection":
        """Fit on the training cells' normalised genes (CSR or dense; CSR is never densified)."""
        x = sp.csr_matrix(x, dtype=np.float32) if sp.issparse(x) else np.asarray(x, dtype=np.float32)
        n, g = x.shape
        if min(n, g) < 2:
            raise DataError(f"svd_components needs at least 2 training cells and 2 genes, got {n} x {g}")
        if self.max_cells is not None and n > int(self.max_cells):
            rows = np.sort(np.random.default_rng(self.seed).choice(n, int(self.max_cells), replace=False))
            x = x[rows]
        k = min(int(self.n_components), min(x.shape) - 1)
        if k < int(self.n_components):
            log.warning("svd_components=%d capped at %d (min(cells, genes) - 1 of the fitting data)",
                        self.n_components, k)
        u, s, vt = randomized_svd(x, k, n_iter=int(self.n_iter), seed=self.seed)
        scores = _times(x, np.ascontiguousarray(vt.T, dtype=np.float32))  # exact (u * s is only close)
        mean, std = scores.mean(0), scores.std(0)
        if self.scale == "global":
            std = np.full(k, np.sqrt(np.mean(std ** 2)))
        std = np.where(std > 1e-12, std, 1.0)
        self.components_ = np.ascontiguousarray(vt / std[:, None], dtype=np.float32)
        self.offset_ = np.asarray(mean / std, dtype=np.float32)
        self.singular_values_ = np.asarray(s, dtype=np.float32)
        self.n_fit_cells_ = int(x.shape[0])
        return self

    # -- apply ---------------------------------------------------------------------------------------------------
    @property
    def n_genes(self) -> int:
        return int(self._fitted().shape[1])

    @property
    def n_outputs(self) -> int:
        return int(self._fitted().shape[0])

    @property
    def output_names(self) -> list[str]:
        return [f"SVD{i + 1}" for i in range(self.n_outputs)]

    def _fitted(self) -> np.ndarray:
        if self.components_ is None:
            raise RuntimeError("GeneProjection used before fit")
        return self.components_

    def transform(self, x) -> np.ndarray:
        """Cells x genes (CSR or dense, the genes the projection was fitted on) -> cells x k float32."""
        c = self._fitted()
        if x.shape[1] != c.shape[1]:
            raise DataError(f"the SVD projection expects {c.shape[1]} genes, got {x.shape[1]}")
        x = sp.csr_matrix(x, dtype=np.float32) if sp.issparse(x) else np.asarray(x, dtype=np.float32)
        if getattr(self, "_components_src", None) is not c:  # once per fitted/loaded matrix, not per block
            self._components_t, self._components_src = np.ascontiguousarray(c.T), c
        out = _times(x, self._components_t)
        out -= self.offset_
        return out

    def transform_torch(self, x: torch.Tensor) -> torch.Tensor:
        """The same map on a dense torch batch (differentiable: saliency and tests use it)."""
        c = torch.from_numpy(self._fitted()).to(x.dtype)
        return x @ c.t() - torch.from_numpy(self.offset_).to(x.dtype)

    def gene_gradient(self, grad: torch.Tensor) -> torch.Tensor:
        """Chain rule back to genes: gradients w.r.t. the k inputs (..., k) -> w.r.t. the genes (..., genes)."""
        return grad @ torch.from_numpy(self._fitted()).to(grad.dtype)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (joblib baselines) without the transposed copy of the components kept for fast projection."""
        state = dict(self.__dict__)
        state.pop("_components_t", None)
        state.pop("_components_src", None)
        return state

    # -- checkpoint ----------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Tensors and plain values only, so a checkpoint loads with ``torch.load(weights_only=True)``."""
        return {"kind": "truncated_svd", "n_components": int(self.n_components), "n_iter": int(self.n_iter),
                "max_cells": None if self.max_cells is None else int(self.max_cells), "seed": int(self.seed),
                "scale": self.scale, "n_fit_cells": self.n_fit_cells_,
                "components": torch.from_numpy(self._fitted().copy()),
                "offset": torch.from_numpy(np.asarray(self.offset_, dtype=np.float32).copy()),
                "singular_values": torch.from_numpy(np.asarray(self.singular_values_, dtype=np.float32).copy())}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "GeneProjection | None":
        if not d:
            return None
        proj = cls(n_components=d["n_components"], n_iter=d["n_iter"], max_cells=d["max_cells"], seed=d["seed"],
                   scale=d.get("scale", "global"))
        proj.components_ = np.asarray(d["components"], dtype=np.float32)
        proj.offset_ = np.asarray(d["offset"], dtype=np.float32)
        proj.singular_values_ = np.asarray(d["singular_values"], dtype=np.float32)
        proj.n_fit_cells_ = int(d.get("n_fit_cells", 0))
        return proj


def _dense_blocks(x) -> bool:
    return sp.issparse(x) and x.nnz >= DENSE_BLOCK_DENSITY * max(1, x.shape[0] * x.shape[1])


def _in_threads(fn, chunks: list[tuple[int, int]], workers: int) -> list:
    """``[fn(a, b) for (a, b) in chunks]`` on ``workers`` threads (scipy's sparse products release the GIL),
    results in chunk order."""
    workers = min(len(chunks), workers)
    if workers <= 1:
        return [fn(*c) for c in chunks]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda c: fn(*c), chunks))


def _csr_times_dense(x: sp.csr_matrix, b: np.ndarray) -> np.ndarray:
    """CSR x dense with torch's sparse kernel (multi-threaded; MKL where torch has it), sharing x's arrays.

    Measured on 2 cores (8,192 cells x 22,050 genes at 15% non-zero x 128 components): scipy 19,900 cells/s on its
    one thread, scipy split over 2 threads 25,300, torch 38,200."""
    import warnings

    if not x.has_sorted_indices:
        x = x.sorted_indices()
    data = np.ascontiguousarray(x.data, dtype=np.float32)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": a product is all we ask of it
        warnings.simplefilter("ignore")
        xt = torch.sparse_csr_tensor(torch.from_numpy(np.ascontiguousarray(x.indptr)),
                                     torch.from_numpy(np.ascontiguousarray(x.indices)), torch.from_numpy(data),
                                     size=x.shape)
        return (xt @ torch.from_numpy(np.ascontiguousarray(b, dtype=np.float32))).numpy()


def _times(x, b: np.ndarray) -> np.ndarray:
    """x @ b for CSR (sparse product, or densified row blocks with BLAS where dense enough) or dense x."""
    if not _dense_blocks(x):
        if not sp.issparse(x):
            return np.asarray(x @ b, dtype=np.float32)
        return _csr_times_dense(x, b)
    out = np.empty((x.shape[0], b.shape[1]), dtype=np.float32)
    for start in range(0, x.shape[0], PROJECT_BLOCK_ROWS):
        block = x[start:start + PROJECT_BLOCK_ROWS]
        out[start:start + block.shape[0]] = block.toarray() @ b
    return out


def _t_times(x, y: np.ndarray) -> np.ndarray:
    """x.T @ y, the same way (block by block: x.T is never formed densely)."""
    if not _dense_blocks(x):
        if not sp.issparse(x):
            return np.asarray(x.T @ y, dtype=np.float32)
        # fixed-size chunks summed in a fixed order: the same float32 result whatever the number of threads
        chunks = [(a, min(a + T_CHUNK_ROWS, x.shape[0])) for a in range(0, x.shape[0], T_CHUNK_ROWS)]
        parts = _in_threads(lambda a, b: np.asarray(x[a:b].T @ y[a:b], dtype=np.float32), chunks,
                            workers=torch.get_num_threads())
        return sum(parts[1:], parts[0])
    out = np.zeros((x.shape[1], y.shape[1]), dtype=np.float32)
    for start in range(0, x.shape[0], PROJECT_BLOCK_ROWS):
        block = x[start:start + PROJECT_BLOCK_ROWS]
        out += block.toarray().T @ y[start:start + block.shape[0]]
    return out


def randomized_svd(x, k: int, n_iter: int = 3, oversample: int = 10,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-``k`` truncated SVD of a CSR or dense matrix by randomised subspace iteration (Halko, Martinsson &
    Tropp 2011, Alg. 4.4, QR-normalised), ``u, s, vt``.

    Same algorithm as scikit-learn's ``randomized_svd``, but its products with a CSR matrix densify row blocks
    and use BLAS where the data are dense enough (droplet data: 5-20% non-zero), which on CPU is many times
    faster than scipy's single-threaded sparse product; below 2% non-zero the sparse product is used. Signs are
    fixed (largest loading of each component positive) so the result is deterministic.
    """
    n, g = x.shape
    width = min(k + oversample, n, g)
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(_times(x, rng.standard_normal((g, width), dtype=np.float32)))
    for _ in range(n_iter):
        z, _ = np.linalg.qr(_t_times(x, q))
        q, _ = np.linalg.qr(_times(x, z))
    b = _t_times(x, q).T                                   # (width, g) = q^T x
    u_b, s, vt = np.linalg.svd(b.astype(np.float64), full_matrices=False)
    u, s, vt = (q.astype(np.float64) @ u_b)[:, :k], s[:k], vt[:k]
    flip = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(1)])
    flip[flip == 0] = 1.0
    return u * flip, s, vt * flip[:, None]


def model_input(model, x) -> np.ndarray | Any:
    """What ``model``'s network reads for a block of aligned, normalised genes: the genes themselves, or their
    projection when the model was trained on ``svd_components``."""
    projection = getattr(model, "projection", None)
    return x if projection is None else projection.transform(x)
