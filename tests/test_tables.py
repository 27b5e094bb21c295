"""Table scripts (paper Tables 1, 2, S2): summaries, markdown, and the scripts end to end in --quick mode."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crossmodalnet.training.tables import (METHODS, PAPER_TABLE1, PAPER_TABLE_S2, check_methods, markdown_table,
                                          parse_method_overrides, s2_cli, summarise, summarise_s2, table_cli,
                                          with_time_rows)

# The scripts are thin wrappers (scripts/reproduce_table{1,2}.py -> table_cli, scripts/runtime_table_s2.py ->
# s2_cli); the tests call those entry points in-process with the scripts' command-line arguments.


def _table_rows(md: str) -> list[list[str]]:
    rows = [line for line in md.splitlines() if line.startswith("|")]
    widths = {line.count("|") for line in rows}
    assert len(widths) == 1, f"ragged markdown table:\n{md}"
    return [[c.strip() for c in line.strip("|").split("|")] for line in rows[2:]]


def test_summarise_gives_mean_and_sample_sd_and_the_paper_numbers():
    runs = pd.DataFrame([
        {"method": "ridge", "seed": 0, "status": "ok", "note": "", "test/pearson_cell": 0.5, "test/mse": 0.2,
         "test/pearson_protein": 0.4, "train/fit_seconds": 1.0},
        {"method": "ridge", "seed": 1, "status": "ok", "note": "", "test/pearson_cell": 0.7, "test/mse": 0.4,
         "test/pearson_protein": 0.6, "train/fit_seconds": 3.0},
        {"method": "scipenn", "seed": 0, "status": "unavailable", "note": "sciPENN is not installed"},
    ])
    summary = summarise(runs, PAPER_TABLE1).set_index("method")
    assert summary.loc["ridge", "corr_mean"] == pytest.approx(0.6)
    assert summary.loc["ridge", "corr_sd"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert summary.loc["ridge", "mse_mean"] == pytest.approx(0.3) and summary.loc["ridge", "n_seeds"] == 2
    assert summary.loc["ridge", "paper_hspc_corr"] == 0.560 and summary.loc["ridge", "paper_myeloid_mse"] == 0.304
    assert summary.loc["scipenn", "status"] == "unavailable" and np.isnan(summary.loc["scipenn", "corr_mean"])
    md = markdown_table(summary.reset_index(), "T", "ctx")
    rows = {r[0]: r for r in _table_rows(md)}
    assert rows["Ridge reg."][1] == "no" and rows["Ridge reg."][2] == "0.600 ± 0.141"
    assert rows["scIPENN"][2].startswith("unavailable [1]") and "[1] scIPENN: unavailable: sciPENN" in md


def test_one_seed_shows_no_spread():
    """--seeds 0: the table says n=1 instead of a spread of ± 0.000 that was never measured."""
    runs = pd.DataFrame([{"method": "ridge", "seed": 0, "status": "ok", "note": "", "test/pearson_cell": 0.5,
                          "test/mse": 0.2, "test/pearson_protein": 0.4, "train/fit_seconds": 1.0}])
    summary = summarise(runs, PAPER_TABLE1)
    assert np.isnan(summary.loc[0, "corr_sd"])
    row = _table_rows(markdown_table(summary, "T", "ctx"))[0]
    assert row[2] == "0.500 (n=1)" and row[3] == "0.200 (n=1)"
    assert "±" not in "".join(row)


def test_parse_method_overrides_rejects_bad_input():
    assert parse_method_overrides(["lightgbm:model.n_iter=2", "lightgbm:model.cv=2"]) == {
        "lightgbm": ["model.n_iter=2", "model.cv=2"]}
    for bad in ("model.n_iter=2", "nope:model.x=1", "lightgbm:model.n_iter"):
        with pytest.raises(ValueError, match="METHOD:key=value"):
            parse_method_overrides([bad])


def test_s2_summary_keeps_paper_seconds_beside_ours():
    runs = pd.DataFrame([{"method": "ridge", "size": "D1", "status": "ok", "note": "", "train/fit_seconds": 2.5,
                          "test/pearson_cell": 0.8, "epochs": np.nan}])
    row = summarise_s2(runs, ["D1", "D2"]).iloc[0]
    assert row["D1_seconds"] == 2.5 and row["D2_status"] == "not run"
    assert row["paper_D2_seconds"] == PAPER_TABLE_S2["ridge"]["D2"]


@pytest.mark.slow
def test_reproduce_table1_quick_runs_every_method_and_writes_well_formed_tables(tmp_path):
    table_cli("table1", ["--quick", "--seeds", "0", "1", "--time-features", "none", "--out", str(tmp_path)])
    csv = pd.read_csv(tmp_path / "table1.csv")
    assert list(csv["method"]) == list(METHODS)
    ok = csv[csv["status"] == "ok"]
    assert set(METHODS) - {"scipenn"} <= set(ok["method"])  # scIPENN: ok or unavailable, never faked
    assert (ok["n_seeds"] == 2).all() and ok["corr_mean"].between(-1, 1).all() and (ok["mse_mean"] > 0).all()
    assert csv.set_index("method").loc["scipenn", "status"] in ("ok", "unavailable")
    rows = _table_rows((tmp_path / "table1.md").read_text())
    assert [r[0] for r in rows] == list(METHODS.values()) and rows[0][6] == "0.593"  # paper HSPC Corr
    runs = pd.read_csv(tmp_path / "runs.csv")
    splits = {(tmp_path / "runs" / m / "seed0" / "split.csv").read_text() for m in ok["method"]}
    assert len(splits) == 1  # every method saw the same split
    assert (runs[runs["status"] == "ok"]["seed"].value_counts() == len(ok)).all()


@pytest.mark.slow
def test_reproduce_table2_quick_holds_out_the_middle_and_the_last_time_point(tmp_path):
    """Default: day 3 and day 4 (the last) of the control simulator, each with the time-aware (poly) rows beside."""
    table_cli("table2", ["--quick", "--seeds", "0", "--methods", "crossmodalnet", "ridge", "--out", str(tmp_path)])
    md = (tmp_path / "table2.md").read_text()
    for day in (3, 4):
        split = pd.read_csv(tmp_path / f"holdout_{day}" / "runs" / "ridge" / "seed0" / "split.csv")
        assert len(split) == 300 and f"held-out time point {day}" in md
        rows = _table_rows((tmp_path / f"holdout_{day}" / "table2.md").read_text())
        assert [r[0] for r in rows] == ["CrossmodalNet", "Ridge reg.", "Ridge reg. + time (poly)"]
        assert [r[1] for r in rows] == ["yes (time embedding)", "no", "yes (poly)"] and rows[0][6] == "0.564"
        assert all(r[2] != "failed" for r in rows)


def test_time_aware_rows_sit_beside_their_baseline_and_bad_rows_are_refused():
    assert with_time_rows(["crossmodalnet", "ridge", "svd_ridge"], ["onehot", "poly"]) == [
        "crossmodalnet", "ridge", "ridge+onehot", "ridge+poly", "svd_ridge", "svd_ridge+onehot", "svd_ridge+poly"]
    assert check_methods(["lightgbm+spline"]) == ["lightgbm+spline"]
    for bad in (["crossmodalnet+poly"], ["ridge+fourier"]):
        with pytest.raises(ValueError, match="bad time-aware row"):
            check_methods(bad)
    with pytest.raises(ValueError, match="--time-features takes"):
        with_time_rows(["ridge"], ["cubic"])
    assert parse_method_overrides(["svd_ridge+poly:model.alpha=3"]) == {"svd_ridge+poly": ["model.alpha=3"]}


def test_reproduce_table2_refuses_bmmc_with_the_reason(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        table_cli("table2", ["--data", "bmmc", "--out", str(tmp_path)])
    assert exit_info.value.code == 2 and "no time points" in capsys.readouterr().err
    assert not (tmp_path / "runs.csv").exists()


@pytest.mark.slow
def test_runtime_table_s2_quick(tmp_path):
    s2_cli(["--quick", "--methods", "mlp_mse", "ridge", "--out", str(tmp_path)])
    csv = pd.read_csv(tmp_path / "table_s2.csv").set_index("method")
    assert (csv[["Q1_seconds", "Q2_seconds"]] > 0).all().all()
    assert csv.loc["mlp_mse", "Q1_epochs"] >= 1 and csv.loc["ridge", "paper_D1_seconds"] == 11.16
    rows = _table_rows((tmp_path / "table_s2.md").read_text())
    assert [r[0] for r in rows] == ["MLP+MSE", "Ridge reg."]
