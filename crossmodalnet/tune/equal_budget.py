"""Every method tuned with the same budget through the project's own sweep, then reported on other seeds.

Issue 18 (items 5 and 6): the paper tuned its network (Table S1) and compared it with baselines at fixed settings.
Here each method gets ``trials`` trials of :func:`crossmodalnet.tune.sweep.run_sweep` (its search space in
``configs/hparams_search/<space>.yaml``; the first trial is the shipped configuration, the others random draws),
ranked by the validation per-cell Pearson of a *selection* seed (for the simulator also a separately simulated data
set). The best configuration is then trained and tested on the *report* seeds, in every setting of the data set
(in distribution, and for the simulators a held-out middle and last day), through the same ``train(cfg)`` and
table code as ``scripts/reproduce_table1.py``. Nothing reported was seen by the selection.

Every baseline gets the time as input (``model.time_features``) where CrossmodalNet gets it, so all rows see the
same information.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from hydra import compose, initialize_config_dir

from crossmodalnet.training.tables import (COMMON_OVERRIDES, METHODS, QUICK_METHOD, SEES_TIME_ALWAYS,
                                           data_overrides, run_method)
from crossmodalnet.tune.results import metric_column
from crossmodalnet.tune.sweep import run_sweep
from crossmodalnet.utils.atomic import atomic_text, write_csv
from crossmodalnet.utils.config_dir import CONFIG_DIR

log = logging.getLogger(__name__)

#: method -> its search space (configs/hparams_search/<space>.yaml). Linear regression has nothing to tune.
SPACES: dict[str, str] = {"crossmodalnet": "crossmodalnet", "mlp_mse": "mlp", "mlp_nlc": "mlp", "ridge": "ridge",
                          "svd_ridge": "svd_ridge", "lightgbm": "lightgbm", "scipenn": "scipenn"}
#: fixed for a method in its sweep and its report runs: LightGBM is searched by the sweep, not by its own search,
#: and stops each protein's boosting on the validation cells, as the networks stop their epochs
METHOD_FIXED: dict[str, list[str]] = {"lightgbm": ["model.n_iter=0", "model.final_rounds=validation"]}
#: the time input every baseline gets, per data set: numeric (t, t^2) where days are ordered and may be unseen; the
#: condition as one-hot where it is a label (BMMC's two donors)
TIME_INPUT: dict[str, str] = {"synthetic_drift": "poly", "synthetic": "poly", "bmmc": "onehot"}


@dataclass(frozen=True)
class Setting:
    """One column of the report: a name and the overrides that make it (e.g. a held-out day)."""

    key: str
    label: str
    overrides: tuple[str, ...] = ()


IN_DISTRIBUTION = Setting("in_distribution", "in distribution")
SETTINGS: dict[str, list[Setting]] = {
    "synthetic_drift": [IN_DISTRIBUTION, Setting("holdout_3", "day 3 held out", ("data.holdout_time=3",)),
                        Setting("holdout_6", "day 6 (last) held out", ("data.holdout_time=6",))],
    "synthetic": [IN_DISTRIBUTION, Setting("holdout_3", "day 3 held out", ("data.holdout_time=3",)),
                  Setting("holdout_4", "day 4 (last) held out", ("data.holdout_time=4",))],
    "bmmc": [IN_DISTRIBUTION],
}


@dataclass
class Budget:
    """What every method gets: the same number of trials on the same selection seed."""

    trials: int = 10
    selection_seed: int = 100
    report_seeds: Sequence[int] = (0, 1, 2)
    cpus: int = 1                      # Ray CPUs of a sweep (one trial per CPU)


@dataclass
class SweepChoice:
    """A method's sweep: the chosen values, their validation score and what the search cost."""

    method: str
    space: str
    params: dict[str, Any]
    best_val: float
    default_val: float
    best_trial: int                    # 0 = the shipped configuration
    trials: int
    seconds: float
    table: str = ""

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class EqualBudgetSpec:
    data: str
    methods: Sequence[str]
    budget: Budget = field(default_factory=Budget)
    overrides: list[str] = field(default_factory=list)     # every run (data sizes, threads)
    time_input: str | None = None                          # None: TIME_INPUT[data]
    settings: Sequence[str] | None = None                  # setting keys (None: all of the data set's)
    defaults: bool = False                                 # also report the shipped configuration
    quick: bool = False


def row_name(method: str, time_input: str) -> str:
    """The table row: CrossmodalNet sees the time through its embedding, a baseline through its time features."""
    return method if method in SEES_TIME_ALWAYS else f"{method}+{time_input}"


def override_value(value: Any) -> str:
    """A Hydra override literal for a sampled value (true/false, exact floats)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (np.floating, float)):
        return repr(float(value))
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)


def _check(spec: EqualBudgetSpec) -> None:
    unknown = [m for m in spec.methods if m not in SPACES]
    if unknown:
        raise ValueError(f"no search space for {unknown}; methods with one: {list(SPACES)} "
                         f"(linear regression has no hyperparameters)")
    if spec.data not in SETTINGS:
        raise ValueError(f"equal-budget settings are defined for {list(SETTINGS)}, not {spec.data!r}")
    if spec.budget.trials < 1:
        raise ValueError(f"need at least one trial per method, got {spec.budget.trials}")
    if spec.budget.selection_seed in spec.budget.report_seeds:
        raise ValueError(f"the selection seed {spec.budget.selection_seed} is also a report seed "
                         f"{list(spec.budget.report_seeds)}: choose disjoint seeds")


def settings_of(spec: EqualBudgetSpec) -> list[Setting]:
    known = SETTINGS[spec.data]
    if spec.settings is None:
        return known
    by_key = {s.key: s for s in known}
    missing = [k for k in spec.settings if k not in by_key]
    if missing:
        raise ValueError(f"unknown setting(s) {missing} for {spec.data}; have {list(by_key)}")
    return [by_key[k] for k in spec.settings]


def fixed_overrides(spec: EqualBudgetSpec, method: str) -> list[str]:
    """Overrides shared by a method's sweep and its report runs: quick budgets, then the settings fixed for it."""
    return [*(QUICK_METHOD.get(method, []) if spec.quick else []), *METHOD_FIXED.get(method, [])]


def time_encoding(spec: EqualBudgetSpec) -> str:
    """The baselines' time input for this data set (``model.time_features``)."""
    return spec.time_input or TIME_INPUT[spec.data]


def sweep_method(spec: EqualBudgetSpec, method: str, out_dir: Path) -> SweepChoice:
    """Run the method's sweep (or read the choice an earlier call saved in ``out_dir/choice.json``)."""
    saved = out_dir / "choice.json"
    if saved.is_file():
        log.info("%s: using the sweep already in %s", method, out_dir)
        return SweepChoice(**json.loads(saved.read_text()))
    b = spec.budget
    space = SPACES[method]
    sees_time = [] if method in SEES_TIME_ALWAYS else [f"model.time_features={time_encoding(spec)}"]
    overrides = [*data_overrides(spec.data, spec.quick, data_seed=b.selection_seed), f"model={method}",
                 f"hparams_search={space}", f"seed={b.selection_seed}", *COMMON_OVERRIDES, *spec.overrides,
                 *fixed_overrides(spec, method), *sees_time, f"tune.num_samples={b.trials}",
                 "tune.include_default=true", f"tune.seed={b.selection_seed}", f"ray.num_cpus={b.cpus}",
                 "tune.verbose=0", f"paths.output_dir={out_dir}"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("tune", overrides=overrides)
    start = time.perf_counter()
    outcome = run_sweep(cfg, choices={"data": spec.data, "model": method, "hparams_search": space})
    seconds = time.perf_counter() - start
    table = outcome.table
    metric = metric_column(cfg.tune.metric, cfg.tune.mode)   # each trial's best epoch
    done = table[table["status"] == "COMPLETED"]
    if done.empty:
        raise RuntimeError(f"{method}: no trial of the sweep in {out_dir} finished; see its tune_results.csv")
    best = done.iloc[0]
    default_rows = table[table["trial_index"] == 0]
    choice = SweepChoice(method=method, space=space,
                         params={name: hp.clean(best[name]) for name, hp in outcome.space.items()},
                         best_val=float(best[metric]),
                         default_val=float(default_rows[metric].iloc[0]) if len(default_rows) else float("nan"),
                         best_trial=int(best["trial_index"]), trials=len(table), seconds=seconds,
                         table=str(outcome.files.get("csv", "")))
    atomic_text(saved, json.dumps(choice.to_json(), indent=2))
    return choice


def report_runs(spec: EqualBudgetSpec, method: str, params: Mapping[str, Any], label: str,
                out_dir: Path) -> list[dict]:
    """Train and test ``params`` on every report seed in every setting; a finished run is read, not re-run."""
    row = row_name(method, time_encoding(spec))  # run_method gives a baseline row its time features
    chosen = [f"{k}={override_value(v)}" for k, v in params.items()]
    rows = []
    for setting in settings_of(spec):
        for seed in spec.budget.report_seeds:
            run_dir = out_dir / "runs" / setting.key / label / row / f"seed{seed}"
            metrics_file = run_dir / "metrics.json"
            if metrics_file.is_file():
                metrics = json.loads(metrics_file.read_text())
                result = {"method": row, "seed": seed, "run_dir": str(run_dir), "status": "ok", "note": "",
                          **{k: v for k, v in metrics.items() if isinstance(v, (int, float))}}
            else:
                overrides = [*data_overrides(spec.data, spec.quick), *spec.overrides, *setting.overrides,
                             *fixed_overrides(spec, method), *chosen]
                result = run_method(row, seed, overrides, run_dir)
            result.update(setting=setting.key, setting_label=setting.label, config=label, base_method=method)
            rows.append(result)
    return rows


def run_equal_budget(spec: EqualBudgetSpec, out_dir: Path) -> tuple[pd.DataFrame, list[SweepChoice]]:
    """Sweep every method, then report its best (and, with ``spec.defaults``, its shipped) configuration."""
    _check(spec)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    choices = []
    for method in spec.methods:
        choice = sweep_method(spec, method, out_dir / "sweeps" / method)
        choices.append(choice)
        log.info("%s: best of %d trials = trial %d, val %.4f (shipped config %.4f), %.0f s", method, choice.trials,
                 choice.best_trial, choice.best_val, choice.default_val, choice.seconds)
        rows += report_runs(spec, method, choice.params, "tuned", out_dir)
        if spec.defaults:
            rows += report_runs(spec, method, {}, "default", out_dir)
        write_csv(pd.DataFrame(rows), out_dir / "runs.csv")  # progress survives an interruption
        atomic_text(out_dir / "choices.json", json.dumps([c.to_json() for c in choices], indent=2))
    runs = pd.DataFrame(rows)
    atomic_text(out_dir / "equal_budget.md", markdown(spec, runs, choices))
    return runs, choices


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample SD of the test per-cell Pearson per (config, method, setting)."""
    ok = runs[runs["status"] == "ok"]
    grouped = ok.groupby(["config", "method", "setting"], sort=False)["test/pearson_cell"]
    return grouped.agg(["mean", "std", "count"]).reset_index()


def markdown(spec: EqualBudgetSpec, runs: pd.DataFrame, choices: Sequence[SweepChoice]) -> str:
    b = spec.budget
    settings = settings_of(spec)
    summary = summarise(runs) if len(runs) else pd.DataFrame(columns=["config", "method", "setting", "mean"])
    best = {s.key: summary[(summary["setting"] == s.key) & (summary["config"] == "tuned")]["mean"].max()
            for s in settings}
    lines = [f"# Equal tuning budget: {spec.data}", "",
             f"Budget: {b.trials} trials per method through `scripts/tune.py`'s sweep (the shipped configuration + "
             f"{b.trials - 1} random draws from `configs/hparams_search/<space>.yaml`), ranked by validation "
             f"per-cell Pearson on selection seed {b.selection_seed}"
             + (f" (simulated data set {b.selection_seed})" if spec.data.startswith("synthetic") else "")
             + f"; the best configuration is reported on seeds {list(b.report_seeds)}"
             + (" (simulated data set 0)" if spec.data.startswith("synthetic") else "")
             + f". Every baseline gets the time as `model.time_features={time_encoding(spec)}`. "
             "Test per-cell Pearson, mean ± SD over the report seeds; **bold**: the best tuned row per column."
             + (" Quick mode (tiny data and budgets)." if spec.quick else ""), "",
             "| Method | config | " + " | ".join(s.label for s in settings) + " |",
             "|---|---|" + "---|" * len(settings)]
    for (config, method), _ in runs.groupby(["config", "method"], sort=False):
        cells = []
        for s in settings:
            hit = summary[(summary["config"] == config) & (summary["method"] == method) & (summary["setting"] == s.key)]
            if hit.empty:
                failed = runs[(runs["config"] == config) & (runs["method"] == method) & (runs["setting"] == s.key)]
                cells.append(str(failed["status"].iloc[0]) if len(failed) else "-")
                continue
            r = hit.iloc[0]
            text = f"{r['mean']:.3f}" + (f" ± {r['std']:.3f}" if r["count"] > 1 else f" (n={int(r['count'])})")
            cells.append(f"**{text}**" if config == "tuned" and np.isclose(r["mean"], best[s.key]) else text)
        label = METHODS[method.partition("+")[0]] + (" + time" if "+" in method else "")
        lines.append(f"| {label} | {config} | " + " | ".join(cells) + " |")
    lines += ["", "## The sweeps", "",
              "| Method | space | trials | chosen trial (0 = shipped) | val, chosen | val, shipped | sweep time (s) |",
              "|---|---|---|---|---|---|---|"]
    for c in choices:
        lines.append(f"| {METHODS[c.method]} | `{c.space}` | {c.trials} | {c.best_trial} | {c.best_val:.4f} | "
                     f"{c.default_val:.4f} | {c.seconds:.0f} |")
    lines += ["", "Chosen values:", ""]
    for c in choices:
        values = ", ".join(f"`{k}={override_value(v)}`" for k, v in c.params.items())
        lines.append(f"- {METHODS[c.method]}: {values}")
    return "\n".join(lines) + "\n"
