"""CrossmodalNet training plan: a LightningModule with manual optimisation (paper Algorithm 1).

Every ``learning_step``-th training step updates the discriminator on CE(t | z.detach()) + gradient penalty;
the other steps update MLP1, the time embedding and MLP2 on w1 * NLC + w2 * Fader, and GradNorm updates w.

The generator step gets both tasks' gradients from two cheap backward passes that stop at the first layer's
output h (``delta_i = dL_i/dh``). The first layer's gradient is then ``(w1 delta_1 + w2 delta_2)^T X`` (one
matmul) and GradNorm's norms ``||dL_i/dW|| = ||delta_i^T X||`` come from the Gram matrices ``X X^T`` and
``delta_i delta_i^T`` (or directly when the batch is larger than the latent dimension): no full backward per
task and no second-order graph. ``gradnorm_mode="autograd"`` computes the same thing the straightforward way.
"""
from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from crossmodalnet.data.timepoints import TimeAxis
from crossmodalnet.losses import discriminator_loss, fader_loss, gradient_penalty, nlc_loss
from crossmodalnet.models.base import ProteinRegressor, adam
from crossmodalnet.models.gradnorm import GradNorm
from crossmodalnet.models.network import CrossmodalNetwork, first_layer

log = logging.getLogger(__name__)


def _dense_t_matmul(delta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """delta^T @ x for a dense or sparse x, shape (d, g)."""
    if x.layout == torch.strided:
        return delta.t() @ x
    return (x.t() @ delta).t().contiguous()  # fused Adam needs a gradient laid out like its parameter


def _gram(x: torch.Tensor) -> torch.Tensor:
    return x @ x.t() if x.layout == torch.strided else (x @ x.to_dense().t())


class CrossmodalNet(ProteinRegressor):
    """Hyperparameter names and defaults follow the paper's Table S1."""

    def __init__(
        self,
        n_genes: int,
        n_proteins: int,
        time_axis: dict | None = None,
        latent_dim: int = 512,
        dropout: float = 0.05,
        batch_norm: bool = True,
        lr: float = 1e-3,
        weight_decay: float = 5e-6,
        dis_hidden: int = 128,
        dis_lambda: float = 0.5,
        dis_gradient_penalty: float = 0.4,
        dis_lr: float = 0.0087,
        dis_weight_decay: float = 5e-5,
        learning_step: int = 3,
        gradnorm_lr: float = 0.01475,
        gradnorm_alpha: float = 0.5,
        nlc_eps: float = 1e-6,
        nlc_reduction: str = "mean",
        adversary: bool = True,
        gradnorm_mode: str = "fast",
        time_init_std: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.time_axis = TimeAxis.from_dict(time_axis) if time_axis else TimeAxis(labels=[0], values=[0.0])
        self.network = CrossmodalNetwork(n_genes, n_proteins, self.time_axis.n_times, latent_dim, dropout,
                                         batch_norm, dis_hidden, time_init_std)
        self.gradnorm = GradNorm(n_tasks=2, alpha=gradnorm_alpha)
        if learning_step < 2:
            raise ValueError(f"learning_step must be >= 2 (every learning_step-th step trains the discriminator), "
                             f"got {learning_step}")
        if gradnorm_mode not in ("fast", "autograd"):
            raise ValueError(f"gradnorm_mode must be 'fast' or 'autograd', got {gradnorm_mode!r}")
        self.use_adversary = bool(adversary) and self.time_axis.n_times > 1
        if adversary and not self.use_adversary:
            log.warning("only one time point: the discriminator (adversary) is skipped")
        self.train_steps = 0
        self.n_discriminator_steps = 0
        self.n_generator_steps = 0

    # -- inference ---------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, time_weights: torch.Tensor | None = None) -> torch.Tensor:
        return self.network(x, time_weights)

    # -- optimisers ------------------------------------------------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        gen = adam(self.network.generator_parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        dis = adam(self.network.discriminator.parameters(), lr=hp.dis_lr, weight_decay=hp.dis_weight_decay)
        weights = adam(self.gradnorm.parameters(), lr=hp.gradnorm_lr)
        return [gen, dis, weights]

    # -- training --------------------------------------------------------------------------------------------------
    def is_discriminator_step(self, step: int) -> bool:
        """Algorithm 1: step t (counted from 1) trains the discriminator when t mod learning_step == 0."""
        return self.use_adversary and step % self.hparams.learning_step == 0

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        gen_opt, dis_opt, weight_opt = self.optimizers()
        self.train_steps += 1
        if self.is_discriminator_step(self.train_steps):
            self.discriminator_step(batch, dis_opt)
            self.n_discriminator_steps += 1
        else:
            self.generator_step(batch, gen_opt, weight_opt)
            self.n_generator_steps += 1

    def discriminator_step(self, batch: dict[str, torch.Tensor], opt) -> None:
        with torch.no_grad():
            z = self.network.encode(batch["x"])
        z.requires_grad_(True)
        logits = self.network.discriminator(z)
        ce = discriminator_loss(logits, batch["time_index"])
        penalty = gradient_penalty(logits, z)
        loss = ce + self.hparams.dis_gradient_penalty * penalty
        opt.zero_grad(set_to_none=True)
        loss.backward()  # plain 32-bit backward, like the generator step (which sets .grad itself)
        opt.step()
        self.log_dict({"train/dis_ce": ce.detach(), "train/dis_penalty": penalty.detach()},
                      on_step=False, on_epoch=True, batch_size=batch["y"].shape[0])

    def task_losses(self, h: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor,
                                                                                        torch.Tensor]:
        """NLC and Fader losses from the first layer's output h; also returns the predictions."""
        net = self.network
        z = net.encoder_rest(h)
        pred = net.decode(z, batch["time_weights"])
        nlc = nlc_loss(pred, batch["y"], eps=self.hparams.nlc_eps, reduction=self.hparams.nlc_reduction)
        logits = net.discriminator(z) if self.use_adversary else None
        fader = fader_loss(pred, batch["y"], logits, batch["time_index"], self.hparams.dis_lambda)
        return nlc, fader, pred

    def task_gradients(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Per-task gradients of every generator parameter and the norms ||dL_i/dW|| at MLP1's first layer."""
        if self.hparams.gradnorm_mode == "autograd":
            return self._task_gradients_autograd(batch)
        net, x = self.network, batch["x"]
        with torch.no_grad():
            h0 = first_layer(x, net.input_layer)
        h = h0.requires_grad_(True)
        nlc, fader, pred = self.task_losses(h, batch)
        upper = [*net.encoder_rest.parameters(), net.time_embedding, *net.decoder.parameters()]
        grads_nlc = torch.autograd.grad(nlc, [h, *upper], retain_graph=True, allow_unused=True)
        grads_fader = torch.autograd.grad(fader, [h, *upper], allow_unused=True)
        d_nlc, d_fader = grads_nlc[0], grads_fader[0]
        if x.shape[0] <= d_nlc.shape[1]:            # Gram trick: b x b products instead of d x g
            gram = _gram(x)
            norms = torch.stack([((d @ d.t()) * gram).sum().clamp_min(0).sqrt() for d in (d_nlc, d_fader)])
            first = None
        else:
            first = [_dense_t_matmul(d, x) for d in (d_nlc, d_fader)]
            norms = torch.stack([f.norm() for f in first])
        return {"losses": (nlc, fader), "pred": pred, "norms": norms, "x": x, "deltas": (d_nlc, d_fader),
                "first": first, "upper": upper, "upper_grads": (grads_nlc[1:], grads_fader[1:])}

    def _task_gradients_autograd(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        net = self.network
        h = first_layer(batch["x"], net.input_layer)
        nlc, fader, pred = self.task_losses(h, batch)
        params = net.generator_parameters()
        grads_nlc = torch.autograd.grad(nlc, params, retain_graph=True, allow_unused=True)
        grads_fader = torch.autograd.grad(fader, params, allow_unused=True)
        norms = torch.stack([grads_nlc[0].norm(), grads_fader[0].norm()])
        return {"losses": (nlc, fader), "pred": pred, "norms": norms, "params": params,
                "grads": (grads_nlc, grads_fader)}

    def generator_step(self, batch: dict[str, torch.Tensor], gen_opt, weight_opt) -> None:
        tg = self.task_gradients(batch)
        nlc, fader = tg["losses"]
        w1, w2 = self.gradnorm.weights.detach()
        # GradNorm: closed-form gradient of L_G w.r.t. (w1, w2), from the pre-update network
        gn = self.gradnorm.weight_gradient(torch.stack([nlc.detach(), fader.detach()]), tg["norms"])
        # network gradients of the weighted loss w1 * NLC + w2 * Fader alone
        gen_opt.zero_grad(set_to_none=True)
        if "params" in tg:
            for p, g1, g2 in zip(tg["params"], *tg["grads"]):
                p.grad = _combine(w1, g1, w2, g2, p)
        else:
            layer = self.network.input_layer
            d_nlc, d_fader = tg["deltas"]
            if tg["first"] is not None:
                layer.weight.grad = w1 * tg["first"][0] + w2 * tg["first"][1]
            else:
                layer.weight.grad = _dense_t_matmul(w1 * d_nlc + w2 * d_fader, tg["x"])
            layer.bias.grad = (w1 * d_nlc + w2 * d_fader).sum(0)
            for p, g1, g2 in zip(tg["upper"], *tg["upper_grads"]):
                p.grad = _combine(w1, g1, w2, g2, p)
        weight_opt.zero_grad(set_to_none=True)
        self.gradnorm.weights.grad = gn["grad"]
        weight_opt.step()
        gen_opt.step()
        self.gradnorm.renormalise()
        total = w1 * nlc.detach() + w2 * fader.detach()
        self.log_dict({"train/loss": total, "train/nlc": nlc.detach(), "train/fader": fader.detach(),
                       "train/gradnorm_loss": gn["loss"]}, on_step=False, on_epoch=True, prog_bar=False,
                      batch_size=batch["y"].shape[0])

    def on_train_epoch_end(self) -> None:
        w = self.gradnorm.weights.detach()
        self.log_dict({"train/w_nlc": w[0], "train/w_fader": w[1]}, on_step=False, on_epoch=True)

    # -- checkpoint metadata ------------------------------------------------------------------------------------------
    def checkpoint_metadata(self) -> dict:
        return {**super().checkpoint_metadata(), "time_axis": self.time_axis.to_dict()}


def _combine(w1: torch.Tensor, g1: torch.Tensor | None, w2: torch.Tensor, g2: torch.Tensor | None,
             p: nn.Parameter) -> torch.Tensor:
    g1 = torch.zeros_like(p) if g1 is None else g1
    g2 = torch.zeros_like(p) if g2 is None else g2
    return (w1 * g1 + w2 * g2).contiguous()  # fused Adam needs a gradient laid out like its parameter
