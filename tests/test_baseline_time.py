"""Every fit/predict baseline can take the time as input (issue 18): the time columns, fitted on the training
cells, carry a drift the genes cannot, survive saving, and say clearly when a time cannot be encoded."""
import joblib
import numpy as np
import pytest
import scipy.sparse as sp

from crossmodalnet.baselines import LinearBaseline, RidgeBaseline, SVDRidgeBaseline
from crossmodalnet.data.time_features import TimeFeatureError
from crossmodalnet.data.timepoints import TimeAxis
from crossmodalnet.reporting.metrics import pearson_per_cell

DAYS = [0, 1, 2, 3, 4]


def drift_data(seed=0, n=600, genes=40, proteins=8, days=DAYS):
    """Proteins = genes @ B + an offset per protein that changes with the day (not readable from the genes)."""
    rng = np.random.default_rng(seed)
    day = rng.choice(days, n)
    x = rng.normal(size=(n, genes))
    b = rng.normal(size=(genes, proteins)) * (rng.random((genes, proteins)) < 0.2)
    slope = rng.normal(0, 1.5, proteins)
    y = x @ b + np.outer(day - 2.0, slope) + 0.1 * rng.normal(size=(n, proteins))
    return x, y, np.asarray(day), slope


def axis_weights(train_days, days, extrapolate=False):
    axis = TimeAxis.from_labels(list(train_days))
    if extrapolate:
        axis.extrapolation = "extrapolate"
    return axis, axis.weight_matrix(list(days))


def test_ridge_with_onehot_day_recovers_the_drift():
    x, y, day, _ = drift_data()
    tr, te = slice(0, 450), slice(450, None)
    axis, w = axis_weights(DAYS, day)
    blind = RidgeBaseline(time_axis=axis.to_dict()).fit(x[tr], y[tr])
    aware = RidgeBaseline(time_axis=axis.to_dict(), time_features="onehot").fit(x[tr], y[tr], time_weights=w[tr])
    r_blind = pearson_per_cell(blind.predict(x[te]), y[te]).mean()
    r_aware = pearson_per_cell(aware.predict(x[te], w[te]), y[te]).mean()
    assert aware.uses_time and not blind.uses_time
    assert r_aware > r_blind + 0.05 and r_aware > 0.95, (r_blind, r_aware)


@pytest.mark.parametrize("kind", ["poly", "spline"])
def test_numeric_time_reaches_the_unseen_last_day(kind):
    """Train on days 0-3, predict day 4: a linear drift continued by poly/spline features beats no time."""
    x, y, day, _ = drift_data(seed=1)
    train = day < 4
    axis, w = axis_weights([0, 1, 2, 3], day, extrapolate=True)
    blind = SVDRidgeBaseline(n_components=20, time_axis=axis.to_dict()).fit(x[train], y[train])
    aware = SVDRidgeBaseline(n_components=20, time_axis=axis.to_dict(), time_features=kind, time_degree=1
                             ).fit(x[train], y[train], time_weights=w[train])
    err_blind = np.mean((blind.predict(x[~train]) - y[~train]) ** 2)
    err_aware = np.mean((aware.predict(x[~train], w[~train]) - y[~train]) ** 2)
    assert err_aware < 0.5 * err_blind, (err_blind, err_aware)
    assert aware.time_axis.extrapolation == "extrapolate"


def test_onehot_at_an_unseen_day_is_an_error():
    x, y, day, _ = drift_data(seed=2)
    axis, w = axis_weights([0, 1, 3, 4], day)          # day 2 not among the training times
    seen = day != 2
    model = LinearBaseline(time_axis=axis.to_dict(), time_features="onehot").fit(x[seen], y[seen],
                                                                                  time_weights=w[seen])
    with pytest.raises(TimeFeatureError, match=r"unseen time\(s\) \[2\]"):
        model.predict(x[~seen], w[~seen])


def test_time_model_needs_times_and_keeps_its_features_when_saved(tmp_path):
    x, y, day, _ = drift_data(seed=3, n=200)
    axis, w = axis_weights(DAYS, day)
    model = SVDRidgeBaseline(n_components=10, time_axis=axis.to_dict(), time_features="spline")
    with pytest.raises(ValueError, match=r"takes the time as input \(time_features=spline\).*training cells"):
        model.fit(x, y)
    model.fit(sp.csr_matrix(x), y, time_weights=w)
    with pytest.raises(ValueError, match="pass the predicted cells. time weights"):
        model.predict(x)
    back = joblib.load(model.save(tmp_path / "m.joblib"))
    np.testing.assert_array_equal(back.predict(sp.csr_matrix(x), w), model.predict(sp.csr_matrix(x), w))
    assert back.uses_time and back.time_encoder.n_features == len(DAYS) - 1


def test_no_time_features_ignore_time_weights():
    """time_features=none is the paper's baseline: passing time weights changes nothing."""
    x, y, day, _ = drift_data(seed=4, n=200)
    axis, w = axis_weights(DAYS, day)
    a = RidgeBaseline(time_axis=axis.to_dict()).fit(x, y, time_weights=w)
    np.testing.assert_array_equal(a.predict(x, w), a.predict(x))


@pytest.mark.slow
@pytest.mark.parametrize("model", ["svd_ridge", "mlp_nlc"])
def test_trained_time_model_predicts_the_last_day_through_load(tmp_path, model):
    """train.py with model.time_features=poly on the drift simulator (last day held out), then load the run and
    predict day 6: the time reaches the model through the same time weights, extrapolated past day 5."""
    import warnings

    import crossmodalnet
    from conftest import run_train
    from crossmodalnet.data.simulate import simulate_cite

    _, metrics = run_train(tmp_path, "experiment=synthetic_drift_last", f"model={model}", "model.time_features=poly",
                           "data.source.n_cells=400", "data.source.n_genes=150", "data.source.n_proteins=10",
                           "trainer.max_epochs=2", "torch_threads=1", "logger=none", "++plots=false")
    assert np.isfinite(metrics["test/pearson_cell"])
    run = crossmodalnet.load(tmp_path / "run")
    assert run.model.uses_time and run.model.time_axis.extrapolation == "extrapolate"
    query = simulate_cite(n_cells=400, n_genes=150, n_proteins=10, times=range(7), time_effect="drift",
                          batch_effect_strength=0.3, seed=0)
    query = query[query.obs["day"] == 6].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # day 6 lies beyond the learned days: warned, and extrapolated
        at6, at5 = run.predict(query, time=6).X, run.predict(query, time=5).X
    assert np.abs(at6 - at5).mean() > 1e-3   # the time is an input: another day, another prediction
