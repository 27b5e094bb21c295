"""The Python API and the one input layer: every input form trains (through fit -> train(cfg)) and predicts,
every saved model loads, predictions keep the query's annotations and are scored against measured proteins,
categorical conditions are never interpolated. Training here uses ridge (fit/predict, no Lightning) except
the slow tests, which train CrossmodalNet and an MLP for one epoch."""
from __future__ import annotations

import json

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest

import crossmodalnet
from crossmodalnet.data.simulate import simulate_cite
from crossmodalnet.data.sources import from_anndata
from crossmodalnet.data.timepoints import TimeAxis, TimeError, time_value
from crossmodalnet.data.validate import DataError

FAST = dict(torch_threads=1, plots=False)


@pytest.fixture(scope="module")
def sim() -> ad.AnnData:
    a = simulate_cite(n_cells=240, n_genes=80, n_proteins=6, times=(2, 3, 4), seed=0)
    a.obsm["X_umap"] = np.random.default_rng(0).normal(size=(a.n_obs, 2)).astype(np.float32)
    return a


def _totalvi_style(sim: ad.AnnData) -> ad.AnnData:
    """Proteins as an ndarray in obsm["protein_expression"], names in uns["protein_names"] (totalVI's layout)."""
    a = sim.copy()
    prot = a.obsm.pop("protein")
    a.obsm.pop("protein_counts", None)
    a.obsm["protein_expression"] = prot.to_numpy()
    a.uns["protein_names"] = np.array(prot.columns)
    return a


def _mudata(sim: ad.AnnData) -> md.MuData:
    rna = ad.AnnData(X=sim.X.copy(), obs=pd.DataFrame(index=sim.obs_names), var=sim.var.copy())
    rna.obsm["X_umap"] = sim.obsm["X_umap"]
    prot = ad.AnnData(X=sim.obsm["protein"].to_numpy(), obs=pd.DataFrame(index=sim.obs_names),
                      var=pd.DataFrame(index=sim.obsm["protein"].columns))
    mdata = md.MuData({"rna": rna, "prot": prot})
    mdata.obs["day"] = sim.obs["day"].to_numpy()  # the time lives in the MuData's own obs only
    return mdata


def test_fit_anndata_with_array_proteins_and_predict_keeps_annotations(sim, tmp_path):
    adata = _totalvi_style(sim)
    run = crossmodalnet.fit(adata, protein_key="protein_expression", time_key="day", model="ridge",
                            output_dir=tmp_path / "run", **FAST)
    assert run.metrics["test/pearson_cell"] > 0.5 and run.run_dir == tmp_path / "run"
    assert run.protein_names == list(sim.obsm["protein"].columns)
    pred = run.predict(adata)
    # the query's obs, obsm (X_umap) and uns kept; proteins in var; training normalisation recorded
    assert list(pred.var_names) == run.protein_names and pred.obs_names.equals(adata.obs_names)
    np.testing.assert_array_equal(pred.obsm["X_umap"], adata.obsm["X_umap"])
    assert "lineage" in pred.obs and pred.uns["crossmodalnet"]["training"]["protein"] == "as_is"
    # the query carries measured proteins: scored per cell, per protein and overall
    scores = pred.uns["crossmodalnet"]["scores"]
    assert scores["n_proteins"] == 6 and scores["n_cells"] == adata.n_obs
    truth = adata.obsm["protein_expression"]
    r0 = np.corrcoef(pred.X[:, 0], truth[:, 0])[0, 1]
    assert pred.var["measured_pearson"].iloc[0] == pytest.approx(r0, abs=1e-5)
    assert scores["mse"] == pytest.approx(float(((pred.X - truth) ** 2).mean()), rel=1e-5)
    # add_to_input: a DataFrame in the user's object
    run.predict(adata, add_to_input=True)
    assert list(adata.obsm["protein_predicted"].columns) == run.protein_names


def test_fit_mudata_and_predict_h5mu_from_the_command_line(sim, tmp_path):
    from crossmodalnet.cli.predict import main

    mdata = _mudata(sim)
    run = crossmodalnet.fit(mdata, time_key="day", model="ridge", output_dir=tmp_path / "run", **FAST)
    assert run.metrics["test/pearson_cell"] > 0.5
    query = _mudata(sim[:50])
    query.write_h5mu(tmp_path / "query.h5mu")
    # a baseline's run dir (model/model.joblib) through crossmodalnet-predict, .h5mu in and out
    assert main(["--checkpoint", str(tmp_path / "run"), "--input", str(tmp_path / "query.h5mu"),
                 "--output", str(tmp_path / "out.h5mu"), "--plots-dir", "none"]) == 0
    out = md.read_h5mu(tmp_path / "out.h5mu")
    assert set(out.mod) == {"rna", "prot", "prot_pred"} and out["prot_pred"].n_vars == 6
    scores = json.loads((tmp_path / "out_scores.json").read_text())
    assert scores["n_cells"] == 50 and set(scores["per_protein"]) == set(run.protein_names)
    # the same to an .h5ad: predictions with the RNA modality's obsm
    assert main(["--checkpoint", str(tmp_path / "run"), "--input", str(tmp_path / "query.h5mu"),
                 "--output", str(tmp_path / "out.h5ad"), "--plots-dir", "none"]) == 0
    pred = ad.read_h5ad(tmp_path / "out.h5ad")
    np.testing.assert_allclose(pred.obsm["X_umap"], sim.obsm["X_umap"][:50])
    np.testing.assert_allclose(pred.X, out["prot_pred"].X)


def test_fit_two_files_and_a_protein_table(sim, tmp_path):
    rna = ad.AnnData(X=sim.X.copy(), obs=sim.obs[["day"]].copy(), var=sim.var.copy())
    prot = ad.AnnData(X=sim.obsm["protein"].to_numpy(), obs=pd.DataFrame(index=sim.obs_names),
                      var=pd.DataFrame(index=sim.obsm["protein"].columns))
    rna.write_h5ad(tmp_path / "rna.h5ad")
    prot.write_h5ad(tmp_path / "adt.h5ad")
    pair = crossmodalnet.fit((tmp_path / "rna.h5ad", tmp_path / "adt.h5ad"), model="ridge",
                             output_dir=tmp_path / "pair", **FAST)
    sim.obsm["protein"].to_csv(tmp_path / "adt.tsv", sep="\t", index_label="barcode")
    table = crossmodalnet.fit(rna, protein_table=tmp_path / "adt.tsv", model="ridge", output_dir=tmp_path / "table",
                              **FAST)
    assert pair.metrics["test/pearson_cell"] == pytest.approx(table.metrics["test/pearson_cell"], abs=1e-6)
    # the protein table also labels a query for scoring
    pred = table.predict(tmp_path / "rna.h5ad", protein_table=tmp_path / "adt.tsv")
    assert pred.uns["crossmodalnet"]["scores"]["n_cells"] == sim.n_obs


def test_missing_proteins_name_the_real_keys(sim, tmp_path):
    a = sim.copy()
    a.obsm["adt"] = a.obsm.pop("protein").to_numpy()
    a.write_h5ad(tmp_path / "x.h5ad")
    with pytest.raises(DataError) as err:
        from_anndata(path=str(tmp_path / "x.h5ad"))
    msg = str(err.value)
    assert "obsm['protein']" in msg and "'adt'" in msg and "data.source.protein_key" in msg
    assert "data.rna_path" not in msg and "data.source.rna_path" in msg
    with pytest.raises(DataError, match="array without protein names.*protein_names_key"):
        from_anndata(path=str(tmp_path / "x.h5ad"), protein_key="adt")
    with pytest.raises(DataError, match="no uns\\['names'\\].*uns keys"):
        from_anndata(path=str(tmp_path / "x.h5ad"), protein_key="adt", protein_names_key="names")


def test_load_a_saved_baseline_predicts_what_training_predicted(sim, tmp_path):
    run = crossmodalnet.fit(sim, model="ridge", output_dir=tmp_path / "run", **FAST)
    loaded = crossmodalnet.load(tmp_path / "run" / "model" / "model.joblib")  # a file of the saved model
    assert loaded.metrics["test/pearson_cell"] == run.metrics["test/pearson_cell"]
    test = ad.read_h5ad(tmp_path / "run" / "predictions.h5ad")
    pred = loaded.predict(sim[test.obs_names].copy(), time=3)  # a time is ignored: ridge has no time input
    np.testing.assert_allclose(pred.X, test.X, rtol=1e-4, atol=1e-5)
    with pytest.raises(DataError, match="baseline without gradients"):
        loaded.saliency(data=sim)


def test_clr_is_muons_per_cell_clr(sim, tmp_path):
    from muon import prot as mprot

    from crossmodalnet.data.preprocess import Preprocessor

    counts = pd.DataFrame(np.random.default_rng(1).poisson(20, size=(30, 5)).astype(float),
                          index=[f"c{i}" for i in range(30)], columns=list("ABCDE"))
    a = ad.AnnData(X=np.ones((30, 3), np.float32), obs=pd.DataFrame(index=counts.index))
    a.obsm["protein"] = counts.copy()
    a.obsm["protein_counts"] = counts
    pre = Preprocessor(protein="clr").fit(a)
    out = pre.transform(a).obsm["protein"]
    ref = ad.AnnData(X=counts.to_numpy().copy())
    mprot.pp.clr(ref, axis=1)
    np.testing.assert_allclose(out.to_numpy(), ref.X, rtol=1e-6)
    # per cell: a cell's value does not depend on the other cells of its split
    np.testing.assert_allclose(pre.transform(a[:3]).obsm["protein"].to_numpy(), out.to_numpy()[:3], rtol=1e-6)
    # training with protein=clr from raw counts in obsm (picked up as protein_counts)
    b = sim.copy()
    b.obsm["protein"] = b.obsm.pop("protein_counts")
    run = crossmodalnet.fit(b, model="ridge", protein="clr", output_dir=tmp_path / "clr", **FAST)
    assert run.model.preprocessing["protein"] == "clr" and np.isfinite(run.metrics["test/mse"])


def test_time_labels_units_order_and_categories():
    assert time_value("pbmc5k") is None and time_value("pbmc10k") is None and time_value("day 3") == 3.0
    axis = TimeAxis.from_labels(["pbmc10k", "pbmc5k"])
    assert axis.categorical and axis.labels == ["pbmc10k", "pbmc5k"]  # not 5 < 10
    ordered = TimeAxis.from_labels(["pbmc10k", "pbmc5k"], order=["pbmc5k", "pbmc10k"])
    assert ordered.labels == ["pbmc5k", "pbmc10k"] and ordered.to_dict()["categorical"] is True
    with pytest.raises(TimeError, match="categorical"):
        ordered.check(7)
    with pytest.raises(TimeError, match="not in data.time_order"):
        TimeAxis.from_labels(["a", "b"], order=["a"])
    numeric = TimeAxis.from_labels([2, 3, 4])
    with pytest.raises(TimeError, match="given in weeks"):
        numeric.check("week 3")
    assert numeric.check(3.5) == 3.5 and numeric.check("3") is None
    declared = TimeAxis.from_labels([2, 4], categorical=True)
    with pytest.raises(TimeError, match="categorical"):
        declared.check(3)
    days = TimeAxis.from_labels(["day 2", "day 4"])
    assert days.check("day 3") == 3.0 and days.check(3) == 3.0
    with pytest.raises(TimeError, match="given in weeks"):
        days.check("week 3")


def test_every_documented_preprocess_key_is_in_every_data_config():
    import dataclasses
    import re
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    from crossmodalnet.data.preprocess import Preprocessor
    from crossmodalnet.utils.config_dir import CONFIG_DIR

    fields = {f.name for f in dataclasses.fields(Preprocessor) if f.init}
    docs = (Path(CONFIG_DIR).parent / "docs" / "data.md").read_text()
    table = docs[docs.index("## Normalisation after the split"):]
    rows = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]
    documented = {key for cell in rows for key in re.findall(r"`([a-z_]+)`", cell)}  # the table's key column
    assert documented and documented <= fields, documented - fields
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        for name in sorted(p.stem for p in (Path(CONFIG_DIR) / "data").glob("*.yaml")):
            cfg = compose(config_name="train", overrides=[f"data={name}", "paths.output_dir=/tmp/unused",
                                                          "data.preprocess.isotype_controls=[A]"])
            assert fields <= set(cfg.data.preprocess), (name, fields - set(cfg.data.preprocess))
            assert "time_order" in cfg.data and "time_categorical" in cfg.data


def test_prepare_hspc_bad_call_exits_2(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("prepare_hspc", Path(__file__).parent.parent / "scripts" /
                                                  "prepare_hspc.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    for argv in (["--data-dir", str(tmp_path), "--out", "metadata.csv"], ["--no-such-flag"]):
        with pytest.raises(SystemExit) as stop:
            script.main(argv)
        assert stop.value.code == 2
    assert capsys.readouterr().err.splitlines()[0].startswith("error:")


@pytest.mark.slow
def test_crossmodalnet_checkpoint_categorical_times_and_mlp(sim, tmp_path):
    tiny = dict(max_epochs=1, latent_dim=16, batch_size=64, callbacks__progress_bar=None, **FAST)
    run = crossmodalnet.fit(sim, time_categorical=True, dis_hidden=8, output_dir=tmp_path / "cmn", **tiny)
    loaded = crossmodalnet.load(tmp_path / "cmn")  # run dir -> best checkpoint
    assert loaded.model.time_axis.categorical and loaded.learned_times == [2, 3, 4]
    with pytest.raises(TimeError, match="categorical"):
        loaded.predict(sim, time=3.5)  # between two conditions: refused, not interpolated
    pred = loaded.predict(sim, time_key="day")
    np.testing.assert_array_equal(pred.obsm["X_umap"], sim.obsm["X_umap"])
    np.testing.assert_allclose(pred.X, run.predict(sim, time_key="day").X, rtol=1e-5, atol=1e-6)
    assert run.saliency(sim.obsm["protein"].columns[0], max_cells=50).n_cells == 50
    # an experiment written for the simulator (demo_fast sets data.source.n_cells, ...) applies to your data too
    mlp = crossmodalnet.fit(sim, model="mlp_mse", experiment="demo_fast", output_dir=tmp_path / "mlp", **tiny)
    assert mlp.config.model.latent_dim == 16 and "n_cells" not in mlp.config.data.source
    ckpt = next((tmp_path / "mlp" / "checkpoints").glob("*.ckpt"))
    again = crossmodalnet.load(ckpt)
    assert type(again.model).__name__ == "MLP" and again.learned_times == []
    np.testing.assert_allclose(again.predict(sim, time=3).X, mlp.predict(sim).X, rtol=1e-5, atol=1e-6)
