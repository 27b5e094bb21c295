"""Prediction on new scRNA-seq from a checkpoint: gene alignment, normalisation, streaming, errors, the CLI."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from crossmodalnet.data.validate import DataError
from crossmodalnet.cli.predict import main
from crossmodalnet.inference.predict import align_genes, load_model, predict


def _direct(model, x: np.ndarray, t: float) -> np.ndarray:
    w = torch.from_numpy(np.tile(model.time_axis.weights(t), (x.shape[0], 1)))
    with torch.no_grad():
        return model.eval()(torch.from_numpy(x.astype(np.float32)), w).numpy()


def test_checkpoint_carries_what_prediction_needs(trained_ood_run):
    ckpt = torch.load(trained_ood_run[2], map_location="cpu", weights_only=False)
    meta = ckpt["crossmodalnet"]
    assert len(meta["gene_names"]) == 200 and len(meta["protein_names"]) == 12
    assert meta["time_axis"]["labels"] == [2, 4]
    assert meta["preprocessing"]["rna"] == "as_is" and meta["preprocessing"]["time_key"] == "day"


def test_output_structure_and_values(model, new_cells):
    pred = predict(model, new_cells, time=3)
    assert pred.shape == (300, 12)
    assert list(pred.var_names) == model.protein_names
    assert list(pred.obs_names) == list(new_cells.obs_names)
    assert "lineage" in pred.obs and (pred.obs["prediction_time"] == "3").all()
    assert list(pred.obsm["time_weights"].columns) == ["2", "4"]
    np.testing.assert_allclose(pred.X, _direct(model, new_cells.X.toarray(), 3), rtol=1e-4, atol=1e-5)
    assert pred.uns["crossmodalnet"]["n_missing_genes"] == 0


def test_shuffled_gene_order_gives_the_same_prediction(model, new_cells):
    order = np.random.default_rng(0).permutation(new_cells.n_vars)
    shuffled = new_cells[:, order].copy()
    a = predict(model, new_cells, time_key="day")
    b = predict(model, shuffled, time_key="day")
    np.testing.assert_allclose(a.X, b.X, rtol=1e-5, atol=1e-6)


def test_missing_genes_warn_with_a_count_and_are_zero_filled(model, new_cells):
    dropped = new_cells.var_names[5:15]
    partial = new_cells[:, ~new_cells.var_names.isin(dropped)].copy()
    with pytest.warns(UserWarning, match="10 of the checkpoint's 200 genes are missing"):
        pred = predict(model, partial, time=2)
    zeroed = new_cells.X.toarray()
    zeroed[:, 5:15] = 0
    np.testing.assert_allclose(pred.X, _direct(model, zeroed, 2), rtol=1e-4, atol=1e-5)
    assert pred.uns["crossmodalnet"]["n_missing_genes"] == 10


def test_too_few_shared_genes_and_a_foreign_gene_set_are_clear_errors(model, new_cells):
    few = new_cells[:, :60].copy()  # 60 of 200 < 50%
    with pytest.raises(DataError, match="shares only 60 of the checkpoint's 200 genes"):
        predict(model, few, time=2)
    predict(model, few, time=2, min_shared=50)  # an absolute threshold lets it through (with a warning)
    foreign = new_cells.copy()
    foreign.var_names = [f"ENSG{i:06d}" for i in range(foreign.n_vars)]
    with pytest.raises(DataError, match="trained on a different gene set"):
        predict(model, foreign, time=2)


def test_duplicate_gene_names_are_an_error(model, new_cells):
    dup = new_cells.copy()
    dup.var_names = ["G00000"] + list(dup.var_names[1:-1]) + ["G00000"]
    with pytest.raises(DataError, match="not unique"):
        predict(model, dup, time=2)


def test_raw_counts_are_normalised_like_training(model, new_cells):
    """A model trained on log-normalised counts reads layers['counts'] and normalises them itself."""
    counts_model = load_model(model.checkpoint_path)
    counts_model.preprocessing = {"rna": "log_normalize", "target_sum": 1e4, "time_key": "day"}
    raw = ad.AnnData(X=sp.csr_matrix(new_cells.shape, dtype=np.float32), obs=new_cells.obs.copy(),
                     var=new_cells.var.copy())
    raw.layers["counts"] = new_cells.layers["counts"].copy()
    expected = predict(model, new_cells, time=4).X  # simulator X = log-normalised counts (target 1e4)
    np.testing.assert_allclose(predict(counts_model, raw, time=4).X, expected, rtol=1e-4, atol=1e-5)
    # counts only in X work too
    in_x = ad.AnnData(X=new_cells.layers["counts"].copy(), obs=new_cells.obs.copy(), var=new_cells.var.copy())
    np.testing.assert_allclose(predict(counts_model, in_x, time=4).X, expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(DataError, match="does not hold raw counts"):
        predict(counts_model, ad.AnnData(X=new_cells.X.copy(), obs=new_cells.obs, var=new_cells.var), time=4)
    # and a model trained on X as given warns when it is handed raw counts
    with pytest.warns(UserWarning, match="holds integer counts"):
        predict(model, in_x, time=4)


def test_batches_and_backed_file_give_the_same_result(model, new_cells, tmp_path):
    full = predict(model, new_cells, time_key="day", batch_size=1000).X
    small = predict(model, new_cells, time_key="day", batch_size=7).X
    np.testing.assert_allclose(full, small, rtol=1e-5, atol=1e-6)
    path = tmp_path / "new.h5ad"
    new_cells.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    try:
        np.testing.assert_allclose(predict(model, backed, time_key="day", batch_size=64).X, full,
                                   rtol=1e-5, atol=1e-6)
    finally:
        backed.file.close()


def test_input_is_not_modified(model, new_cells):
    before = new_cells.copy()
    predict(model, new_cells, time=3)
    assert (new_cells.X != before.X).nnz == 0
    pd.testing.assert_frame_equal(new_cells.obs, before.obs)
    assert list(new_cells.var_names) == list(before.var_names)


def test_align_genes_reports_positions():
    al = align_genes(["a", "b", "c"], ["c", "x", "a", "b"])
    assert not al.identity and al.n_shared == 3
    np.testing.assert_array_equal(al.src, [2, 3, 0])
    assert align_genes(["a", "b"], ["a", "b"]).identity


def test_bad_checkpoint_is_a_clear_error(tmp_path, model):
    with pytest.raises(DataError, match="model not found"):
        load_model(tmp_path / "nope.ckpt")
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="no saved-model manifest"):
        load_model(junk)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="cannot read the saved-model manifest"):
        load_model(tmp_path)
    bare = load_model(model.checkpoint_path)
    bare.gene_names = None
    with pytest.raises(DataError, match="carries no gene/protein names"):
        predict(bare, ad.AnnData(np.zeros((2, 3), np.float32)), time=2)


def test_cli_writes_predictions_and_figures(trained_ood_run, new_cells, tmp_path, capsys):
    ckpt = str(trained_ood_run[2])
    inp, out = tmp_path / "new.h5ad", tmp_path / "out" / "pred.h5ad"
    new_cells.write_h5ad(inp)
    stamp = inp.stat().st_mtime_ns
    assert main(["--checkpoint", ckpt, "--input", str(inp), "--output", str(out), "--time", "3"]) == 0
    pred = ad.read_h5ad(out)
    assert pred.shape == (300, 12) and (pred.obs["prediction_time"] == "3").all()
    plots = sorted(p.name for p in (tmp_path / "out" / "pred_plots").glob("*.png"))
    # the grid of the most variable proteins, the best-predicted one and all proteins' Pearson; the time embedding is drawn at training, not here
    assert len(plots) == 3 and plots[:2] == ["measured_vs_predicted_grid.png", "pearson_per_protein.png"]
    assert plots[2].startswith("predicted_P0")
    assert inp.stat().st_mtime_ns == stamp
    capsys.readouterr()
    assert main(["--checkpoint", ckpt, "--input", str(inp), "--output", str(inp), "--time", "3"]) == 2
    assert "is the input file" in capsys.readouterr().err
    assert main(["--checkpoint", ckpt, "--input", str(inp), "--output", str(out), "--time", "9",
                 "--outside-range", "error"]) == 2
    assert "already exists; choose another path or pass --overwrite" in capsys.readouterr().err  # never silently
    assert main(["--checkpoint", ckpt, "--input", str(inp), "--output", str(out), "--time", "9",
                 "--outside-range", "error", "--overwrite"]) == 2
    assert "outside the learned range [2, 4]" in capsys.readouterr().err
    assert main(["--checkpoint", ckpt, "--input", str(tmp_path / "missing.h5ad"), "--output", str(out)]) == 2
    assert "input file not found" in capsys.readouterr().err


@pytest.mark.slow
def test_console_script_end_to_end(trained_ood_run, new_cells, tmp_path):
    """The installed ``crossmodalnet-predict`` as a user runs it, in a fresh process."""
    script = Path(sys.executable).with_name("crossmodalnet-predict")
    if not script.exists():
        pytest.skip(f"console script not installed next to {sys.executable} (pip install -e .)")
    inp, out = tmp_path / "new.h5ad", tmp_path / "pred.h5ad"
    new_cells.write_h5ad(inp)
    proc = subprocess.run([str(script), "--checkpoint", str(trained_ood_run[2]), "--input", str(inp),
                           "--output", str(out), "--time-key", "day", "--plots-dir", "none"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert ad.read_h5ad(out).shape == (300, 12)
