"""Data-parallel training (2 CPU processes, gloo, started by Lightning from a real `python train.py`) is the
one-process algorithm on the global batch; only rank 0 writes the run dir; set-ups that cannot work are one line.

The one-process reference runs in this test process through the same ``train(cfg)``, with the same global batch,
seed and data order (the order depends on (seed, epoch) only), dropout 0 and global-batch BatchNorm statistics.
"""
from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

from conftest import run_train

# tiny: 2 epochs of global batches of 39 cells (shards of 20 and 19: unequal, so the loss scaling counts)
COMMON = ("experiment=demo_fast", "torch_threads=1", "trainer.accelerator=cpu", "trainer.max_epochs=2",
          "data.source.n_cells=250", "data.source.n_genes=60", "data.batch_size=39", "model.dropout=0",
          "model.latent_dim=16", "uncertainty.enabled=false", "++plots=false")
DDP = ("trainer.devices=2", "trainer.strategy=ddp", "trainer.sync_batchnorm=true",
       "+callbacks.replica_check._target_=crossmodalnet.training.distributed.ReplicaCheck")
# Linear biases right before a BatchNorm (and z's BatchNorm shift, which reaches MLP2 only through Linear -> BN)
# have a zero gradient in exact arithmetic: Adam turns rounding noise there into full steps, so they are skipped
BEFORE_BATCHNORM = {"network.input_layer.bias", "network.encoder_rest.3.bias", "network.decoder.0.bias",
                    "network.encoder_rest.4.bias", "network.discriminator.0.bias",
                    # ... and the running means of the BatchNorms right after those biases, which carry them
                    "network.encoder_rest.0.running_mean", "network.encoder_rest.4.running_mean",
                    "network.decoder.1.running_mean", "network.discriminator.1.running_mean"}


def train_in_process(run_dir: Path, *overrides: str) -> dict:
    from crossmodalnet.training.run import train
    from crossmodalnet.utils.config_dir import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*overrides, "callbacks.progress_bar=null",
                                                      f"paths.output_dir={run_dir}"])
    return train(cfg)


def last_state(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return ckpt["state_dict"]


def assert_same_model(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    compared = 0
    for name, value in a.items():
        if name in BEFORE_BATCHNORM or not value.is_floating_point():
            continue
        torch.testing.assert_close(value, b[name], rtol=1e-4, atol=2e-5, msg=lambda m: f"{name}: {m}")
        compared += 1
    assert compared > 10


@pytest.mark.slow
@pytest.mark.parametrize("model", ["mlp_mse", "mlp_nlc", "crossmodalnet"])
def test_two_processes_train_the_one_process_model(tmp_path, model):
    _, metrics = run_train(tmp_path, *COMMON, f"model={model}", *DDP)
    run = tmp_path / "run"
    replicas = json.loads((run / "replicas.json").read_text())
    assert replicas["world_size"] == 2 and replicas["max_abs_diff"] == 0.0  # one model, not two
    # rank 0 alone wrote the run dir; test and predictions cover the whole test split
    split = pd.read_csv(run / "split.csv")
    pred = ad.read_h5ad(run / "predictions.h5ad")
    assert pred.n_obs == (split.split == "test").sum()
    assert (run / "config.yaml").exists() and not list(run.glob("*.tmp"))

    reference_dir = tmp_path / "one_process"
    reference = train_in_process(reference_dir, *COMMON, f"model={model}")
    ddp_state, ref_state = last_state(run), last_state(reference_dir)
    moved = (ddp_state["network.decoder.3.weight"] - _initial(model)["network.decoder.3.weight"]).abs().max()
    assert moved > 1e-3  # really trained
    assert_same_model(ddp_state, ref_state)
    # (the skipped biases shift eval-mode BatchNorm inputs against lagging running means: ~1e-3 in the metric)
    assert metrics["test/pearson_cell"] == pytest.approx(reference["test/pearson_cell"], abs=1e-2)


def _initial(model: str) -> dict[str, torch.Tensor]:
    """The untrained model of the same config (same seed): to check that training moved the weights."""
    import lightning as L

    from crossmodalnet.training.run import build_datamodule, build_model

    from crossmodalnet.utils.config_dir import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*COMMON, f"model={model}", "paths.output_dir=unused"])
    L.seed_everything(cfg.seed)
    dm = build_datamodule(cfg)
    dm.setup("fit")
    return build_model(cfg, dm).state_dict()
