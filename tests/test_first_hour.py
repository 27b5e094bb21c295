"""Issue 21: what a user meets in the first hour (range monitor, run-dir lock, atomic writes, quick argument checks,
scores on the training scale)."""
from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest
import scipy.sparse as sp


# -- the training-range monitor ---------------------------------------------------------------------------------
def _monitor_inputs():
    lo = np.zeros(6, np.float32)
    hi = np.array([3, 3, 0, 3, 0, 3], np.float32)  # genes 2 and 4: never expressed in training
    x = np.zeros((5, 6), np.float32)
    x[0, 2] = 1.5   # a training-constant gene expressed here: not extrapolation by itself
    x[1, 4] = 2.0
    x[2, 1] = 2.0   # inside the range
    x[3, 0] = 40.0  # far outside gene 0's range
    return lo, hi, x


@pytest.mark.parametrize("sparse", [False, True])
def test_range_monitor_ignores_genes_without_training_variance(sparse):
    from crossmodalnet.inference.predict import RangeMonitor

    lo, hi, x = _monitor_inputs()
    mon = RangeMonitor(lo, hi, [f"G{i}" for i in range(6)])
    names = [f"c{i}" for i in range(5)]
    if sparse:
        assert mon.update_sparse(sp.csr_matrix(x), 0, names)
    else:
        mon.update(x, 0, names)
    assert mon.n_cells == 1 and mon.worst[1:] == ("c3", 0, 40.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mon.report(5, "new.h5ad")
    assert len(caught) == 1
    line = str(caught[0].message)
    assert "\n" not in line and line.startswith("1 of 5 cells of new.h5ad hold gene values far outside")
    assert "2 genes constant in the training cells (e.g. 'G2', 'G4') take other values here and are not counted" in line


def test_range_monitor_constant_genes_alone_are_one_info_line(caplog):
    from crossmodalnet.inference.predict import RangeMonitor

    lo, hi, x = _monitor_inputs()
    x[3, 0] = 1.0
    mon = RangeMonitor(lo, hi, [f"G{i}" for i in range(6)])
    mon.update(x, 0, None)
    assert mon.n_cells == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning at all
        with caplog.at_level(logging.INFO, logger="crossmodalnet"):
            mon.report(5, "new.h5ad")
    assert [r.getMessage() for r in caplog.records] == [
        "gene values of new.h5ad: 2 genes constant in the training cells (e.g. 'G2', 'G4') take other values here "
        "and are not counted"]
