"""Every figure function writes a readable, non-empty PNG; a training run writes its figures into plots/."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from crossmodalnet.data.simulate import simulate_cite
from crossmodalnet.data.validate import DataError
from crossmodalnet.interpret import plots
from crossmodalnet.interpret.gsea import gsea_prerank
from crossmodalnet.interpret.recovery import causal_sets
from crossmodalnet.interpret.saliency import saliency
from crossmodalnet.interpret.time_embedding import time_embedding_pca
from crossmodalnet.predict import load_model

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path, min_pixels: int = 200) -> None:
    path = Path(path)
    assert path.read_bytes()[:8] == PNG_MAGIC, f"{path} is not a PNG"
    image = imread(path)
    assert image.shape[0] >= min_pixels and image.shape[1] >= min_pixels
    assert image[..., :3].std() > 0.01, f"{path} is blank"


@pytest.fixture(scope="module")
def model(trained_ood_run):
    return load_model(trained_ood_run[2])


@pytest.fixture(scope="module")
def cells():
    return simulate_cite(n_cells=300, n_genes=200, n_proteins=12, seed=0)


def test_training_run_writes_its_figures(trained_ood_run):
    run_dir = trained_ood_run[0]
    names = sorted(p.name for p in (run_dir / "plots").glob("*.png"))
    assert names == ["measured_vs_predicted.png", "time_embedding_pca.png", "training_curves.png"]
    for name in names:
        assert_png(run_dir / "plots" / name)


def test_measured_vs_predicted(tmp_path):
    rng = np.random.default_rng(0)
    measured = rng.normal(size=200)
    path = plots.plot_measured_vs_predicted(measured, measured + rng.normal(size=200), "CD38",
                                            tmp_path / "fig2.png", gene_expression=rng.random(200), gene="CD38")
    assert_png(path)
    assert_png(plots.plot_measured_vs_predicted(measured, measured, "CD38", tmp_path / "only_pred.png"))


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
    assert_png(plots.plot_gsea_running_score(out, out.table["term"][0], tmp_path / "figS4.png"))
    with pytest.raises(DataError, match="not in the GSEA result"):
        plots.plot_gsea_running_score(out, "nope", tmp_path / "y.png")


def test_training_curves_need_a_lightning_log(tmp_path):
    with pytest.raises(DataError, match="training log not found"):
        plots.plot_training_curves(tmp_path / "metrics.csv", tmp_path / "curves.png")
