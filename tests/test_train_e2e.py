"""End-to-end: `python train.py ...` in a fresh process, as a user runs it; every experiment config composes."""
from __future__ import annotations


import anndata as ad
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import REPO_ROOT, run_train

CONFIG_DIR = REPO_ROOT / "configs"
EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_config_composes(experiment):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    OmegaConf.resolve(cfg.data)  # every data interpolation resolves
    assert cfg.model._target_ and cfg.data.source._target_ and cfg.trainer._target_


@pytest.mark.slow
def test_demo_fast_writes_a_complete_run_dir(tmp_path):
    proc, metrics = run_train(tmp_path, "experiment=demo_fast")
    run = tmp_path / "run"
    for key in ("test/pearson_cell", "test/pearson_protein", "test/mse", "test/baseline_train_mean/pearson_cell"):
        assert key in metrics and metrics[key] == metrics[key], key  # present and not NaN
    assert "test metrics" in proc.stdout
    pred = ad.read_h5ad(run / "predictions.h5ad")
    assert pred.n_vars == 12 and pred.layers["measured"].shape == pred.shape and "day" in pred.obs
    assert (run / "config.yaml").exists() and (run / "split.csv").exists()
    assert list((run / "checkpoints").glob("*.ckpt")) and (run / "csv" / "metrics.csv").exists()
    stages = [metrics[f"time/{stage}_s"] for stage in ("data", "fit", "test", "diagnostics", "write")]
    assert all(s >= 0 for s in stages) and sum(stages) <= metrics["time/total_s"]  # where the wall time went
    assert metrics["time/fit_s"] == metrics["train/fit_seconds"] > 0
    assert "time: data" in (run / "train.log").read_text()


@pytest.mark.slow
def test_default_synthetic_beats_the_train_mean(tmp_path):
    _, metrics = run_train(tmp_path, "trainer.max_epochs=8", "data.source.n_cells=1500",
                           "data.source.n_genes=800")
    assert metrics["test/pearson_cell"] > metrics["test/baseline_train_mean/pearson_cell"] + 0.05


@pytest.mark.slow
def test_out_of_distribution_holds_out_the_middle_day(tmp_path):
    _, metrics = run_train(tmp_path, "experiment=synthetic_ood", "data.source.n_cells=400",
                           "data.source.n_genes=150", "data.source.n_proteins=10", "model.latent_dim=32",
                           "trainer.max_epochs=2")
    import pandas as pd
    split = pd.read_csv(tmp_path / "run" / "split.csv")
    pred = ad.read_h5ad(tmp_path / "run" / "predictions.h5ad")
    assert set(pred.obs["day"]) == {3} and (split.split == "test").sum() == pred.n_obs
    assert metrics["test/pearson_cell"] == metrics["test/pearson_cell"]


@pytest.mark.slow
def test_wandb_logger_runs_offline(tmp_path):
    _, metrics = run_train(tmp_path, "experiment=demo_fast", "logger=wandb", "trainer.max_epochs=1")
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))


@pytest.mark.slow
def test_bad_input_file_gives_one_clear_line(tmp_path, tiny_adata):
    data = tiny_adata.copy()
    del data.obs["day"]
    path = tmp_path / "no_time.h5ad"
    data.write_h5ad(path)
    proc, _ = run_train(tmp_path, "data=anndata", f"data.source.path={path}", expect_ok=False)
    assert proc.returncode == 2
    assert "error: time column 'day' not found in obs" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_wandb_is_offline_unless_configured(monkeypatch, tmp_path):
    from crossmodalnet.training.loggers import wandb_configured
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert not wandb_configured()
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_configured()
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert not wandb_configured()
