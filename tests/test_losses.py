"""NLC, Fader and discriminator losses against hand computations; constant rows never give NaN."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from crossmodalnet.models.losses import adversarial_loss, discriminator_loss, gradient_penalty, nlc_loss, reconstruction_loss
from crossmodalnet.reporting.metrics import pearson_per_cell, pearson_per_protein, regression_metrics, rowwise_pearson


def test_nlc_matches_hand_computation():
    pred = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    target = torch.tensor([[1.0, 2.0, 4.0], [1.0, 2.0, 3.0]])
    # cell 0: x = (-1,0,1), y = (-4/3,-1/3,5/3): corr = 3 / (sqrt(2) * sqrt(42/9))
    r0 = 3.0 / (math.sqrt(2.0) * math.sqrt(42.0 / 9.0))
    r1 = -1.0
    eps = 1e-6
    expected = [-math.log((r0 + 1) / 2), -math.log(max((r1 + 1) / 2, eps))]
    per_cell = nlc_loss(pred, target, eps=eps, reduction="none")
    assert per_cell.tolist() == pytest.approx(expected, rel=1e-5)
    assert nlc_loss(pred, target, eps=eps).item() == pytest.approx(np.mean(expected), rel=1e-5)
    assert nlc_loss(pred, target, eps=eps, reduction="sum").item() == pytest.approx(sum(expected), rel=1e-5)


def test_nlc_perfect_prediction_is_zero_and_scale_invariant():
    y = torch.randn(5, 7)
    assert nlc_loss(3.0 * y + 2.0, y).item() == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("constant", ["pred", "target", "both"])
def test_nlc_constant_rows_are_finite_with_finite_gradients(constant):
    pred = torch.randn(4, 6)
    target = torch.randn(4, 6)
    if constant in ("pred", "both"):
        pred[1] = 2.5
    if constant in ("target", "both"):
        target[1] = -1.0
    pred.requires_grad_(True)
    loss = nlc_loss(pred, target)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(pred.grad).all()
    # a constant row counts as correlation 0 -> log 2
    assert nlc_loss(pred.detach(), target, reduction="none")[1].item() == pytest.approx(math.log(2), rel=1e-4)


def test_nlc_rejects_unknown_reduction():
    with pytest.raises(ValueError, match="reduction"):
        nlc_loss(torch.randn(2, 3), torch.randn(2, 3), reduction="median")


def test_paper_fader_terms_are_mse_and_log_p():
    """The paper's Fader loss, MSE + lambda * log P(t | z), from its two terms as the model combines them."""
    pred, target = torch.randn(6, 4), torch.randn(6, 4)
    logits, t = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    log_p = torch.log_softmax(logits, 1)[torch.arange(6), t].mean()
    assert reconstruction_loss(pred, target, "mse").item() == pytest.approx(F.mse_loss(pred, target).item())
    assert adversarial_loss(logits, t, "flip").item() == pytest.approx(log_p.item(), rel=1e-6)


def test_discriminator_loss_and_penalty():
    z = torch.randn(5, 4, requires_grad=True)
    w = torch.randn(4, 3)
    logits = z @ w
    t = torch.tensor([0, 1, 2, 1, 0])
    assert discriminator_loss(logits, t).item() == pytest.approx(F.cross_entropy(logits, t).item())
    # d(sum logits)/dz = row sums of w for every cell -> penalty = mean of their squares
    expected = (w.sum(1) ** 2).mean().item()
    assert gradient_penalty(logits, z).item() == pytest.approx(expected, rel=1e-5)


def test_pearson_metrics_match_numpy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(20, 8)), rng.normal(size=(20, 8))
    cells = [np.corrcoef(a[i], b[i])[0, 1] for i in range(20)]
    prots = [np.corrcoef(a[:, j], b[:, j])[0, 1] for j in range(8)]
    np.testing.assert_allclose(pearson_per_cell(a, b), cells, rtol=1e-6)
    np.testing.assert_allclose(pearson_per_protein(a, b), prots, rtol=1e-6)
    m = regression_metrics(a, b, prefix="test/")
    assert m["test/pearson_cell"] == pytest.approx(np.mean(cells))
    assert m["test/pearson_protein"] == pytest.approx(np.mean(prots))
    assert m["test/mse"] == pytest.approx(((a - b) ** 2).mean())
    with pytest.raises(ValueError, match="shape"):
        rowwise_pearson(torch.zeros(2, 3), torch.zeros(3, 2))
