"""Checks that turn a training set-up that cannot work into one ``error: ...`` line (exit 2) before anything
starts: a checkpoint to resume from that belongs to another model or gene set, a strategy the models cannot
use, a multi-process run of a fit/predict baseline, an accelerator that this machine does not have.

Resuming itself is Lightning's: ``trainer.fit(ckpt_path=...)`` restores the weights, GradNorm's weights and
initial losses (parameters and buffers), every optimiser's state, CrossmodalNet's step counter (its
``on_save_checkpoint``), the epoch and the loops, and the state of early stopping and of the best-checkpoint
callback. The data order of every epoch depends only on (seed, epoch) and torch's RNG is reseeded at each batch
(:mod:`crossmodalnet.training.distributed`), so a resumed run continues exactly where the killed one stopped.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from crossmodalnet.data.validate import DataError

#: strategies whose processes each run train() (one process per device, started by Lightning or by torchrun/SLURM)
SUPPORTED_STRATEGIES = ("auto", "single_device", "ddp", "ddp_find_unused_parameters_false",
                        "ddp_find_unused_parameters_true")


def strategy_name(trainer_cfg: DictConfig | dict) -> str:
    strategy = trainer_cfg.get("strategy", "auto")
    if strategy is None:
        return "auto"
    if isinstance(strategy, str):
        return strategy
    target = strategy.get("_target_", "") if hasattr(strategy, "get") else type(strategy).__name__
    return str(target)


def check_strategy(trainer_cfg: DictConfig | dict) -> None:
    """Only data parallelism (DDP) keeps CrossmodalNet's hand-made gradient steps correct; say so in one line."""
    name = strategy_name(trainer_cfg)
    if name in SUPPORTED_STRATEGIES or name.endswith("strategies.DDPStrategy"):
        return
    raise DataError(f"trainer.strategy={name} is not supported: the models train data-parallel with "
                    f"trainer.strategy=ddp (or trainer=ddp), one process per device started by Lightning, torchrun "
                    f"or SLURM (docs/distributed.md); supported: {', '.join(SUPPORTED_STRATEGIES)}")


def check_accelerator(trainer_cfg: DictConfig | dict) -> None:
    """A GPU asked for where torch sees none: say so before the data is loaded (minutes on a big data set)."""
    accelerator = str(trainer_cfg.get("accelerator", "auto") or "auto").lower()
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        why = ("this torch build has no CUDA support" if torch.version.cuda is None
               else "torch sees no CUDA device (driver, CUDA_VISIBLE_DEVICES?)")
        raise DataError(f"trainer: trainer.accelerator={accelerator} but {why}; use trainer.accelerator=cpu "
                        f"(or auto), or run on a machine with a GPU")


def _count_devices(devices: Any) -> int | None:
    """How many devices ``trainer.devices`` asks for (None: "auto"/-1, i.e. as many as there are)."""
    if isinstance(devices, int):
        return None if devices == -1 else devices
    if isinstance(devices, str):
        text = devices.strip()
        if text in ("auto", "-1"):
            return None
        return len([d for d in text.split(",") if d.strip()]) if "," in text else int(text)
    try:
        return len(list(devices))
    except TypeError:
        return 1


def multi_process_requested(trainer_cfg: DictConfig | dict) -> bool:
    """Whether this run is (or may be) one of several processes: a DDP strategy over several devices or nodes,
    or a launcher (torchrun, SLURM with several tasks) that set WORLD_SIZE > 1."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        return True
    name = strategy_name(trainer_cfg)
    if name == "single_device":
        return False
    devices = _count_devices(trainer_cfg.get("devices", 1))
    if int(trainer_cfg.get("num_nodes", 1) or 1) > 1 or (devices is not None and devices > 1):
        return True  # (strategy=auto with several devices is DDP too)
    return devices is None and name != "auto"


def check_baseline_setup(name: str, trainer_cfg: DictConfig | dict, ckpt_path: str | None) -> None:
    """Fit/predict baselines run in one process and have nothing to resume."""
    if multi_process_requested(trainer_cfg):
        raise DataError(f"model {name} is a fit/predict baseline that runs in one process; drop "
                        f"trainer.strategy={strategy_name(trainer_cfg)} (and trainer.devices / trainer.num_nodes) "
                        f"for it, or launch it without torchrun/srun")
    if ckpt_path:
        raise DataError(f"ckpt_path={ckpt_path}: model {name} is a fit/predict baseline; it has no training to "
                        f"resume (run it again, it is fast)")


def check_resume_checkpoint(path: str | Path, model: torch.nn.Module, gene_names: list[str],
                            protein_names: list[str]) -> dict:
    """Refuse (one line) a checkpoint that cannot continue this run: missing, unreadable, another model or
    architecture, another gene set or gene order, other proteins. Returns the loaded checkpoint."""
    from crossmodalnet.models.base import CHECKPOINT_KEY

    path = Path(path)
    if not path.is_file():
        raise DataError(f"ckpt_path={path}: no such checkpoint (a killed run's is <run dir>/checkpoints/last.ckpt)")
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as err:  # truncated or not a checkpoint at all
        raise DataError(f"ckpt_path={path}: not a readable Lightning checkpoint ({type(err).__name__}: "
                        f"{str(err).splitlines()[0] if str(err) else ''})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "loops" not in ckpt:
        raise DataError(f"ckpt_path={path}: not a training checkpoint of train.py (no state_dict/loop state)")
    meta = ckpt.get(CHECKPOINT_KEY) or {}
    for what, theirs, ours in (("genes", meta.get("gene_names"), gene_names),
                               ("proteins", meta.get("protein_names"), protein_names)):
        if theirs is None or list(theirs) == list(ours):
            continue
        theirs, ours = list(theirs), list(ours)
        only_ckpt = [g for g in theirs if g not in set(ours)]
        only_data = [g for g in ours if g not in set(theirs)]
        if only_ckpt or only_data:
            detail = (f"e.g. {only_ckpt[0]!r} only in the checkpoint" if only_ckpt
                      else f"e.g. {only_data[0]!r} only in the data")
            raise DataError(f"ckpt_path={path} was trained on other {what} ({len(theirs)} vs {len(ours)} here; "
                            f"{detail}); resume with the run's own data config")
        first = next(i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b)
        raise DataError(f"ckpt_path={path}: the {what} are in another order than in the checkpoint (position {first}: "
                        f"{theirs[first]!r} vs {ours[first]!r}); resume with the run's own data config")
    saved = ckpt["state_dict"]
    current = model.state_dict()
    # parameters, not buffers: a buffer added in a later version gets its default on load (e.g. GradNorm's)
    missing = sorted({name for name, _ in model.named_parameters()} - set(saved))
    unexpected = sorted(set(saved) - set(current))
    if missing or unexpected:
        which = (f"it lacks {missing[:3]}" if missing else f"it has {unexpected[:3]}")
        raise DataError(f"ckpt_path={path} holds another model than model={type(model).__name__} ({which}); "
                        f"resume with the model config the run was started with")
    for key, value in current.items():
        if key in saved and tuple(saved[key].shape) != tuple(value.shape):
            hint = ("; the input width differs: the run may have read the genes or another number of SVD "
                    "components (data.preprocess.svd_components; its default 'auto' reads 128 components above "
                    "5,000 genes)" if key.endswith("input_layer.weight") else "")
            raise DataError(f"ckpt_path={path}: parameter {key} has shape {tuple(saved[key].shape)} in the "
                            f"checkpoint but {tuple(value.shape)} in this model; resume with the run's own "
                            f"config{hint}")
    return ckpt


def trainer_error(err: BaseException) -> DataError | None:
    """A Trainer that cannot be built for this machine (no GPU, a strategy that needs one, an unknown name) as
    one line; None for anything else."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    if not isinstance(err, (MisconfigurationException, ValueError, RuntimeError)):
        return None
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if "gpu" in text.lower() or "cuda" in text.lower() or "accelerator" in text.lower():
        hint = "this machine has no usable GPU; use trainer.accelerator=cpu (or auto)"
        return DataError(f"trainer: {text} ({hint})")
    if "strategy" in text.lower() or "devices" in text.lower() or "num_nodes" in text.lower():
        return DataError(f"trainer: {text}")
    return None
