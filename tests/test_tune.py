"""Ray Tune sweep over Table S1: the search space file, its Ray Tune domains, bad input, and a real sweep on a
real local Ray (interrupted, resumed through scripts/tune.py, best configuration retrained by train.py)."""
from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from crossmodalnet.tune.sweep import (TRIAL_RUN_DIR, Hyperparameter, TuneConfigError, fill_token, check_ray_address,
                                load_search_space, run_sweep, trial_base_config)

from conftest import REPO_ROOT, run_train

CONFIGS = REPO_ROOT / "configs"
TABLE_S1 = OmegaConf.load(CONFIGS / "hparams_search" / "table_s1.yaml")
MODEL_CFG = OmegaConf.load(CONFIGS / "model" / "crossmodalnet.yaml")
# Table S1 as published (paper, appendix B), written out independently of the YAML file under test
PUBLISHED = {
    "model.batch_norm": ("choice", [True, False], True),
    "model.lr": ("qloguniform", (1e-4, 1e-1, 5e-5), 0.001),
    "model.weight_decay": ("pow10", (-7, -3), 5e-6),
    "model.dropout": ("choice", [0, 0.05, 0.15, 0.3], 0.05),
    "model.latent_dim": ("choice", [256, 512], 512),
    "model.dis_hidden": ("choice", [128, 32], 128),
    "model.dis_lambda": ("quniform", (0, 2, 0.1), 0.5),
    "model.dis_gradient_penalty": ("quniform", (0, 2, 0.1), 0.4),
    "model.dis_lr": ("qloguniform", (1e-4, 1e-1, 5e-5), 0.0087),
    "model.dis_weight_decay": ("pow10", (-7, -3), 5e-5),
    "model.learning_step": ("choice", [3, 5, 10], 3),
    "model.gradnorm_lr": ("qloguniform", (1e-4, 1e-1, 5e-5), 0.01475),
    "model.gradnorm_alpha": ("quniform", (0, 3, 0.1), 0.5),
}


def compose_tune(*overrides: str, config_dir: Path = CONFIGS):
    """configs/tune.yaml as scripts/tune.py composes it; returns (cfg without the hydra node, group choices)."""
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        cfg = compose("tune", overrides=list(overrides), return_hydra_config=True)
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, choices


@pytest.fixture(scope="module")
def tune_cfg():
    return compose_tune("experiment=demo_fast")[0]


def published_ok(name: str, value) -> bool:
    """Whether ``value`` lies in Table S1's range and grid for ``name`` (independent of Hyperparameter.contains)."""
    kind, args, _ = PUBLISHED[name]
    if kind == "choice":
        return any(value == v and isinstance(value, bool) == isinstance(v, bool) for v in args)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if kind == "pow10":
        k = math.log10(value)
        return abs(k - round(k)) < 1e-9 and args[0] <= round(k) <= args[1]
    lo, hi, q = args
    return lo - 1e-12 <= value <= hi + 1e-12 and abs(value / q - round(value / q)) < 1e-6


# -- the search space file -----------------------------------------------------------------------------------------
def test_table_s1_rows_are_model_config_keys_with_the_published_defaults(tune_cfg):
    space = load_search_space(TABLE_S1, tune_cfg)
    assert list(space) == list(PUBLISHED)
    for name, hp in space.items():
        assert hp.default == PUBLISHED[name][2], name
        key = name.split(".", 1)[1]
        expected = DEPARTURES_FROM_TABLE_S1.get(key, hp.default)
        assert MODEL_CFG[key] == expected, f"{name}: model config default {MODEL_CFG[key]} != {expected}"


# model defaults that differ from Table S1 on purpose: the best trial of the equal-budget sweep on selection seed
# 100 (docs/equal_budget.md); the keys not listed keep Table S1's default
DEPARTURES_FROM_TABLE_S1 = {"lr": 0.01025, "weight_decay": 1e-6, "dropout": 0.3, "dis_hidden": 32, "dis_lambda": 0.7,
                            "dis_gradient_penalty": 1.8, "dis_lr": 0.00975, "dis_weight_decay": 1e-4,
                            "learning_step": 10, "gradnorm_lr": 0.0053, "gradnorm_alpha": 2.2}


def test_table_s1_domains_sample_the_published_laws(tune_cfg):
    space = load_search_space(TABLE_S1, tune_cfg)
    rng = np.random.default_rng(0)
    for name, hp in space.items():
        draws = [hp.clean(v) for v in hp.domain().sample(size=1000, random_state=rng)]
        bad = [v for v in draws if not published_ok(name, v)]
        assert not bad, f"{name}: drawn values outside Table S1's range/grid: {bad[:5]}"
        assert all(hp.contains(v) for v in draws), name
        kind, args, _ = PUBLISHED[name]
        if kind == "pow10":  # 10^randint(-3,-7): every power from 1e-7 to 1e-3, both ends included
            assert sorted(set(draws)) == [1e-7, 1e-6, 1e-5, 1e-4, 1e-3]
        if kind == "choice":
            assert {(type(v) is bool, v) for v in draws} == {(type(v) is bool, v) for v in args}, name
        if kind == "qloguniform":  # log scale: 2/3 of the mass of [1e-4, 1e-1] lies below 1e-2 (uniform: 9%)
            assert 0.6 < np.mean(np.array(draws) < 1e-2) < 0.73, name
        if kind == "quniform":
            lo, hi, q = args
            assert len(set(draws)) == round((hi - lo) / q) + 1, name  # the whole 0.1 grid, ends included


def test_clean_and_contains():
    lr = Hyperparameter("model.lr", "qloguniform", 1e-4, 1e-1, 5e-5)
    assert lr.clean(0.0006500000000000001) == 0.00065
    assert lr.contains(0.00065) and not lr.contains(0.00066) and not lr.contains(0.2) and not lr.contains(5e-5)
    wd = Hyperparameter("model.weight_decay", "pow10_randint", -7, -3)
    assert wd.powers() == [1e-7, 1e-6, 1e-5, 1e-4, 1e-3]
    assert wd.contains(1e-3) and wd.contains(1e-7) and not wd.contains(5e-6) and not wd.contains(1e-2)
    # a drawn power is exact; the shipped 5e-6 (the "defaults" trial) is kept, not moved to 1e-5
    assert wd.clean(1.0000000000000002e-05) == 1e-05 and wd.clean(5e-6) == 5e-6
    bn = Hyperparameter("model.batch_norm", "choice", values=(True, False))
    assert bn.contains(False) and not bn.contains(0)
    alpha = Hyperparameter("model.gradnorm_alpha", "quniform", 0, 3, 0.1)
    assert alpha.clean(2.8000000000000003) == 2.8 and alpha.contains(3.0) and not alpha.contains(0.15)


@pytest.mark.parametrize("row, message", [
    ({"model": {"learning_rate": {"distribution": "choice", "values": [1]}}},
     "unknown hyperparameter 'model.learning_rate'"),
    ({"modle": {"lr": {"distribution": "choice", "values": [1]}}}, "unknown hyperparameter 'modle.lr'"),
    ({"data": {"source": {"distribution": "choice", "values": [1]}}}, "names a config section"),
    ({"model": {"lr": {"distribution": "lognormal", "lower": 1, "upper": 2}}}, "distribution 'lognormal'"),
    ({"model": {"lr": {"distribution": "qloguniform", "lower": 1e-4, "upper": 1e-1}}}, "missing ['q']"),
    ({"model": {"lr": {"distribution": "uniform", "lower": 1, "upper": 2, "step": 1}}}, "unknown fields ['step']"),
    ({"model": {"lr": {"distribution": "uniform", "lower": 2, "upper": 1}}}, "lower < upper"),
    ({"model": {"lr": {"distribution": "loguniform", "lower": 0, "upper": 1}}}, "lower must be > 0"),
    ({"model": {"lr": 0.1}}, "must be a mapping with a 'distribution'"),
    ({"model": {"dropout": {"distribution": "choice", "values": []}}}, "non-empty list"),
])
def test_bad_search_space_rows_are_named(row, message, tune_cfg):
    with pytest.raises(TuneConfigError) as err:
        load_search_space({"space": row}, tune_cfg, source="hparams_search/bad.yaml")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_no_search_space_is_an_error(tune_cfg):
    with pytest.raises(TuneConfigError, match="hparams_search=table_s1"):
        load_search_space(None, tune_cfg)


def test_trial_config_is_resolved_in_the_driver_with_a_run_dir_slot(tmp_path):
    cfg, _ = compose_tune("experiment=demo_fast", f"paths.output_dir={tmp_path}",
                          "+callbacks.progress_bar._target_=lightning.pytorch.callbacks.RichProgressBar")
    base = trial_base_config(cfg)
    assert not ({"tune", "ray", "hparams_search", "hydra"} & set(base))
    assert base["paths"]["output_dir"] == TRIAL_RUN_DIR
    assert base["callbacks"]["model_checkpoint"]["dirpath"] == f"{TRIAL_RUN_DIR}/checkpoints"
    assert "${" not in json.dumps(base)  # nothing left for a Ray worker to resolve
    assert Path(base["paths"]["root_dir"]).is_absolute()
    assert base["trainer"]["enable_progress_bar"] is False and base["callbacks"]["progress_bar"] is None
    filled = fill_token(base, TRIAL_RUN_DIR, "/x/trial_1/run")
    assert filled["callbacks"]["model_checkpoint"]["dirpath"] == "/x/trial_1/run/checkpoints"
    assert base["paths"]["output_dir"] == TRIAL_RUN_DIR  # _fill copies


# -- Ray address and sweep settings ---------------------------------------------------------------------------------
@contextlib.contextmanager
def _closed_port():
    """A port nothing listens on while the block runs: bound but not listening, so a connection is refused, and no
    other process (Ray starts many servers on free ports) can take it between choosing it and using it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def test_unreachable_ray_address_is_one_clear_line():
    with _closed_port() as port, pytest.raises(TuneConfigError) as err:
        check_ray_address(f"127.0.0.1:{port}", timeout=2)
    msg = str(err.value)
    assert f"cannot reach a Ray cluster at 127.0.0.1:{port}" in msg and "ray start --head" in msg and "\n" not in msg
    with pytest.raises(TuneConfigError, match="not HOST:PORT"):
        check_ray_address("localhost:abc")


@pytest.mark.parametrize("override, message", [
    ("tune.metric=test/pearson_cell", "tune.metric must be a validation metric"),
    ("tune.mode=maximum", "tune.mode must be max or min"),
    ("tune.num_samples=0", "tune.num_samples must be >= 1"),
    ("tune.resume=maybe", "tune.resume must be auto, true or false"),
    ("tune.resources_per_trial.cpu=0", "tune.resources_per_trial needs cpu > 0"),
])
def test_bad_sweep_settings_fail_before_starting(tmp_path, override, message):
    cfg, choices = compose_tune("experiment=demo_fast", f"paths.output_dir={tmp_path}", override)
    with pytest.raises(TuneConfigError, match=message):
        run_sweep(cfg, choices)


def test_asha_is_optional_and_counts_epochs():
    from ray.tune.schedulers import ASHAScheduler

    from crossmodalnet.tune.sweep import _scheduler

    cfg, _ = compose_tune("experiment=demo_fast", "trainer.max_epochs=30")
    assert _scheduler(cfg.tune, cfg) is None  # the paper's plain random search
    cfg, _ = compose_tune("experiment=demo_fast", "trainer.max_epochs=30", "tune.asha=true",
                          "tune.asha_grace_period=5")
    asha = _scheduler(cfg.tune, cfg)
    assert isinstance(asha, ASHAScheduler)
    assert asha._time_attr == "epoch" and asha._max_t == 31  # one past the last epoch: the final report arrives
    assert min(milestone for milestone, _ in asha._brackets[0]._rungs) == 5  # the grace period


def test_resume_true_without_a_sweep_fails_before_starting_ray(tmp_path):
    cfg, choices = compose_tune("experiment=demo_fast", f"paths.output_dir={tmp_path}", "tune.resume=true")
    with pytest.raises(TuneConfigError, match="no sweep to resume"):
        run_sweep(cfg, choices)


def _run_tune_cli(tmp_path: Path, *overrides: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, str(REPO_ROOT / "scripts" / "tune.py"), *overrides,
           f"hydra.run.dir={tmp_path / 'sweep_run'}"]
    return subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_cli_unknown_hyperparameter_in_search_file(tmp_path):
    bad = tmp_path / "configs" / "hparams_search"
    bad.mkdir(parents=True)
    (bad / "typo.yaml").write_text("space:\n  model:\n    learning_rate: {distribution: choice, values: [0.1]}\n")
    proc = _run_tune_cli(tmp_path, "--config-dir", str(tmp_path / "configs"), "experiment=demo_fast",
                         "hparams_search=typo")
    assert proc.returncode == 2, proc.stderr[-3000:]
    err = proc.stderr.strip().splitlines()[-1]
    assert err.startswith("error: unknown hyperparameter 'model.learning_rate'") and "hparams_search/typo.yaml" in err
    assert "Traceback" not in proc.stderr


def test_sweep_with_an_unreachable_ray_address_fails_before_starting(tmp_path):
    with _closed_port() as port:
        cfg, choices = compose_tune("experiment=demo_fast", f"paths.output_dir={tmp_path}",
                                    f"ray.address=127.0.0.1:{port}")
        with pytest.raises(TuneConfigError, match=f"ray.address=127.0.0.1:{port}: cannot reach"):
            run_sweep(cfg, choices)
    assert not (tmp_path / "sweep").exists()  # nothing started


# -- a real sweep ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_ray():
    import ray

    # address="local": always a new Ray of this test, never a cluster some other process started on this machine
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


# one trial at a time, so the interruption finds trial 0 finished, trial 1 mid-way and trial 2 not started
SWEEP = ("experiment=demo_fast", "tune.num_samples=3", "trainer.max_epochs=4", "tune.max_concurrent_trials=1",
         "tune.seed=1")


def _interrupt_when_second_trial_has_a_checkpoint(experiment_dir: Path, timeout: float = 300):
    """Ctrl+C (SIGINT to this process) once Tune has processed trial 1's second epoch (trial 0 has finished by then:
    trials run one at a time), leaving it two epochs short of its end. Not on the first checkpoint directory: it
    appears while Tune copies it, before the driver has registered it with the trial. Returns the watcher and an
    event that disarms it: a SIGINT must never reach a later test once the sweep has returned."""
    done = threading.Event()

    def watch():
        end = time.monotonic() + timeout
        while time.monotonic() < end and not done.is_set():
            progress = list(experiment_dir.glob("trial_*_00001/progress.csv"))  # written by the driver
            if progress and len(progress[0].read_text().splitlines()) >= 3:     # header + epochs 1 and 2
                if not done.is_set():
                    os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread, done


def _held_sweep(release_file: Path) -> tuple[str, ...]:
    """SWEEP, with trial 1 held before its third epoch until ``release_file`` exists (crossmodalnet.training.hooks): the
    interruption then finds it after exactly two epochs however fast an epoch is."""
    return (*SWEEP, "+callbacks.hold._target_=crossmodalnet.training.hooks.HoldAtEpoch", "+callbacks.hold.epoch=2",
            "+callbacks.hold.match=_00001", f"+callbacks.hold.release_file={release_file}")


@pytest.mark.slow
def test_sweep_interrupted_resumed_and_best_config_retrains(tmp_path, local_ray):
    run_dir = tmp_path / "sweep_run"
    sweep = _held_sweep(tmp_path / "release")
    cfg, choices = compose_tune(*sweep, f"paths.output_dir={run_dir}")
    watcher, sweep_returned = _interrupt_when_second_trial_has_a_checkpoint(run_dir / "sweep")
    try:
        first = run_sweep(cfg, choices)  # same process as the local Ray: it reuses it
    finally:
        sweep_returned.set()
    watcher.join(timeout=5)
    (tmp_path / "release").touch()  # the resumed trial 1 goes on past its third epoch
    assert first.interrupted and not first.resumed
    done = first.table[first.table.status == "COMPLETED"]
    assert list(done.trial_index) == [0], first.table[["trial_id", "status", "epochs"]]
    midway = first.table[first.table.trial_index == 1]
    assert len(midway) == 1 and midway.epochs.item() == 2, first.table[["trial_id", "status", "epochs"]]
    stamps = {t: (Path(d) / "metrics.json").stat().st_mtime_ns for t, d in zip(done.trial_id, done.run_dir)}

    # a new sweep in the same place is refused; the same command resumes (here through the CLI, joining this Ray)
    cfg_new, _ = compose_tune(*sweep, f"paths.output_dir={run_dir}", "tune.resume=false")
    with pytest.raises(TuneConfigError, match="already exists"):
        run_sweep(cfg_new, choices)
    address = local_ray.get_runtime_context().gcs_address
    proc = _run_tune_cli(tmp_path, *sweep, f"ray.address={address}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "resuming the sweep" in proc.stdout + proc.stderr

    table = pd.read_csv(run_dir / "tune_results.csv")
    assert len(table) == 3 and set(table.status) == {"COMPLETED"}, table[["trial_id", "status", "error"]]
    for trial_id, stamp in stamps.items():  # the finished trials were kept, not trained again
        run = table.run_dir[table.trial_id == trial_id].item()
        assert (Path(run) / "metrics.json").stat().st_mtime_ns == stamp, trial_id
    metric = "val/pearson_cell_max"
    assert table[metric].is_monotonic_decreasing and table[metric].between(-1, 1).all()
    assert (table.epochs == 4).all() and table["test/pearson_cell"].notna().all()
    # the trial cut off mid-way continued from its Tune checkpoint (train's ckpt_path), not from epoch 0
    resumed = json.loads((Path(table.run_dir[table.trial_index == 1].item()) / "metrics.json").read_text())
    assert 1 <= resumed["train/epochs_before_resume"] < 4 and resumed["epochs"] == 4
    for index in (0, 2):  # the finished trial and the one that had not started ran in one go
        other = json.loads((Path(table.run_dir[table.trial_index == index].item()) / "metrics.json").read_text())
        assert "train/epochs_before_resume" not in other
    for name in PUBLISHED:  # sampled values lie in Table S1's ranges and grids
        values = table[name].tolist()
        assert all(published_ok(name, v) for v in values), f"{name}: {values}"
    for _, row in table.iterrows():  # each trial wrote its run dir inside its trial directory, with its values
        trial_cfg = OmegaConf.load(Path(row.run_dir) / "config.yaml")
        assert Path(row.run_dir).parent.name == f"trial_{row.trial_id}"
        assert Path(row.run_dir).is_relative_to(run_dir / "sweep")
        assert trial_cfg.model.lr == row["model.lr"] and trial_cfg.model.weight_decay == row["model.weight_decay"]
        trial_metrics = json.loads((Path(row.run_dir) / "metrics.json").read_text())
        assert trial_metrics["val/best_pearson_cell"] == pytest.approx(row[metric], abs=1e-6)

    summary = (run_dir / "tune_top10.md").read_text()
    assert f"| 1 | {table.trial_id[0]} |" in summary and "Hyperparameter importance" in summary
    assert (run_dir / "tune_sweep.png").stat().st_size > 10_000
    best_file = run_dir / "configs" / "experiment" / "demo_fast_best.yaml"
    text = best_file.read_text()
    assert text.startswith("# @package _global_") and "experiment=demo_fast_best" in text

    # train.py takes the best configuration and, on the trial's thread count, reproduces the best trial
    # (hydra.searchpath=[file://DIR] is the override form of --config-dir DIR)
    _, metrics = run_train(tmp_path, f"hydra.searchpath=[file://{run_dir / 'configs'}]", "experiment=demo_fast_best",
                           "torch_threads=1", "trainer.accelerator=cpu")
    retrained = OmegaConf.load(tmp_path / "run" / "config.yaml")
    for name in PUBLISHED:
        assert OmegaConf.select(retrained, name) == table[name][0], name
    assert metrics["val/best_pearson_cell"] == pytest.approx(table[metric][0], abs=1e-4)
