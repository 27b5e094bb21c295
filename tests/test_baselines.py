"""Baselines: the common fit/predict interface, the MLP LightningModules, and `python train.py model=<name>`."""
from __future__ import annotations


import anndata as ad
import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch

from crossmodalnet.baselines import (Baseline, BaselineUnavailable, LightGBMBaseline, LinearBaseline,
                                     RidgeBaseline, ScipennBaseline, SVDRidgeBaseline, scipenn_available)
from crossmodalnet.baselines.lightgbm import _distribution
from crossmodalnet.data.datamodule import CiteDataModule
from crossmodalnet.models.losses import nlc_loss
from crossmodalnet.reporting.metrics import regression_metrics
from crossmodalnet.models.mlp import MLP
from conftest import run_train

SCIPENN_OK, SCIPENN_WHY = scipenn_available()
TINY_LGB = dict(n_iter=2, cv=2, search_proteins=2, base_params={"n_estimators": 20},
                search_space={"n_estimators": [10, 20], "num_leaves": [4, 7]})


def _split(adata: ad.AnnData, n_train: int = 240):
    x = adata.X.tocsr()
    y = adata.obsm["protein"].to_numpy(dtype=np.float64)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


BASELINES = {
    "linear": lambda: LinearBaseline(),
    "ridge": lambda: RidgeBaseline(),
    "svd_ridge": lambda: SVDRidgeBaseline(n_components=16),
    "lightgbm": lambda: LightGBMBaseline(**TINY_LGB),
}


@pytest.mark.parametrize("name", [*BASELINES, "scipenn"])
def test_every_baseline_fits_and_predicts_through_the_common_interface(name, tiny_adata):
    if name == "scipenn":
        if not SCIPENN_OK:
            pytest.skip(f"sciPENN not installed here: {SCIPENN_WHY}")
        model = ScipennBaseline(n_epochs=15, seed=0)
    else:
        model = BASELINES[name]()
    assert isinstance(model, Baseline)
    x, y, x_test, y_test = _split(tiny_adata)
    assert model.fit(x, y, x_test[:10], y_test[:10]) is model
    pred = model.predict(x_test)
    assert pred.shape == y_test.shape and pred.dtype == np.float32 and np.isfinite(pred).all()
    m = regression_metrics(pred, y_test)
    # a real fit tracks the proteins across held-out cells (a constant or shuffled prediction gives ~0)
    assert m["pearson_protein"] > 0.2, (name, m)
    assert isinstance(model.params(), dict)


def test_baseline_interface_rejects_misuse(tiny_adata):
    x, y, x_test, _ = _split(tiny_adata)
    model = RidgeBaseline()
    with pytest.raises(RuntimeError, match="before predict"):
        model.predict(x_test)
    with pytest.raises(ValueError, match="cells"):
        model.fit(x, y[:-1])
    model.fit(x, y)
    with pytest.raises(ValueError, match="genes"):
        model.predict(x_test[:, :-1])
    with pytest.raises(ValueError, match="n_components"):
        SVDRidgeBaseline(n_components=0)


def test_svd_ridge_caps_components_on_tiny_data(tiny_adata):
    x, y, x_test, _ = _split(tiny_adata, n_train=30)
    model = SVDRidgeBaseline(n_components=500).fit(x, y)
    assert model.svd.n_components == 29 and model.predict(x_test).shape[0] == x_test.shape[0]


def test_lightgbm_search_picks_values_from_the_configured_space(tiny_adata):
    x, y, _, _ = _split(tiny_adata)
    model = LightGBMBaseline(**TINY_LGB).fit(x, y)
    assert model.best_params_["n_estimators"] in (10, 20) and model.best_params_["num_leaves"] in (4, 7)
    assert model.search_score_ is not None and len(model.boosters_) == y.shape[1]
    assert max(model.rounds_) <= model.best_params_["n_estimators"]  # the search's early-stopped rounds, capped
    no_search = LightGBMBaseline(n_iter=0, base_params={"n_estimators": 5}).fit(x, y)
    assert no_search.best_params_ == {} and no_search.rounds_ == [5] * y.shape[1]
    with pytest.raises(ValueError, match="unknown dist"):
        _distribution({"dist": "gamma", "low": 1, "high": 2})


@pytest.mark.skipif(SCIPENN_OK, reason="sciPENN is installed here")
def test_scipenn_unavailable_says_exactly_why():
    with pytest.raises(BaselineUnavailable, match=r"numba<=0\.50\.0.*--no-deps sciPENN"):
        ScipennBaseline()


# -- MLP baselines ---------------------------------------------------------------------------------------------
def _datamodule(adata) -> CiteDataModule:
    dm = CiteDataModule(adata, time_key="day", batch_size=64, seed=0)
    dm.setup("fit")
    return dm


def _train_nlc(model, dm) -> float:
    ds = dm.datasets["train"]
    batch = ds[np.arange(len(ds))]
    model.eval()
    with torch.no_grad():
        return float(nlc_loss(model(batch["x"]), batch["y"]))


def test_mlp_is_crossmodalnet_body_without_time_embedding_or_adversary(tiny_adata):
    model = MLP(n_genes=120, n_proteins=10, latent_dim=16, time_axis={"labels": [2, 3], "values": [2.0, 3.0]},
                dis_lambda=0.5)  # a CrossmodalNet-only setting from a shared experiment is accepted, unused
    names = [n for n, _ in model.named_parameters()]
    assert not any("time_embedding" in n or "discriminator" in n for n in names)
    assert any(n.startswith("network.input_layer") for n in names)
    x = torch.randn(5, 120)
    model.eval()
    assert torch.equal(model(x), model(x, torch.ones(5, 3)))  # time weights are ignored
    with pytest.raises(ValueError, match="loss"):
        MLP(n_genes=4, n_proteins=2, loss="mae")


def test_mlp_nlc_really_optimises_nlc(tiny_adata):
    dm = _datamodule(tiny_adata)
    L.seed_everything(0)
    model = MLP(dm.n_genes, dm.n_proteins, loss="nlc", latent_dim=32, lr=3e-3)
    before = _train_nlc(model, dm)
    model.train()
    trainer = L.Trainer(max_epochs=5, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=dm)
    after = _train_nlc(model, dm)
    assert "train/nlc" in trainer.callback_metrics and "train/mse" not in trainer.callback_metrics
    assert after < 0.8 * before, (before, after)
    assert float(trainer.callback_metrics["train/nlc"]) < before


def test_mlp_mse_optimises_mse(tiny_adata):
    dm = _datamodule(tiny_adata)
    L.seed_everything(0)
    model = MLP(dm.n_genes, dm.n_proteins, loss="mse", latent_dim=32, lr=3e-3)
    ds = dm.datasets["train"]
    batch = ds[np.arange(len(ds))]

    def mse() -> float:
        model.eval()
        with torch.no_grad():
            return float(((model(batch["x"]) - batch["y"]) ** 2).mean())

    before = mse()
    model.train()
    L.Trainer(max_epochs=8, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, num_sanity_val_steps=0).fit(model, datamodule=dm)
    assert mse() < 0.5 * before


# -- through the user entry point -------------------------------------------------------------------------------
def test_train_py_runs_a_baseline_and_writes_the_run_dir(tmp_path):
    proc, metrics = run_train(tmp_path, "experiment=demo_fast", "model=ridge")
    run = tmp_path / "run"
    for name in ("config.yaml", "metrics.json", "predictions.h5ad", "split.csv", "model/model.joblib", "model/manifest.json"):
        assert (run / name).exists(), name
    for key in ("test/pearson_cell", "test/pearson_protein", "test/mse", "train/fit_seconds"):
        assert np.isfinite(metrics[key]), key
    pred = ad.read_h5ad(run / "predictions.h5ad")
    split = pd.read_csv(run / "split.csv")
    assert pred.n_obs == int((split.iloc[:, -1] == "test").sum()) and "measured" in pred.layers
    again = regression_metrics(pred.X, pred.layers["measured"])
    assert again["pearson_cell"] == pytest.approx(metrics["test/pearson_cell"], abs=1e-5)
    assert "ignores hyperparameters it does not have: dis_hidden, latent_dim" in proc.stdout + proc.stderr


@pytest.mark.skipif(SCIPENN_OK, reason="sciPENN is installed here")
def test_train_scipenn_unavailable_raises_the_reason_not_hydras_wrapper(tmp_path):
    from crossmodalnet.training.tables import compose_config
    from crossmodalnet.training.run import train

    cfg = compose_config(["experiment=demo_fast", "model=scipenn", "logger=none", "callbacks.progress_bar=null"],
                         tmp_path / "run")
    with pytest.raises(BaselineUnavailable, match="sciPENN is not installed"):
        train(cfg)
