"""The time axis: ordering, one-hot for seen times, interpolation for unseen ones, clear errors."""
import numpy as np
import pandas as pd
import pytest

from crossmodalnet.data.timepoints import TimeAxis, TimeError, parse_time_column


def test_numeric_labels_are_ordered_by_value():
    axis = TimeAxis.from_labels(["day 10", "day 2", "day 3"])
    assert axis.labels == ["day 2", "day 3", "day 10"] and axis.values == [2.0, 3.0, 10.0]


def test_seen_time_is_one_hot_and_midpoint_is_half_half():
    axis = TimeAxis.from_labels([2, 4])
    np.testing.assert_array_equal(axis.weights(4), [0.0, 1.0])
    np.testing.assert_allclose(axis.weights(3), [0.5, 0.5])
    np.testing.assert_allclose(axis.weights(3.5), [0.25, 0.75])


def test_outside_range_uses_nearest_with_warning():
    axis = TimeAxis.from_labels([2, 3, 4])
    axis.extrapolation = "nearest"   # what a lookup model with model.time_extrapolation=nearest sets
    with pytest.warns(UserWarning, match="outside the learned range.*nearest learned time 4"):
        w = axis.weights(9)
    np.testing.assert_array_equal(w, [0, 0, 1])


@pytest.mark.parametrize("policy", [None, "extrapolate"])
def test_outside_range_extrapolation_weights_carry_the_time(policy):
    """Without a model's policy (the data module) or with extrapolate: the two end rows, weighted so that the
    weights sum to 1 and weights @ values is the time itself (what a continuous time encoding reads)."""
    axis = TimeAxis.from_labels([2, 3, 4])
    axis.extrapolation = policy
    with pytest.warns(UserWarning, match="outside the learned range \\[2, 4\\]"):
        late, early = axis.weights(9), axis.weights(0.5)
    np.testing.assert_allclose(late, [0, -5, 6])
    np.testing.assert_allclose(early, [2.5, -1.5, 0])
    for t, w in ((9, late), (0.5, early)):
        assert w.sum() == pytest.approx(1.0) and w @ np.array(axis.values) == pytest.approx(t)
    assert axis.weights(3.5) @ np.array(axis.values) == pytest.approx(3.5)   # inside: the interpolation, unchanged


def test_categorical_unseen_time_is_an_error():
    axis = TimeAxis.from_labels(["s1d1", "s1d2"])
    assert axis.values is None
    with pytest.raises(TimeError, match="categorical"):
        axis.weights("s2d1")


def test_weight_matrix_modes_and_index_vector():
    axis = TimeAxis.from_labels([2, 4])
    labels = [2, 3, 4, 3]
    np.testing.assert_allclose(axis.weight_matrix(labels), [[1, 0], [.5, .5], [0, 1], [.5, .5]])
    nearest = axis.weight_matrix(labels, mode="nearest")
    assert nearest.sum(1).tolist() == [1, 1, 1, 1]
    assert not axis.weight_matrix(labels, mode="none").any()
    assert axis.index_vector(labels).tolist() == [0, -1, 1, -1]


def test_round_trip_through_dict():
    axis = TimeAxis.from_labels(np.array([3, 2, 4]))
    again = TimeAxis.from_dict(axis.to_dict())
    assert again.labels == [2, 3, 4] and all(type(x) is int for x in again.labels)
    assert again.extrapolation is None and "extrapolation" not in axis.to_dict()   # older dicts have none
    axis.extrapolation = "extrapolate"
    assert TimeAxis.from_dict(axis.to_dict()).extrapolation == "extrapolate"


def test_time_column_with_mixed_types_or_missing_values_is_rejected():
    with pytest.raises(TimeError, match="mixes types"):
        parse_time_column(pd.Series([1, "two", 3], dtype=object), "day")
    with pytest.raises(TimeError, match="missing"):
        parse_time_column(pd.Series([1.0, np.nan]), "day")
