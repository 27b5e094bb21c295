"""Equal tuning budget (issue 18 items 5-6): every method's search space, the sweep's "shipped configuration" trial,
and a real end-to-end run of scripts/equal_budget.py (real Hydra, real Ray, real train(cfg))."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from crossmodalnet.tune.equal_budget import (SPACES, Budget, EqualBudgetSpec, override_value, row_name,
                                             run_equal_budget, settings_of)
from crossmodalnet.tune.space import Hyperparameter, current_values, load_search_space
from crossmodalnet.utils.config_dir import CONFIG_DIR

from conftest import REPO_ROOT


OFF_GRID_DEFAULTS = {"model.weight_decay", "model.dis_weight_decay"}


def compose_tune(*overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("tune", overrides=list(overrides))


@pytest.mark.parametrize("method,space", sorted(SPACES.items()))
def test_every_space_names_keys_of_its_model_and_starts_at_the_shipped_values(method, space):
    cfg = compose_tune(f"model={method}", f"hparams_search={space}", "data=synthetic_drift")
    rows = load_search_space(cfg.hparams_search, cfg, f"hparams_search/{space}.yaml")
    assert rows, space
    shipped = current_values(cfg, rows)
    if space == "crossmodalnet":  # its rows document Table S1's defaults; the shipped values are the sweep's choice
        assert all(hp.contains(shipped[name]) for name, hp in rows.items()), shipped
        return
    for name, hp in rows.items():
        # the row's documented default is the model config's own value, and a value the space can draw, except
        # Table S1's own weight decays (5e-6, 5e-5: not powers of ten, yet the paper's defaults)
        assert hp.contains(hp.default) or name in OFF_GRID_DEFAULTS, (name, hp.default)
        assert shipped[name] == hp.default, (name, shipped[name], hp.default)


def test_networks_search_the_same_patience():
    patience = {}
    for method in ("crossmodalnet", "mlp_mse"):
        cfg = compose_tune(f"model={method}", f"hparams_search={SPACES[method]}")
        rows = load_search_space(cfg.hparams_search, cfg)
        patience[method] = rows["callbacks.early_stopping.patience"].values
    scipenn = compose_tune("model=scipenn", "hparams_search=scipenn")
    es_max = load_search_space(scipenn.hparams_search, scipenn)["model.es_max"].values
    assert patience["crossmodalnet"] == patience["mlp_mse"] == (10, 20)
    assert tuple(v - 1 for v in es_max) == (10, 20)  # scIPENN stops after es_max - 1 epochs without improvement


def test_crossmodalnet_space_is_table_s1_plus_patience():
    cfg = compose_tune("hparams_search=crossmodalnet")
    table_s1 = OmegaConf.load(REPO_ROOT / "configs" / "hparams_search" / "table_s1.yaml")
    rows = load_search_space(cfg.hparams_search, cfg)
    assert set(rows) == {f"model.{k}" for k in table_s1.space.model} | {"callbacks.early_stopping.patience"}


def test_shipped_trial_falls_back_to_the_row_default_outside_the_space(caplog):
    cfg = OmegaConf.create({"model": {"alpha": 1000.0, "n": 7}})
    space = {"model.alpha": Hyperparameter("model.alpha", "loguniform", lower=0.01, upper=1e5, default=1000.0),
             "model.n": Hyperparameter("model.n", "choice", values=(16, 32), default=32)}
    with caplog.at_level("WARNING"):
        values = current_values(cfg, space)
    assert values == {"model.alpha": 1000.0, "model.n": 32}
    assert "model.n=7 lies outside its search space" in caplog.text


def test_override_values_are_hydra_literals():
    assert override_value(True) == "true" and override_value(False) == "false"
    assert override_value(np.float64(0.1)) == "0.1" and override_value(np.int64(20)) == "20"
    assert override_value(1e-05) == "1e-05"
    assert row_name("crossmodalnet", "poly") == "crossmodalnet" and row_name("ridge", "onehot") == "ridge+onehot"


@pytest.mark.parametrize("spec,message", [
    (EqualBudgetSpec(data="synthetic_drift", methods=["linear"]), "no search space for \\['linear'\\]"),
    (EqualBudgetSpec(data="hspc", methods=["ridge"]), "not 'hspc'"),
    (EqualBudgetSpec(data="bmmc", methods=["ridge"], budget=Budget(selection_seed=1, report_seeds=(0, 1))),
     "selection seed 1 is also a report seed"),
    (EqualBudgetSpec(data="bmmc", methods=["ridge"], budget=Budget(trials=0)), "at least one trial"),
])
def test_bad_requests_fail_before_anything_runs(tmp_path, spec, message):
    with pytest.raises(ValueError, match=message):
        run_equal_budget(spec, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_settings_of_the_drift_simulator_hold_out_a_middle_and_the_last_day():
    spec = EqualBudgetSpec(data="synthetic_drift", methods=["ridge"])
    assert [s.overrides for s in settings_of(spec)] == [(), ("data.holdout_time=3",), ("data.holdout_time=6",)]
    with pytest.raises(ValueError, match="unknown setting"):
        settings_of(EqualBudgetSpec(data="bmmc", methods=["ridge"], settings=["holdout_3"]))


@pytest.mark.slow
def test_equal_budget_script_sweeps_then_reports_the_choice_on_other_seeds(tmp_path):
    out = tmp_path / "eb"
    cmd = [sys.executable, str(REPO_ROOT / "scripts" / "equal_budget.py"), "--data", "synthetic", "--methods",
           "ridge", "--trials", "3", "--quick", "--seeds", "0", "--settings", "in_distribution", "holdout_3",
           "--out", str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = pd.read_csv(out / "sweeps" / "ridge" / "tune_results.csv")
    assert len(trials) == 3 and set(trials["status"]) == {"COMPLETED"}
    assert trials["val/pearson_cell_max"].notna().all()  # a baseline's one report at the end ranks it
    shipped = trials[trials["trial_index"] == 0].iloc[0]
    assert shipped["model.alpha"] == 1000.0              # the first trial is the shipped configuration
    choice = json.loads((out / "sweeps" / "ridge" / "choice.json").read_text())
    assert choice["trials"] == 3 and choice["best_val"] == pytest.approx(trials["val/pearson_cell_max"].max())
    # the report runs train the chosen alpha, with the time as input, on seed 0 and the simulated data set 0
    runs = pd.read_csv(out / "runs.csv")
    assert list(runs["setting"]) == ["in_distribution", "holdout_3"] and set(runs["status"]) == {"ok"}
    for run_dir in runs["run_dir"]:
        cfg = OmegaConf.load(f"{run_dir}/config.yaml")
        assert cfg.model.alpha == pytest.approx(choice["params"]["model.alpha"])
        assert cfg.model.time_features == "poly" and cfg.seed == 0 and cfg.data.source.seed == 0
    table = (out / "equal_budget.md").read_text()
    assert "Budget: 3 trials per method" in table and "Ridge reg. + time | tuned" in table
    # a second call reads the finished sweep and runs instead of repeating them
    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "using the sweep already in" in again.stderr
