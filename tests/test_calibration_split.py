"""A calibration split for the conformal intervals (data.split.calibration): cells that neither train the model nor
choose its checkpoint; counts by hand, the OOD split, where the intervals come from, and a real training run."""
from __future__ import annotations

import json

import numpy as np
import pytest

from crossmodalnet.data.datamodule import CiteDataModule
from crossmodalnet.data.simulate import simulate_cite
from crossmodalnet.data.splits import holdout_split, stratified_split
from crossmodalnet.errors import DataError
from crossmodalnet.inference.intervals import ConformalCalibration, calibration_split, fit_and_score


def test_counts_per_time_point_by_hand():
    times = [2] * 10 + [4] * 10
    s = stratified_split(times, train=0.6, val=0.1, test=0.2, calibration=0.1, seed=3)
    # per time point: val round(1.0) = 1, test 2, calibration 1, train 10 - 4 = 6
    assert (len(s.train), len(s.val), len(s.test), len(s.calibration)) == (12, 2, 4, 2)
    every = np.concatenate([s.train, s.val, s.test, s.calibration])
    assert sorted(every.tolist()) == list(range(20))  # disjoint and complete
    assert sorted(np.asarray(times)[s.calibration].tolist()) == [2, 4]  # one from each time point
    assert [name for name, _ in s.items()] == ["train", "val", "test", "calibration"]


def test_without_calibration_the_split_is_unchanged():
    times = list(np.repeat([1, 2, 3], 40))
    old = stratified_split(times, seed=0)
    new = stratified_split(times, seed=0, calibration=0.0)
    for a, b in zip(old.items(), new.items()):
        np.testing.assert_array_equal(a[1], b[1])
    assert len(new.calibration) == 0 and [n for n, _ in new.items()] == ["train", "val", "test"]


def test_holdout_split_takes_calibration_cells_from_the_learned_times():
    times = [2] * 40 + [3] * 20 + [4] * 40
    s = holdout_split(times, 3, train=0.75, val=0.05, calibration=0.2, seed=0)
    assert set(np.asarray(times)[s.test]) == {3} and len(s.test) == 20
    assert set(np.asarray(times)[s.calibration]) == {2, 4}
    # train : val : calibration = 75 : 5 : 20 of the 40 cells of each learned day -> 30 : 2 : 8
    assert (len(s.train), len(s.val), len(s.calibration)) == (60, 4, 16)


def test_fractions_must_sum_to_one_with_the_calibration_share():
    with pytest.raises(DataError, match="calibration=0.1"):
        stratified_split([1] * 50, train=0.8, val=0.05, test=0.15, calibration=0.1)


def _module(calibration: float) -> CiteDataModule:
    adata = simulate_cite(n_cells=300, n_genes=120, n_proteins=5, seed=2)
    split = {"train": 0.8 - calibration, "val": 0.1, "test": 0.1, "calibration": calibration}
    dm = CiteDataModule(adata, time_key="day", split=split, batch_size=64, seed=0)
    dm.setup()
    return dm


def _model(dm):
    from crossmodalnet.models.crossmodalnet import CrossmodalNet

    model = CrossmodalNet(n_genes=dm.n_inputs, n_proteins=dm.n_proteins, time_axis=dm.time_axis.to_dict(),
                          latent_dim=16, dis_hidden=8)
    return model.eval()


def test_intervals_use_the_calibration_cells_and_report_the_reused_validation_cells():
    dm = _module(0.1)
    assert calibration_split(dm) == "calibration"
    cal, metrics = fit_and_score(_model(dm), dm, {"level": 0.9})
    assert cal.source == "calibration" and cal.n_cells == dm.splits["calibration"].n_obs == 30
    assert metrics["test/interval/separate_calibration"] == 1.0
    assert metrics["test/interval/n_calibration_cells"] == 30
    assert metrics["test/interval/val_calibrated/n_calibration_cells"] == 30  # the 10% validation cells
    assert 0.0 <= metrics["test/interval/val_calibrated/coverage"] <= 1.0


def test_without_a_calibration_split_the_validation_cells_calibrate():
    dm = _module(0.0)
    cal, metrics = fit_and_score(_model(dm), dm, {"level": 0.9})
    assert cal.source == "val" and metrics["test/interval/separate_calibration"] == 0.0
    assert not any(k.startswith("test/interval/val_calibrated/") for k in metrics)


def test_source_survives_storage_and_old_calibrations_read_as_validation(tmp_path):
    cal = ConformalCalibration(["p"], np.ones((3, 1), np.float32), source="calibration")
    assert ConformalCalibration.load(cal.save(tmp_path / "c.npz")).source == "calibration"
    old = cal.to_dict()
    del old["source"]
    assert ConformalCalibration.from_dict(old).source == "val"


@pytest.mark.slow
def test_training_run_with_a_calibration_split(tmp_path):
    from hydra import compose, initialize_config_dir

    from crossmodalnet.training.run import train
    from crossmodalnet.utils.config_dir import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            "experiment=demo_fast", "data.split.train=0.7", "data.split.calibration=0.1", "torch_threads=1",
            "callbacks.progress_bar=null", "+plots=false", f"paths.output_dir={tmp_path}"])
    metrics = train(cfg)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["test/interval/separate_calibration"] == 1.0
    assert "test/interval/val_calibrated/coverage" in saved
    split = (tmp_path / "split.csv").read_text()
    assert split.count(",calibration") == metrics["test/interval/n_calibration_cells"]
    assert ConformalCalibration.load(tmp_path / "calibration.npz").source == "calibration"
