"""What a run says: metric keys without spaces, one line when it does not beat the train-mean reference, one
line naming wandb's offline run and the `wandb sync` command."""
from __future__ import annotations

import logging

import pytest

from crossmodalnet.training.evaluate import metric_key, reference_warning


def test_time_labels_in_metric_keys_have_no_spaces():
    assert metric_key("day 2") == "day_2"
    assert metric_key(" week  3 ") == "week_3"
    assert metric_key("s1/d1") == "s1_d1"
    assert metric_key(3) == "3"


def test_reference_warning_only_when_the_run_does_not_beat_the_train_mean():
    line = reference_warning({"test/pearson_cell": 0.416, "test/baseline_train_mean/pearson_cell": 0.741})
    assert line.startswith("this run does not beat the train-mean reference: test/pearson_cell 0.416 <= 0.741")
    assert reference_warning({"test/pearson_cell": 0.9, "test/baseline_train_mean/pearson_cell": 0.741}) is None
    assert reference_warning({"test/pearson_cell": 0.9}) is None  # nothing to compare with


@pytest.mark.slow
def test_offline_wandb_run_says_where_it_went(tmp_path, monkeypatch, caplog):
    pytest.importorskip("wandb")
    from crossmodalnet.training.loggers import wandb_logger

    monkeypatch.setenv("WANDB_MODE", "offline")
    logger = wandb_logger(project="crossmodalnet-test", save_dir=str(tmp_path))
    logger.log_metrics({"train/loss": 1.0}, step=0)
    with caplog.at_level(logging.INFO, logger="crossmodalnet"):
        logger.finalize("success")
    lines = [r.getMessage() for r in caplog.records if "wandb" in r.getMessage()]
    assert len(lines) == 1, lines
    run_dir = next((tmp_path / "wandb").glob("offline-run-*"))
    assert lines[0] == f"wandb: offline run saved in {run_dir}; upload it with `wandb sync {run_dir}`"


def test_stage_clock_adds_up_repeated_stages_and_reports_them():
    import time

    from crossmodalnet.training.timing import StageClock

    clock = StageClock()
    for _ in range(2):
        with clock("fit"):
            time.sleep(0.01)
    with clock("write"):
        pass
    metrics = clock.metrics()
    assert set(metrics) == {"time/fit_s", "time/write_s", "time/total_s"}
    assert metrics["time/fit_s"] >= 0.02 and metrics["time/total_s"] >= metrics["time/fit_s"] + metrics["time/write_s"]
    assert clock.summary().startswith("time: fit 0.0 s, write 0.0 s (run total")
