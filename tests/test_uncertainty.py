"""Split-conformal prediction intervals: the finite-sample quantile, coverage on exchangeable data, the scaled
variant, storage with the model, and a real training run on the simulator (90% intervals cover 87-93%)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from crossmodalnet.data.simulate import simulate_cite
from crossmodalnet.data.validate import DataError
from crossmodalnet.inference.intervals import (ConformalCalibration, calibrate, check_level, coverage_metrics,
                                       find_calibration)


def test_quantile_is_the_corrected_order_statistic():
    scores = np.arange(1, 20, dtype=np.float32)[:, None]  # n = 19 calibration cells, one protein
    cal = ConformalCalibration(["p"], scores)
    assert cal.quantile(0.9)[0] == 18  # ceil(20 * 0.9) = 18th smallest
    assert cal.quantile(0.5)[0] == 10  # ceil(20 * 0.5) = 10th
    assert cal.quantile(0.95)[0] == 19  # ceil(20 * 0.95) = 19 = n: still finite
    with pytest.warns(UserWarning, match="needs at least 19 calibration cells, there are 18"):
        assert math.isinf(ConformalCalibration(["p"], scores[:18]).quantile(0.95)[0])


def test_coverage_on_exchangeable_data_is_nominal():
    n_prot, covered = 5, []
    for seed in range(40):  # average over calibration draws: the guarantee is marginal
        r = np.random.default_rng(seed)
        truth = r.normal(size=(700, n_prot))
        pred = truth + r.standard_t(4, size=(700, n_prot)) * np.arange(1, n_prot + 1)
        cal = calibrate(pred[:200], truth[:200], [f"p{i}" for i in range(n_prot)])
        m = coverage_metrics(cal, pred[200:], truth[200:], 0.9)
        covered.append(m["test/interval/coverage"])
    assert abs(np.mean(covered) - 0.9) < 0.01


def test_scaled_intervals_follow_the_error_scale():
    r = np.random.default_rng(1)
    pred = r.uniform(0, 4, size=(3000, 2))
    truth = pred + r.normal(size=pred.shape) * (0.1 + pred)  # error grows with the prediction
    plain = calibrate(pred[1000:2000], truth[1000:2000], ["a", "b"])
    scaled = calibrate(pred[1000:2000], truth[1000:2000], ["a", "b"], method="scaled",
                       scale_pred=pred[:1000], scale_target=truth[:1000])
    lo_p, hi_p = plain.interval(pred[2000:], 0.9)
    lo_s, hi_s = scaled.interval(pred[2000:], 0.9)
    small = pred[2000:, 0] < 1
    assert (hi_s - lo_s)[small, 0].mean() < 0.6 * (hi_p - lo_p)[small, 0].mean()  # narrower where errors are small
    for lo, hi in ((lo_p, hi_p), (lo_s, hi_s)):
        cov = ((truth[2000:] >= lo) & (truth[2000:] <= hi)).mean()
        assert 0.87 < cov < 0.93


def test_levels_and_empty_calibration_are_refused():
    for bad in (0, 1, 1.5, -0.1, "ninety"):
        with pytest.raises(DataError, match="between 0 and 1"):
            check_level(bad)
    with pytest.raises(DataError, match="validation split is empty"):
        calibrate(np.zeros((0, 2)), np.zeros((0, 2)), ["a", "b"])
    with pytest.raises(DataError, match="uncertainty.method"):
        calibrate(np.zeros((3, 2)), np.zeros((3, 2)), ["a", "b"], method="bootstrap")


def test_round_trip_through_a_file(tmp_path):
    r = np.random.default_rng(2)
    pred, truth = r.normal(size=(50, 3)), r.normal(size=(50, 3))
    cal = calibrate(pred, truth, ["x", "y", "z"], method="scaled", scale_pred=pred, scale_target=truth)
    back = ConformalCalibration.load(cal.save(tmp_path / "calibration.npz"))
    assert back.proteins == ["x", "y", "z"] and back.method == "scaled"
    np.testing.assert_allclose(back.interval(pred, 0.8)[0], cal.interval(pred, 0.8)[0])


def test_training_run_stores_and_predict_applies_intervals(trained_ood_run):
    """The demo run (day 3 held out): metrics.json scores the intervals on the held-out day, the checkpoint
    carries the calibration, and predict(interval=...) writes lower <= prediction <= upper."""
    from crossmodalnet.inference.predict import load_model, predict

    run_dir, metrics, ckpt = trained_ood_run
    for key in ("coverage", "mean_width", "coverage_min_protein", "n_calibration_cells"):
        assert np.isfinite(metrics[f"test/interval/{key}"])
    assert metrics["test/interval/level"] == 0.9
    assert (run_dir / "calibration.npz").is_file()
    model = load_model(ckpt)
    assert isinstance(model.conformal, dict)  # from the checkpoint, not the run dir file
    query = simulate_cite(n_cells=300, n_genes=200, n_proteins=12, seed=0)[:60].copy()  # the demo data
    out = predict(model, query, time=3, interval=0.8)
    assert set(out.layers) >= {"lower", "upper"}
    assert np.all(out.layers["lower"] <= out.X) and np.all(out.X <= out.layers["upper"])
    wide = predict(model, query, time=3, interval=0.9)  # 12 calibration cells: 0.9 is the most they support
    assert np.all(wide.layers["upper"] - wide.layers["lower"] >= out.layers["upper"] - out.layers["lower"] - 1e-6)
    assert out.uns["crossmodalnet"]["interval"]["level"] == 0.8
    model.conformal = None
    model.checkpoint_path = None
    assert find_calibration(model) is None
    with pytest.raises(DataError, match="no conformal calibration"):
        predict(model, query, time=3, interval=0.9)


@pytest.mark.slow
def test_simulator_90_percent_intervals_cover_87_to_93_percent(tmp_path):
    """Default simulator (3,000 cells, 5% = 150 validation cells calibrate): mean per-protein coverage of the
    test cells in [0.87, 0.93]. Validity does not depend on the fit, so a few epochs suffice."""
    from hydra import compose, initialize_config_dir

    from crossmodalnet.training.run import train

    from crossmodalnet.utils.config_dir import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            "experiment=synthetic", "trainer.max_epochs=3", "callbacks.progress_bar=null", "torch_threads=1",
            "+plots=false", "logger=none", f"paths.output_dir={tmp_path}"])
    metrics = train(cfg)
    assert metrics["test/interval/n_calibration_cells"] == 150
    assert 0.87 <= metrics["test/interval/coverage"] <= 0.93, metrics["test/interval/coverage"]


def test_too_few_calibration_cells_are_not_scored_as_infinite(trained_ood_run, caplog):
    """metrics.json holds finite numbers only: a level the validation split cannot support is skipped with a
    warning instead of an infinite width (which would fail the run)."""
    from omegaconf import OmegaConf

    from crossmodalnet.inference.predict import load_model
    from crossmodalnet.training.run import build_datamodule
    from crossmodalnet.inference.intervals import fit_and_score, min_cells

    assert (min_cells(0.9), min_cells(0.95), min_cells(0.5)) == (9, 19, 1)
    run_dir, _, ckpt = trained_ood_run
    dm = build_datamodule(OmegaConf.load(run_dir / "config.yaml"))
    dm.setup("fit")
    model = load_model(ckpt)
    n_val = dm.splits["val"].n_obs
    assert 9 <= n_val < 99
    cal, metrics = fit_and_score(model, dm, {"level": 0.99})
    assert cal.n_cells == n_val and metrics == {}
    assert "needs at least 99" in caplog.text
    cal, metrics = fit_and_score(model, dm, {"level": 0.8, "method": "scaled"})
    assert cal.method == "scaled" and 0 < metrics["test/interval/coverage"] <= 1
