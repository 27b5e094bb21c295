"""Every figure function writes a readable, non-empty PNG; a training run writes its figures into plots/."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from crossmodalnet.data.validate import DataError
from crossmodalnet.reporting import figures as plots
from crossmodalnet.interpret.gsea import gsea_prerank
from crossmodalnet.interpret.recovery import causal_sets
from crossmodalnet.interpret.saliency import saliency
from crossmodalnet.interpret.time_embedding import time_embedding_pca
from crossmodalnet.inference.predict import load_model

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path, min_pixels: int = 200) -> None:
    path = Path(path)
    assert path.read_bytes()[:8] == PNG_MAGIC, f"{path} is not a PNG"
    image = imread(path)
    assert image.shape[0] >= min_pixels and image.shape[1] >= min_pixels
    assert image[..., :3].std() > 0.01, f"{path} is blank"


def png_text(path: Path) -> str:
    """What a figure says: its titles, axis labels and legend, from the PNG's Description (plots.figure_text)."""
    from PIL import Image

    with Image.open(path) as image:
        return image.text.get("Description", "")


def test_training_run_writes_its_figures(trained_ood_run):
    """Days 2 and 4 learned, day 3 held out: no time-embedding PCA (two learned rows span one direction), so the
    time effects per protein are drawn alone (time_effects.png, day 3 interpolated); no accuracy-by-time (one test
    day); the rest name what they show."""
    run_dir = trained_ood_run[0]
    names = sorted(p.name for p in (run_dir / "plots").glob("*.png"))
    assert names == ["measured_vs_predicted.png", "measured_vs_predicted_grid.png", "pearson_per_protein.png",
                     "time_effects.png", "training_curves.png"]
    effects = png_text(run_dir / "plots" / "time_effects.png")
    assert "Learned time effect" in effects and "True time effect (simulator)" in effects
    assert "(i) interpolated" in effects
    for name in names:
        assert_png(run_dir / "plots" / name)
    scatter = png_text(run_dir / "plots" / "measured_vs_predicted.png")
    assert "held-out day 3 cells" in scatter and "Pearson r = " in scatter and "measured P0" in scatter
    assert "lineage" in scatter  # the simulator's cell-type-like column colours the cells
    curves = png_text(run_dir / "plots" / "training_curves.png")
    assert "train-mean predictor" in curves and "weight of NLC" in curves and "discriminator cross-entropy" in curves
    assert "12 proteins" in png_text(run_dir / "plots" / "pearson_per_protein.png")


def test_measured_vs_predicted(tmp_path):
    rng = np.random.default_rng(0)
    measured = rng.normal(size=200)
    path = plots.plot_measured_vs_predicted(measured, measured + rng.normal(size=200), "CD38",
                                            tmp_path / "fig2.png", gene_expression=rng.random(200), gene="CD38")
    assert_png(path)
    assert_png(plots.plot_measured_vs_predicted(measured, measured, "CD38", tmp_path / "only_pred.png"))
    days = np.repeat(["day 10", "day 2", "day 7", "day 2"], 50)  # natural order: 2 < 7 < 10
    types = rng.choice([f"type{i}" for i in range(25)], 200)  # more than the palette: the rest is "other"
    path = plots.plot_measured_vs_predicted(measured, measured + 0.1, "CD38", tmp_path / "coloured.png",
                                            time=days, time_label="day", cell_type=types,
                                            cell_type_label="cell_type", cells="query cells")
    assert_png(path)
    text = png_text(path)
    assert "CD38 on 200 query cells, by day" in text and "by cell_type" in text
    assert text.index("day 2 (n=100)") < text.index("day 7 (n=50)") < text.index("day 10 (n=50)")
    assert "other (7 groups" in text and "y = x" in text


def test_pearson_per_protein_and_accuracy_by_time(tmp_path):
    rng = np.random.default_rng(1)
    few = pd.Series(rng.uniform(-0.2, 1, 12), index=[f"P{i}" for i in range(12)])
    assert_png(path := plots.plot_pearson_per_protein(few, tmp_path / "bars.png"))
    assert "12 proteins, median" in png_text(path)
    many = pd.Series(rng.uniform(-0.2, 1, 134), index=[f"CD{i}" for i in range(134)])
    many["CDbest"], many["CDworst"] = 0.999, -0.5
    assert_png(path := plots.plot_pearson_per_protein(many, tmp_path / "hist.png"))
    assert "best: CDbest 1.00" in png_text(path) and "CDworst -0.50" in png_text(path)
    with pytest.raises(DataError, match="no per-protein Pearson"):
        plots.plot_pearson_per_protein(pd.Series([np.nan], index=["a"]), tmp_path / "none.png")
    per_cell = pd.DataFrame({"time": np.repeat([4, 2, 3], 40), "pearson_cell": rng.uniform(0.5, 1, 120)})
    ref = pd.Series({"2": 0.4, "3": 0.45, "4": 0.5})
    assert_png(path := plots.plot_accuracy_by_time(per_cell, tmp_path / "by_time.png", "day", ref))
    text = png_text(path)
    assert "accuracy by day" in text and "train-mean predictor" in text


def test_sweep_figure_is_a_readable_grid(tmp_path):
    """All hyperparameters in a grid (not a one-row strip), the best trial starred, text at a readable size."""
    from matplotlib.image import imread

    from crossmodalnet.tune.sweep import Hyperparameter
    from crossmodalnet.tune.results import importance, plot_sweep

    space = {"model.lr": Hyperparameter("model.lr", "loguniform", 1e-4, 1e-1),
             "model.dropout": Hyperparameter("model.dropout", "choice", values=(0.0, 0.1, 0.3)),
             "model.batch_norm": Hyperparameter("model.batch_norm", "choice", values=(True, False)),
             "model.dis_lambda": Hyperparameter("model.dis_lambda", "quniform", 0, 2, 0.1),
             "model.latent_dim": Hyperparameter("model.latent_dim", "choice", values=(256, 512))}
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"trial_index": range(12), "model.lr": 10 ** rng.uniform(-4, -1, 12),
                          "model.dropout": rng.choice([0.0, 0.1, 0.3], 12),
                          "model.batch_norm": rng.choice([True, False], 12),
                          "model.dis_lambda": rng.uniform(0, 2, 12), "model.latent_dim": rng.choice([256, 512], 12),
                          "val/pearson_cell_max": rng.uniform(0.6, 0.9, 12)})
    col = "val/pearson_cell_max"
    path = plot_sweep(table, space, importance(table, space, col), col, "max", 4, tmp_path / "tune_sweep.png")
    height, width = imread(path).shape[:2]
    assert width / height < 2.5, f"a {width} x {height} strip, not a grid"
    assert width <= 2000


def test_time_embedding_figure(model, tmp_path):
    assert_png(plots.plot_time_embedding(time_embedding_pca(model, [3]), tmp_path / "figS2.png"))


def test_saliency_figures(model, cells, tmp_path):
    res = saliency(model, cells, ["P003_G00111"], time_key="day")
    assert_png(plots.plot_saliency_top(res, "P003_G00111", tmp_path / "figS3a.png", k=10))
    mean = pd.Series(np.asarray(cells.X.mean(0)).ravel(), index=cells.var_names)
    assert_png(plots.plot_expression_vs_saliency(res, mean, "P003_G00111", tmp_path / "figS3b.png",
                                                 highlight=["G00111"]))
    with pytest.raises(DataError, match="shares no gene"):
        plots.plot_expression_vs_saliency(res, pd.Series([1.0], index=["zz"]), "P003_G00111", tmp_path / "x.png")


def test_gsea_running_score_figure(model, cells, tmp_path):
    res = saliency(model, cells, ["P000_G00024"], time_key="day")
    sets = {f"drivers_{p}": g for p, g in causal_sets(cells).items()}
    out = gsea_prerank(res.ranking("P000_G00024"), sets, min_size=3, permutation_num=20)
    assert_png(path := plots.plot_gsea_running_score(out, out.table["term"][0], tmp_path / "figS4.png",
                                                     protein="P000_G00024"))
    assert "GSEA of the P000_G00024 saliency ranking" in png_text(path)
    with pytest.raises(DataError, match="not in the GSEA result"):
        plots.plot_gsea_running_score(out, "nope", tmp_path / "y.png")


def test_training_curves_need_a_lightning_log(tmp_path):
    with pytest.raises(DataError, match="training log not found"):
        plots.plot_training_curves(tmp_path / "metrics.csv", tmp_path / "curves.png")


def test_sweep_figure_without_any_finished_trial(tmp_path):
    """Every trial failed: the figure still draws (empty panels), no exception."""
    from crossmodalnet.tune.sweep import Hyperparameter
    from crossmodalnet.tune.results import importance, plot_sweep

    space = {"model.lr": Hyperparameter("model.lr", "loguniform", 1e-4, 1e-1)}
    table = pd.DataFrame({"trial_index": [0, 1], "model.lr": [1e-3, 1e-2], "val/pearson_cell_max": [np.nan, np.nan]})
    col = "val/pearson_cell_max"
    path = plot_sweep(table, space, importance(table, space, col), col, "max", 4, tmp_path / "tune_sweep.png")
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_predict_figures_leave_out_the_cells_the_model_was_trained_on(tmp_path, trained_ood_run, cells):
    """Predicting the very file a run trained on: the figure keeps only the cells outside its training split."""
    import anndata as ad
    from omegaconf import OmegaConf

    from crossmodalnet.cli.predict import _training_cells, _write_figures
    from crossmodalnet.inference.predict import predict

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    data = tmp_path / "cite.h5ad"
    cells.write_h5ad(data)
    OmegaConf.save(OmegaConf.create({"data": {"source": {"path": str(data)}}}), run / "config.yaml")
    names = list(cells.obs_names)
    pd.DataFrame({"cell": names, "split": ["train"] * 200 + ["test"] * 100}).to_csv(run / "split.csv", index=False)
    model = load_model(trained_ood_run[2])
    model.checkpoint_path = str(run / "checkpoints" / "best.ckpt")
    assert _training_cells(model, data) == set(names[:200])
    assert _training_cells(model, tmp_path / "other.h5ad") == set()  # another file: barcodes may repeat
    pred = predict(model, ad.read_h5ad(data), time_key="day")
    measured = cells.obsm["protein"][list(pred.var_names)]
    written = _write_figures(model, pred, measured, {}, tmp_path / "plots", data)
    assert sorted(p.name for p in written)[:3] == ["accuracy_by_time.png", "measured_vs_predicted_grid.png",
                                                   "pearson_per_protein.png"]
    text = png_text(next(p for p in written if p.name.startswith("predicted_")))
    assert "on 100 input cells not used in training (200 training cells left out)" in text
