"""Time effects per protein and time (crossmodalnet.interpret.time_effects), checked against hand-computed values."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from crossmodalnet.errors import DataError
from crossmodalnet.interpret.time_effects import score_time_effects, time_effects_from_inputs, top_proteins
from crossmodalnet.models.crossmodalnet import CrossmodalNet

E = np.array([[0.0, 0.0], [1.0, 2.0], [3.0, -1.0]])  # time embedding rows of days 0, 1, 2


def _model() -> CrossmodalNet:
    """A network whose prediction is exactly T(t): z = 0 for every cell, MLP2 = identity on z + T."""
    model = CrossmodalNet(n_genes=3, n_proteins=2, time_axis={"labels": [0, 1, 2], "values": [0.0, 1.0, 2.0]},
                          latent_dim=2, dropout=0.0, batch_norm=False)
    net = model.network
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        net.time_embedding.copy_(torch.tensor(E, dtype=torch.float32))
        first, last = net.decoder[0], net.decoder[-1]
        first.weight.copy_(torch.eye(2))
        first.bias.fill_(10.0)   # keeps ReLU's input positive: MLP2 is linear here
        last.weight.copy_(torch.eye(2))
        last.bias.fill_(-10.0)
    model.protein_names = ["PA", "PB"]
    return model


def test_effects_against_the_mean_of_learned_times_by_hand():
    x = np.random.default_rng(0).random((5, 3)).astype(np.float32)
    eff = time_effects_from_inputs(_model(), x)
    mean = E.mean(0)  # (4/3, 1/3)
    expected = pd.DataFrame((E - mean).T, index=["PA", "PB"], columns=["0", "1", "2"])
    np.testing.assert_allclose(eff.to_numpy(), expected.to_numpy(), atol=1e-6)
    assert list(eff.columns) == ["0", "1", "2"] and list(eff.index) == ["PA", "PB"]
    assert eff.attrs["reference"] == "mean" and eff.attrs["n_cells"] == 5
    np.testing.assert_allclose(eff.sum(1), 0.0, atol=1e-6)  # learned effects sum to zero by construction


def test_interpolated_and_extrapolated_times_and_other_references():
    x = np.zeros((4, 3), np.float32)
    model = _model()
    eff = time_effects_from_inputs(model, x, times=[0, 0.5, 1, 2, 5])
    assert eff.attrs["kind"] == {"0": "learned", "0.5": "interpolated", "1": "learned", "2": "learned",
                                 "5": "extrapolated"}
    mean = E.mean(0)
    np.testing.assert_allclose(eff["0.5"], 0.5 * E[0] + 0.5 * E[1] - mean, atol=1e-6)  # halfway between rows
    np.testing.assert_allclose(eff["5"], E[2] - mean, atol=1e-6)  # the lookup repeats the last learned row
    basal = time_effects_from_inputs(model, x, reference="none")
    np.testing.assert_allclose(basal.to_numpy(), E.T, atol=1e-6)  # prediction without time is 0 here
    at_one = time_effects_from_inputs(model, x, reference=1)
    np.testing.assert_allclose(at_one.to_numpy(), (E - E[1]).T, atol=1e-6)
    with pytest.raises(DataError, match="reference time 7"):
        time_effects_from_inputs(model, x, reference=7)


def test_effect_is_a_mean_over_cells_through_the_whole_forward():
    model = _model()
    with torch.no_grad():  # z = x[:, 0] on both latent units through MLP1 (no norms, no dropout)
        model.network.input_layer.weight.zero_()
        model.network.input_layer.weight[:, 0] = 1.0
        lin = model.network.encoder_rest[3]
        lin.weight.copy_(torch.eye(2))
    x = np.array([[1, 0, 0], [3, 0, 0]], np.float32)  # z = 1 and 3: mean 2 added to every time, cancels
    eff = time_effects_from_inputs(model, x)
    np.testing.assert_allclose(eff.to_numpy(), (E - E.mean(0)).T, atol=1e-6)
    none = time_effects_from_inputs(model, x, reference="none")
    np.testing.assert_allclose(none.to_numpy(), E.T, atol=1e-6)  # (2 + T) - 2


def test_score_against_a_known_truth():
    times = ["0", "1", "2", "3"]
    truth = pd.DataFrame([[0, 1, 2, 3], [0, 0, 0, 0], [1, 0, 1, 0]], index=["a", "b", "c"], columns=times, dtype=float)
    learned = 2.0 * truth + 5.0  # same shape over time, other scale and offset
    learned.attrs = {"kind": {t: "learned" for t in times}, "reference": "mean"}
    s = score_time_effects(learned, truth)
    assert s["time_effects/pearson_protein_mean"] == pytest.approx(1.0)
    assert s["time_effects/n_proteins_scored"] == 2  # protein b has no true drift: not scored per protein
    assert s["time_effects/pearson_overall"] == pytest.approx(1.0)
    flipped = learned.copy()
    flipped.loc["c"] = -flipped.loc["c"]
    s2 = score_time_effects(flipped, truth)
    assert s2["time_effects/pearson_protein_mean"] == pytest.approx(0.0)  # (1 + -1) / 2
    # centred per protein: a = [-3,-1,1,3], b = 0, c = -[1,-1,1,-1] vs truth [-1.5,-.5,.5,1.5], 0, [.5,-.5,.5,-.5]
    a = np.r_[[-3, -1, 1, 3], [0] * 4, [-1, 1, -1, 1]]
    b = np.r_[[-1.5, -.5, .5, 1.5], [0] * 4, [.5, -.5, .5, -.5]]
    assert s2["time_effects/pearson_overall"] == pytest.approx(np.corrcoef(a, b)[0, 1])


def test_score_needs_shared_times_and_top_proteins():
    a = pd.DataFrame([[1.0, 2.0]], index=["p"], columns=["0", "1"])
    with pytest.raises(DataError, match="share 1 times"):
        score_time_effects(a, pd.DataFrame([[1.0]], index=["p"], columns=["0"]))
    eff = pd.DataFrame([[0, 1], [0, 5], [0, -3]], index=["x", "y", "z"], columns=["0", "1"], dtype=float)
    assert top_proteins(eff, 2) == ["y", "z"]


def test_model_without_time_is_refused():
    from crossmodalnet.models.mlp import MLP

    mlp = MLP(n_genes=3, n_proteins=2)
    with pytest.raises(DataError, match="no time input"):
        time_effects_from_inputs(mlp, np.zeros((2, 3), np.float32))


def test_true_time_effects_from_the_drift_simulator():
    from crossmodalnet.data.simulate import simulate_cite
    from crossmodalnet.interpret.time_effects import true_time_effects

    adata = simulate_cite(n_cells=300, n_genes=200, n_proteins=6, times=(0, 1, 2, 3), time_effect="drift", seed=1)
    truth = true_time_effects(adata)
    assert list(truth.columns) == ["0", "1", "2", "3"]
    assert list(truth.index) == list(adata.obsm["protein"].columns)
    np.testing.assert_allclose(truth.to_numpy(), np.asarray(adata.uns["simulation"]["time_effect"]).T, rtol=1e-6)
    np.testing.assert_allclose(truth.mean(1), 0.0, atol=1e-5)  # centred over the times
    del adata.uns["simulation"]
    assert true_time_effects(adata) is None


def test_score_matches_times_by_value_and_scores_unseen_times_across_proteins():
    truth = pd.DataFrame([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0], [0.0, 3.0, 0.0]], index=["a", "b", "c"],
                         columns=["0", "1", "2"])
    learned = truth.rename(columns={"0": "day 0", "1": "day 1", "2": "day 2"}) * 3
    learned.attrs = {"kind": {"day 0": "learned", "day 1": "interpolated", "day 2": "learned"}}
    s = score_time_effects(learned, truth)
    assert s["time_effects/n_times"] == 3
    # centred on the learned times (0 and 2): at day 1 the learned and true effects are a multiple of each other
    assert s["time_effects/at_day_1/pearson_across_proteins"] == pytest.approx(1.0)


def _says(path) -> str:
    from PIL import Image

    with Image.open(path) as image:
        return image.text.get("Description", "")


def test_time_effect_figure_states_the_agreement_with_the_truth(tmp_path):
    from crossmodalnet.reporting.figures import plot_time_embedding

    truth = pd.DataFrame([[-1.0, 0.0, 1.0], [1.0, 0.0, -1.0]], index=["a", "b"], columns=["0", "1", "2"])
    learned = 2.0 * truth  # twice the true size: r = 1, slope = 2
    path = plot_time_embedding(None, tmp_path / "te.png", effects=learned, truth=truth,
                               kinds={"0": "learned", "1": "interpolated", "2": "learned"})
    text = _says(path)
    assert "learned vs true: r = 1.00, slope = 2.00" in text
    assert "(i) interpolated" in text
    with pytest.raises(ValueError, match="needs a PCA table or time effects"):
        plot_time_embedding(None, tmp_path / "none.png")


def test_nlc_curve_figure(tmp_path):
    from crossmodalnet.reporting.figures import plot_nlc_curve

    from crossmodalnet.models.losses import nlc_loss

    text = _says(plot_nlc_curve(tmp_path / "s1.png"))
    assert "r = 0: 0.693" in text and "r = 0.5: 0.288" in text  # -log(1/2), -log(3/4)
    assert "-log(eps) = 13.8" in text
    # the curve is the model's loss: rows whose correlation with the target is exactly 0 and 0.5
    y = torch.tensor([[1.0, -1.0, 0.0, 0.0], [1.0, -1.0, 0.0, 0.0]])
    u = torch.tensor([0.0, 0.0, 1.0, -1.0])  # orthogonal to y's row, same norm, both centred
    pred = torch.stack([u, 0.5 * y[1] + (0.75 ** 0.5) * u])
    per_cell = nlc_loss(pred, y, reduction="none")
    np.testing.assert_allclose(per_cell.numpy(), [np.log(2), -np.log(0.75)], rtol=1e-5)


@pytest.mark.parametrize("encoding", ["lookup", "spline", "fourier"])
def test_every_time_encoding_goes_through_the_same_forward(encoding):
    """Nothing encoding-specific: the effect at t is the mean of model(x, weights(t)) minus the learned mean."""
    from crossmodalnet.inference.predict import resolve_time

    torch.manual_seed(0)
    model = CrossmodalNet(n_genes=5, n_proteins=3, time_axis={"labels": [0, 1, 2, 4], "values": [0.0, 1.0, 2.0, 4.0]},
                          latent_dim=8, dis_hidden=4, time_encoding=encoding, time_init_std=0.5).eval()
    model.protein_names = ["a", "b", "c"]
    x = np.random.default_rng(1).random((10, 5)).astype(np.float32)
    eff = time_effects_from_inputs(model, x, times=[0, 1, 2, 3, 4])
    obs = pd.DataFrame(index=[str(i) for i in range(10)])
    with torch.no_grad():
        means = {t: model(torch.from_numpy(x), torch.from_numpy(resolve_time(model, obs, time=t)[1])).mean(0).numpy()
                 for t in [0, 1, 2, 3, 4]}
    learned_mean = np.mean([means[t] for t in [0, 1, 2, 4]], axis=0)
    np.testing.assert_allclose(eff["3"], means[3] - learned_mean, atol=1e-5)
    assert eff.attrs["kind"]["3"] == "interpolated"


def test_a_training_run_writes_and_scores_its_time_effects(trained_ood_run):
    """The tiny run of tests/conftest.py (simulator, days 2 and 4 learned, day 3 held out): time_effects.csv with the
    held-out day interpolated, and metrics.json scored against the simulator's truth."""
    from crossmodalnet.interpret.time_effects import read_time_effects

    run_dir = trained_ood_run[0]
    eff = read_time_effects(run_dir / "time_effects.csv")
    assert list(eff.columns) == ["2", "3", "4"] and eff.shape[0] == 12  # demo_fast: 12 proteins
    np.testing.assert_allclose(eff["2"] + eff["4"], 0.0, atol=1e-5)  # learned effects sum to zero per protein
    saved = json.loads((run_dir / "metrics.json").read_text())
    for key in ("time_effects/pearson_overall", "time_effects/slope", "time_effects/rmse",
                "time_effects/at_3/pearson_across_proteins"):
        assert key in saved and np.isfinite(saved[key])
    assert "time_effects/pearson_protein_mean" in saved  # three times: per-protein correlation is defined


def test_time_effects_from_a_saved_model_and_anndata(model, cells):
    """The public entry point: a loaded model and an AnnData of cells, through predict's gene matching."""
    from crossmodalnet.interpret.time_effects import time_effects

    eff = time_effects(model, cells, times=[2, 3, 4], max_cells=64)
    assert eff.attrs["kind"] == {"2": "learned", "3": "interpolated", "4": "learned"} and eff.attrs["n_cells"] == 64
    np.testing.assert_allclose(eff["2"] + eff["4"], 0.0, atol=1e-5)
    assert list(eff.index) == list(model.protein_names)


def test_a_simulator_run_reports_the_time_in_z_beyond_the_biology(trained_ood_run):
    saved = json.loads((trained_ood_run[0] / "metrics.json").read_text())
    assert saved["val/time_probe_excess_over_basal"] == pytest.approx(
        saved["val/time_probe_accuracy"] - saved["val/time_probe_basal_accuracy"])
