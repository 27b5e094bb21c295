"""Shared fixtures: tiny simulated data, the shared real-data folder, and a runner for `python train.py`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from crossmodalnet.data.simulate import simulate_cite

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


def shared_data(*parts: str) -> Path:
    """Path under ../shared/data, skipping the test (with the reason) where it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} (only in the project's shared folder)")
    return path


@pytest.fixture
def tiny_adata():
    """300 cells x 120 genes x 10 proteins over days 2, 3, 4."""
    return simulate_cite(n_cells=300, n_genes=120, n_proteins=10, seed=1)


def run_train(tmp_path: Path, *overrides: str, expect_ok: bool = True, timeout: int = 600):
    """Run ``python train.py`` as a user would, in a fresh process; returns (completed process, metrics)."""
    run_dir = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, str(REPO_ROOT / "train.py"), f"hydra.run.dir={run_dir}",
           "callbacks.progress_bar=null", *overrides]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if expect_ok:
        assert proc.returncode == 0, f"train.py failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        metrics = json.loads((run_dir / "metrics.json").read_text())
        return proc, metrics
    return proc, None


def train_config(run_dir: Path, *overrides: str):
    """The composed Hydra config of ``python train.py <overrides>`` with its run dir at ``run_dir`` (quiet, one
    thread), for tests that call ``train(cfg)`` in-process."""
    from hydra import compose, initialize_config_dir

    from crossmodalnet.utils.config_dir import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=[
            "callbacks.progress_bar=null", "torch_threads=1", "logger=none", f"paths.output_dir={run_dir}",
            *overrides])


@pytest.fixture(scope="session")
def trained_ood_run(tmp_path_factory):
    """A real, tiny training run through ``train(cfg)`` (composed Hydra config ``experiment=demo_fast``) with
    day 3 held out, so the model has learned days 2 and 4. Returns (run_dir, metrics, checkpoint path)."""
    from hydra import compose, initialize_config_dir

    from crossmodalnet.training.run import train

    from crossmodalnet.utils.config_dir import CONFIG_DIR

    run_dir = tmp_path_factory.mktemp("ood_run")
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            "experiment=demo_fast", "data.holdout_time=3", "callbacks.progress_bar=null", "torch_threads=1",
            f"paths.output_dir={run_dir}"])
    metrics = train(cfg)
    return run_dir, metrics, Path(metrics["best_checkpoint"])


@pytest.fixture(scope="module")
def model(trained_ood_run):
    """The saved model of :func:`trained_ood_run` (learned days 2 and 4), loaded once per test module."""
    from crossmodalnet.inference.load import load_model

    return load_model(trained_ood_run[0])


@pytest.fixture(scope="module")
def new_cells():
    """Cells of the simulation the model was trained on (demo_fast sizes and seed)."""
    return simulate_cite(n_cells=300, n_genes=200, n_proteins=12, seed=0)


@pytest.fixture(scope="module")
def cells(new_cells):
    return new_cells
