"""The training plan: GradNorm math, no leak into the network, parameter ownership of each step, alternation."""
from __future__ import annotations

import copy
import logging

import lightning as L
import numpy as np
import pytest
import torch

from crossmodalnet.data.datamodule import CiteDataModule
from crossmodalnet.data.simulate import simulate_cite
from crossmodalnet.models.losses import adversarial_loss, nlc_loss, reconstruction_loss
from crossmodalnet.models.crossmodalnet import CrossmodalNet
from crossmodalnet.models.gradnorm import GradNorm
from crossmodalnet.models.network import first_layer

TIMES = {"labels": [2, 3, 4], "values": [2.0, 3.0, 4.0]}


def make_model(**kw) -> CrossmodalNet:
    torch.manual_seed(0)
    args = dict(n_genes=30, n_proteins=6, time_axis=TIMES, latent_dim=16, dis_hidden=8, dropout=0.0)
    args.update(kw)
    return CrossmodalNet(**args)


def make_batch(n: int = 24, g: int = 30, p: int = 6, c: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(n) % c
    return {"x": torch.rand(n, g, generator=gen) * (torch.rand(n, g, generator=gen) < 0.4),
            "y": torch.randn(n, p, generator=gen), "time_index": t,
            "time_weights": torch.nn.functional.one_hot(t, c).float()}


def naive_generator_step(model: CrossmodalNet, batch, gen_opt, weight_opt) -> None:
    """The straightforward Algorithm 1 step: autograd everywhere, a second-order graph for GradNorm."""
    net, hp = model.network, model.hparams
    z = net.encode(batch["x"])
    pred = net.decode(z, batch["time_weights"])
    nlc = nlc_loss(pred, batch["y"], eps=hp.nlc_eps)
    recon = reconstruction_loss(pred, batch["y"], hp.reconstruction)
    adv = hp.dis_lambda * adversarial_loss(net.discriminator(z), batch["time_index"], hp.adversarial_loss)
    if hp.adversary_in_gradnorm:   # paper: the adversarial term is part of GradNorm's second task (Fader)
        fader, extra = recon + adv, 0.0
    else:                          # authors: GradNorm over NLC and reconstruction, adversary at fixed weight
        fader, extra = recon, adv
    w = model.gradnorm.weights
    W = net.input_layer.weight
    params = net.generator_parameters()
    grads = torch.autograd.grad(w[0].detach() * nlc + w[1].detach() * fader + extra, params, retain_graph=True)
    g1 = torch.autograd.grad(w[0] * nlc, W, retain_graph=True, create_graph=True)[0].norm()
    g2 = torch.autograd.grad(w[1] * fader, W, retain_graph=True, create_graph=True)[0].norm()
    gn = model.gradnorm
    losses = torch.stack([nlc.detach(), fader.detach()])
    if torch.isnan(gn.initial_losses).any():
        gn.initial_losses.copy_(losses)
    ratios = losses.clamp_min(gn.eps) / gn.initial_losses.clamp_min(gn.eps)
    r = ratios / ratios.mean()
    g_bar = (g1 + g2) / 2
    targets = (g_bar * r**gn.alpha).detach()
    l_grad = (g1 - targets[0]).abs() + (g2 - targets[1]).abs()
    (w_grad,) = torch.autograd.grad(l_grad, w)   # only w: GradNorm must not touch the network
    gen_opt.zero_grad()
    for p, g in zip(params, grads):
        p.grad = g
    weight_opt.zero_grad()
    w.grad = w_grad
    weight_opt.step()
    gen_opt.step()
    gn.renormalise()


# Shifts that only ever reach a BatchNorm (Linear biases before BN; z's BN beta, which reaches MLP2 and the
# discriminator only through Linear -> BN) have a zero gradient in exact arithmetic.
BIASES_BEFORE_BATCHNORM = {"network.input_layer.bias", "network.encoder_rest.3.bias", "network.decoder.0.bias",
                           "network.encoder_rest.4.bias"}


def _comparable(name: str, batch_norm: bool) -> bool:
    # Adam amplifies a rounding-level gradient to a full step, so only the BN-free network compares those.
    return not (batch_norm and name in BIASES_BEFORE_BATCHNORM)


@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("batch_size", [24, 40])
def test_fast_step_equals_naive_autograd_step(batch_size, batch_norm):
    """The optimised generator step gives the same parameters and task weights as the naive one."""
    for latent in (16, 64):  # 64 with 24 cells takes the Gram form of the norms, the others explicit products
        fast = make_model(latent_dim=latent, batch_norm=batch_norm)
        naive = copy.deepcopy(fast)
        fast_opts, naive_opts = fast.configure_optimizers(), naive.configure_optimizers()
        for step in range(5):
            batch = make_batch(n=batch_size, seed=step)
            fast.generator_step(batch, fast_opts[0], fast_opts[2])
            naive_generator_step(naive, batch, naive_opts[0], naive_opts[2])
        for (name, a), b in zip(fast.named_parameters(), naive.parameters()):
            if _comparable(name, batch_norm):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=f"parameter {name} differs")
        assert not torch.allclose(fast.gradnorm.weights, torch.ones(2))  # weights really moved


@pytest.mark.parametrize("genes,latent", [(30, 16), (30, 64), (500, 64)])
@pytest.mark.parametrize("sparse", [False, True])
def test_first_layer_norms_equal_the_weight_gradient_norms(genes, latent, sparse):
    """Both ways of taking ||delta^T X|| (explicit product, Gram form) give the first layer's gradient norm."""
    from crossmodalnet.models.generator_gradients import first_layer_norms as _first_layer_norms

    batch = make_batch(n=24, g=genes)
    x = batch["x"].to_sparse_csr() if sparse else batch["x"]
    deltas = [torch.randn(24, latent, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    expected = torch.stack([(d.t() @ batch["x"]).norm() for d in deltas])
    torch.testing.assert_close(_first_layer_norms(x, deltas), expected, rtol=1e-4, atol=1e-5)


def test_one_process_step_equals_the_per_task_step():
    """The one-process path (tasks' gradients at h, one backward of the weighted loss) updates every parameter
    exactly like the per-task path that data-parallel runs use."""
    combined = make_model(batch_norm=False)
    per_task = copy.deepcopy(combined)
    # what world_size > 1 selects: per-task gradients, then their mean over ranks (the inputs themselves on one)
    per_task.task_gradients = lambda b: per_task._per_task_gradients(b).reduced(per_task)
    co, po = combined.configure_optimizers(), per_task.configure_optimizers()
    for step in range(4):
        batch = make_batch(seed=step)
        combined.generator_step(batch, co[0], co[2])
        per_task.generator_step(batch, po[0], po[2])
    for (name, a), b in zip(combined.named_parameters(), per_task.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=f"parameter {name} differs")


def test_autograd_mode_equals_fast_mode():
    fast = make_model(batch_norm=False)
    slow = make_model(gradnorm_mode="autograd", batch_norm=False)
    slow.load_state_dict(fast.state_dict())
    fo, so = fast.configure_optimizers(), slow.configure_optimizers()
    for step in range(4):
        batch = make_batch(seed=step)
        fast.generator_step(batch, fo[0], fo[2])
        slow.generator_step(batch, so[0], so[2])
    for a, b in zip(fast.parameters(), slow.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_gradnorm_weight_gradient_matches_autograd_on_tiny_problem():
    """dL_G/dw_i = sign(G_i - target_i) * n_i, checked against autograd through |w_i n_i - target_i|."""
    gn = GradNorm(alpha=1.5)
    gn.weights.data = torch.tensor([0.7, 1.3])
    gn.initial_losses.copy_(torch.tensor([2.0, 0.5]))
    losses, norms = torch.tensor([1.0, 0.4]), torch.tensor([3.0, 0.8])
    out = gn.weight_gradient(losses, norms)
    w = gn.weights.detach().clone().requires_grad_(True)
    g = w * norms
    ratios = losses / torch.tensor([2.0, 0.5])
    target = (g.mean() * (ratios / ratios.mean()) ** 1.5).detach()
    l_grad = (g - target).abs().sum()
    (expected,) = torch.autograd.grad(l_grad, w)
    torch.testing.assert_close(out["grad"], expected)
    # by hand: G = (2.1, 1.04), mean 1.57; ratios (0.5, 0.8)/0.65 -> targets 1.57 * (0.769.., 1.2307..)^1.5
    r = np.array([0.5, 0.8]) / 0.65
    t = 1.57 * r**1.5
    assert out["target"].numpy() == pytest.approx(t, rel=1e-5)
    assert out["grad"].numpy() == pytest.approx(np.sign([2.1, 1.04] - t) * [3.0, 0.8], rel=1e-6)


def test_gradnorm_renormalises_to_two_and_stays_positive():
    gn = GradNorm()
    gn.weights.data = torch.tensor([-0.5, 3.0])
    gn.renormalise()
    assert gn.weights.sum().item() == pytest.approx(2.0)
    assert (gn.weights > 0).all()


FORMULATIONS = {  # docs/formulation.md
    "default": {},
    "paper": {"reconstruction": "sq_norm", "adversarial_loss": "flip", "adversary_in_gradnorm": True},
    "authors": {"reconstruction": "mse", "adversarial_loss": "flip", "adversary_in_gradnorm": False},
    "v0.2": {"reconstruction": "mse", "adversarial_loss": "flip", "adversary_in_gradnorm": True},
    "confusion": {"reconstruction": "sq_norm", "adversarial_loss": "confusion", "adversary_in_gradnorm": True},
}


@pytest.mark.parametrize("gradnorm_mode", ["fast", "autograd"])
@pytest.mark.parametrize("formulation", sorted(FORMULATIONS))
def test_network_gradient_is_the_weighted_loss_gradient_alone(formulation, gradnorm_mode):
    """After a generator step, .grad of every generator parameter = d(w1 NLC + w2 task2 [+ lambda adv])/dp, computed
    here from the formulas by hand (no GradNorm leak; the fixed-weight adversarial term of the authors' arrangement
    enters with weight 1, outside GradNorm)."""
    kw = FORMULATIONS[formulation]
    model = make_model(gradnorm_mode=gradnorm_mode, **kw)
    model.gradnorm.weights.data = torch.tensor([0.6, 1.4])
    reference = copy.deepcopy(model)
    batch = make_batch()
    gen_opt = torch.optim.SGD(model.network.generator_parameters(), lr=0.0)   # keeps .grad after step
    w_opt = torch.optim.SGD(model.gradnorm.parameters(), lr=0.0)
    model.generator_step(batch, gen_opt, w_opt)
    net, hp = reference.network, reference.hparams
    z = net.encode(batch["x"])
    pred = net.decode(z, batch["time_weights"])
    diff2 = (pred - batch["y"]) ** 2
    recon = diff2.sum(1).mean() if hp.reconstruction == "sq_norm" else diff2.mean()
    log_p = torch.log_softmax(net.discriminator(z), dim=1)
    if hp.adversarial_loss == "flip":     # + lambda * log P(t | z)
        adv = log_p[torch.arange(len(z)), batch["time_index"]].mean()
    else:                                 # lambda * KL(uniform || P(. | z))
        adv = (-log_p.mean(1) - np.log(3)).mean()
    nlc = nlc_loss(pred, batch["y"])
    if hp.adversary_in_gradnorm:
        total = 0.6 * nlc + 1.4 * (recon + hp.dis_lambda * adv)
    else:
        total = 0.6 * nlc + 1.4 * recon + hp.dis_lambda * adv
    expected = torch.autograd.grad(total, net.generator_parameters())
    for p, g in zip(model.network.generator_parameters(), expected):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-6)
    assert all(p.grad is None for p in model.network.discriminator.parameters())


def test_confusion_term_is_zero_at_uniform_and_positive_elsewhere():
    from crossmodalnet.models.losses import adversarial_loss

    t = torch.tensor([0, 1, 2, 0])
    assert adversarial_loss(torch.zeros(4, 3), t, "confusion").item() == pytest.approx(0.0, abs=1e-7)
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 3.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 5.0]])
    p = torch.softmax(logits, 1)
    expected = (torch.log(1 / 3 / p) / 3).sum(1).mean()          # KL(U || P) by hand
    assert adversarial_loss(logits, t, "confusion").item() == pytest.approx(expected.item(), rel=1e-6)
    assert adversarial_loss(logits, t, "flip").item() == pytest.approx(
        torch.log(p[torch.arange(4), t]).mean().item(), rel=1e-6)


def test_gradnorm_does_not_push_a_negative_fader_loss_to_the_floor():
    """v0.2 defect: with the Fader loss below zero, max(L, eps)/L(0) made the Fader target ~0, so dL_G/dw_fader was
    +||dL_fader/dW|| on every step and w_fader fell to the 1e-4 floor. Now a step without a defined loss ratio gives
    the weights no gradient at all."""
    gn = GradNorm(alpha=0.5)
    opt = torch.optim.Adam(gn.parameters(), lr=0.05)
    norms = torch.tensor([1.0, 3.0])
    gn.weight_gradient(torch.tensor([0.7, 1.2]), norms)          # records L(0), both positive
    for step in range(200):
        out = gn.weight_gradient(torch.tensor([0.3, -0.1 - 0.01 * step]), norms)   # Fader below zero
        assert out["skipped"].item() == 1.0
        assert torch.equal(out["grad"], torch.zeros(2))
        opt.zero_grad()
        gn.weights.grad = out["grad"]
        opt.step()
        gn.renormalise()
    assert torch.allclose(gn.weights.detach(), torch.ones(2)) and gn.min_weights.min() == 1.0
    # what the v0.2 clamp computed for the same step: a positive gradient on w_fader, every step
    ratios = torch.tensor([0.3, -0.1]).clamp_min(gn.eps) / torch.tensor([0.7, 1.2])
    g = norms  # w = 1
    target = g.mean() * (ratios / ratios.mean()) ** 0.5
    assert torch.sign(g - target)[1] > 0


def test_default_formulation_keeps_both_tasks_positive():
    """Both of GradNorm's task losses are >= 0 under the default formulation (and the confusion one), whatever the
    discriminator says (here one sure of the wrong time), so the loss ratios are always defined; v0.2's Fader task
    (MSE - lambda CE inside GradNorm) goes negative in the same situation."""
    model = make_model(dis_lambda=2.0)
    with torch.no_grad():
        model.network.discriminator[-1].weight.zero_()
        model.network.discriminator[-1].bias.copy_(torch.tensor([0.0, 0.0, 30.0]))
    batch = make_batch()
    batch["time_index"] = torch.zeros_like(batch["time_index"])
    terms = model.task_losses(first_layer(batch["x"], model.network.input_layer), batch)
    assert terms.nlc.item() >= 0 and terms.second.item() > 0    # NLC and MSE: GradNorm's two tasks
    assert terms.extra is not None and terms.extra.item() > 0     # lambda KL(U || P), outside GradNorm
    confusion = make_model(dis_lambda=2.0, adversarial_loss="confusion", adversary_in_gradnorm=True)
    confusion.network.load_state_dict(model.network.state_dict())
    terms = confusion.task_losses(first_layer(batch["x"], confusion.network.input_layer), batch)
    assert terms.second.item() > 0 and terms.adv.item() > 0
    legacy = make_model(dis_lambda=2.0, reconstruction="mse", adversarial_loss="flip", adversary_in_gradnorm=True)
    legacy.network.load_state_dict(model.network.state_dict())
    assert legacy.task_losses(first_layer(batch["x"], legacy.network.input_layer), batch).second.item() < 0


def test_discriminator_step_changes_only_discriminator_parameters():
    model = make_model()
    before = copy.deepcopy(model.state_dict())
    gen_opt, dis_opt, _ = model.configure_optimizers()
    model.discriminator_step(make_batch(), dis_opt)
    for name, p in model.named_parameters():
        changed = not torch.equal(p, before[name])
        assert changed == name.startswith("network.discriminator."), name


def test_generator_step_changes_no_discriminator_parameter():
    model = make_model()
    before = copy.deepcopy(model.state_dict())
    gen_opt, _, w_opt = model.configure_optimizers()
    model.generator_step(make_batch(), gen_opt, w_opt)
    for name, p in model.named_parameters():
        changed = not torch.equal(p, before[name])
        if name.startswith("network.discriminator."):
            assert not changed, name
    assert not torch.equal(model.network.input_layer.weight, before["network.input_layer.weight"])


def _datamodule(adata, batch_size=30):
    return CiteDataModule(adata, time_key="day", batch_size=batch_size, seed=0)


def test_alternation_counts_in_a_real_trainer():
    adata = simulate_cite(n_cells=375, n_genes=40, n_proteins=6, seed=0)
    dm = _datamodule(adata)
    dm.setup()
    n_batches = len(dm.train_dataloader())
    model = CrossmodalNet(n_genes=dm.n_genes, n_proteins=dm.n_proteins, time_axis=dm.time_axis.to_dict(),
                          latent_dim=16, dis_hidden=8, learning_step=3)
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        num_sanity_val_steps=0, accelerator="cpu")
    trainer.fit(model, datamodule=dm)
    assert model.n_discriminator_steps == n_batches // 3
    assert model.n_generator_steps == n_batches - n_batches // 3
    assert np.isfinite(trainer.callback_metrics["val/pearson_cell"].item())


def test_single_time_point_skips_the_adversary(caplog):
    adata = simulate_cite(n_cells=120, n_genes=40, n_proteins=6, times=(5,), seed=0)
    dm = _datamodule(adata)
    dm.setup()
    with caplog.at_level(logging.WARNING):
        model = CrossmodalNet(n_genes=dm.n_genes, n_proteins=dm.n_proteins, time_axis=dm.time_axis.to_dict(),
                              latent_dim=16, dis_hidden=8)
    assert "adversary" not in caplog.text and not model.use_adversary   # not on construction / checkpoint load
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        num_sanity_val_steps=0, accelerator="cpu")
    with caplog.at_level(logging.WARNING):
        trainer.fit(model, datamodule=dm)
    assert caplog.text.count("discriminator (adversary) is skipped") == 1   # once per run
    assert model.n_discriminator_steps == 0 and model.n_generator_steps > 0


def test_invalid_hyperparameters_are_rejected():
    with pytest.raises(ValueError, match="learning_step"):
        make_model(learning_step=1)
    with pytest.raises(ValueError, match="gradnorm_mode"):
        make_model(gradnorm_mode="magic")


def test_sparse_batches_train_exactly_like_dense_ones():
    dense = make_model(batch_norm=False)
    sparse = copy.deepcopy(dense)
    do, so = dense.configure_optimizers(), sparse.configure_optimizers()
    for step in range(3):
        batch = make_batch(seed=step)
        sparse_batch = {**batch, "x": batch["x"].to_sparse_csr()}
        dense.generator_step(batch, do[0], do[2])
        sparse.generator_step(sparse_batch, so[0], so[2])
        dense.discriminator_step(batch, do[1])
        sparse.discriminator_step(sparse_batch, so[1])
    for a, b in zip(dense.parameters(), sparse.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
