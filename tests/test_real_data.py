"""Real data: the BMMC CITE-seq starter end to end, normalisation after the split, MuData input, the myeloid loader
and its filters, and the messages users get for missing files and bad input."""
from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hydra import compose, initialize_config_dir

from crossmodalnet.data.datamodule import CiteDataModule
from crossmodalnet.data.myeloid import load_myeloid
from crossmodalnet.data.preprocess import Preprocessor
from crossmodalnet.data.sources import bmmc
from crossmodalnet.data.validate import DataError, validate_cite
from crossmodalnet.training.run import build_datamodule
from conftest import REPO_ROOT, run_train, shared_data

CONFIG_DIR = str(REPO_ROOT / "configs")


@pytest.fixture(scope="module")
def bmmc_adata() -> ad.AnnData:
    return bmmc(str(shared_data("bmmc_cite_starter")))


def test_bmmc_loads_in_canonical_form(bmmc_adata):
    a = bmmc_adata
    assert a.shape == (600, 1000) and a.obsm["protein"].shape == (600, 134)
    assert sp.isspmatrix_csr(a.layers["counts"])
    assert np.allclose(a.layers["counts"].data, np.round(a.layers["counts"].data))  # raw counts
    counts = a.obsm["protein_counts"].to_numpy()
    assert (counts >= 0).all() and np.allclose(counts, np.round(counts))
    assert set(a.obs["batch"]) == {"s1d1", "s1d2"}
    validate_cite(a, "batch", "bmmc")


def test_normalisation_fitted_on_train_only(bmmc_adata):
    dm = CiteDataModule(bmmc_adata, time_key="batch", batch_size=64,
                        preprocess={"rna": "log_normalize", "protein": "dsb_no_empty", "min_cells": 3,
                                    "n_top_genes": 300})
    dm.setup()
    train_rows = dm.split.train
    counts = bmmc_adata.layers["counts"]
    detected_train = np.asarray((counts[train_rows] > 0).sum(0)).ravel()
    kept = set(dm.gene_names)
    eligible = set(bmmc_adata.var_names[detected_train >= 3])
    assert len(kept) == 300 and kept <= eligible  # HVGs among genes detected in >= 3 *training* cells
    test = dm.splits["test"]
    raw = counts[dm.split.test].toarray()
    expected = np.log1p(raw / raw.sum(1, keepdims=True) * 1e4)  # Seurat LogNormalize, all genes' library size
    cols = bmmc_adata.var_names.get_indexer(test.var_names)
    np.testing.assert_allclose(test.X.toarray(), expected[:, cols], rtol=1e-5, atol=1e-5)
    # dsb (no empty droplets) replaced the shipped normalised values with values computed from raw counts
    assert not np.allclose(test.obsm["protein"].to_numpy(), bmmc_adata.obsm["protein"].to_numpy()[dm.split.test])
    assert np.isfinite(test.obsm["protein"].to_numpy()).all()
    # training genes only: a gene detected in test cells but in < 3 training cells is dropped
    assert not (set(bmmc_adata.var_names[detected_train < 3]) & kept)


@pytest.mark.slow
def test_bmmc_trains_end_to_end(tmp_path):
    shared_data("bmmc_cite_starter")
    _, metrics = run_train(tmp_path, "experiment=bmmc", "trainer.max_epochs=2", "model.latent_dim=32")
    for key in ("test/pearson_cell", "test/pearson_protein", "test/mse"):
        assert np.isfinite(metrics[key])
    preds = ad.read_h5ad(tmp_path / "run" / "predictions.h5ad")
    assert preds.n_vars == 134 and set(preds.obs["batch"]) <= {"s1d1", "s1d2"}


def test_mudata_input_matches_two_files(bmmc_adata, tmp_path):
    md = pytest.importorskip("mudata")
    from crossmodalnet.data.mudata_source import from_mudata

    folder = shared_data("bmmc_cite_starter")
    rna, prot = ad.read_h5ad(folder / "rna.h5ad"), ad.read_h5ad(folder / "adt.h5ad")
    rna.obs = rna.obs.drop(columns=["batch"])
    mdata = md.MuData({"rna": rna, "prot": prot})
    mdata.obs["donor"] = prot.obs["batch"].astype(str).to_numpy()  # the condition only at the MuData level
    mdata.write(tmp_path / "bmmc.h5mu")
    out = from_mudata(str(tmp_path / "bmmc.h5mu"))
    assert out.obs["donor"].tolist() == bmmc_adata.obs["batch"].astype(str).tolist()
    np.testing.assert_array_equal(out.obsm["protein"].to_numpy(), bmmc_adata.obsm["protein"].to_numpy())
    np.testing.assert_array_equal(out.layers["counts"].toarray(), bmmc_adata.layers["counts"].toarray())
    with pytest.raises(DataError, match="no modality 'adt'"):
        from_mudata(str(tmp_path / "bmmc.h5mu"), protein_mod="adt")


# -- myeloid ---------------------------------------------------------------------------------------------------
@pytest.fixture
def myeloid_dir(tmp_path) -> Path:
    """Published-style files: RNA counts .h5ad, ADT counts as a proteins x cells csv.gz, metadata csv."""
    rng = np.random.default_rng(0)
    n = 240
    cells = [f"AAAC{i:05d}-1" for i in range(n)]
    meta = pd.DataFrame({
        "barcode": cells,
        "timepoint": rng.choice(["W1", "W2", "W3", "W6"], n),
        "response": rng.choice(["R", "NR"], n, p=[0.7, 0.3]),
        "cell_type": rng.choice(["CD14 Mono A", "CD14 Mono B", "CD16 Mono", "T cell"], n, p=[.4, .3, .2, .1]),
        "patient": rng.choice(["P1", "P2", "P3"], n),
    })
    meta.to_csv(tmp_path / "cell_metadata.csv", index=False)
    rna = ad.AnnData(sp.csr_matrix(rng.poisson(0.6, (n, 60)).astype(np.float32)),
                     obs=pd.DataFrame(index=cells), var=pd.DataFrame(index=[f"G{i}" for i in range(60)]))
    rna.write_h5ad(tmp_path / "rna_counts.h5ad")
    adt = pd.DataFrame(rng.poisson(rng.uniform(3, 30, 12)[:, None], (12, n)),
                       index=[f"CD{i}" for i in range(12)], columns=cells)
    adt.to_csv(tmp_path / "adt_counts.csv.gz")
    return tmp_path


def test_myeloid_filters_and_weeks(myeloid_dir):
    a = load_myeloid(str(myeloid_dir), adt="adt_counts.csv.gz",
                     filters={"response": ["R"], "cell_type": "regex:CD14"})
    meta = pd.read_csv(myeloid_dir / "cell_metadata.csv")
    want = meta[(meta.response == "R") & meta.cell_type.str.contains("CD14") & meta.timepoint.isin(["W1", "W2", "W3"])]
    assert a.obs_names.tolist() == want.barcode.tolist()
    assert a.obsm["protein"].shape == (len(want), 12)
    assert a.X is a.layers["counts"]
    dm = CiteDataModule(a, time_key="timepoint", holdout_time=2, batch_size=32,
                        preprocess={"rna": "log_normalize", "protein": "dsb_no_empty", "min_cells": 1})
    dm.setup()
    assert dm.time_axis.labels == ["W1", "W3"] and set(dm.splits["test"].obs["timepoint"]) == {"W2"}
    np.testing.assert_allclose(dm.datasets["test"].time_weights.numpy(), 0.5)  # week 2: halfway, interpolated
    with pytest.raises(DataError, match=r"filter response=\['responder'\] keeps no cell.*\['NR', 'R'\]"):
        load_myeloid(str(myeloid_dir), adt="adt_counts.csv.gz", filters={"response": ["responder"]})
    with pytest.raises(DataError, match="lacks 240 of the 240"):
        load_myeloid(str(myeloid_dir), adt="rna_counts.h5ad", rna="adt_counts.csv.gz", orientation="cells_x_features",
                     times=None)


# -- missing files and bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("experiment,files", [
    ("hspc", ["train_cite_inputs.h5", "metadata.csv", "kaggle.com"]),
    ("hspc_ood", ["train_cite_targets.h5", "kaggle.com"]),
    ("myeloid", ["rna_counts.h5ad", "cell_metadata.csv", "GSE210065"]),
    ("myeloid_ood", ["adt_counts.h5ad", "GSE210065"]),
    ("bmmc", ["rna.h5ad", "adt.h5ad", "GSE194122"]),
])
def test_missing_files_stop_at_once(experiment, files, tmp_path):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"experiment={experiment}", f"data.data_dir={tmp_path}",
                                                      f"paths.output_dir={tmp_path}"])
    dm = build_datamodule(cfg)
    with pytest.raises(DataError) as err:
        dm.setup()
    msg = str(err.value)
    assert "not found" in msg and str(tmp_path) in msg and "data.data_dir" in msg
    for part in files:
        assert part in msg


def _small(tiny_adata):
    a = tiny_adata.copy()
    a.obsm["protein"] = a.obsm["protein"].copy()
    return a


def test_mixed_type_time_column(tiny_adata):
    a = _small(tiny_adata)
    a.obs["day"] = pd.Series([2 if i % 2 else "day 3" for i in range(a.n_obs)], index=a.obs_names, dtype=object)
    with pytest.raises(DataError, match="time column 'day' mixes types"):
        validate_cite(a, "day", "input.h5ad")


def test_colliding_protein_names(tiny_adata):
    a = _small(tiny_adata)
    cols = list(a.obsm["protein"].columns)
    a.obsm["protein"].columns = [cols[0], cols[0].lower() + " "] + cols[2:]
    with pytest.raises(DataError, match="protein names collide in input.h5ad"):
        validate_cite(a, "day", "input.h5ad")
    a = _small(tiny_adata)
    a.obsm["protein_counts"] = a.obsm["protein_counts"].iloc[:, ::-1]
    with pytest.raises(DataError, match="raw protein counts"):
        validate_cite(a, "day", "input.h5ad")


def test_isotypes_named_but_absent(tiny_adata):
    a = _small(tiny_adata)
    pre = Preprocessor(protein="dsb_no_empty", isotype_controls=["Mouse-IgG1", "Rat-IgG2b"])
    with pytest.raises(DataError, match=r"isotype controls \['Mouse-IgG1', 'Rat-IgG2b'\] named in the config"):
        pre.fit(a)


def test_dsb_needs_raw_protein_counts(tiny_adata):
    a = _small(tiny_adata)
    del a.obsm["protein_counts"]
    with pytest.raises(DataError, match=r"obsm\['protein_counts'\]"):
        Preprocessor(protein="dsb_no_empty").fit(a)
