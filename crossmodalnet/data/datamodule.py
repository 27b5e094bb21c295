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
import scipy.sparse as sp
import torch
from torch.utils.data import DataLoader, Dataset

from crossmodalnet.data.preprocess import Preprocessor
from crossmodalnet.data.splits import Split, holdout_split, stratified_split
from crossmodalnet.data.timepoints import TimeAxis
from crossmodalnet.data.validate import PROTEIN_KEY, SOURCE_FILES_KEY, DataError, validate_cite

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
    """Cells of one split; indexed by a *list* of rows, it returns the whole batch as tensors.

    ``genes``: CSR genes (sliced per batch), or a dense array (the SVD input projection: kept as one tensor and
    indexed, so it can also live on an accelerator).
    """

    def __init__(self, genes: sp.csr_matrix, proteins: np.ndarray, time_weights: np.ndarray,
                 time_index: np.ndarray, sparse_input: bool = False) -> None:
        self.dense_input = not sp.issparse(genes)
        self.genes = (torch.from_numpy(np.ascontiguousarray(genes, dtype=np.float32)) if self.dense_input
                      else sp.csr_matrix(genes, dtype=np.float32))
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
            "x": self.genes[idx] if self.dense_input else csr_rows_to_torch(self.genes, rows, self.sparse_input),
            "y": self.proteins[idx],
            "time_weights": self.time_weights[idx],
            "time_index": self.time_index[idx],
        }


def batch_loader(dataset: CellBatches, batch_size: int, shuffle: bool, num_workers: int = 0, seed: int = 0,
                 rank: int = 0, world: int = 1) -> DataLoader:
    """A DataLoader whose sampler yields whole batches of row indices (one CSR slice per batch).

    ``batch_size`` is the global batch; with ``world`` > 1 processes each yields its share of every global batch
    (crossmodalnet.training.distributed.GlobalBatchSampler). The shuffled order depends on (seed, epoch) only, so a resumed
    run and every rank draw the same one; a trailing batch that would leave BatchNorm one cell is dropped.
    """
    from crossmodalnet.data.sampler import GlobalBatchSampler

    sampler = GlobalBatchSampler(len(dataset), batch_size, shuffle, seed=seed, rank=rank, world=world)
    return DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=num_workers,
                      persistent_workers=num_workers > 0)


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
        time_order: list | None = None,
        time_categorical: bool = False,
        name: str | None = None,
        data_dir: str | None = None,
    ) -> None:
        """Arguments are the keys of a ``configs/data`` file (``name`` = ``source_name``; ``data_dir`` is only read
        by the source's own config); ``source`` is the AnnData or a function that loads it on :meth:`setup`."""
        super().__init__()
        source_name = source_name or name
        self.source = source
        self.time_key = time_key
        self.time_order = None if time_order is None else list(time_order)  # data.time_order
        self.time_categorical = bool(time_categorical)                       # data.time_categorical
        self.holdout_time = holdout_time
        # calibration: cells set aside for the conformal intervals only (0: they reuse the validation cells)
        self.fractions = {"train": 0.8, "val": 0.05, "test": 0.15, "calibration": 0.0, **(split or {})}
        self.fractions["calibration"] = float(self.fractions.get("calibration") or 0.0)
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
        self.inputs: dict[str, Any] = {}   # what the model reads per split: CSR genes or the dense SVD scores
        self.time_axis: TimeAxis | None = None

    # -- set-up ---------------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        adata = self.source() if callable(self.source) else self.source
        if not isinstance(adata, ad.AnnData):
            raise DataError(f"data source returned {type(adata).__name__}, expected AnnData")
        files = dict(adata.uns.get(SOURCE_FILES_KEY, {}) or {})  # the file each modality came from, for messages
        rna_source = files.get("rna", self.source_name)
        both = rna_source if files.get("protein", rna_source) == rna_source else f"{rna_source} + {files['protein']}"
        validate_cite(adata, self.time_key, both)
        self.preprocessor.check_input(adata, rna_source, files.get("protein", self.source_name))
        self.adata = adata
        times = self.cell_times(adata)
        if self.holdout_time is None:
            self.split = stratified_split(times, seed=self.seed, **self.fractions)
        else:
            self.split = holdout_split(times, self.holdout_time, train=self.fractions["train"],
                                       val=self.fractions["val"], seed=self.seed,
                                       calibration=self.fractions["calibration"])
        if len(self.split.test) == 0:  # a run without test cells would "finish" with no test metrics at all
            raise DataError(f"the test split is empty (data.split.test={self.fractions['test']}): every run is "
                            f"scored on held-out cells; set data.split.test > 0")
        train = adata[self.split.train]
        try:
            self.time_axis = TimeAxis.from_labels(self.cell_times(train), order=self.time_order,
                                                  categorical=self.time_categorical)
        except ValueError as err:  # TimeError: order/categorical settings that do not fit the data
            raise DataError(f"{err} (time column {self.time_key!r})") from None
        self.preprocessor.fit(train)
        for name, rows in self.split.items():
            part = self.preprocessor.transform(adata[rows])
            self.preprocessor.check_output(part, rna_source)
            self.splits[name] = part
        if self.preprocessor.fit_projection(self.splits["train"].X) is not None:  # training cells only
            log.info("input: truncated SVD, %d components of %d genes (fitted on %d training cells)",
                     self.n_inputs, self.n_genes, self.preprocessor.projection_.n_fit_cells_)
        for name, part in self.splits.items():
            self.inputs[name] = self.preprocessor.project(part.X)
            self.datasets[name] = self._batches(part, inputs=self.inputs[name])
        log.info("data: %d genes, %d proteins; cells train/val/test = %d/%d/%d%s; learned times %s",
                 self.n_genes, self.n_proteins, *(len(self.split.__dict__[s]) for s in ("train", "val", "test")),
                 f" (+ {len(self.split.calibration)} calibration)" if len(self.split.calibration) else "",
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

    def _batches(self, part: ad.AnnData, time_mode: str = "interpolate", inputs=None) -> CellBatches:
        labels = self.cell_times(part)
        if inputs is None:  # the model's input: genes, or their SVD scores when the projection is fitted
            inputs = self.preprocessor.project(part.X)
        return CellBatches(
            genes=inputs,
            proteins=part.obsm[PROTEIN_KEY].to_numpy(dtype=np.float32),
            time_weights=self.time_axis.weight_matrix(labels, mode=time_mode),
            time_index=self.time_axis.index_vector(labels),
            sparse_input=self.use_sparse_batches(),
        )

    # -- what the model needs to know ---------------------------------------------------------------------------
    @property
    def n_inputs(self) -> int:
        """Width of the model's input: genes, or SVD components (data.preprocess.svd_components)."""
        projection = self.preprocessor.projection_
        return self.n_genes if projection is None else projection.n_outputs

    def model_input(self, split: str):
        """A split's cells as the model reads them (CSR genes or dense SVD scores), for fit/predict baselines."""
        return self.inputs[split]

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
        """This process's share of every global batch (data-parallel training: docs/distributed.md). Validation
        and test loaders are not sharded: every rank scores the whole split, so all ranks agree on it."""
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        return batch_loader(self.datasets["train"], self.batch_size, True, self.num_workers, seed=self.seed,
                            rank=rank, world=world)

    def val_dataloader(self) -> DataLoader:
        if len(self.datasets["val"]) == 0:  # baselines fit without validation; Lightning models cannot
            raise DataError(f"the validation split is empty (data.split.val={self.fractions['val']}): early "
                            f"stopping and the best checkpoint are chosen on it; set data.split.val > 0")
        return self.loader(self.datasets["val"], shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.loader(self.datasets["test"], shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
