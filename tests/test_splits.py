"""In-distribution (stratified) and out-of-distribution (held-out time) splits."""
import numpy as np
import pandas as pd
import pytest

from crossmodalnet.data.splits import holdout_split, stratified_split
from crossmodalnet.data.validate import DataError


def _times(counts: dict) -> list:
    return [t for t, n in counts.items() for _ in range(n)]


def test_stratified_split_keeps_each_time_points_proportion():
    times = _times({2: 1000, 3: 600, 4: 400})
    split = stratified_split(times, seed=0)
    all_idx = np.concatenate([split.train, split.val, split.test])
    assert sorted(all_idx.tolist()) == list(range(len(times)))          # a partition
    series = pd.Series(times)
    for name, idx, frac in (("train", split.train, 0.8), ("val", split.val, 0.05), ("test", split.test, 0.15)):
        shares = series.iloc[idx].value_counts(normalize=True).sort_index()
        np.testing.assert_allclose(shares.to_numpy(), [0.5, 0.3, 0.2], atol=0.01, err_msg=name)
        assert len(idx) == pytest.approx(frac * len(times), abs=3)


def test_split_is_seeded_and_reproducible():
    times = _times({"a": 50, "b": 50})
    a, b, c = stratified_split(times, seed=1), stratified_split(times, seed=1), stratified_split(times, seed=2)
    assert np.array_equal(a.test, b.test) and not np.array_equal(a.test, c.test)


def test_holdout_time_is_absent_from_train_and_val():
    times = _times({2: 300, 3: 200, 4: 300})
    split = holdout_split(times, 3, seed=0)
    t = np.asarray(times)
    assert set(t[split.test]) == {3} and len(split.test) == 200
    assert 3 not in set(t[split.train]) | set(t[split.val])
    assert set(t[split.train]) == {2, 4} and set(t[split.val]) == {2, 4}
    assert len(split.train) + len(split.val) == 600


def test_holdout_accepts_labels_with_units():
    times = _times({"week 1": 20, "week 2": 20, "week 3": 20})
    split = holdout_split(times, 2, seed=0)
    assert {times[i] for i in split.test} == {"week 2"}


def test_holdout_of_an_absent_time_names_the_present_ones():
    with pytest.raises(DataError, match=r"holdout_time=7 .*\['2', '3'\]"):
        holdout_split(_times({2: 10, 3: 10}), 7)


def test_time_point_with_too_few_cells_is_an_error():
    with pytest.raises(DataError, match="time point '4' has 2 cells"):
        stratified_split(_times({2: 100, 4: 2}))


def test_bad_fractions_are_rejected():
    with pytest.raises(DataError, match="fractions"):
        stratified_split(_times({2: 100}), train=0.9, val=0.2, test=0.1)


def test_split_saves_cell_ids(tmp_path):
    split = stratified_split(_times({1: 40}), seed=0)
    names = [f"c{i}" for i in range(40)]
    split.save(tmp_path / "split.csv", names)
    df = pd.read_csv(tmp_path / "split.csv")
    assert df.shape == (40, 2) and set(df.split) == {"train", "val", "test"}
    assert df.set_index("cell").loc[names[split.test[0]], "split"] == "test"
