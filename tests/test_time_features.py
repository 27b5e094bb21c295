"""Time features for the baselines: hand-computed values, unseen times, errors (crossmodalnet/data/time_features.py)."""
import numpy as np
import pytest

from crossmodalnet.data.time_features import TimeFeatureError, TimeFeatures, natural_spline_basis
from crossmodalnet.data.timepoints import TimeAxis

AXIS = TimeAxis.from_labels([0, 1, 2, 4])          # days 0, 1, 2, 4 seen in training


def weights(days, axis=AXIS):
    return axis.weight_matrix(days)


def test_onehot_columns_are_standardised_indicators():
    days = [0, 0, 1, 2, 4, 4, 4, 4]
    f = TimeFeatures("onehot").fit(weights(days), AXIS)
    out = f.transform(weights([4, 0]))
    # column "day 0": 2 of 8 -> mean 0.25, sd sqrt(0.25 * 0.75): a day-0 cell scores 0.75 / 0.4330 = 1.732,
    # a day-4 cell -0.25 / 0.4330
    sd = np.sqrt(0.25 * 0.75)
    assert out[1, 0] == pytest.approx(0.75 / sd) and out[0, 0] == pytest.approx(-0.25 / sd)
    # the centred indicators sum to zero: the last ("day 4") is the others' combination and is dropped
    assert f.n_features == 3


def test_poly_by_hand():
    days = [0, 1, 2, 4]                                  # mean 1.75, sd sqrt(2.1875)
    f = TimeFeatures("poly", degree=2).fit(weights(days), AXIS)
    u = (np.array(days) - 1.75) / np.sqrt(2.1875)
    raw = np.stack([u, u**2], 1)
    expected = (raw - raw.mean(0)) / raw.std(0)
    np.testing.assert_allclose(f.transform(weights(days)), expected, rtol=1e-5, atol=1e-6)


def test_numeric_encodings_reach_unseen_and_later_times():
    """Day 3 (inside, unseen) interpolates; day 6 (beyond the last) extrapolates: the features use the time itself."""
    axis = TimeAxis.from_labels([0, 1, 2, 4])
    axis.extrapolation = "extrapolate"
    days = [0, 1, 2, 4]
    poly = TimeFeatures("poly", degree=1).fit(weights(days, axis), axis)
    col = poly.transform(weights([0, 3, 6], axis))[:, 0]
    # degree 1: the standardised time itself, so equal time steps give equal feature steps
    assert col[2] - col[1] == pytest.approx(col[1] - col[0])
    spline = TimeFeatures("spline").fit(weights(days, axis), axis)
    assert spline.n_features == 3                          # 4 knots -> x and 2 cubic columns
    beyond = spline.transform(weights([4, 5, 6], axis))
    np.testing.assert_allclose(beyond[2] - beyond[1], beyond[1] - beyond[0], rtol=1e-5, atol=1e-6)  # linear


def test_natural_spline_basis_linear_outside_and_hand_value():
    knots = [0.0, 1.0, 2.0]
    b = natural_spline_basis(np.array([0.5]), knots)
    # d_1(0.5) = 0.5^3 / 2 = 0.0625, d_2(0.5) = 0 -> columns x = 0.5, d_1 - d_2 = 0.0625
    np.testing.assert_allclose(b, [[0.5, 0.0625]])
    out = natural_spline_basis(np.array([3.0, 4.0, 5.0]), knots)
    np.testing.assert_allclose(np.diff(out, 2, axis=0), 0.0, atol=1e-9)


def test_onehot_refuses_an_unseen_time_by_name():
    f = TimeFeatures("onehot").fit(weights([0, 1, 2, 4]), AXIS)
    with pytest.raises(TimeFeatureError, match=r"unseen time\(s\) \[3\].*poly or spline"):
        f.transform(weights([0, 3]))


def test_errors_are_clear():
    with pytest.raises(ValueError, match="time_features must be one of"):
        TimeFeatures("fourier")
    donors = TimeAxis.from_labels(["s1d1", "s1d2"], categorical=True)
    with pytest.raises(TimeFeatureError, match="categorical: use time_features=onehot"):
        TimeFeatures("poly").fit(weights(["s1d1", "s1d2"], donors), donors)
    assert TimeFeatures("onehot").fit(weights(["s1d1", "s1d2"], donors), donors).n_features == 1  # 2 donors: 1 column
    one = TimeAxis.from_labels([3])
    with pytest.raises(TimeFeatureError, match="at least 2 training times"):
        TimeFeatures("poly").fit(weights([3, 3], one), one)
    f = TimeFeatures("poly").fit(weights([0, 1]), AXIS)
    with pytest.raises(TimeFeatureError, match="no time"):
        f.transform(np.zeros((2, 4)))
    with pytest.raises(TimeFeatureError, match=r"must be \(cells x 4"):
        f.transform(np.zeros((2, 3)))


def test_round_trip_through_dict():
    f = TimeFeatures("spline", knots=3).fit(weights([0, 1, 2, 4, 4]), AXIS)
    g = TimeFeatures.from_dict(f.to_dict())
    np.testing.assert_array_equal(f.transform(weights([1, 4])), g.transform(weights([1, 4])))


def test_a_column_dependent_in_training_is_dropped():
    """Two training times: u^2 = a + b u on them, so poly(2) keeps only u (no untrained direction at a new time)."""
    axis = TimeAxis.from_labels([2, 3])
    axis.extrapolation = "extrapolate"
    f = TimeFeatures("poly", degree=2).fit(weights([2, 3, 3], axis), axis)
    assert f.n_features == 1                               # u^2 is a linear function of u on two times
    out = f.transform(weights([2, 3, 4], axis))[:, 0]
    assert out[2] - out[1] == pytest.approx(out[1] - out[0])


def test_none_has_no_columns():
    f = TimeFeatures("none").fit(weights([0, 1]), AXIS)
    assert f.n_features == 0 and f.transform(weights([0, 1])).shape == (2, 0)
