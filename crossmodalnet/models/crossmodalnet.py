"""CrossmodalNet training plan: a LightningModule with manual optimisation (paper Algorithm 1).

Every ``learning_step``-th training step updates the discriminator on CE(t | z.detach()) + gradient penalty;
the other steps update MLP1, the time embedding and MLP2 on w1 * NLC + w2 * Fader, and GradNorm updates w.

The Fader loss is ``reconstruction + dis_lambda * adversarial`` (docs/formulation.md compares the choices).
Default (chosen by measurement, docs/formulation.md): GradNorm balances NLC against the MSE reconstruction (two
losses that are always >= 0, so GradNorm's loss ratios are always defined), and a bounded confusion adversary,
``dis_lambda * KL(uniform || P(t|z))`` (>= 0, zero when the discriminator sees every time as equally likely), is
added at the fixed weight ``dis_lambda`` = 0.1 (the authors' code's arrangement, with a bounded adversarial term).
``reconstruction="sq_norm"``, ``adversarial_loss="flip"``, ``adversary_in_gradnorm=True`` is the paper's text.

Time: ``time_encoding`` (lookup | spline | poly | fourier | mlp) and ``time_injection`` (add_latent | after_bn | film |
output, joined by '+') choose how the time reaches MLP2 (crossmodalnet.models.network); the constructor's defaults
are the paper's lookup table added to z, so checkpoints saved before these options existed load unchanged.
"""
from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from crossmodalnet.data.timepoints import TimeAxis
from crossmodalnet.models.losses import (ADVERSARIAL_LOSSES, RECONSTRUCTIONS, adversarial_loss, discriminator_loss,
                                  gradient_penalty, nlc_loss, reconstruction_loss)
from crossmodalnet.models.sync import all_reduce_mean, loss_scale, sync_gradients, world_size
from crossmodalnet.models.finite import check_finite, position
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


def _first_layer_norms(x: torch.Tensor, deltas: list[torch.Tensor]) -> torch.Tensor:
    """||delta_i^T X||_F for each task (the first layer's weight gradient), the cheaper of two ways.

    With b cells, g inputs and d first-layer units: explicit products cost 2 d b g multiply-adds; the Gram form,
    ||delta^T X||^2 = sum((delta delta^T) * (X X^T)), costs b^2 g + 2 b^2 d. Genes (g in the thousands) take the
    Gram form; a few hundred SVD components the explicit one."""
    b, g = x.shape
    d = deltas[0].shape[1]
    if b * g + 2 * b * d < 2 * d * g:
        gram = _gram(x)
        return torch.stack([((t @ t.t()) * gram).sum().clamp_min(0).sqrt() for t in deltas])
    return torch.stack([_dense_t_matmul(t, x).norm() for t in deltas])


class CrossmodalNet(ProteinRegressor):
    """Hyperparameter names and defaults follow the paper's Table S1."""

    # what each optimiser of configure_optimizers updates, for the non-finite gradient guard's message
    optimizer_terms = ("NLC + Fader (generator)", "discriminator", "GradNorm")

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
        dis_lambda: float = 0.1,
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
        reconstruction: str = "mse",
        adversarial_loss: str = "confusion",
        adversary_in_gradnorm: bool = False,
        time_encoding: str = "lookup",
        time_injection: str = "add_latent",
        time_extrapolation: str = "nearest",
        time_knots: int | None = None,
        time_frequencies: int = 3,
        time_hidden: int = 16,
        time_degree: int = 2,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.time_axis = TimeAxis.from_dict(time_axis) if time_axis else TimeAxis(labels=[0], values=[0.0])
        # the axis builds the weights predict() hands the network; it says what happens beyond the learned range
        self.time_axis.extrapolation = time_extrapolation
        self.network = CrossmodalNetwork(n_genes, n_proteins, self.time_axis.n_times, latent_dim, dropout,
                                         batch_norm, dis_hidden, time_init_std, time_encoding=time_encoding,
                                         time_injection=time_injection, time_values=self.time_axis.values,
                                         time_extrapolation=time_extrapolation, time_knots=time_knots,
                                         time_frequencies=time_frequencies, time_hidden=time_hidden,
                                         time_degree=time_degree)
        if self.network.time_encoder.encoding != time_encoding:
            log.info("time_encoding=%s needs numeric times (at least two); the learned times %s use the lookup "
                     "table", time_encoding, self.time_axis.labels)
        self.gradnorm = GradNorm(n_tasks=2, alpha=gradnorm_alpha)
        if learning_step < 2:
            raise ValueError(f"learning_step must be >= 2 (every learning_step-th step trains the discriminator), "
                             f"got {learning_step}")
        if gradnorm_mode not in ("fast", "autograd"):
            raise ValueError(f"gradnorm_mode must be 'fast' or 'autograd', got {gradnorm_mode!r}")
        if reconstruction not in RECONSTRUCTIONS:
            raise ValueError(f"reconstruction must be one of {RECONSTRUCTIONS}, got {reconstruction!r}")
        if adversarial_loss not in ADVERSARIAL_LOSSES:
            raise ValueError(f"adversarial_loss must be one of {ADVERSARIAL_LOSSES}, got {adversarial_loss!r}")
        self.use_adversary = bool(adversary) and self.time_axis.n_times > 1
        self.train_steps = 0
        self.n_discriminator_steps = 0
        self.n_generator_steps = 0
        self._epoch_sums: dict[str, tuple[torch.Tensor, int]] = {}

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
    def on_fit_start(self) -> None:
        if self.hparams.adversary and not self.use_adversary:  # once per run, not on every checkpoint load
            log.warning("only one time point: the discriminator (adversary) is skipped")

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
        # every rank checks the same (rank-averaged) value, so a NaN on one rank stops all of them together
        check_finite({"discriminator": all_reduce_mean(self, [loss.detach()])[0]}, *position(self))
        scale = loss_scale(self, batch["y"].shape[0])  # data-parallel: this rank's share of the global batch
        if scale != 1.0:
            loss, ce, penalty = loss * scale, ce * scale, penalty * scale
        opt.zero_grad(set_to_none=True)
        loss.backward()  # plain 32-bit backward, like the generator step (which sets .grad itself)
        sync_gradients(self, self.network.discriminator.parameters())  # mean over ranks; nothing on one process
        opt.step()
        ce, penalty = all_reduce_mean(self, [ce.detach(), penalty.detach()])
        self._accumulate({"train/dis_ce": ce, "train/dis_penalty": penalty}, batch["y"].shape[0])

    def task_losses(self, h: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """From the first layer's output h: GradNorm's two task losses (NLC and the second task: Fader, or the
        reconstruction alone when the adversary sits outside GradNorm), the fixed-weight adversarial term where
        it sits outside (``extra``), the reconstruction and adversarial values for logging, and the predictions."""
        net, hp = self.network, self.hparams
        z = net.encoder_rest(h)
        pred = net.decode(z, batch["time_weights"])
        nlc = nlc_loss(pred, batch["y"], eps=hp.nlc_eps, reduction=hp.nlc_reduction)
        recon = reconstruction_loss(pred, batch["y"], hp.reconstruction)
        adv = None
        if self.use_adversary and hp.dis_lambda != 0.0:
            adv = adversarial_loss(net.discriminator(z), batch["time_index"], hp.adversarial_loss)
        second, extra = recon, None
        if adv is not None:
            if hp.adversary_in_gradnorm:
                second = recon + hp.dis_lambda * adv
            else:
                extra = hp.dis_lambda * adv
        return {"nlc": nlc, "second": second, "extra": extra, "recon": recon, "adv": adv, "pred": pred}

    def task_gradients(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """GradNorm's norms ||dL_i/dW|| at MLP1's first layer and the network gradient of the weighted loss.

        One process: each task's gradient is taken at the first layer's output h only (a backward to an input
        skips every weight gradient), then one full backward of ``w1 * NLC + w2 * second (+ extra)`` gives every
        parameter's gradient: the arithmetic of two full backward passes, not three. Data-parallel runs take the
        per-task path, whose gradients are averaged over ranks before the norms (``_reduce_task_gradients``)."""
        if self.hparams.gradnorm_mode == "autograd":
            return self._task_gradients_autograd(batch)
        if world_size(self) > 1:
            return self._task_gradients_per_task(batch)
        x, h, terms, upper = self._from_first_layer(batch)
        d_nlc = torch.autograd.grad(terms["nlc"], h, retain_graph=True)[0]
        d_second = torch.autograd.grad(terms["second"], h, retain_graph=True)[0]
        w1, w2 = self.gradnorm.weights.detach().clone()  # the pre-update weights generator_step applies
        total = w1 * terms["nlc"] + w2 * terms["second"]
        if terms["extra"] is not None:
            total = total + terms["extra"]
        grads = torch.autograd.grad(total, [h, *upper], allow_unused=True)
        return {"terms": terms, "norms": _first_layer_norms(x, [d_nlc, d_second]), "x": x, "combined": True,
                "delta": grads[0], "upper": upper, "upper_grad": list(grads[1:])}

    def _task_gradients_per_task(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Every task's gradient of every generator parameter, for ``_reduce_task_gradients`` to average over
        ranks (data-parallel runs) before GradNorm takes the norms."""
        x, h, terms, upper = self._from_first_layer(batch)
        losses = [terms["nlc"], terms["second"]] + ([terms["extra"]] if terms["extra"] is not None else [])
        grads = [torch.autograd.grad(loss, [h, *upper], retain_graph=i < len(losses) - 1, allow_unused=True)
                 for i, loss in enumerate(losses)]
        return {"terms": terms, "x": x, "deltas": [g[0] for g in grads], "upper": upper,
                "upper_grads": [g[1:] for g in grads]}

    def _from_first_layer(self, batch: dict[str, torch.Tensor]):
        """The batch, the first layer's output h (a leaf: gradients are taken there, the first layer's own come
        from delta^T X), the (rank-scaled) task losses from h, and the generator parameters above the first layer."""
        net, x = self.network, batch["x"]
        with torch.no_grad():
            h = first_layer(x, net.input_layer)
        h.requires_grad_(True)
        terms = self._scaled(self.task_losses(h, batch), batch)
        upper = [*net.encoder_rest.parameters(), *net.time_parameters(), *net.decoder.parameters()]
        return x, h, terms, upper

    def _task_gradients_autograd(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        net = self.network
        h = first_layer(batch["x"], net.input_layer)
        terms = self._scaled(self.task_losses(h, batch), batch)
        params = net.generator_parameters()
        losses = [terms["nlc"], terms["second"]] + ([terms["extra"]] if terms["extra"] is not None else [])
        grads = [torch.autograd.grad(loss, params, retain_graph=i < len(losses) - 1, allow_unused=True)
                 for i, loss in enumerate(losses)]
        norms = torch.stack([grads[0][0].norm(), grads[1][0].norm()])
        return {"terms": terms, "norms": norms, "params": params, "grads": grads}

    # -- data parallelism (crossmodalnet.training.distributed; nothing happens on one process) ------------------------------
    def _scaled(self, terms: dict[str, Any], batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Loss terms times this rank's share of the global batch (``world * n_rank / n_global``), so that the mean
        over ranks of losses and gradients is the one-process value on the global batch."""
        scale = loss_scale(self, batch["y"].shape[0])
        if scale == 1.0:
            return terms
        return {k: (v * scale if isinstance(v, torch.Tensor) and k != "pred" else v) for k, v in terms.items()}

    def _reduce_task_gradients(self, tg: dict[str, Any]) -> dict[str, Any]:
        """Data-parallel: every per-task gradient and loss averaged over ranks (one collective) *before* GradNorm
        takes norms. The fast path's Gram trick cannot combine ranks, so it gets each task's explicit first-layer
        gradient (delta_i^T X) and bias gradient here."""
        terms = dict(tg["terms"])
        names = [k for k in ("nlc", "second", "extra", "recon", "adv") if terms.get(k) is not None]

        def dense(task_grads, params):
            return [torch.zeros_like(p) if g is None else g for g, p in zip(task_grads, params)]

        if "params" in tg:
            tasks = [dense(g, tg["params"]) for g in tg["grads"]]
            flat = [g for task in tasks for g in task]
        else:
            tasks = [dense(g, tg["upper"]) for g in tg["upper_grads"]]
            flat = ([_dense_t_matmul(d, tg["x"]) for d in tg["deltas"]] + [d.sum(0) for d in tg["deltas"]]
                    + [g for task in tasks for g in task])
        reduced = all_reduce_mean(self, flat + [terms[k].detach() for k in names])
        terms.update(zip(names, reduced[len(flat):]))
        n, k = len(tasks), len(tasks[0])
        out = {**tg, "terms": terms}
        if "params" in tg:
            out["grads"] = [reduced[i * k:(i + 1) * k] for i in range(n)]
            out["norms"] = torch.stack([out["grads"][0][0].norm(), out["grads"][1][0].norm()])
        else:
            out["first"], out["bias"] = reduced[:n], reduced[n:2 * n]
            out["upper_grads"] = [reduced[2 * n + i * k:2 * n + (i + 1) * k] for i in range(n)]
            out["norms"] = torch.stack([out["first"][0].norm(), out["first"][1].norm()])
        return out

    def generator_step(self, batch: dict[str, torch.Tensor], gen_opt, weight_opt) -> None:
        tg = self.task_gradients(batch)
        if world_size(self) > 1:
            tg = self._reduce_task_gradients(tg)
        terms = tg["terms"]
        nlc, second = terms["nlc"], terms["second"]
        w1, w2 = self.gradnorm.weights.detach().clone()  # a copy: the weights are updated in place below
        coefs = [w1, w2, torch.ones_like(w1)]   # the fixed-weight adversarial term (if any) has weight 1
        # GradNorm: closed-form gradient of L_G w.r.t. (w1, w2), from the pre-update network
        gn = self.gradnorm.weight_gradient(torch.stack([nlc.detach(), second.detach()]), tg["norms"])
        checked = {"NLC": nlc, "Fader" if self.hparams.adversary_in_gradnorm else "reconstruction": second,
                   "GradNorm": gn["loss"]}
        if terms["adv"] is not None:
            checked["adversarial"] = terms["adv"]
        check_finite(checked, *position(self))
        # network gradients of the weighted loss w1 * NLC + w2 * second (+ extra) alone
        gen_opt.zero_grad(set_to_none=True)
        if "params" in tg:
            for i, p in enumerate(tg["params"]):
                p.grad = _combine(coefs, [g[i] for g in tg["grads"]], p)
        elif tg.get("combined"):  # one process: the weighted loss's gradients, from one backward
            layer = self.network.input_layer
            layer.weight.grad = _dense_t_matmul(tg["delta"], tg["x"])
            layer.bias.grad = tg["delta"].sum(0)
            for p, g in zip(tg["upper"], tg["upper_grad"]):
                p.grad = torch.zeros_like(p) if g is None else g.contiguous()
        else:  # data-parallel: explicit per-task gradients, already averaged over ranks
            layer = self.network.input_layer
            layer.weight.grad = _combine(coefs, tg["first"], layer.weight)
            layer.bias.grad = _combine(coefs, tg["bias"], layer.bias)
            for i, p in enumerate(tg["upper"]):
                p.grad = _combine(coefs, [g[i] for g in tg["upper_grads"]], p)
        weight_opt.zero_grad(set_to_none=True)
        self.gradnorm.weights.grad = gn["grad"]
        weight_opt.step()
        gen_opt.step()
        self.gradnorm.renormalise()
        extra = terms["extra"].detach() if terms["extra"] is not None else 0.0
        logged = {"train/loss": w1 * nlc.detach() + w2 * second.detach() + extra, "train/nlc": nlc.detach(),
                  "train/fader": second.detach(), "train/recon": terms["recon"].detach(),
                  "train/gradnorm_loss": gn["loss"], "train/gradnorm_skipped": gn["skipped"]}
        if terms["adv"] is not None:
            logged["train/adv"] = terms["adv"].detach()
        self._accumulate(logged, batch["y"].shape[0])

    # -- epoch means of the training losses -------------------------------------------------------------------------
    def _accumulate(self, values: dict[str, Any], n: int) -> None:
        """Batch-size-weighted running sums, logged once per epoch: the same epoch means as ``self.log(...,
        on_epoch=True)`` per step, without its per-call cost (about a millisecond each, 7 per step)."""
        for key, value in values.items():
            value = value.detach() if isinstance(value, torch.Tensor) else torch.tensor(float(value))
            total, count = self._epoch_sums.get(key, (0.0, 0))
            self._epoch_sums[key] = (total + value.float() * n, count + n)

    def on_train_epoch_start(self) -> None:
        self._epoch_sums = {}

    def on_train_epoch_end(self) -> None:
        means = {key: total / count for key, (total, count) in self._epoch_sums.items()}
        w = self.gradnorm.weights.detach()
        self.log_dict({**means, "train/w_nlc": w[0], "train/w_fader": w[1]}, on_step=False, on_epoch=True)

    # -- checkpoint metadata ------------------------------------------------------------------------------------------
    def checkpoint_metadata(self) -> dict:
        return {**super().checkpoint_metadata(), "time_axis": self.time_axis.to_dict()}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        # Algorithm 1's step counter decides which steps train the discriminator: a resumed run must continue it
        checkpoint["crossmodalnet_steps"] = {"train_steps": self.train_steps,
                                             "discriminator": self.n_discriminator_steps,
                                             "generator": self.n_generator_steps}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        steps = checkpoint.get("crossmodalnet_steps", {})
        self.train_steps = int(steps.get("train_steps", 0))
        self.n_discriminator_steps = int(steps.get("discriminator", 0))
        self.n_generator_steps = int(steps.get("generator", 0))


def _combine(coefs: list[torch.Tensor], grads: list[torch.Tensor | None], p: nn.Parameter) -> torch.Tensor:
    """sum_i coef_i * grad_i for one parameter (a task that does not reach it contributes zero)."""
    total = torch.zeros_like(p)
    for c, g in zip(coefs, grads):
        if g is not None:
            total = total + c * g
    return total.contiguous()  # fused Adam needs a gradient laid out like its parameter
