"""The SVD input (data.preprocess.svd_components): fitted on training cells only, CSR never densified, stored in
the checkpoint and applied by prediction, saliency mapped back to genes exactly, usable by every model."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from conftest import REPO_ROOT
from crossmodalnet.data.datamodule import CiteDataModule
from crossmodalnet.data.projection import GeneProjection
from crossmodalnet.data.simulate import random_csr, simulate_cite
from crossmodalnet.data.validate import DataError
from crossmodalnet.interpret.saliency import batch_gradients, saliency_from_batches
from crossmodalnet.models.crossmodalnet import CrossmodalNet

SVD = {"svd_components": 8}


def _dm(adata, **pre) -> CiteDataModule:
    dm = CiteDataModule(adata, preprocess={**SVD, **pre}, batch_size=64, seed=0)
    dm.setup("fit")
    return dm


def test_projection_is_fitted_on_training_cells_only():
    adata = simulate_cite(n_cells=300, n_genes=120, n_proteins=10, seed=1)
    dm = _dm(adata)
    other = adata.copy()
    held_out = np.concatenate([dm.split.val, dm.split.test])
    x = other.X.tolil()
    x[held_out] = np.random.default_rng(0).gamma(2.0, 3.0, (len(held_out), other.n_vars)).astype(np.float32)
    other.X = x.tocsr()
    dm2 = _dm(other)
    np.testing.assert_array_equal(dm2.split.train, dm.split.train)
    p1, p2 = dm.preprocessor.projection_, dm2.preprocessor.projection_
    np.testing.assert_array_equal(p1.components_, p2.components_)
    np.testing.assert_array_equal(p1.offset_, p2.offset_)
    # what the model reads: training scores centred and scaled on train, the same map applied to every split
    assert dm.n_inputs == 8 and dm.n_genes == 120 and dm.datasets["train"][[0, 1]]["x"].shape == (2, 8)
    z = dm.model_input("train")
    np.testing.assert_allclose(z.mean(0), 0, atol=2e-3)
    assert np.sqrt(np.mean(z.std(0) ** 2)) == pytest.approx(1.0, abs=2e-3)   # svd_scale=global (default)
    assert z.std(0)[0] > z.std(0)[-1]                                        # the leading component stays larger
    whitened = _dm(adata, svd_scale="component").model_input("train")
    np.testing.assert_allclose(whitened.std(0), 1, atol=2e-3)
    np.testing.assert_allclose(dm.model_input("test"), p1.transform(dm.splits["test"].X.toarray()), rtol=1e-5,
                               atol=1e-5)
    changing_train = adata.copy()           # a control: changing training cells does change the projection
    x = changing_train.X.tolil()
    x[dm.split.train[:100]] = np.random.default_rng(1).gamma(2.0, 3.0, (100, adata.n_vars)).astype(np.float32)
    changing_train.X = x.tocsr()
    assert not np.allclose(_dm(changing_train).preprocessor.projection_.components_, p1.components_, atol=1e-3)


def test_csr_is_never_densified():
    """Densifying 100,000 x 400,000 float32 (160 GB) would fail: fit and transform must stay sparse."""
    rng = np.random.default_rng(3)
    n, g, per_row = 100_000, 400_000, 2
    x = sp.csr_matrix((rng.gamma(2.0, 1.0, n * per_row).astype(np.float32), rng.integers(0, g, n * per_row),
                       np.arange(0, n * per_row + 1, per_row)), shape=(n, g))
    proj = GeneProjection(4, n_iter=2, max_cells=None).fit(x)
    z = proj.transform(x[:1000])
    assert proj.components_.shape == (4, 400_000) and z.shape == (1000, 4) and np.isfinite(z).all()
    # and the projection of a CSR block equals that of the dense block (both branches of transform)
    small = random_csr(50, 30, 0.6, seed=4)      # dense enough for the densified-block branch
    p = GeneProjection(5, max_cells=None).fit(small)
    np.testing.assert_allclose(p.transform(small), p.transform(small.toarray()), rtol=1e-5, atol=1e-5)
    sparse_small = random_csr(50, 300, 0.01, seed=5)
    np.testing.assert_allclose(GeneProjection(3).fit(sparse_small).transform(sparse_small),
                               GeneProjection(3).fit(sparse_small).transform(sparse_small.toarray()), atol=1e-5)


def test_bad_settings_are_clear_errors():
    with pytest.raises(DataError, match="svd_components"):
        CiteDataModule(simulate_cite(n_cells=60, n_genes=40, n_proteins=4), preprocess={"svd_components": 0})
    with pytest.raises(DataError, match="svd_components"):
        CiteDataModule(simulate_cite(n_cells=60, n_genes=40, n_proteins=4), preprocess={"svd_components": "64"})
    with pytest.raises(DataError, match="svd_scale"):
        CiteDataModule(simulate_cite(n_cells=60, n_genes=40, n_proteins=4),
                       preprocess={"svd_components": 4, "svd_scale": "unit"})
    with pytest.raises(DataError, match="expects 30 genes"):
        GeneProjection(3).fit(random_csr(20, 30, 0.3)).transform(np.zeros((2, 31), np.float32))


def test_auto_reads_svd_components_only_above_the_gene_threshold(caplog):
    from crossmodalnet.data.preprocess import SVD_AUTO_COMPONENTS, SVD_AUTO_MIN_GENES, resolve_svd_components

    assert resolve_svd_components("auto", SVD_AUTO_MIN_GENES) is None
    assert resolve_svd_components("auto", SVD_AUTO_MIN_GENES + 1) == SVD_AUTO_COMPONENTS
    assert resolve_svd_components(None, 50_000) is None and resolve_svd_components(16, 10) == 16
    small = CiteDataModule(simulate_cite(n_cells=80, n_genes=60, n_proteins=4), preprocess={"svd_components": "auto"})
    small.setup("fit")
    assert small.preprocessor.projection_ is None and small.n_inputs == 60
    wide = CiteDataModule(random_csr_adata(n_cells=300, n_genes=SVD_AUTO_MIN_GENES + 1),
                          preprocess={"svd_components": "auto"}, seed=0)
    with caplog.at_level("INFO"):
        wide.setup("fit")
    assert wide.preprocessor.projection_ is not None and wide.n_inputs < SVD_AUTO_MIN_GENES
    assert "svd_components=auto" in caplog.text and "svd_components=null" in caplog.text


def random_csr_adata(n_cells: int, n_genes: int) -> ad.AnnData:
    """Wide data quickly: random CSR genes, three days, two proteins."""
    import pandas as pd

    obs = pd.DataFrame({"day": np.arange(n_cells) % 3 + 2}, index=[f"c{i}" for i in range(n_cells)])
    adata = ad.AnnData(X=random_csr(n_cells, n_genes, 0.05, seed=3), obs=obs,
                       var=pd.DataFrame(index=[f"g{i}" for i in range(n_genes)]))
    adata.obsm["protein"] = pd.DataFrame(np.random.default_rng(0).normal(size=(n_cells, 2)),
                                         index=obs.index, columns=["p0", "p1"])
    return adata


def test_saliency_through_the_projection_equals_autograd_on_the_genes():
    x = random_csr(40, 50, 0.3, seed=6)
    proj = GeneProjection(6, max_cells=None).fit(x)
    torch.manual_seed(0)
    model = CrossmodalNet(n_genes=6, n_proteins=5, time_axis={"labels": [2, 3], "values": [2.0, 3.0]},
                          latent_dim=16, dis_hidden=8, time_init_std=0.5).eval()
    model.projection = proj
    for m in model.network.modules():  # BatchNorm running statistics away from the identity
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.normal_(std=0.3)
            m.running_var.uniform_(0.5, 2.0)
    components = torch.from_numpy(proj.components_.astype(np.float64))
    offset = torch.from_numpy(proj.offset_.astype(np.float64))

    class OnGenes(torch.nn.Module):  # written out here: the model fed genes through x @ V^T - offset
        def __init__(self):
            super().__init__()
            self.net = copy.deepcopy(model.network).double()

        def forward(self, genes, tw):
            return self.net(genes @ components.t() - offset, tw)

    xd = x.toarray()
    tw = np.eye(2, dtype=np.float32)[np.arange(40) % 2]
    reference = batch_gradients(OnGenes().eval(), torch.from_numpy(xd.astype(np.float64)),
                                torch.from_numpy(tw.astype(np.float64)), list(range(5)))
    acc = saliency_from_batches(model, [(xd[:25], tw[:25]), (xd[25:], tw[25:])], list(range(5)), 50)
    np.testing.assert_allclose(acc.signed, reference.sum(1).numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(acc.absolute, reference.abs().sum(1).numpy(), rtol=1e-4, atol=1e-5)
    gamma_only = saliency_from_batches(model, [(xd, tw)], list(range(5)), 50, per_cell=False)
    np.testing.assert_allclose(gamma_only.signed, reference.sum(1).numpy(), rtol=1e-4, atol=1e-5)
    # a Captum method goes through the same projection (gradient x input of the genes)
    gxi = saliency_from_batches(model, [(xd, tw)], list(range(5)), 50, method="grad_x_input")
    np.testing.assert_allclose(gxi.signed, (reference * torch.from_numpy(xd)).sum(1).numpy(), rtol=1e-4,
                               atol=1e-5)


@pytest.fixture(scope="module")
def svd_run(tmp_path_factory):
    """A tiny CrossmodalNet trained on 16 SVD components through train(cfg)."""
    from hydra import compose, initialize_config_dir

    from crossmodalnet.training.run import train

    from crossmodalnet.utils.config_dir import CONFIG_DIR

    run_dir = tmp_path_factory.mktemp("svd_run")
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            "experiment=demo_fast", "data.preprocess.svd_components=16", "torch_threads=1", "+plots=false",
            f"paths.output_dir={run_dir}"])
    metrics = train(cfg)
    return run_dir, metrics, Path(metrics["best_checkpoint"])


@pytest.mark.slow
def test_checkpoint_keeps_genes_and_projection_and_predict_applies_it(svd_run):
    from crossmodalnet.inference.predict import load_model, predict

    run_dir, metrics, ckpt = svd_run
    meta = torch.load(ckpt, map_location="cpu", weights_only=False)["crossmodalnet"]
    assert len(meta["gene_names"]) == 200 and meta["projection"]["components"].shape == (16, 200)
    model = load_model(ckpt)
    assert model.network.n_genes == 16 and model.projection.n_genes == 200
    # the run's own test predictions (from the data module's projected inputs) ...
    expected = ad.read_h5ad(run_dir / "predictions.h5ad")
    cells = simulate_cite(n_cells=300, n_genes=200, n_proteins=12, seed=0)[expected.obs_names]
    # ... are what crossmodalnet.inference.predict gives on a file with its genes shuffled and an extra gene
    order = np.random.default_rng(1).permutation(cells.n_vars)
    shuffled = ad.AnnData(X=sp.hstack([cells.X[:, order], sp.csr_matrix(np.ones((cells.n_obs, 1)))]).tocsr(),
                          obs=cells.obs.copy())
    shuffled.var_names = [*cells.var_names[order], "not_a_model_gene"]
    got = predict(model, shuffled, time_key="day")  # CSR blocks projected as they are, genes never densified
    np.testing.assert_allclose(got.X, expected.X, rtol=1e-4, atol=1e-4)
    dense = ad.AnnData(X=shuffled.X.toarray(), obs=shuffled.obs.copy(), var=shuffled.var.copy())
    np.testing.assert_allclose(predict(model, dense, time_key="day").X, got.X, rtol=1e-5, atol=1e-5)
    assert metrics["test/pearson_cell"] == pytest.approx(json.loads((run_dir / "metrics.json").read_text())[
        "test/pearson_cell"])


@pytest.mark.slow
@pytest.mark.parametrize("model_name,extra", [
    ("mlp_mse", ["trainer.max_epochs=1", "model.latent_dim=16"]),
    ("mlp_nlc", ["trainer.max_epochs=1", "model.latent_dim=16"]),
    ("ridge", []),
    ("linear", []),
    ("lightgbm", ["model.n_iter=0", "model.max_rounds=5"]),
])
def test_every_model_trains_on_svd_components(tmp_path, model_name, extra):
    from hydra import compose, initialize_config_dir

    from crossmodalnet.training.run import train

    from crossmodalnet.utils.config_dir import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            "experiment=demo_fast", f"model={model_name}", "data.preprocess.svd_components=8", "torch_threads=1",
            "+plots=false", f"paths.output_dir={tmp_path}", *extra])
    metrics = train(cfg)
    assert np.isfinite(metrics["test/pearson_cell"])


@pytest.mark.slow
def test_time_to_accuracy_benchmark_quick_mode(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "benchmark.py"), "--time-to-accuracy",
                           "--quick", "--authors-python", "none", "--threads", "1", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((tmp_path / "time_to_accuracy.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["ours (default)"]
    assert all(r["wall_s"] > 0 and -1 <= r["test_pearson_cell"] <= 1 for r in rows)
    assert (tmp_path / "time_to_accuracy.csv").exists() and "| quick |" in proc.stdout
    assert (tmp_path / "time_to_accuracy.md").exists()


def test_time_to_accuracy_variants_parse():
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    from benchmark_time_to_accuracy import parse_variants

    assert parse_variants(["svd=data.preprocess.svd_components=64+trainer.max_epochs=5"]) == [
        ("ours (default)", []), ("ours (svd)", ["data.preprocess.svd_components=64", "trainer.max_epochs=5"])]
    with pytest.raises(SystemExit, match="NAME=OVERRIDE"):
        parse_variants(["no_overrides"])


@pytest.mark.slow
def test_a_baseline_saved_with_the_projection_predicts_new_files(tmp_path):
    from hydra import compose, initialize_config_dir

    from crossmodalnet.inference.load import load_trained
    from crossmodalnet.inference.predict import predict
    from crossmodalnet.training.run import train
    from crossmodalnet.utils.config_dir import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            "experiment=demo_fast", "model=ridge", "data.preprocess.svd_components=8", "torch_threads=1",
            "+plots=false", f"paths.output_dir={tmp_path}"])
    metrics = train(cfg)
    expected = ad.read_h5ad(tmp_path / "predictions.h5ad")
    cells = simulate_cite(n_cells=300, n_genes=200, n_proteins=12, seed=0)[expected.obs_names]
    order = np.random.default_rng(0).permutation(cells.n_vars)
    got = predict(load_trained(metrics["model_dir"]), cells[:, order].copy())
    np.testing.assert_allclose(got.X, expected.X, rtol=1e-5, atol=1e-5)


def test_threaded_sparse_products_equal_the_single_threaded_ones():
    """Projection and SVD products run multi-threaded; the result is the one-thread product."""
    from crossmodalnet.data import projection as proj_mod

    x = random_csr(2 * proj_mod.T_CHUNK_ROWS + 7, 60, 0.1, seed=8)
    b = np.random.default_rng(0).normal(size=(60, 5)).astype(np.float32)
    y = np.random.default_rng(1).normal(size=(x.shape[0], 5)).astype(np.float32)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        np.testing.assert_allclose(proj_mod._times(x, b), x @ b, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(proj_mod._t_times(x, y), x.T @ y, rtol=1e-4, atol=1e-4)
        tall = random_csr(3 * proj_mod.T_CHUNK_ROWS, 40, 0.05, seed=9)
        ones = np.ones((tall.shape[0], 3), np.float32)
        two = proj_mod._t_times(tall, ones)
        torch.set_num_threads(1)
        one = proj_mod._t_times(tall, ones)
        np.testing.assert_array_equal(one, two)  # the SVD fit does not depend on the thread count
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("lo_above_zero", [False, True])
def test_sparse_range_check_reports_what_the_dense_one_does(lo_above_zero):
    """Far-out gene values are counted and the worst named alike on CSR blocks and their dense copies."""
    from crossmodalnet.inference.predict import RangeMonitor

    lo, hi = np.zeros(30, np.float32), np.full(30, 3.0, np.float32)
    if lo_above_zero:
        lo[4] = 10.0  # a gene whose training values never came near 0: its zeros are far out
        hi[4] = 12.0
    x = random_csr(50, 30, 0.2, seed=2)
    x.data[[3, 40, 77]] = [50.0, 20.0, -9.0]
    names = [f"cell{i}" for i in range(50)]
    genes = [f"g{i}" for i in range(30)]
    dense, sparse = RangeMonitor(lo, hi, genes), RangeMonitor(lo, hi, genes)
    dense.update(x.toarray(), 100, names * 3)
    decided = sparse.update_sparse(x, 100, names * 3)
    assert decided is (not lo_above_zero)
    if not decided:
        sparse.update(x.toarray(), 100, names * 3)
    assert sparse.n_cells == dense.n_cells > 0
    assert sparse.worst[0] == pytest.approx(dense.worst[0]) and sparse.worst[1:] == dense.worst[1:]


@pytest.mark.parametrize("model,expected", [("crossmodalnet", "auto"), ("ridge", "auto"), ("svd_ridge", None),
                                            ("scipenn", None)])
def test_auto_keeps_the_genes_for_models_that_reduce_them_themselves(model, expected):
    """SVD + ridge (its own SVD) and scIPENN (its own gene model) read genes under svd_components=auto."""
    from hydra import compose, initialize_config_dir

    from crossmodalnet.training.run import _preprocess_settings

    with initialize_config_dir(config_dir=str(REPO_ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"model={model}", "data=anndata"])
    assert _preprocess_settings(cfg)["svd_components"] == expected


def test_pickled_projection_leaves_its_cache_behind():
    import pickle

    proj = GeneProjection(3).fit(random_csr(40, 30, 0.3, seed=4))
    x = random_csr(5, 30, 0.3, seed=5)
    before = proj.transform(x)
    clone = pickle.loads(pickle.dumps(proj))
    assert "_components_t" not in clone.__dict__
    np.testing.assert_array_equal(clone.transform(x), before)


@pytest.mark.slow
def test_prediction_throughput_script_times_predict_on_a_file(svd_run, tmp_path):
    run_dir, _, _ = svd_run
    cells = simulate_cite(n_cells=300, n_genes=200, n_proteins=12, seed=0)
    cells.write_h5ad(tmp_path / "cells.h5ad")
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "benchmark_predict.py"), "--checkpoint",
                           str(run_dir), "--input", str(tmp_path / "cells.h5ad"), "--repeats", "1"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["cells"] == 300 and result["genes"] == 200 and result["cells_per_s"] > 0
    assert 0 < result["nonzero_fraction"] < 1
