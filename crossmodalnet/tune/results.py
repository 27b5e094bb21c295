"""What a sweep leaves in its run dir: every trial as CSV, the top k as Markdown, the best configuration as an
experiment file for ``python train.py``, and a plot (metric per trial and against the most important
hyperparameters).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from crossmodalnet.utils.atomic import atomic_text, write_csv
from crossmodalnet.tune.space import DRIVER_ONLY_KEYS, Hyperparameter

#: config groups the best experiment file does not re-select (itself, the sweep's own, Hydra's, the run paths)
_NOT_RESELECTED = {"experiment", "hparams_search", "tune", "hydra", "paths"}


def metric_column(metric: str, mode: str) -> str:
    """The trial's best value over its epochs (the epoch train() keeps), e.g. ``val/pearson_cell_max``."""
    return f"{metric}_{mode}"


def _trial_index(trial_id: str, fallback: int) -> int:
    tail = trial_id.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else fallback


def results_table(grid, space: Mapping[str, Hyperparameter], metric: str, mode: str) -> pd.DataFrame:
    """One row per trial of a Ray Tune ``ResultGrid``: status, metric (best and last epoch), test metrics of the
    finished trials, sampled values (snapped to their grids) and the trial's run dir; best trial first."""
    best_col = metric_column(metric, mode)
    rows = []
    for i, result in enumerate(grid):
        final = result.metrics or {}
        history = result.metrics_dataframe
        if history is not None and "epoch" in history:  # per-epoch reports (the final report repeats the last)
            per_epoch = history[history.get("completed", pd.Series(np.nan, index=history.index)) != 1]
        else:
            per_epoch = pd.DataFrame()
        values = per_epoch[metric].dropna() if metric in per_epoch else pd.Series(dtype=float)
        if not len(values) and final.get("completed") == 1 and final.get(metric) is not None:
            values = pd.Series([float(final[metric])])  # a baseline: no epochs, one report at the end
        trial_id = str(final.get("trial_id") or Path(str(result.path)).name.removeprefix("trial_"))
        # STOPPED: reported but did not finish (stopped by ASHA, or cut off by an interruption); PENDING: no report
        status = ("ERROR" if result.error else "COMPLETED" if final.get("completed") == 1
                  else "STOPPED" if final else "PENDING")
        row: dict[str, Any] = {
            "trial_id": trial_id,
            "trial_index": _trial_index(trial_id, i),
            "status": status,
            best_col: (values.max() if mode == "max" else values.min()) if len(values) else np.nan,
            f"{metric}_last": values.iloc[-1] if len(values) else np.nan,
            "epochs": int(per_epoch["epoch"].max()) if len(per_epoch) else 0,
        }
        row.update({k: v for k, v in sorted(final.items()) if k.startswith("test/")})
        for name, hp in space.items():
            value = (result.config or {}).get(name)
            row[name] = hp.clean(value) if value is not None else None
        row["run_dir"] = final.get("run_dir", "")
        row["error"] = str(result.error).strip().splitlines()[0] if result.error else ""
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table = table.sort_values([best_col, "trial_index"], ascending=[mode == "min", True], na_position="last")
    table.insert(0, "rank", range(1, len(table) + 1))
    return table.reset_index(drop=True)


def _numeric(values: pd.Series, hp: Hyperparameter) -> pd.Series:
    x = pd.to_numeric(values.map(lambda v: float(v) if isinstance(v, (bool, int, float)) else np.nan))
    return np.log10(x) if hp.log_scale else x


def importance(table: pd.DataFrame, space: Mapping[str, Hyperparameter], metric_col: str) -> pd.Series:
    """|Spearman rho| between each hyperparameter (log10 for log-scale ones) and the metric, largest first.

    A cheap, assumption-light ranking for a random search: NaN where fewer than 3 trials or one value only.
    """
    from scipy.stats import spearmanr

    ok = table[metric_col].notna() if metric_col in table else pd.Series(False, index=table.index)
    y = table.loc[ok, metric_col].astype(float)
    out = {}
    for name, hp in space.items():
        x = _numeric(table.loc[ok, name], hp)
        if ok.sum() < 3 or x.nunique() < 2 or y.nunique() < 2:
            out[name] = np.nan
        else:
            out[name] = abs(float(spearmanr(x, y).statistic))
    return pd.Series(out, dtype=float).sort_values(ascending=False, na_position="last")


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower()
    if isinstance(value, (float, np.floating)):
        return f"{value:.4g}"
    return str(value)


def write_best_experiment(cfg: DictConfig, choices: Mapping[str, Any], params: Mapping[str, Any], path: Path,
                          note: str) -> Path:
    """The sweep's config (interpolations kept) with the best values, as a ``# @package _global_`` experiment that
    re-selects the sweep's config groups: ``python train.py --config-dir DIR experiment=NAME`` trains it again."""
    body = OmegaConf.to_container(cfg, resolve=False)
    for key in ("hydra", "paths", *DRIVER_ONLY_KEYS):
        body.pop(key, None)
    conf = OmegaConf.create(body)
    for name, value in params.items():
        OmegaConf.update(conf, name, value, merge=False)
    defaults = [{f"override /{group}": option} for group, option in sorted(choices.items())
                if "/" not in group and group not in _NOT_RESELECTED and option is not None]
    doc = OmegaConf.create({"defaults": defaults, **OmegaConf.to_container(conf)} if defaults
                           else OmegaConf.to_container(conf))
    header = "".join(f"# {line}\n" for line in note.splitlines())
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_text(path, f"# @package _global_\n{header}{OmegaConf.to_yaml(doc)}")
    return path


def write_markdown(table: pd.DataFrame, space: Mapping[str, Hyperparameter], ranking: pd.Series, metric_col: str,
                   k: int, path: Path, intro: str) -> Path:
    """The top ``k`` trials as a Markdown table, then the hyperparameter importance."""
    test_cols = [c for c in ("test/pearson_cell", "test/pearson_protein", "test/mse") if c in table]
    cols = ["rank", "trial_id", metric_col, *test_cols, "epochs", "status", *space]
    lines = [intro, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in table.head(k).iterrows():
        lines.append("| " + " | ".join(_fmt(row[c]) for c in cols) + " |")
    lines += ["", "## Hyperparameter importance", "",
              f"|Spearman rho| between each hyperparameter (log10 for log-scale ones) and {metric_col}, "
              f"over the {int(table[metric_col].notna().sum())} trials with a value.", "",
              "| hyperparameter | distribution | abs(rho) |", "|---|---|---|"]
    for name, rho in ranking.items():
        lines.append(f"| {name} | {space[name].distribution} | {_fmt(rho)} |")
    atomic_text(path, "\n".join(lines) + "\n")
    return path


def plot_sweep(table: pd.DataFrame, space: Mapping[str, Hyperparameter], ranking: pd.Series, metric_col: str,
               mode: str, n_important: int, path: Path, ncols: int = 4) -> Path:
    """A grid: the metric per trial (with the best so far), then the metric against every hyperparameter, most
    important first (``n_important`` is kept for callers; all are drawn), every point coloured by the metric and
    the best trial starred in every panel, so one trial can be followed across panels."""
    import matplotlib.ticker
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ranked = [n for n in ranking.index if not math.isnan(ranking[n])]
    names = ranked + [n for n in space if n not in ranked]  # all of them, the most important first
    n_panels = 1 + len(names)
    ncols = min(ncols, n_panels, max(2, math.ceil(math.sqrt(n_panels))))  # near-square: 6 panels -> 3 x 2
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(3.7 * ncols + 0.8, 3.1 * nrows), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    order = table.sort_values("trial_index")
    y = order[metric_col].astype(float).to_numpy()
    finite = y[np.isfinite(y)]
    vmin, vmax = (finite.min(), finite.max()) if len(finite) else (0.0, 1.0)
    colour = dict(cmap="viridis" if mode == "max" else "viridis_r", vmin=vmin, vmax=vmax if vmax > vmin else vmin + 1)
    x = np.arange(1, len(order) + 1)
    ax = axes[0]
    points = ax.scatter(x, y, s=24, c=y, edgecolors="none", label="trial", **colour)
    running = pd.Series(y).cummax() if mode == "max" else pd.Series(y).cummin()
    ax.step(x, running.to_numpy(), where="post", color="tab:orange", label="best so far")
    scores = table[metric_col].astype(float)
    best = None if scores.notna().sum() == 0 else (scores.idxmax() if mode == "max" else scores.idxmin())
    if np.isfinite(y).any():
        b = int(np.nanargmax(y) if mode == "max" else np.nanargmin(y))
        ax.scatter([x[b]], [y[b]], marker="*", s=220, color="tab:red", edgecolors="black", zorder=3, label="best")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("trial (in order of creation)")
    ax.set_ylabel(metric_col)
    ax.set_title(f"{len(order)} trials ({mode} {metric_col})", fontsize=9)
    ax.legend(fontsize=8, frameon=False)
    ok = table[metric_col].notna()
    for ax, name in zip(axes[1:], names):
        hp = space[name]
        values, metric = table.loc[ok, name], table.loc[ok, metric_col].astype(float)
        if hp.categorical:
            cats = list(hp.values)
            cats += [v for v in dict.fromkeys(values) if not hp.contains(v)]  # e.g. an outside "defaults" trial
            pos = np.array([next(i for i, c in enumerate(cats) if c == v and isinstance(c, bool) == isinstance(v, bool))
                            for v in values], dtype=float)
            xs = pos + np.random.default_rng(0).uniform(-0.12, 0.12, len(pos))
            ax.set_xticks(range(len(cats)), [_fmt(c) for c in cats])
            ax.set_xlim(-0.5, len(cats) - 0.5)
        else:
            xs = values.astype(float).to_numpy()
            if hp.log_scale:
                ax.set_xscale("log")
        ax.scatter(xs, metric, s=24, c=metric, edgecolors="none", **colour)
        if best is not None and best in values.index:
            i = list(values.index).index(best)
            ax.scatter([xs[i]], [metric.iloc[i]], marker="*", s=220, color="tab:red", edgecolors="black", zorder=3)
        ax.margins(x=0.08, y=0.12)
        rho = ranking.get(name, np.nan)
        ax.set_xlabel(name, fontsize=9)
        if list(axes).index(ax) % ncols == 0:
            ax.set_ylabel(metric_col)
        ax.set_title(f"|Spearman rho| = {_fmt(rho)}", fontsize=9)
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    fig.colorbar(points, ax=list(axes), shrink=0.5, label=metric_col)
    fig.suptitle(f"Sweep: {metric_col} against each hyperparameter (most important first; the best trial "
                 "starred)", fontsize=11)
    fig.savefig(path, dpi=110)
    return path


def write_all(table: pd.DataFrame, space: Mapping[str, Hyperparameter], cfg: DictConfig,
              choices: Mapping[str, Any], out_dir: Path, settings: DictConfig) -> dict[str, Path]:
    """CSV, Markdown, best experiment file and plot in ``out_dir``; returns their paths by kind."""
    metric, mode = settings.metric, settings.mode
    col = metric_column(metric, mode)
    files: dict[str, Path] = {}
    files["csv"] = out_dir / "tune_results.csv"
    write_csv(table, files["csv"])
    if table.empty:
        return files
    ranking = importance(table, space, col)
    intro = [f"# Sweep: {metric} ({mode}) over {len(table)} trials",
             "", f"Search space: {', '.join(f'`{n}` {hp.distribution}' for n, hp in space.items())}."]
    best = table.iloc[0]
    if not math.isnan(best[col]):
        exp = choices.get("experiment") or "tuned"
        name = f"{Path(str(exp)).name}_best"
        config_dir = out_dir / "configs"
        command = f"python train.py --config-dir {config_dir} experiment={name}"
        note = (f"Best trial {best['trial_id']} of the sweep in {out_dir}: {col} = {best[col]:.6g}.\n"
                f"Train it again: {command}")
        params = {n: best[n] for n in space}
        params = {n: (v.item() if hasattr(v, "item") else v) for n, v in params.items()}
        files["best_config"] = write_best_experiment(cfg, choices, params, config_dir / "experiment" / f"{name}.yaml",
                                                     note)
        intro += ["", f"Best trial `{best['trial_id']}`: {col} = {best[col]:.4f}. Train it again with",
                  "", f"    {command}"]
    k = int(settings.get("top_k", 10))
    files["markdown"] = write_markdown(table, space, ranking, col, k, out_dir / f"tune_top{k}.md", "\n".join(intro))
    files["plot"] = plot_sweep(table, space, ranking, col, mode, int(settings.get("n_important", 4)),
                               out_dir / "tune_sweep.png")
    return files
