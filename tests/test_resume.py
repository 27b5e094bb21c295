"""Resuming a killed run: `python train.py ... ckpt_path=<run dir>/checkpoints/last.ckpt` after SIGKILL ends with
exactly the parameters, optimiser states, GradNorm state, step counters and early-stopping / best-checkpoint
state of an uninterrupted run; set-ups that cannot work end in one line."""
from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir

from conftest import run_train
from crossmodalnet.data.validate import DataError

COMMON = ("experiment=demo_fast", "torch_threads=1", "trainer.accelerator=cpu", "trainer.max_epochs=4",
          "data.source.n_cells=250", "data.source.n_genes=60", "model.latent_dim=16", "uncertainty.enabled=false", "++plots=false",
          "callbacks.early_stopping.patience=2")


def _compose(run_dir, *overrides: str):
    from crossmodalnet.utils.config_dir import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=[*COMMON, *overrides, "callbacks.progress_bar=null",
                                                       f"paths.output_dir={run_dir}"])


def _ckpt(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)


def _assert_equal_tree(a, b, where: str) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_equal_tree(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_equal_tree(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=lambda m: f"{where}: {m}")
    elif isinstance(a, float) and a != a:
        assert b != b, where
    else:
        assert a == b, where


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    from crossmodalnet.training.run import train

    run = tmp_path / "run"
    proc, _ = run_train(tmp_path, *COMMON, "+callbacks.kill._target_=crossmodalnet.training.hooks.KillAfterEpoch",
                        "+callbacks.kill.epoch=1", expect_ok=False)
    assert proc.returncode == -9, proc.stderr[-3000:]  # SIGKILL after epoch index 1: two epochs done
    assert _ckpt(run)["epoch"] == 1 and not (run / "metrics.json").exists()

    _, metrics = run_train(tmp_path, *COMMON, f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}")
    assert metrics["train/epochs_before_resume"] == 2.0 and metrics["epochs"] == 4.0

    full = tmp_path / "full"
    reference = train(_compose(full))
    resumed, uninterrupted = _ckpt(run), _ckpt(full)
    assert resumed["epoch"] == uninterrupted["epoch"] == 3
    assert resumed["global_step"] == uninterrupted["global_step"]
    _assert_equal_tree(resumed["state_dict"], uninterrupted["state_dict"], "state_dict")  # incl. GradNorm w, L(0)
    _assert_equal_tree(resumed["optimizer_states"], uninterrupted["optimizer_states"], "optimizer_states")
    assert resumed["crossmodalnet_steps"] == uninterrupted["crossmodalnet_steps"]
    assert resumed["crossmodalnet_steps"]["discriminator"] > 0
    for key, state in uninterrupted["callbacks"].items():  # early stopping, best checkpoint
        theirs = resumed["callbacks"][key]
        for field in ("wait_count", "stopped_epoch", "best_score", "best_model_score", "best_model_path"):
            if field in state:
                value, other = state[field], theirs[field]
                if field == "best_model_path":
                    value, other = value.rsplit("/", 1)[-1], other.rsplit("/", 1)[-1]
                _assert_equal_tree(value, other, f"callbacks[{key}].{field}")
    assert metrics["test/pearson_cell"] == pytest.approx(reference["test/pearson_cell"], abs=1e-6)

    # a checkpoint that cannot continue this run: one line, before anything starts
    ckpt = run / "checkpoints" / "last.ckpt"
    for overrides, message in [
        (("model=mlp_mse",), "holds another model than model=MLP"),
        (("data.source.n_genes=70",), "was trained on other genes (60 vs 70 here"),
        (("model.latent_dim=8",), "has shape"),
    ]:
        with pytest.raises(DataError) as err:
            train(_compose(tmp_path / "bad", f"ckpt_path={ckpt}", *overrides))
        assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


@pytest.mark.parametrize("overrides, message", [
    (("trainer.strategy=fsdp",), "trainer.strategy=fsdp is not supported"),
    (("trainer.strategy=deepspeed",), "trainer.strategy=deepspeed is not supported"),
    (("model=ridge", "trainer.strategy=ddp", "trainer.devices=2"), "runs in one process"),
    (("ckpt_path=/nonexistent/last.ckpt",), "no such checkpoint"),
])
def test_set_ups_that_cannot_work_are_one_line(tmp_path, overrides, message):
    from crossmodalnet.training.run import train

    with pytest.raises(DataError) as err:
        train(_compose(tmp_path / "run", "data.source.n_cells=120", *overrides))
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


@pytest.mark.slow
def test_gpu_requested_where_there_is_none_is_one_line(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc, _ = run_train(tmp_path, *COMMON, "trainer.accelerator=gpu", expect_ok=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: trainer: trainer.accelerator=gpu") and "trainer.accelerator=cpu" in last
    assert "Traceback" not in proc.stderr and not (tmp_path / "run" / "split.csv").exists()  # before the data
