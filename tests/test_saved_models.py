"""Every model the package trains is saved once, with a manifest, and loads and predicts through
``crossmodalnet.load`` and ``crossmodalnet-predict`` (issue 19): fit, load from the run dir, predict a new file."""
from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pytest
import torch

import crossmodalnet
from crossmodalnet.cli.predict import main as predict_main
from crossmodalnet.data.simulate import simulate_cite
from crossmodalnet.errors import DataError
from crossmodalnet.inference.load import load_trained, resolve_model_path
from crossmodalnet.inference.manifest import ARRAYS_FILE, MANIFEST_FILE, Manifest
from crossmodalnet.training.run import train

from conftest import train_config

MODELS = ["crossmodalnet", "mlp_mse", "mlp_nlc", "linear", "ridge", "svd_ridge", "lightgbm", "scipenn"]
SMALL = {"lightgbm": ["model.n_iter=0", "model.max_rounds=20"],
         "scipenn": ["model.n_epochs=3"]}


def _fit(tmp_path, name: str):
    from crossmodalnet.baselines.scipenn import scipenn_available

    if name == "scipenn" and not scipenn_available()[0]:
        pytest.skip(scipenn_available()[1])
    run_dir = tmp_path / name
    return run_dir, train(train_config(run_dir, "experiment=demo_fast", f"model={name}", *SMALL.get(name, [])))


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_fit_load_and_predict_a_new_file(tmp_path, name):
    run_dir, metrics = _fit(tmp_path, name)
    model_dir = run_dir / "model"
    manifest = json.loads((model_dir / MANIFEST_FILE).read_text())
    assert manifest["model_class"].startswith("crossmodalnet.") and manifest["package_version"] == crossmodalnet.__version__
    assert (model_dir / manifest["weights"]).is_file() and (model_dir / ARRAYS_FILE).is_file()

    # loading from the run dir gives back the run's test predictions
    run = crossmodalnet.load(run_dir)
    saved = ad.read_h5ad(run_dir / "predictions.h5ad")
    assert run.metrics["test/pearson_cell"] == pytest.approx(metrics["test/pearson_cell"])

    # a new file through the console script: genes in another order, one of them missing
    new = simulate_cite(n_cells=40, n_genes=200, n_proteins=12, seed=7)
    new = new[:, list(reversed(new.var_names[1:]))].copy()
    query = tmp_path / "new.h5ad"
    new.write_h5ad(query)
    out = tmp_path / "pred.h5ad"
    # crossmodalnet-predict's entry point in this process (tests/test_install.py runs the installed script)
    assert predict_main(["--checkpoint", str(run_dir), "--input", str(query), "--output", str(out), "--time", "3",
                         "--plots-dir", "none"]) == 0
    pred = ad.read_h5ad(out)
    assert pred.shape == (40, len(manifest["protein_names"])) and np.isfinite(pred.X).all()
    assert list(pred.var_names) == manifest["protein_names"]

    # the same cells through the Python API give the same numbers
    again = run.predict(new, time=3)
    np.testing.assert_allclose(again.X, pred.X, rtol=1e-5, atol=1e-5)
    assert saved.n_obs > 0


@pytest.mark.slow
def test_saved_model_equals_the_best_checkpoint(tmp_path):
    """The saved weights are the tested (best) checkpoint's; a training checkpoint of the run resolves to the saved
    model, another epoch's checkpoint is refused in one line."""
    run_dir, metrics = _fit(tmp_path, "crossmodalnet")
    model = load_trained(run_dir)
    best = torch.load(metrics["best_checkpoint"], map_location="cpu", weights_only=False)["state_dict"]
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, best[key])
    assert resolve_model_path(metrics["best_checkpoint"]) == run_dir / "model"
    other = run_dir / "checkpoints" / "last.ckpt"
    if other.is_file() and other.name != run_dir.joinpath(metrics["best_checkpoint"]).name:
        with pytest.raises(DataError, match="not the run's saved model"):
            resolve_model_path(other)


def test_manifest_round_trip_keeps_arrays_out_of_the_json(tmp_path):
    manifest = Manifest(model_class="crossmodalnet.models.mlp.MLP", weights="weights.pt",
                        gene_names=[f"g{i}" for i in range(100)], protein_names=["CD3", "CD4"],
                        time_axis={"labels": [2, 3], "values": [2.0, 3.0], "categorical": False}, uses_time=True,
                        preprocessing={"rna": "log_normalize", "gene_min": [0.0] * 100, "gene_max": list(range(100))},
                        projection={"components": np.ones((3, 100), np.float32)},
                        calibration={"proteins": np.array(["CD3", "CD4"]), "scores": np.arange(4.0)})
    manifest.write(tmp_path)
    text = (tmp_path / MANIFEST_FILE).read_text()
    assert '"__array__": "preprocessing.gene_max"' in text and "components" in text
    back = Manifest.read(tmp_path)
    assert back.gene_names == manifest.gene_names and back.uses_time
    np.testing.assert_array_equal(back.preprocessing["gene_max"], np.arange(100))
    np.testing.assert_array_equal(back.projection["components"], np.ones((3, 100)))
    assert back.calibration["proteins"].tolist() == ["CD3", "CD4"]
    assert not list(tmp_path.glob(".*partial*")), "temporary files left behind"


def test_a_foreign_class_or_a_newer_format_is_refused_in_one_line(tmp_path):
    Manifest(model_class="os.system", weights="w", gene_names=["g"], protein_names=["p"], time_axis=None,
             uses_time=False).write(tmp_path)
    with pytest.raises(DataError, match="not crossmodalnet's"):
        Manifest.read(tmp_path).model_type()
    doc = json.loads((tmp_path / MANIFEST_FILE).read_text())
    doc["format"] = 99
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(doc))
    with pytest.raises(DataError, match="upgrade"):
        Manifest.read(tmp_path)


def test_a_run_without_a_saved_model_names_the_release(tmp_path):
    """A 0.2.0 run dir (checkpoints only) or a bare checkpoint fails with one line naming the release."""
    (tmp_path / "checkpoints").mkdir()
    ckpt = tmp_path / "checkpoints" / "best-epoch=3.ckpt"
    torch.save({"state_dict": {}, "crossmodalnet": {}}, ckpt)
    for path in (tmp_path, ckpt):
        with pytest.raises(DataError, match="0.2.0") as err:
            load_trained(path)
        assert "\n" not in str(err.value)
