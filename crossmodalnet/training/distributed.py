"""Data-parallel training that is the single-process algorithm on the global batch (docs/distributed.md).

Lightning's DDP strategy starts the processes and reduces the gradients of models trained with automatic
optimisation (the MLPs). CrossmodalNet sets its gradients by hand (manual optimisation: two task gradients,
GradNorm's norms, a discriminator step), which DDP's reducer never sees, so the model reduces them itself with
the helpers here, through the strategy (``trainer.strategy.reduce``). On one process every helper returns at once.

* :class:`GlobalBatchSampler`: ``data.batch_size`` is the *global* batch. Every rank draws the same permutation
  (seeded by the run's seed and the epoch, so a resumed run and every rank see the same order) and takes its
  contiguous share of each global batch.
* :func:`loss_scale`: shards of one global batch may differ by a cell; scaling each rank's mean loss by
  ``world * n_rank / n_global`` makes the mean over ranks of the gradients the gradient of the global mean.
* :func:`all_reduce_mean`: one collective for a list of tensors (flattened into one buffer).
* :class:`GlobalBatchNorm1d` / :class:`GlobalBatchNormSync` (``trainer.sync_batchnorm=true``): BatchNorm with the
  statistics of the global batch, in plain differentiable PyTorch (``torch.distributed.nn.all_reduce``). Torch's
  own SyncBatchNorm runs only on GPUs and cannot be differentiated twice, which the discriminator's gradient
  penalty needs; this one runs on CPU (gloo) and GPU (NCCL) and supports both.
* :class:`DistributedTraining` (added by ``train.build_trainer``): reseeds torch's RNG at every batch from
  (seed, epoch, batch, rank), so dropout masks after a resume are those of an uninterrupted run, and, without
  synchronised BatchNorm, averages the BatchNorm running statistics across ranks before each validation so that
  every rank evaluates (and checkpoints) the same model.
"""
from __future__ import annotations


import lightning as L
import torch
from lightning.pytorch.plugins.layer_sync import LayerSync
from torch import nn

from crossmodalnet.data.sampler import GlobalBatchSampler  # noqa: F401  (documented here)
from crossmodalnet.models.sync import all_reduce_mean, loss_scale, sync_gradients, world_size  # noqa: F401


# -- BatchNorm over the global batch --------------------------------------------------------------------------------
class GlobalBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose training statistics are those of the global batch (all ranks); plain BatchNorm on one
    process and in eval mode. Differentiable (twice) through ``torch.distributed.nn.functional.all_reduce``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        count = torch.full((1,), float(x.shape[0]), dtype=x.dtype, device=x.device)
        total = all_reduce(torch.cat([x.sum(0), count]))          # sum and count over the global batch
        n = total[c]
        mean = total[:c] / n
        sq = all_reduce((x - mean).pow(2).sum(0))                  # two passes, like torch's own BatchNorm
        var = sq / n
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = (1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum)
                unbiased = var.detach() * (n.detach() / (n.detach() - 1).clamp_min(1))
                self.running_mean.mul_(1 - factor).add_(mean.detach() * factor)
                self.running_var.mul_(1 - factor).add_(unbiased * factor)
        out = (x - mean) / torch.sqrt(var + self.eps)
        if self.affine:
            out = out * self.weight + self.bias
        return out


class GlobalBatchNormSync(LayerSync):
    """Lightning layer-sync plugin (``trainer.sync_batchnorm=true``): every BatchNorm1d computes global-batch
    statistics. The modules keep their parameters (only their class changes), so optimisers and checkpoints
    are untouched."""

    def apply(self, model: nn.Module) -> nn.Module:
        for m in model.modules():
            if type(m) is nn.BatchNorm1d:
                m.__class__ = GlobalBatchNorm1d
        return model

    def revert(self, model: nn.Module) -> nn.Module:
        for m in model.modules():
            if type(m) is GlobalBatchNorm1d:
                m.__class__ = nn.BatchNorm1d
        return model


def uses_global_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, GlobalBatchNorm1d) for m in model.modules())


# -- the per-run callback -----------------------------------------------------------------------------------------
class DistributedTraining(L.Callback):
    """Per-epoch RNG seeding (resume and ranks) and BatchNorm statistics kept equal across ranks."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        # per batch, not per epoch: Lightning draws from torch's RNG when it creates the epoch's data iterator,
        # earlier on a resumed run than on an uninterrupted one
        torch.manual_seed(((self.seed * 1_000_003 + trainer.current_epoch) * 100_003 + batch_idx) * 1_009
                          + trainer.global_rank)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.world_size > 1 and not uses_global_batchnorm(pl_module):
            sync_batchnorm_statistics(pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.world_size > 1 and not uses_global_batchnorm(pl_module):
            sync_batchnorm_statistics(pl_module)


def sync_batchnorm_statistics(module: L.LightningModule) -> None:
    """Average BatchNorm running statistics over ranks (per-rank statistics otherwise drift apart)."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             and m.track_running_stats and m.running_mean is not None]
    if not norms:
        return
    stats = [t for m in norms for t in (m.running_mean, m.running_var)]
    for t, mean in zip(stats, all_reduce_mean(module, stats)):
        t.copy_(mean)


class ReplicaCheck(L.Callback):
    """Checks that data parallelism kept one model: at the end of training every rank compares its parameters
    and buffers with rank 0's; rank 0 writes ``<run dir>/replicas.json`` (world size, largest difference).

    Add it to any run with ``+callbacks.replica_check._target_=crossmodalnet.training.distributed.ReplicaCheck`` (one
    broadcast of the model; a cluster set-up check, used by tests/test_distributed.py)."""

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import json
        from pathlib import Path

        if trainer.world_size > 1 and not uses_global_batchnorm(pl_module):
            sync_batchnorm_statistics(pl_module)
        state = pl_module.state_dict()
        flat = torch.cat([t.detach().reshape(-1).double() for t in state.values() if t.is_floating_point()])
        reference = trainer.strategy.broadcast(flat.clone(), src=0)
        worst = trainer.strategy.reduce((flat - reference).abs().max(), reduce_op="max")
        if trainer.global_rank == 0:
            out = {"world_size": trainer.world_size, "max_abs_diff": float(worst), "n_values": int(flat.numel())}
            Path(trainer.default_root_dir, "replicas.json").write_text(json.dumps(out, indent=2))
