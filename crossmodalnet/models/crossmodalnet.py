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

from crossmodalnet.data.timepoints import TimeAxis
from crossmodalnet.models.losses import (ADVERSARIAL_LOSSES, RECONSTRUCTIONS, adversarial_loss, discriminator_loss,
                                  gradient_penalty, nlc_loss, reconstruction_loss)
from crossmodalnet.models.sync import all_reduce_mean, loss_scale, sync_gradients, world_size
from crossmodalnet.models.finite import check_finite, position
from crossmodalnet.models.base import ProteinRegressor, adam
from crossmodalnet.models.gradnorm import GradNorm
from crossmodalnet.models.generator_gradients import (AutogradGradients, CombinedGradients, PerTaskGradients,
                                                     TaskGradients, TaskLosses, first_layer_norms)
from crossmodalnet.models.network import CrossmodalNetwork, first_layer

log = logging.getLogger(__name__)


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
        time_lr: float | None = None,
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
        params = self.network.generator_parameters()
        time_lr = hp.get("time_lr")
        if time_lr is not None and time_lr != hp.lr:
            # the time terms start at zero and must reach O(1) per-protein offsets and gains: at the network's
            # rate (Adam moves each entry ~lr per step) that takes hundreds of steps on a few thousand cells
            time_ids = {id(p) for p in self.network.time_parameters()}
            params = [{"params": [p for p in params if id(p) not in time_ids]},
                      {"params": self.network.time_parameters(), "lr": float(time_lr)}]
        gen = adam(params, lr=hp.lr, weight_decay=hp.weight_decay)
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

    def task_losses(self, h: torch.Tensor, batch: dict[str, torch.Tensor]) -> TaskLosses:
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
        return TaskLosses(nlc=nlc, second=second, extra=extra, recon=recon, adv=adv, pred=pred)

    @property
    def second_task(self) -> str:
        """Name of GradNorm's second task in logs: the Fader loss when the adversary is inside it, else the
        reconstruction (``train/w_fader`` or ``train/w_recon``)."""
        return "fader" if self.hparams.adversary_in_gradnorm and self.use_adversary else "recon"

    def task_gradients(self, batch: dict[str, torch.Tensor]) -> TaskGradients:
        """GradNorm's norms ||dL_i/dW|| at MLP1's first layer and the network gradient of the weighted loss
        (crossmodalnet.models.generator_gradients: one class per way of computing them)."""
        if self.hparams.gradnorm_mode == "autograd":
            return self._autograd_gradients(batch)
        if world_size(self) > 1:
            return self._per_task_gradients(batch)
        x, h, losses, upper = self._from_first_layer(batch)
        d_nlc = torch.autograd.grad(losses.nlc, h, retain_graph=True)[0]
        d_second = torch.autograd.grad(losses.second, h, retain_graph=True)[0]
        w1, w2 = self.gradnorm.weights.detach().clone()  # the pre-update weights generator_step applies
        grads = torch.autograd.grad(losses.weighted(w1, w2), [h, *upper], allow_unused=True)
        return CombinedGradients(losses, first_layer_norms(x, [d_nlc, d_second]), x=x, delta=grads[0],
                                 upper=upper, upper_grad=list(grads[1:]))

    def _per_task_gradients(self, batch: dict[str, torch.Tensor]) -> PerTaskGradients:
        x, h, losses, upper = self._from_first_layer(batch)
        terms = losses.differentiated()
        grads = [torch.autograd.grad(loss, [h, *upper], retain_graph=i < len(terms) - 1, allow_unused=True)
                 for i, loss in enumerate(terms)]
        return PerTaskGradients(losses, None, x=x, deltas=[g[0] for g in grads], upper=upper,
                                upper_grads=[list(g[1:]) for g in grads])

    def _from_first_layer(self, batch: dict[str, torch.Tensor]):
        """The batch, the first layer's output h (a leaf: gradients are taken there, the first layer's own come
        from delta^T X), the (rank-scaled) task losses from h, and the generator parameters above the first layer."""
        net, x = self.network, batch["x"]
        with torch.no_grad():
            h = first_layer(x, net.input_layer)
        h.requires_grad_(True)
        losses = self.task_losses(h, batch).scaled(loss_scale(self, batch["y"].shape[0]))
        upper = [*net.encoder_rest.parameters(), *net.time_parameters(), *net.decoder.parameters()]
        return x, h, losses, upper

    def _autograd_gradients(self, batch: dict[str, torch.Tensor]) -> AutogradGradients:
        net = self.network
        h = first_layer(batch["x"], net.input_layer)
        losses = self.task_losses(h, batch).scaled(loss_scale(self, batch["y"].shape[0]))
        params = net.generator_parameters()
        terms = losses.differentiated()
        grads = [list(torch.autograd.grad(loss, params, retain_graph=i < len(terms) - 1, allow_unused=True))
                 for i, loss in enumerate(terms)]
        return AutogradGradients(losses, torch.stack([grads[0][0].norm(), grads[1][0].norm()]), params=params,
                                 grads=grads)

    def generator_step(self, batch: dict[str, torch.Tensor], gen_opt, weight_opt) -> None:
        tg = self.task_gradients(batch)
        if world_size(self) > 1:  # data-parallel: per-task gradients and losses averaged over ranks
            tg = tg.reduced(self)
        losses = tg.losses
        nlc, second = losses.nlc, losses.second
        w1, w2 = self.gradnorm.weights.detach().clone()  # a copy: the weights are updated in place below
        coefs = [w1, w2, torch.ones_like(w1)]   # the fixed-weight adversarial term (if any) has weight 1
        # GradNorm: closed-form gradient of L_G w.r.t. (w1, w2), from the pre-update network
        gn = self.gradnorm.weight_gradient(torch.stack([nlc.detach(), second.detach()]), tg.norms)
        checked = {"NLC": nlc, "Fader" if self.second_task == "fader" else "reconstruction": second,
                   "GradNorm": gn["loss"]}
        if losses.adv is not None:
            checked["adversarial"] = losses.adv
        check_finite(checked, *position(self))
        # network gradients of the weighted loss w1 * NLC + w2 * second (+ extra) alone
        gen_opt.zero_grad(set_to_none=True)
        tg.apply(coefs, self.network)
        weight_opt.zero_grad(set_to_none=True)
        self.gradnorm.weights.grad = gn["grad"]
        weight_opt.step()
        gen_opt.step()
        self.gradnorm.renormalise()
        extra = losses.extra.detach() if losses.extra is not None else 0.0
        logged = {"train/loss": w1 * nlc.detach() + w2 * second.detach() + extra, "train/nlc": nlc.detach(),
                  "train/recon": losses.recon.detach(),
                  "train/gradnorm_loss": gn["loss"], "train/gradnorm_skipped": gn["skipped"]}
        if self.second_task == "fader":
            logged["train/fader"] = second.detach()
        if losses.adv is not None:
            logged["train/adv"] = losses.adv.detach()
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
        self.log_dict({**means, "train/w_nlc": w[0], f"train/w_{self.second_task}": w[1]}, on_step=False,
                      on_epoch=True)

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
