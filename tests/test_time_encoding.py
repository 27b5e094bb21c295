"""Continuous time encodings and where the time enters MLP2 (crossmodalnet.models.time_encoding, network)."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from crossmodalnet.data.timepoints import TimeAxis
from crossmodalnet.models.crossmodalnet import CrossmodalNet
from crossmodalnet.models.network import CrossmodalNetwork, parse_injection
from crossmodalnet.models.time_encoding import TimeEncoder, natural_spline_basis

DAYS = [0.0, 1.0, 2.0, 4.0, 5.0]   # day 3 unseen (middle), day 6 past the last


def weights(days, policy=None) -> torch.Tensor:
    """Time weights as the data module builds them (no model policy: extrapolation weights past the range)."""
    axis = TimeAxis.from_labels(DAYS)
    axis.extrapolation = policy
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the outside-the-range notice, tested in test_timepoints.py
        return torch.from_numpy(axis.weight_matrix(days))


def network(encoding="spline", injection="after_bn", extrapolation="extrapolate", std=0.5, seed=0, **kw):
    torch.manual_seed(seed)
    net = CrossmodalNetwork(6, 4, len(DAYS), latent_dim=8, dis_hidden=4, time_init_std=std,
                            time_encoding=encoding, time_injection=injection, time_values=DAYS,
                            time_extrapolation=extrapolation, **kw)
    return net.eval()


# -- the features, against hand-computed values -------------------------------------------------------------------
def test_natural_spline_basis_by_hand_and_linear_beyond_the_knots():
    knots = torch.tensor([0.0, 0.5, 1.0])
    x = torch.tensor([-1.0, 0.25, 0.75, 1.0, 1.5, 2.0])
    b = natural_spline_basis(x, knots)
    # columns 1, x, d_1 - d_2 with d_1 = (x)_+^3 - (x-1)_+^3, d_2 = ((x-.5)_+^3 - (x-1)_+^3) / 0.5
    np.testing.assert_allclose(b[:, 0], 1.0)
    np.testing.assert_allclose(b[:, 1], x)
    np.testing.assert_allclose(b[:, 2], [0.0, 0.015625, 0.390625, 0.75, 1.5, 2.25], atol=1e-6)
    assert natural_spline_basis(torch.tensor([0.3]), torch.tensor([0.0, 1.0])).tolist() == [[1.0, pytest.approx(0.3)]]


def test_fourier_and_mlp_features_by_hand():
    enc = TimeEncoder("fourier", DAYS, len(DAYS), "extrapolate", frequencies=2)
    x = torch.tensor([0.25, 1.5])           # day 1.25, day 7.5
    f = enc.features(x)
    s = math.sqrt(0.5)
    np.testing.assert_allclose(f[0], [1, 0.25, s, 1.0, s, 0.0], atol=1e-6)
    # columns 1, x, sin(pi x), sin(2 pi x), cos(pi x), cos(2 pi x); beyond the range the periodic ones hold x = 1
    np.testing.assert_allclose(f[1], [1, 1.5, 0.0, 0.0, -1.0, 1.0], atol=1e-6)
    poly = TimeEncoder("poly", DAYS, len(DAYS), "extrapolate", degree=3)
    np.testing.assert_allclose(poly.features(torch.tensor([0.5, 1.2])), [[1, .5, .25, .125], [1, 1.2, 1.44, 1.728]],
                               rtol=1e-6)
    mlp = TimeEncoder("mlp", DAYS, len(DAYS), hidden=3)
    with torch.no_grad():
        mlp.slope.copy_(torch.tensor([1.0, -2.0, 0.0]))
        mlp.offset.copy_(torch.tensor([0.0, 1.0, 0.5]))
    g = mlp.features(torch.tensor([0.5]))[0].detach()
    silu = lambda v: v / (1 + math.exp(-v))   # noqa: E731
    np.testing.assert_allclose(g, [1, 0.5, silu(0.5), silu(0.0), silu(0.5)], atol=1e-6)


def test_encoders_read_the_time_from_the_weights():
    enc = TimeEncoder("spline", DAYS, len(DAYS), "extrapolate")
    w = weights([0, 3, 4.5, 6])
    x, s = enc.scaled_time(w)
    np.testing.assert_allclose(x, np.array([0, 3, 4.5, 6]) / 5, atol=1e-6)
    np.testing.assert_allclose(s, 1.0)
    np.testing.assert_allclose(enc(w), natural_spline_basis(x, enc.knots), atol=1e-6)
    assert enc.n_features == len(DAYS) and not enc(torch.zeros(2, len(DAYS))).any()   # no time -> zero features


def test_shapes_for_every_encoding_and_injection():
    n_feat = {"lookup": 5, "spline": 5, "poly": 3, "fourier": 2 + 2 * 3, "mlp": 2 + 16}
    width = {"add_latent": 8, "after_bn": 8, "film": 16, "output": 8, "film+output": 24}
    w = weights([0, 3, 6])
    for enc, k in n_feat.items():
        for inj, cols in width.items():
            net = network(enc, inj)
            assert tuple(net.time_embedding.shape) == (k, cols)
            assert net(torch.randn(3, 6), w).shape == (3, 4)
            assert set(net.time_terms(w, 3)) == set(parse_injection(inj))
    assert parse_injection("output+film") == ("film", "output")
    with pytest.raises(ValueError, match="time_injection must be"):
        parse_injection("before_bn")
    with pytest.raises(ValueError, match="time_encoding must be"):
        network("splines")


def test_categorical_or_single_times_fall_back_to_the_lookup_table():
    net = CrossmodalNetwork(6, 4, 2, latent_dim=8, time_encoding="spline", time_values=None)
    assert net.time_encoder.encoding == "lookup" and tuple(net.time_embedding.shape) == (2, 8)
    one = CrossmodalNetwork(6, 4, 1, latent_dim=8, time_encoding="mlp", time_values=[3.0])
    assert one.time_encoder.encoding == "lookup"


# -- the flaw, and its fix --------------------------------------------------------------------------------------------
def test_lookup_add_latent_midpoint_is_no_time_but_not_after_bn_or_continuous():
    """Paper: BatchNorm after MLP2's Linear cancels the rows' shared part, so trained rows end at e and -e and
    their midpoint is exactly "no time". A row added after BatchNorm, and a smooth curve, are not."""
    z = torch.randn(16, 8)
    axis = TimeAxis.from_labels([2.0, 4.0])
    mid, none_w = torch.from_numpy(axis.weight_matrix([3] * 16)), None
    paper = CrossmodalNetwork(6, 4, 2, latent_dim=8, time_values=[2.0, 4.0])
    paper.train()
    paper(torch.randn(64, 6), torch.from_numpy(axis.weight_matrix([2, 4] * 32)))   # BN running statistics
    paper.eval()
    e = torch.randn(8)
    with torch.no_grad():
        paper.time_embedding.copy_(torch.stack([e, -e]))
        torch.testing.assert_close(paper.decode(z, mid), paper.decode(z, none_w))
    for enc, inj in (("lookup", "after_bn"), ("spline", "after_bn"), ("spline", "film"), ("fourier", "output"),
                     ("mlp", "film+output"), ("spline", "add_latent")):
        net = CrossmodalNetwork(6, 4, 2, latent_dim=8, time_values=[2.0, 4.0], time_encoding=enc,
                                time_injection=inj, time_init_std=0.5).eval()
        if enc == "spline" and inj == "add_latent":   # two knots: a line, whose constant BatchNorm cancels ...
            with torch.no_grad():                       # ... so use three learned times for a curved one
                net = CrossmodalNetwork(6, 4, 3, latent_dim=8, time_values=[2.0, 4.0, 6.0], time_encoding=enc,
                                        time_injection=inj, time_init_std=0.5).eval()
                mid3 = torch.from_numpy(TimeAxis.from_labels([2, 4, 6]).weight_matrix([4] * 16))
                assert not torch.allclose(net.decode(z, mid3), net.decode(z, None), atol=1e-4)
            continue
        with torch.no_grad():
            assert not torch.allclose(net.decode(z, mid), net.decode(z, None), atol=1e-4), (enc, inj)


def test_no_time_is_the_basal_prediction_and_zero_init_is_time_free():
    z = torch.randn(5, 8)
    w = weights([0, 3, 6, 1, 5])
    for enc in ("lookup", "spline", "poly", "fourier", "mlp"):
        net = network(enc, "film+output+after_bn", std=0.0)
        with torch.no_grad():
            torch.testing.assert_close(net.decode(z, w), net.decode(z, None))
            torch.testing.assert_close(net.decode(z, torch.zeros_like(w)), net.decode(z, None))


# -- extrapolation -------------------------------------------------------------------------------------------------------
def test_extrapolation_is_linear_for_the_spline_and_nearest_holds_the_last_day():
    z = torch.randn(1, 8).repeat(4, 1)
    late = weights([5, 6, 7, 8])
    lin = network("spline", "output", "extrapolate")
    with torch.no_grad():
        y = lin.decode(z, late)
    # output injection is affine in the features, which are linear in t beyond the last knot: equal steps
    torch.testing.assert_close(y[2] - y[1], y[3] - y[2], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(y[1], y[0], atol=1e-4)
    held = network("spline", "output", "nearest")
    with torch.no_grad():
        y = held.decode(z, late)
    for i in (1, 2, 3):
        torch.testing.assert_close(y[i], y[0])


def test_lookup_nearest_maps_extrapolation_weights_to_the_last_row_and_extrapolate_continues_the_line():
    z = torch.randn(2, 8)
    w6, w5 = weights([6, 6]), weights([5, 5])
    assert w6[0, -2:].tolist() == [-1.0, 2.0]
    nearest = network("lookup", "add_latent", "nearest")
    with torch.no_grad():
        torch.testing.assert_close(nearest.decode(z, w6), nearest.decode(z, w5))
    line = network("lookup", "add_latent", "extrapolate")
    e = line.time_embedding.detach()
    torch.testing.assert_close(line.time_representation(w6, 2)[0], e[4] + (e[4] - e[3]))


def test_model_sets_its_axis_policy_for_predict():
    axis = TimeAxis.from_labels(DAYS).to_dict()
    lookup = CrossmodalNet(6, 4, time_axis=axis, latent_dim=8, dis_hidden=4)
    assert lookup.time_axis.extrapolation == "nearest"
    with pytest.warns(UserWarning, match="nearest learned time 5"):
        np.testing.assert_array_equal(lookup.time_axis.weights(6), [0, 0, 0, 0, 1])
    spline = CrossmodalNet(6, 4, time_axis=axis, latent_dim=8, dis_hidden=4, time_encoding="spline",
                           time_extrapolation="extrapolate")
    with pytest.warns(UserWarning, match="extrapolating"):
        assert spline.time_axis.weights(6) @ np.array(DAYS) == pytest.approx(6.0)
    assert spline.checkpoint_metadata()["time_axis"]["extrapolation"] == "extrapolate"


# -- training reaches the time parameters; old checkpoints load --------------------------------------------------------
@pytest.mark.parametrize("enc,inj", [("spline", "after_bn"), ("fourier", "film"), ("mlp", "output"),
                                     ("lookup", "add_latent")])
def test_gradient_reaches_the_time_parameters(enc, inj):
    net = network(enc, inj, std=0.1).train()
    y = net(torch.randn(32, 6), weights([0, 1, 2, 4, 5, 3, 6, 2] * 4))
    y.pow(2).sum().backward()
    for p in net.time_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert any(p is net.time_embedding for p in net.generator_parameters())
    if enc == "mlp":
        assert {id(net.time_encoder.slope), id(net.time_encoder.offset)} <= {id(p) for p in net.generator_parameters()}


LEGACY_KEYS = {  # CrossmodalNet's state_dict before the time options existed (lookup + add_latent)
    "network.input_layer.weight", "network.input_layer.bias", "network.encoder_rest.0.weight",
    "network.encoder_rest.0.bias", "network.encoder_rest.0.running_mean", "network.encoder_rest.0.running_var",
    "network.encoder_rest.0.num_batches_tracked", "network.encoder_rest.3.weight", "network.encoder_rest.3.bias",
    "network.encoder_rest.4.weight", "network.encoder_rest.4.bias", "network.encoder_rest.4.running_mean",
    "network.encoder_rest.4.running_var", "network.encoder_rest.4.num_batches_tracked", "network.time_embedding",
    "network.decoder.0.weight", "network.decoder.0.bias", "network.decoder.1.weight", "network.decoder.1.bias",
    "network.decoder.1.running_mean", "network.decoder.1.running_var", "network.decoder.1.num_batches_tracked",
    "network.decoder.3.weight", "network.decoder.3.bias", "network.discriminator.0.weight",
    "network.discriminator.0.bias", "network.discriminator.1.weight", "network.discriminator.1.bias",
    "network.discriminator.1.running_mean", "network.discriminator.1.running_var",
    "network.discriminator.1.num_batches_tracked", "network.discriminator.3.weight", "network.discriminator.3.bias",
    "gradnorm.weights", "gradnorm.initial_losses", "gradnorm.min_weights"}


def test_checkpoint_saved_without_the_time_options_loads_as_the_paper(tmp_path):
    axis = TimeAxis.from_labels([2, 4]).to_dict()
    old_hparams = {"n_genes": 6, "n_proteins": 4, "time_axis": axis, "latent_dim": 8, "dis_hidden": 4}
    model = CrossmodalNet(**old_hparams)
    assert set(model.state_dict()) == LEGACY_KEYS
    with torch.no_grad():
        model.network.time_embedding.copy_(torch.randn(2, 8))
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": old_hparams,
                "pytorch-lightning_version": "2.0.0"}, path)
    loaded = CrossmodalNet.load_from_checkpoint(path, weights_only=False).eval()
    assert loaded.network.time_encoder.encoding == "lookup" and loaded.network.injections == ("add_latent",)
    x, w = torch.randn(3, 6), torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    with torch.no_grad():
        e = model.network.time_embedding
        manual = model.eval().network.decoder(model.network.encode(x) + w @ e)
        torch.testing.assert_close(loaded(x, w), manual)


# -- end to end through the user's entry point -----------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("enc,inj,holdout", [("spline", "after_bn", 3), ("fourier", "film", 4),
                                             ("mlp", "film+output", 3)])
def test_train_py_with_a_continuous_time_encoding(tmp_path, enc, inj, holdout):
    from conftest import run_train

    _, m = run_train(tmp_path, "experiment=demo_fast", "torch_threads=1", f"model.time_encoding={enc}",
                     f"model.time_injection={inj}", "model.time_extrapolation=extrapolate",
                     f"data.holdout_time={holdout}")
    assert np.isfinite(m["test/pearson_cell"])
    assert m["test/ood_interpolate/pearson_cell"] == pytest.approx(m["test/pearson_cell"], abs=1e-5)
    # day 3 (middle): the interpolated time is not "no time"; day 4 (past the learned 2, 3): not the nearest day
    other = "none" if holdout == 3 else "nearest"
    assert m["test/ood_interpolate/mse"] != pytest.approx(m[f"test/ood_{other}/mse"], rel=1e-6)


def test_time_parameters_get_their_own_learning_rate():
    axis = TimeAxis.from_labels(DAYS).to_dict()
    model = CrossmodalNet(6, 4, time_axis=axis, latent_dim=8, dis_hidden=4, time_encoding="mlp",
                          time_injection="output", time_lr=0.05)
    gen = model.configure_optimizers()[0]
    assert [g["lr"] for g in gen.param_groups] == [1e-3, 0.05]
    assert {id(p) for p in gen.param_groups[1]["params"]} == {id(p) for p in model.network.time_parameters()}
    n_all = len(model.network.generator_parameters())
    assert sum(len(g["params"]) for g in gen.param_groups) == n_all
    plain = CrossmodalNet(6, 4, time_axis=axis, latent_dim=8, dis_hidden=4).configure_optimizers()[0]
    assert len(plain.param_groups) == 1   # time_lr=None: one rate, as before
