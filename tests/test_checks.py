"""Never a silent wrong answer (issue 13): every matrix a step uses is checked, training stops at the first NaN,
finished runs and earlier outputs are never replaced silently. Each class of bad input gets its own one-line
``DataError`` (docs/checks.md lists them)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import anndata as ad
import lightning as L
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from crossmodalnet.data.datamodule import CiteDataModule
from crossmodalnet.data.simulate import simulate_cite
from crossmodalnet.data.validate import DataError, check_matrix
from crossmodalnet.training.guards import NonFiniteError, check_finite, check_gradients, check_metrics, write_metrics
from crossmodalnet.training.rundir import check_output, prepare_run_dir

TINY = dict(n_cells=90, n_genes=30, n_proteins=5)


@pytest.fixture
def small() -> ad.AnnData:
    return simulate_cite(**TINY, seed=0)


def compose_train(run_dir: Path, data_path: Path | None = None, *overrides: str):
    """The config ``python train.py`` would get, on a tiny file or the tiny simulator, 1 epoch, no plots."""
    from hydra import compose, initialize_config_dir

    from crossmodalnet.utils.config_dir import CONFIG_DIR

    kind = "mudata" if data_path is not None and str(data_path).endswith(".h5mu") else "anndata"
    data = ([f"data={kind}", f"data.source.path={data_path}"] if data_path is not None else
            [f"data.source.{k}={v}" for k, v in TINY.items()])
    model = next((o.split("=", 1)[1] for o in overrides if o.startswith("model=")), "crossmodalnet")
    sizes = ["model.latent_dim=8", *(["model.dis_hidden=8"] if model == "crossmodalnet" else [])]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=[
            *data, "data.batch_size=32", *sizes, "trainer.max_epochs=1",
            "+plots=false", "logger=none", "callbacks.progress_bar=null", "torch_threads=1",
            f"paths.output_dir={run_dir}", *overrides])


# -- the matrices each step uses ---------------------------------------------------------------------------------
def _setup(adata: ad.AnnData, **preprocess) -> CiteDataModule:
    dm = CiteDataModule(adata, time_key="day", batch_size=32, preprocess=preprocess, source_name="cite.h5ad")
    dm.setup()
    return dm


@pytest.mark.parametrize("value, problem", [(-1.0, "negative values"), (2.5, "non-integer values"),
                                            (np.nan, "NaN/inf"), (np.inf, "NaN/inf")])
def test_counts_layer_is_checked_before_log_normalisation(small, value, problem):
    counts = small.layers["counts"].toarray().astype(np.float32)
    counts[4, 7] = value
    small.layers["counts"] = sp.csr_matrix(counts)
    with pytest.raises(DataError, match=rf"RNA counts layers\['counts'\] in cite.h5ad .*{problem}.* at cell "
                                        rf"'{small.obs_names[4]}', gene '{small.var_names[7]}'"):
        _setup(small, rna="log_normalize")
    _setup(small, rna="as_is")  # a layer the preprocessing does not read is not held against the data


def test_non_integer_counts_pass_when_declared(small):
    small.layers["counts"] = small.layers["counts"].astype(np.float32) * 1.5
    with pytest.raises(DataError, match="non-integer"):
        _setup(small, rna="log_normalize")
    _setup(small, rna="log_normalize", integer_counts=False)


def test_huge_gene_value_in_x_is_caught(small):
    x = small.X.toarray()
    x[3, 2] = 1e30
    small.X = sp.csr_matrix(x)
    with pytest.raises(DataError, match=r"gene matrix X in cite.h5ad holds values beyond \+-1e\+06.*e.g. 1e\+30 at "
                                        rf"cell '{small.obs_names[3]}', gene '{small.var_names[2]}'"):
        _setup(small)


def test_huge_protein_value_and_negative_adt_counts(small):
    small.obsm["protein"].iloc[5, 1] = -3e7
    with pytest.raises(DataError, match=rf"proteins obsm\['protein'\].*beyond.*cell '{small.obs_names[5]}', "
                                        rf"protein '{small.obsm['protein'].columns[1]}'"):
        _setup(small)
    fresh = simulate_cite(**TINY, seed=0)
    fresh.obsm["protein_counts"] = pd.DataFrame(np.abs(fresh.obsm["protein"].to_numpy()).round() + 1,
                                                index=fresh.obs_names, columns=fresh.obsm["protein"].columns)
    fresh.obsm["protein_counts"].iloc[2, 0] = -4
    with pytest.raises(DataError, match=r"raw ADT counts obsm\['protein_counts'\].*negative.*protein 'P000"):
        _setup(fresh, protein="dsb_no_empty")


def test_matrix_after_normalisation_is_checked(small):
    """A target_sum that overflows float32 makes log-normalised values inf: caught after normalisation."""
    with pytest.raises(DataError, match=r"gene matrix after normalisation \(rna=log_normalize\).*NaN/inf"):
        _setup(small, rna="log_normalize", target_sum=1e39)


def test_check_matrix_messages_name_everything():
    x = np.array([[0, 1], [2, 3.5]], dtype=np.float32)
    for m in (x, sp.csr_matrix(x), sp.csc_matrix(x)):
        with pytest.raises(DataError, match=r"^layers\['counts'\] in f.h5ad must hold raw counts but has "
                                            r"non-integer values: 1 value, e.g. 3.5 at cell 'b', gene 'h'$"):
            check_matrix(m, "layers['counts']", ["a", "b"], ["g", "h"], "f.h5ad", counts=True)
    with pytest.raises(DataError, match="not numeric"):
        check_matrix(x.astype(complex), "X", ["a", "b"], ["g", "h"])
    with pytest.raises(DataError, match="not numeric"):
        check_matrix(x > 1, "X", ["a", "b"], ["g", "h"])
    check_matrix(np.zeros((2, 2), np.int64), "X", ["a", "b"], ["g", "h"], counts=True)


# -- training stops at the first non-finite loss or gradient ------------------------------------------------------
def test_check_finite_names_the_term_epoch_and_step():
    check_finite({"NLC": torch.tensor(0.3), "Fader": torch.tensor(-1.0)}, 0, 1)
    with pytest.raises(NonFiniteError, match=r"^training stopped at epoch 2, step 17: the Fader loss is NaN"):
        check_finite({"NLC": torch.tensor(0.3), "Fader": torch.tensor(float("nan"))}, 2, 17)
    with pytest.raises(NonFiniteError, match="the discriminator loss is \\+inf"):
        check_finite({"discriminator": torch.tensor(float("inf"))}, 0, 3)
    grads = [("a.weight", torch.ones(3)), ("b.bias", torch.tensor([1.0, float("-inf")]))]
    with pytest.raises(NonFiniteError, match=r"the GradNorm gradient is not finite \(parameter b.bias\)"):
        check_gradients(grads, "GradNorm", 1, 5)
    assert isinstance(NonFiniteError("x"), DataError)  # train.py's main turns it into "error: ..." and exit 2


def test_metrics_never_hold_nan(tmp_path):
    with pytest.raises(NonFiniteError, match="test/pearson_cell is NaN/inf"):
        check_metrics({"test/pearson_cell": float("nan"), "test/mse": 1.0})
    with pytest.warns(UserWarning, match=r"auxiliary metrics are undefined.*test/interval/width"):
        kept = check_metrics({"test/mse": 1.0, "test/interval/width": float("nan"), "best_checkpoint": "x"})
    assert kept == {"test/mse": 1.0, "best_checkpoint": "x"}
    with pytest.raises(NonFiniteError):
        write_metrics(tmp_path, {"val/best_pearson_cell": float("inf")})
    assert not (tmp_path / "metrics.json").exists() and "error:" in (tmp_path / "failed.txt").read_text()


class PoisonWeight(L.Callback):
    """A diverged network: a NaN in MLP1's first weight, as a too-large learning rate would leave it."""

    def on_train_start(self, trainer, pl_module):
        with torch.no_grad():
            pl_module.network.input_layer.weight[0, 0] = float("nan")


class PoisonGradient(L.Callback):
    """A finite loss whose gradient is inf (an overflow in backward)."""

    def on_after_backward(self, trainer, pl_module):
        pl_module.network.decoder[-1].bias.grad[0] = float("inf")


@pytest.mark.slow
@pytest.mark.parametrize("model, poison, message", [
    ("mlp_mse", PoisonWeight, r"training stopped at epoch 0, step 1: the MSE loss is NaN"),
    ("mlp_nlc", PoisonGradient, r"training stopped at epoch 0, step 1: the NLC gradient is not finite "
                                r"\(parameter network.decoder.3.bias\)"),
    ("crossmodalnet", PoisonWeight, r"training stopped at epoch 0, step 1: the .* is (NaN|not finite)"),
])
def test_training_stops_at_the_first_non_finite_value(tmp_path, model, poison, message):
    from crossmodalnet.training.run import train

    cfg = compose_train(tmp_path / "run", None, f"model={model}")
    with pytest.raises(NonFiniteError, match=message):
        train(cfg, callbacks=[poison()])
    run = tmp_path / "run"
    assert not (run / "metrics.json").exists()  # nothing claims the run succeeded
    assert not list((run / "checkpoints").glob("*.ckpt")) if (run / "checkpoints").exists() else True
    assert (run / "failed.txt").read_text().startswith("error: training stopped at epoch 0, step 1")


# -- finished runs and earlier outputs are never replaced silently ------------------------------------------------
def test_run_dir_rules(tmp_path):
    run = tmp_path / "run"
    prepare_run_dir(run)  # new
    (run / "failed.txt").write_text("error: x")
    prepare_run_dir(run)  # a failed/killed run may be re-run; its stale marker goes
    assert not (run / "failed.txt").exists()
    (run / "metrics.json").write_text("{}")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "best-epoch=003.ckpt").write_bytes(b"old")
    with pytest.raises(DataError, match=r"already holds a finished run \(metrics.json\).*overwrite=true"):
        prepare_run_dir(run)
    prepare_run_dir(run, resume=True)  # ckpt_path=...: continue in its own dir, nothing deleted
    assert (run / "metrics.json").exists()
    prepare_run_dir(run, overwrite=True)  # replaced: the old run's success marker and checkpoints go first
    assert not (run / "metrics.json").exists() and not list((run / "checkpoints").glob("*.ckpt"))


def test_check_output(tmp_path):
    out = tmp_path / "pred.h5ad"
    assert check_output(out, False) == out
    out.write_bytes(b"x")
    with pytest.raises(DataError, match=r"output file .*pred.h5ad already exists; .* --overwrite"):
        check_output(out, False)
    check_output(out, True)
    (tmp_path / "empty").mkdir()
    check_output(tmp_path / "empty", False)


@pytest.mark.slow
def test_train_refuses_a_finished_run_dir_unless_overwrite(tmp_path, small):
    from crossmodalnet.training.run import train

    path = tmp_path / "cite.h5ad"
    small.write_h5ad(path)
    run = tmp_path / "run"
    first = train(compose_train(run, path))
    stamp = (run / "metrics.json").read_text()
    with pytest.raises(DataError, match="already holds a finished run"):
        train(compose_train(run, path))
    assert (run / "metrics.json").read_text() == stamp  # untouched
    second = train(compose_train(run, path, "overwrite=true", "seed=1"))
    assert json.loads((run / "metrics.json").read_text())["test/mse"] == pytest.approx(second["test/mse"])
    assert math.isfinite(first["test/mse"])


# -- a new file at predict time ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def counts_model(tmp_path_factory):
    """A tiny model trained on log-normalised raw counts (so prediction reads and checks counts)."""
    from crossmodalnet.inference.predict import load_model
    from crossmodalnet.training.run import train

    tmp = tmp_path_factory.mktemp("counts_run")
    data = simulate_cite(**TINY, seed=0)
    data.write_h5ad(tmp / "cite.h5ad")
    metrics = train(compose_train(tmp / "run", tmp / "cite.h5ad", "data.preprocess.rna=log_normalize"))
    return load_model(metrics["best_checkpoint"])


@pytest.mark.slow
def test_predict_checks_the_new_file(counts_model, small):
    from crossmodalnet.inference.predict import predict

    meta = counts_model.preprocessing
    assert len(meta["gene_max"]) == len(counts_model.gene_names) and meta["integer_counts"] is True
    counts = small.layers["counts"].toarray().astype(np.float32)
    bad = counts.copy()
    bad[10, 4] = np.nan
    new = ad.AnnData(X=sp.csr_matrix(bad), obs=small.obs.copy(), var=small.var.copy())
    with pytest.raises(DataError, match=rf"X in new.h5ad contains NaN/inf.*cell '{small.obs_names[10]}', gene "
                                        rf"'{small.var_names[4]}'"):
        predict(counts_model, new, time=2, where="new.h5ad")
    bad = counts.copy()
    bad[11, 5] = -2
    new.layers["counts"] = sp.csr_matrix(bad)
    with pytest.raises(DataError, match=r"layers\['counts'\] in new.h5ad must hold raw counts but has negative"):
        predict(counts_model, new, time=2, where="new.h5ad")


@pytest.mark.slow
def test_predict_reports_cells_far_outside_the_training_range(counts_model, small):
    from crossmodalnet.inference.predict import predict

    counts = small.layers["counts"].toarray().astype(np.float32)
    ok = ad.AnnData(X=sp.csr_matrix(counts), obs=small.obs.copy(), var=small.var.copy())
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the training cells themselves: no report
        assert predict(counts_model, ok, time=2).uns["crossmodalnet"]["n_cells_outside_training_range"] == 0
    gene = int(np.argmin(counts_model.preprocessing["gene_max"]))  # the gene with the narrowest training range
    col = list(small.var_names).index(counts_model.gene_names[gene])
    far = counts.copy()
    far[[3, 8], col] = counts.sum(1)[[3, 8]] * 50  # that gene dominating two cells: log-normalised far beyond
    new = ad.AnnData(X=sp.csr_matrix(far), obs=small.obs.copy(), var=small.var.copy())
    with pytest.warns(UserWarning, match=rf"^2 of 90 cells of input hold gene values far outside the training "
                                         rf"range .*worst: cell '({small.obs_names[3]}|{small.obs_names[8]})', gene "
                                         rf"'{counts_model.gene_names[gene]}' = "):
        pred = predict(counts_model, new, time=2)
    assert pred.uns["crossmodalnet"]["n_cells_outside_training_range"] == 2
    assert np.isfinite(pred.X).all()  # reported, not squashed: the prediction is still made


def test_nameless_gene_is_an_error(small):
    names = list(small.var_names)
    names[3] = ""
    small.var_names = names
    with pytest.raises(DataError, match=r"1 genes have an empty name in cite.h5ad \(e.g. column 3 of X\)"):
        _setup(small)


@pytest.mark.slow
def test_train_py_refuses_a_finished_run_dir_before_hydra_writes_into_it(tmp_path):
    """``python train.py hydra.run.dir=<old run>``: one line, exit 2, the old run's files (.hydra too) untouched."""
    from conftest import run_train

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("old: run\n")
    (run / "metrics.json").write_text('{"test/mse": 0.5}')
    proc, _ = run_train(tmp_path, "trainer.max_epochs=1", expect_ok=False, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "error: run dir" in proc.stderr and "already holds a finished run" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (run / ".hydra" / "config.yaml").read_text() == "old: run\n"
    assert (run / "metrics.json").read_text() == '{"test/mse": 0.5}'
