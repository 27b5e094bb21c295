"""Ray Tune random search over a YAML search space (the paper's Table S1), every trial = ``train(cfg)``.

The space is written once in ``configs/hparams_search/<name>.yaml`` (rows keyed by config keys such as
``model.lr``); :func:`load_search_space` checks every row against the composed config and turns it into Ray Tune
domains. :func:`run_sweep` runs the ``Tuner`` (locally or on a Ray cluster), and ``crossmodalnet.tune.results``
writes the CSV, the top-k Markdown, the best configuration and the plot.
"""
from __future__ import annotations

import copy
import logging
import os
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

# Before Ray is imported anywhere: no usage statistics (no network), and Ray leaves CUDA_VISIBLE_DEVICES alone
# for zero-GPU trials (we put such trials on the CPU ourselves, see _trial).
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")

from omegaconf import DictConfig, OmegaConf, open_dict

from crossmodalnet.tune.space import (DRIVER_ONLY_KEYS, Hyperparameter, TuneConfigError,  # noqa: F401
                                      apply_params, current_values, load_search_space, param_space)

log = logging.getLogger("crossmodalnet")

#: stands for the trial's run dir in the config shipped to trials (resolved in the driver, filled in the trial)
TRIAL_RUN_DIR = "@CROSSMODALNET_TRIAL_RUN_DIR@"
#: sections of the sweep's config that only the driver reads
def fill_token(node: Any, token: str, value: str) -> Any:
    if isinstance(node, dict):
        return {k: fill_token(v, token, value) for k, v in node.items()}
    if isinstance(node, list):
        return [fill_token(v, token, value) for v in node]
    if isinstance(node, str) and token in node:
        return node.replace(token, value)
    return node


def trial_dirname(trial) -> str:
    """Short trial directory names (Ray's default spells out every hyperparameter)."""
    return f"trial_{trial.trial_id}"


def _trial(params: dict[str, Any], *, base: dict, space: dict[str, Hyperparameter], experiment_dir: str | None,
           driver_cwd: str, cpus: float, gpus: float) -> None:
    """One trial: the sweep's config + the sampled values, trained by the same ``train(cfg)`` as train.py."""
    from ray import tune

    from crossmodalnet.training.run import train
    from crossmodalnet.tune.callback import CHECKPOINT_FILE, TuneReportCallback

    trial_id = tune.get_context().get_trial_id()
    # the run dir lies in the trial's directory of the experiment (plain or shared file system); with a URI
    # storage it lies in the trial's working directory, which Ray syncs to the storage
    root = Path(experiment_dir) / f"trial_{trial_id}" if experiment_dir else Path.cwd()
    run_dir = root / "run"
    cfg = OmegaConf.create(fill_token(copy.deepcopy(base), TRIAL_RUN_DIR, str(run_dir)))
    apply_params(cfg, params, space)
    if not cfg.get("torch_threads"):
        cfg.torch_threads = max(1, int(cpus))
    if not gpus:
        cfg.trainer.accelerator = "cpu"
    checkpoint = tune.get_checkpoint()  # the last epoch's checkpoint of an interrupted / paused attempt
    if checkpoint is not None:
        # continue from it (train's ckpt_path): weights, optimisers, GradNorm, step counter, early stopping; the
        # run dir of the earlier attempt is kept (its best checkpoint may be the best of the whole trial)
        restored = Path(checkpoint.to_directory(str(root / "restored_checkpoint"))) / CHECKPOINT_FILE
        cfg.ckpt_path = str(restored)
        log.info("trial %s resumes from its checkpoint of epoch %s", trial_id,
                 checkpoint.get_metadata().get("epoch", "?") if hasattr(checkpoint, "get_metadata") else "?")
    elif run_dir.exists():  # an earlier attempt of this very trial that left no checkpoint: start again
        shutil.rmtree(run_dir)
    if experiment_dir and driver_cwd and os.path.isdir(driver_cwd):
        os.chdir(driver_cwd)  # relative data paths mean what they mean for train.py
    reporter = TuneReportCallback()
    metrics = train(cfg, callbacks=[reporter])
    final = {**reporter.last, **{k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}}
    final.update(run_dir=str(run_dir), completed=1)
    tune.report(final)


def trial_base_config(cfg: DictConfig) -> dict:
    """The sweep's config resolved in the driver (``hydra:`` and ``oc.env`` interpolations are not available in a
    Ray worker), with the run dir left as :data:`TRIAL_RUN_DIR` for each trial to fill in."""
    c = copy.deepcopy(cfg)
    if "hydra" in c:  # composed with return_hydra_config=True
        with open_dict(c):
            del c["hydra"]
    root = Path(str(OmegaConf.select(cfg, "paths.root_dir", default=".") or ".")).resolve()
    OmegaConf.update(c, "paths.root_dir", str(root), merge=False, force_add=True)
    OmegaConf.update(c, "paths.output_dir", TRIAL_RUN_DIR, merge=False, force_add=True)
    out = OmegaConf.to_container(c, resolve=True)
    for key in DRIVER_ONLY_KEYS:
        out.pop(key, None)
    # no progress bars: many trials write to one log
    callbacks = out.get("callbacks") or {}
    for name, cb in list(callbacks.items()):
        if isinstance(cb, dict) and "ProgressBar" in str(cb.get("_target_", "")):
            callbacks[name] = None
    if isinstance(out.get("trainer"), dict):
        out["trainer"]["enable_progress_bar"] = False
    return out


# -- Ray -----------------------------------------------------------------------------------------------------------
def _host_port(address: str) -> tuple[str, int]:
    client = address.startswith("ray://")
    rest = address[len("ray://"):] if client else address
    host, sep, port = rest.rpartition(":")
    if not sep:
        host, port = rest, "10001" if client else "6379"
    if not host or not port.isdigit():
        raise TuneConfigError(f"ray.address={address!r} is not HOST:PORT, ray://HOST:PORT or auto")
    return host, int(port)


def check_ray_address(address: str, timeout: float = 5.0) -> None:
    """Fail fast, in one line, when a cluster address cannot be reached (Ray itself would retry for minutes)."""
    if address == "auto":
        return  # Ray looks for the cluster started on this machine; its ConnectionError is reworded in connect_ray
    host, port = _host_port(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as err:
        raise TuneConfigError(
            f"ray.address={address}: cannot reach a Ray cluster at {host}:{port} ({err.strerror or err}); "
            f"start one there with `ray start --head --port={port}`, or leave ray.address=null to run on a local Ray"
        ) from None


def connect_ray(ray_cfg: Mapping[str, Any]) -> bool:
    """Join ``ray.address`` or start a local Ray; returns whether this call connected (so it disconnects after)."""
    import ray

    address = ray_cfg.get("address")
    if address not in (None, "", "local"):
        check_ray_address(str(address))
    if ray.is_initialized():  # the caller's own connection (e.g. a notebook that ran ray.init)
        return False
    runtime_env = dict(ray_cfg.get("runtime_env") or {}) or None
    if address in (None, "", "local"):
        ray.init(address="local", num_cpus=ray_cfg.get("num_cpus"), num_gpus=ray_cfg.get("num_gpus"),
                 include_dashboard=bool(ray_cfg.get("include_dashboard", False)), runtime_env=runtime_env)
        return True
    address = str(address)
    try:
        ray.init(address=address, runtime_env=runtime_env)
    except (ConnectionError, TimeoutError) as err:
        hint = ("no running Ray cluster was found on this machine; start one with `ray start --head`"
                if address == "auto" else str(err).splitlines()[0])
        raise TuneConfigError(f"ray.address={address}: {hint} (or leave ray.address=null for a local Ray)") from None
    return True


# -- the sweep -----------------------------------------------------------------------------------------------------
@dataclass
class SweepOutcome:
    """What a sweep left behind (all files lie in ``out_dir``)."""

    out_dir: Path
    experiment_path: str
    table: Any                       # pandas DataFrame, one row per trial, best first
    files: dict[str, Path] = field(default_factory=dict)
    interrupted: bool = False
    resumed: bool = False
    space: dict[str, Hyperparameter] = field(default_factory=dict)   # the rows searched


def _settings(cfg: DictConfig) -> DictConfig:
    s = cfg.get("tune")
    if s is None:
        raise TuneConfigError("no 'tune:' section (sweep settings); run scripts/tune.py, "
                              "which composes configs/tune.yaml")
    if s.mode not in ("max", "min"):
        raise TuneConfigError(f"tune.mode must be max or min, got {s.mode!r}")
    if not str(s.metric).startswith("val/"):
        raise TuneConfigError(f"tune.metric must be a validation metric reported every epoch (val/pearson_cell, "
                              f"val/pearson_protein, val/mse), got {s.metric!r}")
    if int(s.num_samples) < 1:
        raise TuneConfigError(f"tune.num_samples must be >= 1, got {s.num_samples}")
    res = s.resources_per_trial
    if not (float(res.cpu) > 0 and float(res.get("gpu", 0) or 0) >= 0):
        raise TuneConfigError(f"tune.resources_per_trial needs cpu > 0 and gpu >= 0, got {dict(res)}")
    if s.resume not in ("auto", True, False):
        raise TuneConfigError(f"tune.resume must be auto, true or false, got {s.resume!r}")
    return s


def _scheduler(s: DictConfig, cfg: DictConfig):
    if not s.asha:
        return None
    from ray.tune.schedulers import ASHAScheduler

    # time = the trial's epoch (not Tune's iteration count, which a trial resumed from its checkpoint advances
    # again for the epochs it re-does); max_t one past the last epoch, so ASHA never stops a trial that survived
    # every rung before its final report (test metrics, same epoch as the last one)
    max_t = int(cfg.trainer.max_epochs) + 1
    return ASHAScheduler(time_attr="epoch", max_t=max_t,
                         grace_period=min(int(s.asha_grace_period), max_t), reduction_factor=s.asha_reduction_factor)


def _first_points(s: DictConfig, cfg: DictConfig, space: Mapping[str, Hyperparameter]) -> list[dict[str, Any]]:
    """``tune.include_default``: the first trial runs the composed config's own values (it counts against
    ``num_samples``, replacing one random draw)."""
    if not s.get("include_default", False):
        return []
    point = current_values(cfg, space)
    log.info("the first trial runs the config's own values: %s", point)
    return [point]


def run_sweep(cfg: DictConfig, choices: Mapping[str, Any] | None = None) -> SweepOutcome:
    """Run (or resume) the random search described by ``cfg.tune`` over ``cfg.hparams_search``.

    ``choices`` are Hydra's config-group choices of this run (data, model, experiment ...): the best configuration
    is written as an experiment file that selects the same groups.
    """
    s = _settings(cfg)
    chosen = (choices or {}).get("hparams_search")
    source = f"the search space hparams_search/{chosen}.yaml" if chosen else "the search space (hparams_search)"
    space = load_search_space(cfg.get("hparams_search"), cfg, source)
    ray_cfg = OmegaConf.to_container(cfg.ray, resolve=True) if cfg.get("ray") else {}
    if ray_cfg.get("address") not in (None, "", "local", "auto"):
        check_ray_address(str(ray_cfg["address"]))  # before anything starts

    from ray import tune

    from crossmodalnet.tune import results as tune_results

    out_dir = Path(cfg.paths.output_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    storage = str(s.storage_path or out_dir)
    uri = "://" in storage
    if not uri:
        storage = str(Path(storage).resolve())
    experiment_path = f"{storage.rstrip('/')}/{s.name}"

    exists = tune.Tuner.can_restore(experiment_path)
    if s.resume is True and not exists:
        raise TuneConfigError(f"tune.resume=true but there is no sweep to resume at {experiment_path}")
    if s.resume is False and exists:
        raise TuneConfigError(f"a sweep already exists at {experiment_path}; resume it with tune.resume=auto or "
                              "start a new one in another hydra.run.dir")
    resume = exists and s.resume in ("auto", True)

    res = s.resources_per_trial
    cpus, gpus = float(res.cpu), float(res.get("gpu", 0) or 0)
    trainable = tune.with_resources(
        tune.with_parameters(_trial, base=trial_base_config(cfg), space=space,
                             experiment_dir=None if uri else experiment_path, driver_cwd=os.getcwd(),
                             cpus=cpus, gpus=gpus),
        {"cpu": cpus, "gpu": gpus})

    connected = connect_ray(ray_cfg)
    try:
        if resume:
            log.info("resuming the sweep at %s", experiment_path)
            tuner = tune.Tuner.restore(experiment_path, trainable=trainable, resume_unfinished=True,
                                       resume_errored=False, restart_errored=bool(s.restart_errored))
        else:
            from ray.tune.search.basic_variant import BasicVariantGenerator

            tuner = tune.Tuner(
                trainable,
                param_space=param_space(space),
                tune_config=tune.TuneConfig(
                    metric=s.metric, mode=s.mode, num_samples=int(s.num_samples),
                    # random search; Tune ignores TuneConfig.max_concurrent_trials with this generator
                    search_alg=BasicVariantGenerator(random_state=int(s.seed),
                                                     max_concurrent=int(s.max_concurrent_trials or 0),
                                                     points_to_evaluate=_first_points(s, cfg, space)),
                    scheduler=_scheduler(s, cfg),
                    # (with a URI storage each trial needs its own working dir, hence its own process)
                    reuse_actors=bool(s.get("reuse_actors", False)) and not uri,
                    trial_dirname_creator=trial_dirname),
                run_config=tune.RunConfig(
                    name=s.name, storage_path=storage, verbose=int(s.verbose),
                    sync_config=tune.SyncConfig(sync_artifacts=uri),
                    # each epoch reports its checkpoint (tune_callback); the newest is all a resume needs
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                    failure_config=tune.FailureConfig(max_failures=0)),
            )
        grid = tuner.fit()
    finally:
        if connected:
            import ray

            ray.shutdown()

    # the saved experiment state is what a resume sees: after an interruption (Ctrl+C) it holds RUNNING / PENDING
    # trials (in memory they all read TERMINATED by then), or fewer trials than asked for
    saved = tune.ExperimentAnalysis(experiment_path).trials
    unfinished = [t for t in saved if t.status not in ("TERMINATED", "ERROR")]
    interrupted = bool(unfinished) or len(saved) < int(s.num_samples)
    table = tune_results.results_table(grid, space, s.metric, s.mode)
    files = tune_results.write_all(table, space, cfg, dict(choices or {}), out_dir, s)
    return SweepOutcome(out_dir=out_dir, experiment_path=experiment_path, table=table, files=files,
                        interrupted=interrupted, resumed=resume, space=space)
