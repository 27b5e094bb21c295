"""Bad input stops with one clear message naming the problem; the data module keeps genes sparse."""
from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from crossmodalnet.data.datamodule import CiteDataModule
from crossmodalnet.data.sources import from_anndata
from crossmodalnet.data.validate import DataError, validate_cite


def test_valid_data_passes(tiny_adata):
    validate_cite(tiny_adata, "day", "tiny.h5ad")


def test_missing_time_column_names_it_and_the_file(tiny_adata):
    with pytest.raises(DataError, match=r"time column 'timepoint' not found in obs in tiny.h5ad; available"):
        validate_cite(tiny_adata, "timepoint", "tiny.h5ad")


@pytest.mark.parametrize("where", ["genes", "proteins"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_names_cell_and_feature(tiny_adata, where, bad):
    if where == "genes":
        x = tiny_adata.X.toarray()
        x[7, 3] = bad
        tiny_adata.X = sp.csr_matrix(x)
        expected = r"genes contain 1 NaN/inf values.*cell 'cell000007', gene 'G00003'"
    else:
        tiny_adata.obsm["protein"].iloc[7, 2] = bad
        expected = r"proteins contain 1 NaN/inf values.*cell 'cell000007', protein 'P002"
    with pytest.raises(DataError, match=expected):
        validate_cite(tiny_adata, "day")


def test_non_numeric_proteins_and_empty_data(tiny_adata):
    bad = tiny_adata.copy()
    bad.obsm["protein"] = bad.obsm["protein"].astype(str)
    with pytest.raises(DataError, match="not numeric"):
        validate_cite(bad, "day")
    with pytest.raises(DataError, match="no cells"):
        validate_cite(tiny_adata[:0].copy(), "day")


def test_two_files_with_different_cells_say_how_many(tmp_path, tiny_adata):
    rna = ad.AnnData(X=tiny_adata.X, obs=tiny_adata.obs[["day"]], var=tiny_adata.var[[]])
    prot = ad.AnnData(X=tiny_adata.obsm["protein"].to_numpy(), obs=pd.DataFrame(index=tiny_adata.obs_names),
                      var=pd.DataFrame(index=tiny_adata.obsm["protein"].columns))
    prot.obs_names = [f"x{i}" if i < 5 else n for i, n in enumerate(prot.obs_names)]
    rna.write_h5ad(tmp_path / "rna.h5ad")
    prot.write_h5ad(tmp_path / "adt.h5ad")
    with pytest.raises(DataError, match=r"5 cells only in RNA \(e.g. \['cell000000'"):
        from_anndata(rna_path=str(tmp_path / "rna.h5ad"), protein_path=str(tmp_path / "adt.h5ad"))


def test_two_files_in_different_order_are_matched_by_name(tmp_path, tiny_adata):
    rna = ad.AnnData(X=tiny_adata.X, obs=tiny_adata.obs[["day"]], var=tiny_adata.var[[]])
    prot = ad.AnnData(X=tiny_adata.obsm["protein"].to_numpy(), obs=pd.DataFrame(index=tiny_adata.obs_names),
                      var=pd.DataFrame(index=tiny_adata.obsm["protein"].columns))
    rna.write_h5ad(tmp_path / "rna.h5ad")
    prot[::-1].copy().write_h5ad(tmp_path / "adt.h5ad")
    joined = from_anndata(rna_path=str(tmp_path / "rna.h5ad"), protein_path=str(tmp_path / "adt.h5ad"))
    np.testing.assert_allclose(joined.obsm["protein"].to_numpy(), tiny_adata.obsm["protein"].to_numpy())


def test_missing_and_empty_files(tmp_path, tiny_adata):
    with pytest.raises(DataError, match="data file not found"):
        from_anndata(path=str(tmp_path / "nope.h5ad"))
    (tmp_path / "empty.h5ad").write_bytes(b"")
    with pytest.raises(DataError, match="cannot read data file"):
        from_anndata(path=str(tmp_path / "empty.h5ad"))
    tiny_adata[:0].copy().write_h5ad(tmp_path / "zero.h5ad")
    with pytest.raises(DataError, match="empty"):
        from_anndata(path=str(tmp_path / "zero.h5ad"))


def test_datamodule_batches_are_sliced_from_csr(tiny_adata):
    dm = CiteDataModule(tiny_adata, time_key="day", batch_size=32, seed=0)
    dm.setup()
    assert sp.isspmatrix_csr(dm.datasets["train"].genes)
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape == (32, tiny_adata.n_vars) and batch["y"].shape == (32, 10)
    assert batch["time_weights"].sum(1).eq(1).all() and (batch["time_index"] >= 0).all()
    n_train = len(dm.split.train)
    assert sum(b["x"].shape[0] for b in dm.train_dataloader()) in (n_train, n_train - n_train % 32)
    dm_sparse = CiteDataModule(tiny_adata, time_key="day", batch_size=16, sparse_input=True)
    dm_sparse.setup()
    assert next(iter(dm_sparse.val_dataloader()))["x"].layout == torch.sparse_csr


def test_datamodule_ood_gives_interpolated_test_weights(tiny_adata):
    dm = CiteDataModule(tiny_adata, time_key="day", holdout_time=3, batch_size=32)
    dm.setup()
    assert dm.time_axis.labels == [2, 4]
    w = dm.datasets["test"].time_weights
    assert torch.allclose(w, torch.tensor([0.5, 0.5]).expand_as(w))
    assert (dm.datasets["test"].time_index == -1).all()
