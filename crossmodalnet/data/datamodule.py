"""CiteDataModule: load -> validate -> split -> normalise per split -> sparse batches.

Genes stay CSR until a batch is formed; a batch is sliced from the CSR matrix in one go by a batch sampler
(the dataset's ``__getitem__`` receives a whole list of rows), never item by item.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import anndata as ad
import lightning as L
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from crossmodalnet.data.preprocess import Preprocessor
from crossmodalnet.data.splits import Split, holdout_split, stratified_split
from crossmodalnet.data.timepoints import TimeAxis
from crossmodalnet.data.validate import PROTEIN_KEY, DataError, validate_cite

log = logging.getLogger(__name__)


# Below this fraction of non-zeros batches reach the first layer as sparse CSR tensors. scripts/benchmark.py on
# 2 CPU cores (batch 256 x 22,050 genes, forward + weight gradient): sparse/dense time 0.75 at 0.2%, 0.95 at 1%,
# 0.86 at 2%, 2.0 at 5%, 4.0 at 15%; on a 16-core host dense won everywhere. Droplet data (5-20%) stays dense.
SPARSE_DENSITY_THRESHOLD = 0.02


def csr_rows_to_torch(x: sp.csr_matrix, rows: np.ndarray | None = None, sparse: bool = False) -> torch.Tensor:
    """Rows of a CSR matrix as a torch tensor: dense float32, or a sparse CSR tensor sharing the buffers."""
    sub = x if rows is None else x[rows]
    if sparse:
        sub = sp.csr_matrix(sub, dtype=np.float32)
        return torch.sparse_csr_tensor(torch.from_numpy(sub.indptr.astype(np.int64)),
                                       torch.from_numpy(sub.indices.astype(np.int64)),
                                       torch.from_numpy(sub.data), size=sub.shape)
    return torch.from_numpy(sub.toarray().astype(np.float32, copy=False))


class CellBatches(Dataset):
    """Cells of one split; indexed by a *list* of rows, it returns the whole batch as tensors."""

    def __init__(self, genes: sp.csr_matrix, proteins: np.ndarray, time_weights: np.ndarray,
                 time_index: np.ndarray, sparse_input: bool = False) -> None:
        self.genes = sp.csr_matrix(genes, dtype=np.float32)
        self.proteins = torch.from_numpy(np.ascontiguousarray(proteins, dtype=np.float32))
        self.time_weights = torch.from_numpy(np.ascontiguousarray(time_weights, dtype=np.float32))
        self.time_index = torch.from_numpy(np.asarray(time_index, dtype=np.int64))
        self.sparse_input = sparse_input

    def __len__(self) -> int:
        return self.genes.shape[0]

    def __getitem__(self, rows) -> dict[str, torch.Tensor]:
        rows = np.asarray(rows, dtype=np.int64)
        idx = torch.from_numpy(rows)
        return {
            "x": csr_rows_to_torch(self.genes, rows, self.sparse_input),
            "y": self.proteins[idx],
            "time_weights": self.time_weights[idx],
            "time_index": self.time_index[idx],
        }


def batch_loader(dataset: CellBatches, batch_size: int, shuffle: bool, num_workers: int = 0) -> DataLoader:
    """A DataLoader whose sampler yields whole batches of row indices (one CSR slice per batch)."""
    sampler = RandomSampler(dataset) if shuffle else SequentialSampler(dataset)
    # drop a trailing partial batch in training only when it would leave BatchNorm a single cell
    drop_last = shuffle and len(dataset) % batch_size == 1 and len(dataset) > batch_size
    return DataLoader(dataset, sampler=BatchSampler(sampler, batch_size, drop_last=drop_last),
                      batch_size=None, num_workers=num_workers, persistent_workers=num_workers > 0)


class CiteDataModule(L.LightningDataModule):
    """Paired RNA + protein data for training, validation and test.

    ``source`` is an AnnData in the canonical form, or a zero-argument callable that returns one (loaded on
    ``setup``). ``holdout_time`` switches from the in-distribution split to the out-of-distribution one.
    """

    def __init__(
        self,
        source: ad.AnnData | Callable[[], ad.AnnData],
        time_key: str | None = "day",
        holdout_time: Any = None,
        split: dict | None = None,
        preprocess: dict | None = None,
        batch_size: int = 256,
        num_workers: int = 0,
        sparse_input: bool | str = "auto",
        seed: int = 0,
        source_name: str | None = None,
    ) -> None:
        super().__init__()
        self.source = source
        self.time_key = time_key
        self.holdout_time = holdout_time
        self.fractions = {"train": 0.8, "val": 0.05, "test": 0.15, **(split or {})}
        self.preprocessor = Preprocessor(**(preprocess or {}))
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        if sparse_input not in (True, False, "auto"):
            raise DataError(f"data.sparse_input must be true, false or auto, got {sparse_input!r}")
        self.sparse_input = sparse_input
        self.seed = int(seed)
        self.source_name = source_name
        self.adata: ad.AnnData | None = None
        self.split: Split | None = None
        self.splits: dict[str, ad.AnnData] = {}
        self.datasets: dict[str, CellBatches] = {}
        self.time_axis: TimeAxis | None = None

    # -- set-up ---------------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        adata = self.source() if callable(self.source) else self.source
        if not isinstance(adata, ad.AnnData):
            raise DataError(f"data source returned {type(adata).__name__}, expected AnnData")
        validate_cite(adata, self.time_key, self.source_name)
        self.adata = adata
        times = self.cell_times(adata)
        if self.holdout_time is None:
            self.split = stratified_split(times, seed=self.seed, **self.fractions)
        else:
            self.split = holdout_split(times, self.holdout_time, train=self.fractions["train"],
                                       val=self.fractions["val"], seed=self.seed)
        train = adata[self.split.train]
        self.time_axis = TimeAxis.from_labels(self.cell_times(train))
        self.preprocessor.fit(train)
        for name, rows in self.split.items():
            part = self.preprocessor.transform(adata[rows])
            self.splits[name] = part
            self.datasets[name] = self._batches(part)
        log.info("data: %d genes, %d proteins; cells train/val/test = %d/%d/%d; learned times %s",
                 self.n_genes, self.n_proteins, *(len(self.split.__dict__[s]) for s in ("train", "val", "test")),
                 self.time_axis.labels)

    def cell_times(self, adata: ad.AnnData) -> list:
        if self.time_key is None:
            return [0] * adata.n_obs
        return adata.obs[self.time_key].tolist()

    def use_sparse_batches(self) -> bool:
        """Sparse batches only where they are faster: below ``SPARSE_DENSITY_THRESHOLD`` non-zeros (measured by
        ``scripts/benchmark.py``: at droplet densities of 5-20% a dense batch matmul wins by far)."""
        if self.sparse_input != "auto":
            return bool(self.sparse_input)
        x = self.splits["train"].X
        return x.nnz / max(1, x.shape[0] * x.shape[1]) < SPARSE_DENSITY_THRESHOLD

    def _batches(self, part: ad.AnnData, time_mode: str = "interpolate") -> CellBatches:
        labels = self.cell_times(part)
        return CellBatches(
            genes=part.X,
            proteins=part.obsm[PROTEIN_KEY].to_numpy(dtype=np.float32),
            time_weights=self.time_axis.weight_matrix(labels, mode=time_mode),
            time_index=self.time_axis.index_vector(labels),
            sparse_input=self.use_sparse_batches(),
        )

    # -- what the model needs to know ---------------------------------------------------------------------------
    @property
    def n_genes(self) -> int:
        return len(self.preprocessor.genes_)

    @property
    def n_proteins(self) -> int:
        return self.adata.obsm[PROTEIN_KEY].shape[1]

    @property
    def gene_names(self) -> list[str]:
        return [str(g) for g in self.preprocessor.genes_]

    @property
    def protein_names(self) -> list[str]:
        return [str(p) for p in self.adata.obsm[PROTEIN_KEY].columns]

    def save_split(self, path: Path) -> None:
        self.split.save(path, self.adata.obs_names)

    # -- loaders ------------------------------------------------------------------------------------------------
    def loader(self, dataset: CellBatches, shuffle: bool) -> DataLoader:
        return batch_loader(dataset, self.batch_size, shuffle, self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self.loader(self.datasets["train"], shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader(self.datasets["val"], shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.loader(self.datasets["test"], shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
