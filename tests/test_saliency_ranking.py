"""Ranking rules of saliency, each against values computed by hand: the coding-gene table, coding-gene ranks, the
expression-matched null, high-protein cells, per-SD and variance-share attributions, bootstrap and seed rank
intervals."""
from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from conftest import shared_data
from crossmodalnet.interpret.coding_genes import coding_gene_status, coding_gene_table, coding_genes
from crossmodalnet.interpret.ranking import (ensemble_scores, ensemble_top, expression_matched, gene_stats,
                                             matched_neighbours, mean_rank_scores, rank_interval, ranks)
from crossmodalnet.interpret.recovery import coding_gene_ranks
from crossmodalnet.interpret.saliency import (SaliencyResult, high_cell_mask, prediction_centre,
                                              result_from_accumulator, saliency_from_batches)


class Linear(nn.Module):
    """yhat = x A^T + c (no time input): every per-cell attribution has a closed form."""

    def __init__(self, a: np.ndarray) -> None:
        super().__init__()
        self.A = nn.Parameter(torch.as_tensor(a, dtype=torch.float32))

    def forward(self, x, time_weights=None):
        return x @ self.A.t() + 1.0


# -- coding genes ------------------------------------------------------------------------------------------------
def test_coding_gene_table_lookup():
    table = coding_gene_table()
    assert table.loc["CD3", "genes"] == ("CD3E", "CD3D", "CD3G")
    found = coding_genes(["CD56", "cd16", "HLA-DR", "CD4_PROT", "CD8a-TotalSeqB", "CD57", "Mouse-IgG1", "nope"])
    assert found == {"CD56": ("NCAM1",), "cd16": ("FCGR3A", "FCGR3B"), "HLA-DR": ("HLA-DRA", "HLA-DRB1"),
                     "CD4_PROT": ("CD4",), "CD8a-TotalSeqB": ("CD8A",)}       # no gene codes for CD57 or isotypes
    status = coding_gene_status(["CD56", "CD4"], model_genes=["CD4", "A"], input_genes=["CD4", "A", "B"])
    assert list(status["gene"]) == ["NCAM1", "CD4"] and list(status["in_model"]) == [False, True]
    assert status["reason"].iloc[0] == "not in the checkpoint's genes nor in the input file"
    assert status["reason"].iloc[1] == "ranked"
    filtered = coding_gene_status(["CD56"], model_genes=["A"], input_genes=["A", "NCAM1"])
    assert filtered["reason"].iloc[0].startswith("not in the checkpoint's genes (removed by the gene filter")


def test_coding_gene_table_covers_the_bmmc_panel():
    adt = ad.read_h5ad(shared_data("bmmc_cite_starter", "adt.h5ad"), backed="r")
    names = list(adt.var_names)
    missing = [p for p in names if p not in coding_genes(names)]
    assert missing == ["CD57"]                          # the one glycan epitope of the panel, left out on purpose


def test_coding_gene_ranks_by_hand():
    scores = pd.DataFrame([[5, 1, 3, 2], [0, 4, 4, 1], [1, 2, 3, 4]], index=["CD3", "CD16", "X"],
                          columns=["CD3D", "FCGR3A", "CD3E", "FCGR3B"], dtype=float)
    out = coding_gene_ranks(scores, {"CD3": ["CD3E", "CD3D", "CD3G"], "CD16": ["FCGR3B", "FCGR3A"], "X": ["Q"]})
    assert list(out.index) == ["CD3", "CD16"]                                   # X: no coding gene ranked
    assert out.loc["CD3", "rank"] == 1 and out.loc["CD3", "gene"] == "CD3D" and out.loc["CD3", "n_coding_ranked"] == 2
    assert out.loc["CD16", "rank"] == 1 and out.loc["CD16", "gene"] == "FCGR3A"  # tie 4 = 4: the earlier gene first
    assert out.loc["CD16", "n_genes"] == 4


# -- expression-matched null -------------------------------------------------------------------------------------
def test_expression_matched_null_by_hand():
    # five genes whose mean and fraction expressed rise together: each gene's neighbours are the genes beside it
    stats = gene_stats(np.array([1.0, 2, 3, 4, 5]), np.array([1.0, 4, 9, 16, 25]) * 2, np.array([1, 2, 3, 4, 5]),
                       10, list("abcde"))
    np.testing.assert_allclose(stats["mean"], [0.1, 0.2, 0.3, 0.4, 0.5])
    np.testing.assert_allclose(stats["frac_expressed"], [0.1, 0.2, 0.3, 0.4, 0.5])
    np.testing.assert_allclose(stats["sd"], np.sqrt(np.array([2.0, 8, 18, 32, 50]) / 10 - stats["mean"] ** 2))
    nb = matched_neighbours(stats, k=2)
    assert [sorted(r) for r in nb] == [[1, 2], [0, 2], [1, 3], [2, 4], [2, 3]]
    z = expression_matched(np.array([[1.0, 2, 3, 4, 10]]), nb)[0]
    # gene e: neighbours' scores 3, 4 -> median 3.5, MAD 0.5 -> z = (10 - 3.5) / (1.4826 * 0.5)
    assert z[4] == pytest.approx(6.5 / 0.7413)
    assert z[0] == pytest.approx((1 - 2.5) / 0.7413)                          # neighbours b, c: 2, 3
    assert z[2] == pytest.approx(0.0)                                           # neighbours b, d: 2, 4 -> median 3
    flat = expression_matched(np.array([[1.0, 1, 1, 1, 2]]), nb)[0]            # MAD 0: a floor, not inf
    assert np.isfinite(flat).all() and flat[4] > 0 and flat[0] == 0


def test_expression_matched_null_removes_an_expression_trend():
    rng = np.random.default_rng(0)
    mean = np.sort(rng.uniform(0.05, 3.0, 400))
    stats = pd.DataFrame({"mean": mean, "sd": mean, "frac_expressed": 1 - np.exp(-mean)})
    score = mean + rng.normal(0, 0.1, 400)                     # attribution driven by expression alone
    score[50] += 1.0                                            # one weakly expressed gene the model really uses
    assert ranks(score)[50] > 200                                # hidden under abundant genes
    assert ranks(expression_matched(score, matched_neighbours(stats)))[50] == 1


# -- cells that express the protein ------------------------------------------------------------------------------
def test_high_cell_mask_by_hand():
    values = np.array([[1.0, 5], [4, 1], [3, 3], [2, 2], [9, 9]])
    keep = np.array([True, True, True, True, False])            # the last cell is not analysed
    mask = high_cell_mask(values, keep, 0.5)
    np.testing.assert_array_equal(mask, [[0, 1], [1, 0], [1, 1], [0, 0], [0, 0]])
    with pytest.raises(ValueError, match="fraction in"):
        high_cell_mask(values, keep, 0.0)


def _linear_case(n=12, g=5, p=3, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(p, g))
    x = rng.random((n, g)).astype(np.float32)
    return Linear(a), x, Linear(a).A.detach().numpy().astype(np.float64)


def test_masked_sums_and_spread_by_hand():
    lin, x, a = _linear_case()
    mask = (np.arange(12)[:, None] % np.array([2, 3, 1])[None] == 0).astype(np.float32)   # cells 0,2,..; 0,3,..; all
    batches = [(x[i:i + 5], None, mask[i:i + 5]) for i in range(0, 12, 5)]
    acc = saliency_from_batches(lin, batches, [0, 1, 2], 5, method="grad_x_input")
    per_cell = a[:, None, :] * x[None]                                          # gradient x input = A_jg x_ig
    for j in range(3):
        sel = mask[:, j] > 0
        np.testing.assert_allclose(acc.signed[j], per_cell[j, sel].sum(0), rtol=1e-5)
        np.testing.assert_allclose(acc.std()[j], per_cell[j, sel].std(0), rtol=1e-4, atol=1e-7)
    np.testing.assert_array_equal(acc.counts, mask.sum(0))
    assert acc.n_cells == 12


def test_grad_x_sd_is_the_gradient_per_unit_sd():
    lin, x, a = _linear_case()
    acc = saliency_from_batches(lin, [(x[:7], None), (x[7:], None)], [2, 0], 5, method="grad_x_sd")
    res = result_from_accumulator(acc, ["p2", "p0"], list("abcde"), meta={"method": "grad_x_sd"})
    np.testing.assert_allclose(res.signed.to_numpy(), 12 * a[[2, 0]] * x.std(0), rtol=1e-5)
    np.testing.assert_allclose(res.gene_stats["sd"], x.std(0), rtol=1e-5)
    np.testing.assert_allclose(res.gene_stats["mean"], x.mean(0), rtol=1e-6)


def test_variance_share_by_hand():
    """Linear model: gene g's share of protein j's predicted variance is A_jg Cov(x_g, yhat_j) / Var(yhat_j),
    and the shares of all genes add up to 1."""
    lin, x, a = _linear_case()
    batches = [(x[:7], None), (x[7:], None)]
    mean, centre = prediction_centre(lin, batches, [1, 2])
    y = x.astype(np.float64) @ a.T + 1.0
    np.testing.assert_allclose(mean, x.mean(0), rtol=1e-6)
    np.testing.assert_allclose(centre[:, 0], y[:, [1, 2]].mean(0), rtol=1e-5)
    acc = saliency_from_batches(lin, batches, [1, 2], 5, method="variance_share", baseline=mean, centre=centre)
    xc, yc = x - x.mean(0), y[:, [1, 2]] - y[:, [1, 2]].mean(0)
    expected = a[[1, 2]] * (yc.T @ xc) / (yc**2).sum(0)[:, None]
    np.testing.assert_allclose(acc.signed, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(acc.signed.sum(1), 1.0, rtol=1e-4)
    with pytest.raises(ValueError, match="needs centre"):
        saliency_from_batches(lin, batches, [1, 2], 5, method="variance_share", baseline=mean)


# -- uncertainty of a ranking ------------------------------------------------------------------------------------
def test_rank_interval_and_seed_ensemble_by_hand():
    reps = np.array([[3.0, 2, 1], [1, 2, 3], [3, 1, 2]])
    np.testing.assert_array_equal(ranks(reps), [[1, 2, 3], [3, 2, 1], [1, 3, 2]])
    out = rank_interval(reps, np.array([0, 2]), level=0.9, k=1)
    assert list(out["rank_lo"]) == [1, 1] and list(out["rank_hi"]) == [3, 3]
    np.testing.assert_allclose(out["in_top1"], [2 / 3, 1 / 3])
    frames = [pd.DataFrame([r], index=["P"], columns=list("abc")) for r in reps]
    np.testing.assert_allclose(mean_rank_scores(frames).to_numpy(), [[-5 / 3, -7 / 3, -2]])
    top = ensemble_top(frames, "P", k=2, how="mean_rank")
    assert list(top["gene"]) == ["a", "c"] and list(top["rank_lo"]) == [1, 1] and list(top["rank_hi"]) == [3, 3]
    # mean of scores over each member's largest |score|: a (1 + 1/3 + 1) / 3, b (2/3 + 2/3 + 1/3) / 3, c (1/3 + 1 + 2/3) / 3
    np.testing.assert_allclose(ensemble_scores(frames).to_numpy(), [[7 / 9, 5 / 9, 2 / 3]])
    # members that differ by a gene: combined over the genes all share
    shared = ensemble_scores([frames[0], frames[1].rename(columns={"a": "z"})])
    assert list(shared.columns) == ["b", "c"]
    with pytest.raises(ValueError, match="share proteins and genes"):
        ensemble_scores([frames[0], frames[1].rename(columns={"a": "x", "b": "y", "c": "z"})])


def test_bootstrap_replicates_are_poisson_weighted_sums():
    lin, x, a = _linear_case()
    acc = saliency_from_batches(lin, [(x, None)], [0, 1], 5, method="grad_x_input", n_boot=4, boot_seed=3)
    w = torch.poisson(torch.ones((4, 12)), generator=torch.Generator().manual_seed(3)).numpy()
    per_cell = a[[0, 1]][:, None, :] * x[None]
    np.testing.assert_allclose(acc.boot_signed, np.einsum("bc,kcg->bkg", w, per_cell), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(acc.boot_absolute, np.einsum("bc,kcg->bkg", w, np.abs(per_cell)), rtol=1e-4,
                               atol=1e-5)
    res = result_from_accumulator(acc, ["p0", "p1"], list("abcde"), meta={"method": "grad_x_input"})
    top = res.top("p0", k=3)
    assert {"rank_lo", "rank_hi", "in_top3"} <= set(top.columns)
    assert (top["rank_lo"] <= top["rank_hi"]).all() and top["in_top3"].between(0, 1).all()
    text = repr(res)
    assert text.startswith("SaliencyResult(method='grad_x_input', 2 proteins x 5 genes, 12 cells")
    assert "bootstrap=4" in text and len(text) < 200 and "\n" not in text


def test_scores_under_the_null_and_errors():
    lin, x, a = _linear_case(n=40, g=8)
    acc = saliency_from_batches(lin, [(x, None)], [0], 8, method="gradient")
    res = result_from_accumulator(acc, ["p0"], list("abcdefgh"), meta={"method": "gradient"})
    z = res.scores("absolute", "expression_matched")
    expected = expression_matched(res.absolute.to_numpy(), matched_neighbours(res.gene_stats))
    np.testing.assert_allclose(z.to_numpy(), expected)
    assert list(res.ranking("p0", "absolute", "expression_matched").index[:1]) == [z.loc["p0"].idxmax()]
    with pytest.raises(ValueError, match="null must be one of"):
        res.scores("absolute", "permuted")
    bare = SaliencyResult(res.signed, res.absolute, res.std, 40)
    with pytest.raises(ValueError, match="needs gene_stats"):
        bare.scores("absolute", "expression_matched")
    with pytest.raises(ValueError, match="no bootstrap replicates"):
        bare.rank_replicates("p0")
