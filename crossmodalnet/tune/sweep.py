"""Ray Tune random search over a YAML search space (the paper's Table S1), every trial = ``train(cfg)``.

The space is written once in ``configs/hparams_search/<name>.yaml`` (rows keyed by config keys such as
``model.lr``); :func:`load_search_space` checks every row against the composed config and turns it into Ray Tune
domains. :func:`run_sweep` runs the ``Tuner`` (locally or on a Ray cluster), and ``crossmodalnet.tune_results``
writes the CSV, the top-k Markdown, the best configuration and the plot.
"""
from __future__ import annotations

import copy
import logging
import math
import os
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

# Before Ray is imported anywhere: no usage statistics (no network), and Ray leaves CUDA_VISIBLE_DEVICES alone
# for zero-GPU trials (we put such trials on the CPU ourselves, see _trial).
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")

from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger("crossmodalnet")

#: stands for the trial's run dir in the config shipped to trials (resolved in the driver, filled in the trial)
TRIAL_RUN_DIR = "@CROSSMODALNET_TRIAL_RUN_DIR@"
#: sections of the sweep's config that only the driver reads
DRIVER_ONLY_KEYS = ("tune", "ray", "hparams_search")


class TuneConfigError(ValueError):
    """A search space, sweep setting or Ray address that cannot work (one line naming the problem)."""


# -- search space --------------------------------------------------------------------------------------------------
_FIELDS = {
    "choice": ("values",),
    "uniform": ("lower", "upper"),
    "loguniform": ("lower", "upper"),
    "quniform": ("lower", "upper", "q"),
    "qloguniform": ("lower", "upper", "q"),
    "randint": ("lower", "upper"),
    "pow10_randint": ("lower", "upper"),
}


@dataclass(frozen=True)
class Hyperparameter:
    """One row of a search space: the config key it sets and its distribution."""

    name: str
    distribution: str
    lower: float | None = None
    upper: float | None = None
    q: float | None = None
    values: tuple = ()
    default: Any = None

    @property
    def log_scale(self) -> bool:
        """Sampled across orders of magnitude (plot and importance use log10 of the value)."""
        return self.distribution in ("loguniform", "qloguniform", "pow10_randint")

    @property
    def categorical(self) -> bool:
        return self.distribution == "choice"

    def domain(self):
        """The Ray Tune domain of this row."""
        from ray import tune

        d = self.distribution
        if d == "choice":
            return tune.choice(list(self.values))
        if d == "uniform":
            return tune.uniform(self.lower, self.upper)
        if d == "loguniform":
            return tune.loguniform(self.lower, self.upper)
        if d == "quniform":
            return tune.quniform(self.lower, self.upper, self.q)
        if d == "qloguniform":
            return tune.qloguniform(self.lower, self.upper, self.q)
        if d == "randint":
            return tune.randint(int(self.lower), int(self.upper))
        # 10 ** randint(lower, upper), both ends included: the same law as a uniform choice over the powers
        return tune.choice(self.powers())

    def powers(self) -> list[float]:
        """pow10_randint's support: 10**lower ... 10**upper (exact decimal literals)."""
        return [float(f"1e{k}") for k in range(int(self.lower), int(self.upper) + 1)]

    def clean(self, value: Any) -> Any:
        """A sampled value as a plain Python value, a quantized float snapped to its grid (0.3, not 0.30000004)."""
        if hasattr(value, "item"):  # numpy scalar
            value = value.item()
        if self.q and isinstance(value, float):
            steps = round(value / self.q)
            decimals = max(0, -math.floor(math.log10(self.q))) + 6
            return round(steps * self.q, decimals)
        if self.distribution == "pow10_randint":
            return float(f"1e{round(math.log10(value))}")
        return value

    def contains(self, value: Any, tol: float = 1e-9) -> bool:
        """Whether ``value`` could have been drawn from this row (range, grid and list membership)."""
        if self.categorical:  # True is not 1 here: a bool row takes bools, a numeric row numbers
            return any(value == v and isinstance(value, bool) == isinstance(v, bool) for v in self.values)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.distribution == "pow10_randint":
            if value <= 0:
                return False
            k = math.log10(value)
            return abs(k - round(k)) < 1e-9 and self.lower <= round(k) <= self.upper
        scale = max(abs(self.lower), abs(self.upper), 1.0)
        if not (self.lower - tol * scale <= value <= self.upper + tol * scale):
            return False
        if self.distribution == "randint":
            return float(value).is_integer() and value < self.upper
        if self.q:
            steps = value / self.q
            return abs(steps - round(steps)) < 1e-6
        return True


def _row(name: str, row: Mapping[str, Any], source: str) -> Hyperparameter:
    dist = row.get("distribution")
    if dist not in _FIELDS:
        raise TuneConfigError(f"{source}: hyperparameter '{name}' has distribution {dist!r}; "
                              f"expected one of {sorted(_FIELDS)}")
    needed = _FIELDS[dist]
    missing = [f for f in needed if row.get(f) is None]
    unknown = sorted(set(row) - set(needed) - {"distribution", "default"})
    if missing or unknown:
        what = f"missing {missing}" if missing else f"unknown fields {unknown}"
        raise TuneConfigError(f"{source}: hyperparameter '{name}' ({dist}) has {what}; "
                              f"{dist} takes {list(needed)} (+ default)")
    if dist == "choice":
        values = row["values"]
        if not isinstance(values, Sequence) or isinstance(values, str) or len(values) == 0:
            raise TuneConfigError(f"{source}: hyperparameter '{name}' needs a non-empty list of values")
        return Hyperparameter(name, dist, values=tuple(values), default=row.get("default"))
    lower, upper, q = row["lower"], row["upper"], row.get("q")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lower, upper)):
        raise TuneConfigError(f"{source}: hyperparameter '{name}' needs numeric lower/upper, got {lower!r}, {upper!r}")
    if not lower < upper:
        raise TuneConfigError(f"{source}: hyperparameter '{name}' needs lower < upper, got {lower} and {upper}")
    if dist in ("loguniform", "qloguniform") and lower <= 0:
        raise TuneConfigError(f"{source}: hyperparameter '{name}' is log-uniform, so lower must be > 0 (got {lower})")
    if dist in ("randint", "pow10_randint") and not (float(lower).is_integer() and float(upper).is_integer()):
        raise TuneConfigError(f"{source}: hyperparameter '{name}' ({dist}) needs integer bounds, got {lower}, {upper}")
    if q is not None and not (isinstance(q, (int, float)) and q > 0):
        raise TuneConfigError(f"{source}: hyperparameter '{name}' needs a quantum q > 0, got {q!r}")
    return Hyperparameter(name, dist, lower=float(lower), upper=float(upper), q=None if q is None else float(q),
                          default=row.get("default"))


def _flatten(node: Mapping[str, Any], prefix: str, source: str) -> dict[str, Mapping[str, Any]]:
    rows: dict[str, Mapping[str, Any]] = {}
    for key, value in node.items():
        name = f"{prefix}{key}"
        if not isinstance(value, Mapping):
            raise TuneConfigError(f"{source}: '{name}' must be a mapping with a 'distribution' "
                                  f"(e.g. {{distribution: choice, values: [1, 2]}}), got {value!r}")
        if "distribution" in value:
            rows[name] = value
        else:
            rows.update(_flatten(value, f"{name}.", source))
    return rows


def _check_key(cfg: DictConfig, name: str, source: str) -> None:
    """``name`` must be an existing value (not a section) of the composed config."""
    node: Any = cfg
    parts = name.split(".")
    for i, part in enumerate(parts):
        parent = ".".join(parts[:i]) or "the config root"
        if not isinstance(node, DictConfig) or part not in node:
            known = ", ".join(sorted(str(k) for k in node.keys())) if isinstance(node, DictConfig) else ""
            raise TuneConfigError(f"unknown hyperparameter '{name}' in {source}: {parent} has no key '{part}'"
                                  + (f" (it has: {known})" if known else ""))
        node = node._get_node(part)
    if isinstance(node, DictConfig):
        raise TuneConfigError(f"hyperparameter '{name}' in {source} names a config section, not a value")


def load_search_space(search: Mapping[str, Any] | DictConfig | None, cfg: DictConfig,
                      source: str = "hparams_search") -> dict[str, Hyperparameter]:
    """Rows of ``search.space`` (nested by config key) as Hyperparameters, each checked against ``cfg``."""
    if search is None:
        raise TuneConfigError("no search space: pass hparams_search=<name> (e.g. hparams_search=table_s1, "
                              "configs/hparams_search/table_s1.yaml)")
    if isinstance(search, DictConfig):
        search = OmegaConf.to_container(search, resolve=True)
    space = search.get("space") if isinstance(search, Mapping) else None
    if not isinstance(space, Mapping) or not space:
        raise TuneConfigError(f"{source}: expected a non-empty 'space:' mapping of hyperparameters")
    rows = _flatten(space, "", source)
    out = {}
    for name, row in rows.items():
        _check_key(cfg, name, source)
        out[name] = _row(name, row, source)
    return out


def param_space(space: Mapping[str, Hyperparameter]) -> dict[str, Any]:
    """Ray Tune's ``param_space``: flat, keyed by config key."""
    return {name: hp.domain() for name, hp in space.items()}


def apply_params(cfg: DictConfig, params: Mapping[str, Any], space: Mapping[str, Hyperparameter]) -> DictConfig:
    """Set sampled values (cleaned onto their grids) on ``cfg`` in place; returns ``cfg``."""
    for name, value in params.items():
        if name not in space:
            continue
        OmegaConf.update(cfg, name, space[name].clean(value), merge=False, force_add=False)
    return cfg


# -- the trial -----------------------------------------------------------------------------------------------------
def _fill(node: Any, token: str, value: str) -> Any:
    if isinstance(node, dict):
        return {k: _fill(v, token, value) for k, v in node.items()}
    if isinstance(node, list):
        return [_fill(v, token, value) for v in node]
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

    from crossmodalnet.train import train
    from crossmodalnet.tune_callback import CHECKPOINT_FILE, TuneReportCallback

    trial_id = tune.get_context().get_trial_id()
    # the run dir lies in the trial's directory of the experiment (plain or shared file system); with a URI
    # storage it lies in the trial's working directory, which Ray syncs to the storage
    root = Path(experiment_dir) / f"trial_{trial_id}" if experiment_dir else Path.cwd()
    run_dir = root / "run"
    cfg = OmegaConf.create(_fill(copy.deepcopy(base), TRIAL_RUN_DIR, str(run_dir)))
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

    from crossmodalnet import tune_results

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
                                                     max_concurrent=int(s.max_concurrent_trials or 0)),
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
                        interrupted=interrupted, resumed=resume)
