"""Property-based fuzzing of the input checks (issue 13): small AnnData/MuData files corrupted in many ways go
through the public entry points (``train(cfg)`` composed by Hydra, ``predict``); every case must end in a clean
``DataError`` (no other exception type) or a finished run / prediction whose numbers are all finite.

Derandomised (the same examples every run) and small: under a minute on an idle core.
"""
from __future__ import annotations

import json
import math
import shutil
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

hypothesis = pytest.importorskip("hypothesis", reason="property-based tests need hypothesis (pip install -e .[dev])")
from hypothesis import HealthCheck, Phase, assume, event, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from crossmodalnet.data.simulate import simulate_cite  # noqa: E402
from crossmodalnet.data.validate import DataError  # noqa: E402

from test_checks import compose_train  # noqa: E402

# no shrinking or explaining: each example may train a model, and the failing case is printed as generated
PHASES = (Phase.explicit, Phase.generate)
BAD_VALUES = [float("nan"), float("inf"), -float("inf"), -1.0, 2.5, 1e30, 1e7, -1e30]
MATRICES = ["X", "counts", "protein", "protein_counts"]

corruption = st.one_of(
    st.tuples(st.just("value"), st.sampled_from(MATRICES), st.sampled_from(BAD_VALUES),
              st.integers(0, 10_000), st.integers(0, 10_000)),
    st.tuples(st.sampled_from(["dup_gene", "dup_cell", "dup_protein", "empty_gene", "empty_protein",
                               "protein_text", "time_missing", "time_mixed", "time_dropped", "one_cell_per_time",
                               "zero_cell", "constant_protein", "constant_gene", "all_one_time", "float_times"]),
              st.integers(0, 10_000)),
    st.tuples(st.just("dtype"), st.sampled_from(["int32", "float16", "float64", "bool", "uint8"])),
    st.tuples(st.just("cells"), st.integers(1, 8)),
)


def _dense(m) -> np.ndarray:
    return m.toarray() if sp.issparse(m) else np.array(m)


def corrupt(data: ad.AnnData, change: tuple) -> ad.AnnData:
    """One corruption of the canonical AnnData (genes in X, raw counts in layers, proteins in obsm)."""
    kind = change[0]
    n, g = data.shape
    if kind == "value":
        _, target, value, i, j = change
        i %= n
        if target in ("X", "counts"):
            m = _dense(data.X if target == "X" else data.layers["counts"]).astype(np.float64)
            m[i, j % g] = value
            if target == "X":
                data.X = sp.csr_matrix(m)
            else:
                data.layers["counts"] = sp.csr_matrix(m)
        else:
            frame = data.obsm[target].astype(np.float64)
            frame.iloc[i, j % frame.shape[1]] = value
            data.obsm[target] = frame
    elif kind == "dtype":
        data.X = _dense(data.X).astype(change[1])  # dense: scipy.sparse has no float16
    elif kind == "cells":
        data = data[: change[1]].copy()
    else:
        k = change[1]
        names = list(data.var_names)
        cells = list(data.obs_names)
        prot = data.obsm["protein"]
        if kind == "dup_gene":
            names[k % g] = names[(k + 1) % g]
            data.var_names = names
        elif kind == "empty_gene":
            names[k % g] = ""
            data.var_names = names
        elif kind == "dup_cell":
            cells[k % n] = cells[(k + 1) % n]
            data.obs_names = cells
        elif kind in ("dup_protein", "empty_protein"):
            cols = list(prot.columns)
            cols[k % len(cols)] = "" if kind == "empty_protein" else cols[(k + 1) % len(cols)]
            for key in ("protein", "protein_counts"):
                data.obsm[key] = data.obsm[key].set_axis(cols, axis=1)
        elif kind == "protein_text":
            data.obsm["protein"] = prot.astype(str)
        elif kind == "time_missing":
            day = data.obs["day"].astype(float)
            day.iloc[k % n] = np.nan
            data.obs["day"] = day
        elif kind == "time_mixed":
            day = data.obs["day"].astype(object)
            day.iloc[k % n] = "late"
            data.obs["day"] = day
        elif kind == "time_dropped":
            del data.obs["day"]
        elif kind == "one_cell_per_time":
            day = data.obs["day"].astype(float)
            day.iloc[:3] = [100.0 + k % 5, 200.0, 300.0]
            data.obs["day"] = day
        elif kind == "all_one_time":
            data.obs["day"] = 2
        elif kind == "float_times":
            data.obs["day"] = data.obs["day"].astype(float) + 0.5
        elif kind == "zero_cell":
            for key in ("X",):
                m = _dense(data.X)
                m[k % n] = 0
                data.X = sp.csr_matrix(m)
            c = data.layers["counts"].toarray()
            c[k % n] = 0
            data.layers["counts"] = sp.csr_matrix(c)
        elif kind == "constant_protein":
            frame = prot.copy()
            frame.iloc[:, k % frame.shape[1]] = 1.0
            data.obsm["protein"] = frame
        elif kind == "constant_gene":
            m = _dense(data.X).astype(np.float64)
            m[:, k % g] = 0.7
            data.X = sp.csr_matrix(m)
    return data


def base_data(seed: int) -> ad.AnnData:
    data = simulate_cite(n_cells=60, n_genes=20, n_proteins=4, seed=seed)
    prot = data.obsm["protein"]
    rng = np.random.default_rng(seed)
    data.obsm["protein_counts"] = pd.DataFrame(rng.poisson(20, prot.shape).astype(np.float32), index=prot.index,
                                               columns=prot.columns)
    data.uns = {}
    return data


def write(data: ad.AnnData, path: Path, fmt: str) -> Path:
    """The corrupted data as the file a user would hand over; an unwritable corruption is no example."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if fmt == "h5ad":
                data.write_h5ad(path.with_suffix(".h5ad"))
                return path.with_suffix(".h5ad")
            import mudata as md

            rna = ad.AnnData(X=data.X, obs=data.obs, var=data.var, layers=dict(data.layers))
            prot = data.obsm["protein"]
            protein = ad.AnnData(X=prot.to_numpy(), obs=pd.DataFrame(index=data.obs_names),
                                 var=pd.DataFrame(index=pd.Index(prot.columns.astype(str))))
            protein.layers["counts"] = data.obsm["protein_counts"].to_numpy()
            md.MuData({"rna": rna, "prot": protein}).write(path.with_suffix(".h5mu"))
            return path.with_suffix(".h5mu")
    except Exception:  # noqa: BLE001 - anndata/h5py/mudata refuse some corruptions themselves
        assume(False)


def assert_finished_and_finite(run: Path) -> None:
    metrics = json.loads((run / "metrics.json").read_text())
    bad = {k: v for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)}
    assert not bad, bad
    pred = ad.read_h5ad(run / "predictions.h5ad")
    assert np.isfinite(pred.X).all()


@pytest.mark.slow
@settings(max_examples=30, deadline=None, derandomize=True, database=None, phases=PHASES,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.filter_too_much])
@given(changes=st.lists(corruption, min_size=0, max_size=2), fmt=st.sampled_from(["h5ad", "h5mu"]),
       rna=st.sampled_from(["as_is", "log_normalize"]), protein=st.sampled_from(["as_is", "dsb_no_empty"]),
       model=st.sampled_from(["crossmodalnet", "crossmodalnet", "mlp_nlc"]), seed=st.integers(0, 3),
       split=st.sampled_from([[], [], [], ["data.split.val=0.0", "data.split.train=0.85"],
                              ["data.split.test=0.0", "data.split.train=0.95"]]))
# the cases of the issue, always run: 1e30 in X, a negative count, one cell, a gene without a name, ...
@example([("value", "X", 1e30, 3, 2)], "h5ad", "as_is", "as_is", "crossmodalnet", 0, [])
@example([("value", "counts", -1.0, 7, 4)], "h5ad", "log_normalize", "as_is", "crossmodalnet", 0, [])
@example([("value", "protein_counts", 2.5, 1, 1)], "h5mu", "as_is", "dsb_no_empty", "crossmodalnet", 0, [])
@example([("cells", 1)], "h5ad", "as_is", "as_is", "crossmodalnet", 0, [])
@example([("empty_gene", 0), ("constant_protein", 1)], "h5ad", "as_is", "as_is", "mlp_nlc", 1, [])
@example([("one_cell_per_time", 0)], "h5ad", "as_is", "as_is", "crossmodalnet", 0, [])
@example([("time_mixed", 3)], "h5mu", "as_is", "as_is", "crossmodalnet", 0, [])
@example([("dtype", "bool")], "h5ad", "as_is", "as_is", "crossmodalnet", 0, [])
@example([], "h5ad", "log_normalize", "dsb_no_empty", "crossmodalnet", 0, ["data.split.val=0.0",
                                                                         "data.split.train=0.85"])
def test_training_on_corrupted_input_is_a_clean_error_or_a_finite_run(tmp_path, changes, fmt, rna, protein,
                                                                       model, seed, split):
    work = tmp_path / f"case{abs(hash((str(changes), fmt, rna, protein, model, seed, str(split)))) % 10**9}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    data = base_data(seed)
    for change in changes:
        data = corrupt(data, change)
    path = write(data, work / "cite", fmt)
    from crossmodalnet.training.run import train

    cfg = compose_train(work / "run", path, f"model={model}", f"data.preprocess.rna={rna}",
                        f"data.preprocess.protein={protein}", *split)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            train(cfg)
    except DataError as err:
        event(f"DataError: {str(err)[:60]}")  # --hypothesis-show-statistics lists what the cases ran into
        assert not (work / "run" / "metrics.json").exists()
        return
    event("finished run")
    assert_finished_and_finite(work / "run")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny model on raw counts (rna=log_normalize) for the prediction fuzz."""
    from crossmodalnet.inference.predict import load_model
    from crossmodalnet.training.run import train

    tmp = tmp_path_factory.mktemp("fuzz_model")
    base_data(0).write_h5ad(tmp / "cite.h5ad")
    metrics = train(compose_train(tmp / "run", tmp / "cite.h5ad", "data.preprocess.rna=log_normalize"))
    return load_model(metrics["best_checkpoint"])


@pytest.mark.slow
@settings(max_examples=60, deadline=None, derandomize=True, database=None, phases=PHASES,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(changes=st.lists(corruption, min_size=1, max_size=2), in_layer=st.booleans(),
       time=st.sampled_from([None, 2, 3, 2.5, 9, "day 4"]))
def test_prediction_on_corrupted_input_is_a_clean_error_or_finite(trained, changes, in_layer, time):
    from crossmodalnet.inference.predict import predict

    data = base_data(1)
    for change in changes:
        data = corrupt(data, change)
    new = ad.AnnData(X=data.layers["counts"] if not in_layer else data.X, obs=data.obs, var=data.var)
    if in_layer:
        new.layers["counts"] = data.layers["counts"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = predict(trained, new, time=time, where="new.h5ad")
    except DataError as err:
        event(f"DataError: {str(err)[:60]}")
        return
    event("finished prediction")
    assert np.isfinite(out.X).all() and out.n_obs == new.n_obs
