"""Unseen time points: interpolation weights, their use in prediction, and the OOD comparison in metrics.json."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from crossmodalnet.data.timepoints import TimeAxis, TimeError
from crossmodalnet.data.validate import DataError
from crossmodalnet.interpret.time_embedding import interpolated_embedding, time_embedding_pca
from crossmodalnet.inference.predict import predict, resolve_time


def test_midpoint_gives_equal_weights_and_seen_times_are_one_hot():
    axis = TimeAxis.from_labels([2, 4, 6])
    np.testing.assert_allclose(axis.weights(3), [0.5, 0.5, 0.0])
    np.testing.assert_allclose(axis.weights(5.5), [0.0, 0.25, 0.75])
    for i, t in enumerate([2, 4, 6]):
        np.testing.assert_array_equal(axis.weights(t), np.eye(3)[i])
    np.testing.assert_array_equal(axis.weight_matrix([2, 3, 6], mode="none"), np.zeros((3, 3)))
    np.testing.assert_array_equal(axis.weight_matrix([3], mode="nearest"), [[1, 0, 0]])  # tie -> earlier


def test_outside_range_uses_nearest_with_a_warning():
    axis = TimeAxis.from_labels([2, 4])
    axis.extrapolation = "nearest"   # a model with model.time_extrapolation=nearest (the paper's lookup table)
    with pytest.warns(UserWarning, match="outside the learned range.*nearest learned time 4"):
        w = axis.weights(9)
    np.testing.assert_array_equal(w, [0, 1])
    axis.extrapolation = "extrapolate"
    with pytest.warns(UserWarning, match="outside the learned range.*extrapolating"):
        np.testing.assert_allclose(axis.weights(9), [-2.5, 3.5])   # weights @ (2, 4) = 9


def test_learned_model_knows_its_times(model):
    assert model.time_axis.labels == [2, 4]
    shown = ("rna", "target_sum", "time_key", "protein", "protein_key")  # what predict needs to read new files
    assert {k: model.preprocessing.get(k) for k in shown} == {"rna": "as_is", "target_sum": 1e4, "time_key": "day",
                                                              "protein": "as_is", "protein_key": "protein"}


def test_resolve_time_choices(model, new_cells):
    obs = new_cells.obs
    labels, w = resolve_time(model, obs, time=3)
    assert set(labels) == {3} and np.allclose(w, 0.5)
    labels, w = resolve_time(model, obs, time_key="day")
    np.testing.assert_array_equal(w, model.time_axis.weight_matrix(obs["day"].tolist()))
    _, w = resolve_time(model, obs, time=3, time_mode="nearest")
    assert (w[:, 0] == 1).all()
    _, w = resolve_time(model, obs, time_mode="none")
    assert not w.any()
    # neither time nor time_key: the training column ('day') is used when present ...
    _, w = resolve_time(model, obs)
    np.testing.assert_array_equal(w, model.time_axis.weight_matrix(obs["day"].tolist()))
    # ... and without it the user must choose
    with pytest.raises(DataError, match="learned times \\[2, 4\\]: pass time="):
        resolve_time(model, obs.drop(columns="day"))
    with pytest.raises(DataError, match="time column 'visit' not found"):
        resolve_time(model, obs, time_key="visit")
    with pytest.raises(TimeError, match="outside the learned range"):
        resolve_time(model, obs, time=7, outside_range="error")
    with pytest.raises(TimeError, match="no numeric value"):
        resolve_time(model, obs, time="late")
    with pytest.raises(ValueError, match="not both"):
        resolve_time(model, obs, time=3, time_key="day")


def test_prediction_at_unseen_time_uses_the_interpolated_embedding(model, new_cells):
    pred = predict(model, new_cells, time=3)
    x = torch.from_numpy(new_cells.X.toarray())
    net = model.network.eval()
    with torch.no_grad():
        z = net.encode(x)
        half = torch.full((x.shape[0], 2), 0.5)
        manual = net.decode(z, half).numpy()
        at_2 = net.decode(z, torch.tensor([[1.0, 0.0]]).repeat(x.shape[0], 1)).numpy()
        none = net.decode(z, None).numpy()
        # day 11 on the learned days 2, 4: extrapolation weights (-3.5, 4.5), whose weighted time is 11
        late = net.decode(z, torch.tensor([[-3.5, 4.5]]).repeat(x.shape[0], 1)).numpy()
    np.testing.assert_allclose(pred.X, manual, rtol=1e-4, atol=1e-5)
    assert not np.allclose(pred.X, at_2, atol=1e-3)  # the time really changes the prediction
    assert not np.allclose(pred.X, none, atol=1e-3)  # and the midpoint is not "no time" (the paper's flaw)
    assert (pred.obs["prediction_time"] == "3").all()
    np.testing.assert_allclose(pred.obsm["time_weights"].to_numpy(), 0.5)
    assert model.hparams.time_extrapolation == "extrapolate"   # the default (docs/formulation.md)
    with pytest.warns(UserWarning, match="outside the learned range.*extrapolating"):
        far = predict(model, new_cells, time=11)
    np.testing.assert_allclose(far.X, late, rtol=1e-4, atol=1e-5)
    assert not np.allclose(far.X, predict(model, new_cells, time=4).X, atol=1e-3)


def test_time_embedding_pca_places_the_midpoint_between_learned_times(model):
    pca = time_embedding_pca(model, extra_times=[3])
    assert pca["time"].tolist() == ["2", "4", "3"]
    assert pca["kind"].tolist() == ["learned", "learned", "interpolated"]
    assert pca.attrs["explained_variance_ratio"][0] == pytest.approx(1.0)  # two points: one direction
    net = model.network
    with torch.no_grad():   # the representation the network uses: its time terms at the time's weights
        at = net.time_representation(torch.tensor([[0.25, 0.75], [1.0, 0.0]]), 2).numpy()
    np.testing.assert_allclose(interpolated_embedding(model, 3.5), at[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(interpolated_embedding(model, 2), at[1], rtol=1e-5, atol=1e-6)


def test_lookup_table_midpoint_is_the_mean_of_its_rows():
    """The paper's lookup + add_latent: the midpoint's representation is the mean of the two learned rows."""
    from crossmodalnet.interpret.time_embedding import embedding_matrix
    from crossmodalnet.models.crossmodalnet import CrossmodalNet

    torch.manual_seed(0)
    paper = CrossmodalNet(6, 3, time_axis=TimeAxis.from_labels([2, 4]).to_dict(), latent_dim=8, dis_hidden=4,
                          time_init_std=1.0)
    e = paper.network.time_embedding.detach().numpy()
    np.testing.assert_allclose(embedding_matrix(paper), e, rtol=1e-6)
    np.testing.assert_allclose(interpolated_embedding(paper, 3.5), 0.25 * e[0] + 0.75 * e[1], rtol=1e-5)
    pca = time_embedding_pca(paper, extra_times=[3])
    learned = pca.loc[pca.kind == "learned", ["PC1", "PC2"]].to_numpy()
    mid = pca.loc[pca.kind == "interpolated", ["PC1", "PC2"]].to_numpy()[0]
    np.testing.assert_allclose(mid, learned.mean(0), atol=1e-6)


def test_ood_metrics_report_interpolated_nearest_and_none(trained_ood_run):
    _, metrics, _ = trained_ood_run
    for mode in ("interpolate", "nearest", "none", "at_2", "at_4"):
        for m in ("pearson_cell", "pearson_protein", "mse"):
            assert np.isfinite(metrics[f"test/ood_{mode}/{m}"])
    # the test loop itself uses the interpolated embedding for the held-out day
    assert metrics["test/ood_interpolate/pearson_cell"] == pytest.approx(metrics["test/pearson_cell"], abs=1e-5)
    assert metrics["test/ood_interpolate/mse"] == pytest.approx(metrics["test/mse"], rel=1e-4)
    # day 3 is equidistant from 2 and 4: nearest resolves the tie to the earlier time
    assert metrics["test/ood_nearest/mse"] == pytest.approx(metrics["test/ood_at_2/mse"])
