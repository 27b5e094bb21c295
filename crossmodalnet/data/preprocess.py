"""Normalisation applied after the split (paper A.2): fitted on the training cells only where a fit exists.

RNA (genes in X, raw counts in ``layers["counts"]``):
  ``as_is`` keeps X (already normalised, e.g. the Kaggle processed files); ``log_normalize`` is Seurat's
  NormalizeData/LogNormalize from raw counts (library size to ``target_sum``, then log1p), per cell, so it needs
  no fit. Gene selection is fitted on the training split only: ``min_cells`` (detected in at least that many
  training cells) and optionally ``n_top_genes`` highly variable genes (scanpy, flavour ``hvg_flavor``).
Protein (values in ``obsm["protein"]``, raw ADT counts in ``obsm["protein_counts"]``):
  ``as_is`` keeps ``obsm["protein"]``; ``dsb`` (with empty droplets, ``empty_droplets`` = an .h5ad of their raw
  ADT counts) and ``dsb_no_empty`` (ModelNegativeADTnorm) compute it from the raw counts, see
  :mod:`crossmodalnet.data.dsb`; ``clr`` is the centred log-ratio of each cell's raw ADT counts across its
  proteins, computed by muon (``muon.prot.pp.clr(axis=1)``, Seurat's flavour), per cell, so it needs no fit.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from crossmodalnet.data.dsb import DSB
from crossmodalnet.data.projection import GeneProjection
from crossmodalnet.data.normalize import log_normalize_counts
from crossmodalnet.data.validate import MAX_ABS_VALUE, PROTEIN_KEY, DataError, check_matrix

log = logging.getLogger(__name__)

RNA_METHODS = ("as_is", "log_normalize")
PROTEIN_METHODS = ("as_is", "dsb", "dsb_no_empty", "clr")
DSB_METHODS = ("dsb", "dsb_no_empty")
HVG_FLAVORS = ("seurat", "cell_ranger")
PROTEIN_COUNTS_KEY = "protein_counts"


# data.preprocess.svd_components=auto: the model reads SVD_AUTO_COMPONENTS components when the data have more than
# SVD_AUTO_MIN_GENES genes, else the genes. Measured (README "Performance"): at 8,000 and 22,050 genes the first
# layer is most of the arithmetic and 128 components reach a tested model 1.4x sooner at D3 (21.0 s vs 29.8 s)
# with equal test Pearson; at 1,000-2,000 genes the epochs are cheap either way and SVD inputs took more of them.
SVD_AUTO_MIN_GENES = 5_000
SVD_AUTO_COMPONENTS = 128


def resolve_svd_components(setting: int | str | None, n_genes: int) -> int | None:
    """``svd_components`` as a number of components (None = genes), deciding ``auto`` from the gene count."""
    if setting != "auto":
        return None if setting is None else int(setting)
    if n_genes > SVD_AUTO_MIN_GENES:
        log.info("data.preprocess.svd_components=auto: %d genes > %d, the model reads %d SVD components "
                 "(svd_components=null trains on the genes themselves)", n_genes, SVD_AUTO_MIN_GENES,
                 SVD_AUTO_COMPONENTS)
        return SVD_AUTO_COMPONENTS
    return None


@dataclass
class Preprocessor:
    """Per-split normalisation with everything that needs a fit estimated on the training split.

    ``fit(train)`` then ``transform(split)`` for each split; ``transform`` returns a new AnnData (the input is
    never modified) with the kept genes in X (CSR float32) and the proteins to predict in ``obsm["protein"]``.
    """

    rna: str = "as_is"
    protein: str = "as_is"
    target_sum: float = 1e4
    min_cells: int = 0
    n_top_genes: int | None = None
    hvg_flavor: str = "seurat"
    # raw counts (RNA for log_normalize, ADT for dsb) must be whole numbers; false for ambient-corrected counts
    integer_counts: bool = True
    # dsb options (protein = dsb | dsb_no_empty)
    empty_droplets: str | None = None
    empty_droplets_layer: str | None = None
    isotype_controls: Sequence[str] | None = None
    dsb_pseudocount: float | None = None
    dsb_denoise: bool = True
    dsb_scale: str = "standardize"
    dsb_quantile_clip: Sequence[float] | None = None
    # reduced gene input (crossmodalnet.data.projection): truncated SVD fitted on the training cells; null = genes
    svd_components: int | str | None = None
    svd_n_iter: int = 3
    svd_max_cells: int | None = 20_000
    svd_seed: int = 0
    svd_scale: str = "global"
    genes_: np.ndarray | None = field(default=None, init=False)
    dsb_: DSB | None = field(default=None, init=False)
    projection_: GeneProjection | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.rna not in RNA_METHODS:
            raise DataError(f"unknown RNA normalisation {self.rna!r}; choose one of {RNA_METHODS}")
        if self.protein not in PROTEIN_METHODS:
            raise DataError(f"unknown protein normalisation {self.protein!r}; choose one of {PROTEIN_METHODS}")
        if self.svd_components is not None:  # checks the svd_* settings now, not after loading the data
            if self.svd_components != "auto" and (isinstance(self.svd_components, bool)
                                                  or not isinstance(self.svd_components, int)):
                raise DataError(f"data.preprocess.svd_components must be an integer, 'auto' or null, got "
                                f"{self.svd_components!r}")
            GeneProjection(SVD_AUTO_COMPONENTS if self.svd_components == "auto" else self.svd_components,
                           n_iter=self.svd_n_iter, max_cells=self.svd_max_cells, scale=self.svd_scale)
        if self.target_sum <= 0:
            raise DataError(f"preprocess.target_sum must be > 0, got {self.target_sum}")
        if self.min_cells < 0:
            raise DataError(f"preprocess.min_cells must be >= 0, got {self.min_cells}")
        if self.n_top_genes is not None and int(self.n_top_genes) < 1:
            raise DataError(f"preprocess.n_top_genes must be >= 1 or null, got {self.n_top_genes}")
        if self.hvg_flavor not in HVG_FLAVORS:
            raise DataError(f"preprocess.hvg_flavor must be one of {HVG_FLAVORS}, got {self.hvg_flavor!r}")
        if self.protein == "dsb" and not self.empty_droplets:
            raise DataError("protein=dsb needs empty droplets: set data.preprocess.empty_droplets=<.h5ad of raw ADT "
                            "counts of empty droplets>, or use protein=dsb_no_empty")
        if self.protein != "dsb" and self.empty_droplets:
            raise DataError(f"data.preprocess.empty_droplets is only used by protein=dsb (got protein="
                            f"{self.protein!r})")
        if self.protein not in DSB_METHODS and self.isotype_controls:
            raise DataError("data.preprocess.isotype_controls is only used by protein=dsb/dsb_no_empty")
        if self.protein in DSB_METHODS:
            self.dsb_ = DSB(pseudocount=self.dsb_pseudocount, denoise=self.dsb_denoise,
                            isotype_controls=self.isotype_controls, scale=self.dsb_scale,
                            quantile_clip=self.dsb_quantile_clip)

    # -- checks on what is read (docs/checks.md) -----------------------------------------------------------------
    def check_input(self, adata: ad.AnnData, rna_source: str | None = None,
                    protein_source: str | None = None) -> None:
        """The matrices this preprocessing reads, checked (all cells) before anything is computed from them:
        raw counts where counts are normalised, the values as given where they are used as they are."""
        obs = adata.obs_names
        if self.rna == "log_normalize":
            if "counts" not in adata.layers:
                raise DataError("rna=log_normalize needs raw counts in layers['counts']; set "
                                "data.preprocess.rna=as_is if X is already normalised")
            check_matrix(adata.layers["counts"], "RNA counts layers['counts']", obs, adata.var_names, rna_source,
                         counts=True, integer=self.integer_counts,
                         hint="rna=log_normalize needs raw counts (set data.preprocess.integer_counts=false for "
                              "ambient-corrected counts, or rna=as_is for an already normalised X)")
        else:
            check_matrix(adata.X, "gene matrix X", obs, adata.var_names, rna_source, bound=MAX_ABS_VALUE,
                         hint="rna=as_is feeds X to the network as given: normalise it, or use "
                              "rna=log_normalize with raw counts in layers['counts']")
        if self.protein == "as_is":
            prot = adata.obsm[PROTEIN_KEY]
            check_matrix(prot.to_numpy(), f"proteins obsm[{PROTEIN_KEY!r}]", obs, prot.columns, protein_source,
                         bound=MAX_ABS_VALUE, feature="protein",
                         hint="protein=as_is uses the values as given: normalise them (e.g. CLR, or dsb from raw "
                              "counts)")
        else:
            counts = _protein_counts(adata)
            check_matrix(counts.to_numpy(), f"raw ADT counts obsm[{PROTEIN_COUNTS_KEY!r}]", obs, counts.columns,
                         protein_source, counts=True, integer=self.integer_counts, feature="protein",
                         hint=f"protein={self.protein} needs raw ADT counts")

    def check_output(self, out: ad.AnnData, source: str | None = None) -> None:
        """The matrices the network gets, after normalisation: finite and within +-MAX_ABS_VALUE."""
        check_matrix(out.X, f"gene matrix after normalisation (rna={self.rna})", out.obs_names, out.var_names,
                     source)
        prot = out.obsm[PROTEIN_KEY]
        check_matrix(np.asarray(prot, dtype=np.float64), f"proteins after normalisation (protein={self.protein})",
                     out.obs_names, getattr(prot, "columns", range(prot.shape[1])), source, feature="protein")

    # -- fit ---------------------------------------------------------------------------------------------------
    def fit(self, train: ad.AnnData) -> "Preprocessor":
        if self.rna == "log_normalize" and "counts" not in train.layers:
            raise DataError("rna=log_normalize needs raw counts in layers['counts']; set "
                            "data.preprocess.rna=as_is if X is already normalised")
        genes = train.var_names
        if self.min_cells > 0:
            source = train.layers["counts"] if "counts" in train.layers else train.X
            detected = _detected_cells(source)
            keep = detected >= self.min_cells
            if not keep.any():
                raise DataError(f"no gene is detected in >= {self.min_cells} training cells (data.preprocess."
                                f"min_cells); lower it")
            genes = genes[keep]
        if self.n_top_genes is not None:
            genes = self._highly_variable(train, genes)
        self.genes_ = genes.to_numpy()
        if self.dsb_ is not None:
            self.dsb_.fit(_protein_counts(train), self._empty_droplets() if self.protein == "dsb" else None)
        return self

    def _highly_variable(self, train: ad.AnnData, genes: pd.Index) -> pd.Index:
        import scanpy as sc

        n_top = int(self.n_top_genes)
        if n_top >= len(genes):
            return genes
        x = self._rna_matrix(train)
        if len(genes) != train.n_vars:
            x = x[:, train.var_names.get_indexer(genes)]
        tmp = ad.AnnData(X=x, obs=pd.DataFrame(index=train.obs_names), var=pd.DataFrame(index=genes))
        # scanpy's seurat/cell_ranger flavours expect log-normalised data and work on sparse X
        hvg = sc.pp.highly_variable_genes(tmp, n_top_genes=n_top, flavor=self.hvg_flavor, inplace=False)
        keep = np.asarray(hvg["highly_variable"], dtype=bool)
        return genes[keep]

    def _empty_droplets(self) -> pd.DataFrame:
        path = Path(str(self.empty_droplets)).expanduser()
        if not path.exists():
            raise DataError(f"empty-droplet file not found: {path} (data.preprocess.empty_droplets)")
        try:
            empty = ad.read_h5ad(path)
        except Exception as err:  # h5py/anndata raise many types for a broken file
            raise DataError(f"cannot read empty-droplet file {path} as .h5ad: {err}") from None
        layer = self.empty_droplets_layer
        if layer is not None and layer not in empty.layers:
            raise DataError(f"layer {layer!r} not found in empty-droplet file {path}; layers: "
                            f"{list(empty.layers.keys())}")
        x = empty.X if layer is None else empty.layers[layer]
        x = x.toarray() if sp.issparse(x) else np.asarray(x)
        return pd.DataFrame(x, index=empty.obs_names, columns=empty.var_names.astype(str))

    def fit_projection(self, x_train) -> GeneProjection | None:
        """Fit the SVD input projection on the training split's transformed genes (``svd_components``; None =
        off). Separate from :meth:`fit` so the training genes are transformed once, not twice."""
        self.projection_ = None
        k = resolve_svd_components(self.svd_components, x_train.shape[1])
        if k is not None:
            self.projection_ = GeneProjection(k, n_iter=int(self.svd_n_iter),
                                              max_cells=self.svd_max_cells, seed=int(self.svd_seed),
                                              scale=self.svd_scale).fit(x_train)
        return self.projection_

    def project(self, x):
        """A transformed split's genes as the model reads them: the SVD scores when fitted, else the genes."""
        return x if self.projection_ is None else self.projection_.transform(x)

    # -- transform -----------------------------------------------------------------------------------------------
    def transform(self, adata: ad.AnnData) -> ad.AnnData:
        """The split as the model sees it: kept genes, normalised, in X (CSR float32); proteins in obsm.

        ``adata`` may be a view (``full[rows]``): its matrices are materialised once, never copied twice, and raw
        count layers are not carried into the result (they stay in the full data set).
        """
        if self.genes_ is None:
            raise RuntimeError("Preprocessor.transform called before fit")
        # library size over all genes, before any gene filter
        x = self._rna_matrix(adata)
        x = x if sp.isspmatrix_csr(x) and x.dtype == np.float32 else sp.csr_matrix(x, dtype=np.float32)
        var = adata.var
        if len(self.genes_) != adata.n_vars or not np.array_equal(adata.var_names.to_numpy(), self.genes_):
            cols = adata.var_names.get_indexer(self.genes_)
            if (cols < 0).any():
                raise DataError(f"genes the preprocessing was fitted on are missing, e.g. "
                                f"{self.genes_[cols < 0][:3].tolist()}")
            x, var = x[:, cols], var.iloc[cols]
        out = ad.AnnData(X=sp.csr_matrix(x), obs=adata.obs.copy(), var=var.copy())
        for key, value in adata.obsm.items():
            out.obsm[key] = value.copy() if isinstance(value, pd.DataFrame) else np.array(value)
        if self.dsb_ is not None:
            out.obsm[PROTEIN_KEY] = self.dsb_.transform(_protein_counts(out))
        elif self.protein == "clr":
            out.obsm[PROTEIN_KEY] = clr(_protein_counts(out))
        return out

    def _rna_matrix(self, adata: ad.AnnData):
        if self.rna == "log_normalize":
            return log_normalize_counts(adata.layers["counts"], self.target_sum)
        return adata.X


def _detected_cells(x) -> np.ndarray:
    if sp.issparse(x):
        x = sp.csr_matrix(x)
        return np.bincount(x.indices[x.data > 0], minlength=x.shape[1])
    return np.asarray((np.asarray(x) > 0).sum(0)).ravel()


def _protein_counts(adata: ad.AnnData) -> pd.DataFrame:
    if PROTEIN_COUNTS_KEY not in adata.obsm:
        raise DataError(f"dsb needs raw ADT counts in obsm[{PROTEIN_COUNTS_KEY!r}] (load the raw protein counts, "
                        f"e.g. the protein file's layers['counts']), or set data.preprocess.protein=as_is")
    counts = adata.obsm[PROTEIN_COUNTS_KEY]
    if not isinstance(counts, pd.DataFrame):
        counts = pd.DataFrame(np.asarray(counts), index=adata.obs_names,
                              columns=adata.obsm[PROTEIN_KEY].columns)
    return counts


def clr(counts: pd.DataFrame) -> pd.DataFrame:
    """Centred log-ratio of each cell's raw ADT counts across its proteins, by muon's own implementation
    (``muon.prot.pp.clr``, flavour "seurat": log1p(x / exp(mean(log1p(x))))). Per cell, so no fit and no leak
    between splits."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # muon reads scanpy.__version__ on import
        from muon import prot

    tmp = ad.AnnData(X=np.asarray(counts, dtype=np.float64).copy())
    prot.pp.clr(tmp, inplace=True, axis=1)
    return pd.DataFrame(np.asarray(tmp.X, dtype=np.float32), index=counts.index, columns=counts.columns)
