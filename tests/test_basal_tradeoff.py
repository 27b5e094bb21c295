"""scripts/basal_tradeoff.py: the grid, the pre-stated choice rule (by hand), and a tiny real sweep (slow)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location("basal_tradeoff", REPO / "scripts" / "basal_tradeoff.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["basal_tradeoff"] = module
    spec.loader.exec_module(module)
    return module


def test_grid_is_every_combination():
    bt = _script()
    grid = bt.parse_grid(["model.dis_lambda=0,0.5", "model.learning_step=2,3,5"])
    assert len(grid) == 6 and {"model.dis_lambda": 0.5, "model.learning_step": 5.0} in grid
    assert bt.setting_name(grid[0]) == "dis_lambda-0__learning_step-2"


def _summary(rows):
    return pd.DataFrame(rows, columns=["setting", "val/best_pearson_cell", "val/excess_time",
                                       "val/time_probe_accuracy"])


def test_rule_takes_less_time_in_z_only_beyond_two_standard_errors():
    bt = _script()
    # n = 400 validation cells: se of p = 0.9 is sqrt(.09/400) = 0.015, of the difference 0.0212, 2 SE = 0.042
    rows = [("best", 0.920, 0.30, 0.9), ("close", 0.917, 0.20, 0.9), ("worse", 0.900, 0.00, 0.9)]
    chosen, reason = bt.choose(_summary(rows), tolerance=0.005, n_val=400)
    assert chosen["setting"] == "close" and "2 SE = 0.042" in reason  # 0.10 lower: beyond noise
    rows[1] = ("close", 0.917, 0.27, 0.9)  # only 0.03 lower: within 2 SE
    chosen, reason = bt.choose(_summary(rows), tolerance=0.005, n_val=400)
    assert chosen["setting"] == "best" and "no setting is shown" in reason
    se = bt.probe_se(_summary(rows), 400)
    np.testing.assert_allclose(se, np.sqrt(0.09 / 400))


@pytest.mark.slow
def test_tiny_sweep_writes_csv_png_and_choice(tmp_path):
    bt = _script()
    out = tmp_path / "sweep"
    bt.main(["--out", str(out), "--seeds", "0", "--report-seeds", "1", "--grid", "model.dis_lambda=0,1",
             "--override", "data.source.n_cells=300", "--override", "data.source.n_genes=100",
             "--override", "data.source.n_proteins=6", "--override", "trainer.max_epochs=2",
             "--override", "model.latent_dim=16", "--override", "model.dis_hidden=8"])
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 2 and runs["val/time_probe_basal_accuracy"].notna().all()
    choice = json.loads((out / "choice.json").read_text())
    assert set(choice["chosen"]) == {"model.dis_lambda"} and "report_mean" in choice
    assert (out / "basal_tradeoff.png").stat().st_size > 10_000
