"""The paper's comparison tables (Table 1: in-distribution, Table 2: held-out time point, Table S2: run time),
reproduced by running every method through the one code path, :func:`crossmodalnet.training.run.train`.

Every method of a table sees the same composed Hydra config except ``model=<name>``: same data, split,
preprocessing and seeds. A row ``<model>+<encoding>`` (e.g. ``svd_ridge+poly``) is that baseline given the time as
input (``model.time_features=<encoding>``, issue 18); the tables mark which rows see the time. Results go to ``<out>/runs/<method>/seed<k>/`` (ordinary run dirs) and are summarised
as mean and spread (sample SD) over seeds in ``<name>.md`` / ``<name>.csv``, with the paper's numbers beside.
"""
from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from crossmodalnet.utils.atomic import atomic_text, write_csv
from crossmodalnet.baselines.base import BaselineUnavailable
from crossmodalnet.utils.config_dir import CONFIG_DIR

log = logging.getLogger(__name__)

# method key (= configs/model/<key>.yaml) -> row label, in the paper's order; svd_ridge is ours (not in the paper)
METHODS: dict[str, str] = {
    "crossmodalnet": "CrossmodalNet",
    "mlp_mse": "MLP+MSE",
    "mlp_nlc": "MLP+NLC",
    "lightgbm": "LightGBM",
    "linear": "Linear reg.",
    "ridge": "Ridge reg.",
    "scipenn": "scIPENN",
    "svd_ridge": "SVD + ridge",
}

# Published numbers (Yang et al. 2023, ICML CompBio workshop): (Corr, MSE) per data set.
PAPER_TABLE1: dict[str, dict[str, tuple[float, float]]] = {
    "crossmodalnet": {"hspc": (0.593, 0.259), "myeloid": (0.819, 0.249)},
    "mlp_mse": {"hspc": (0.561, 0.140), "myeloid": (0.792, 0.160)},
    "mlp_nlc": {"hspc": (0.490, 0.316), "myeloid": (0.560, 0.670)},
    "lightgbm": {"hspc": (0.575, 0.259), "myeloid": (0.791, 0.151)},
    "linear": {"hspc": (0.559, 0.269), "myeloid": (0.745, 0.301)},
    "ridge": {"hspc": (0.560, 0.268), "myeloid": (0.772, 0.304)},
    "scipenn": {"hspc": (0.379, 0.456), "myeloid": (0.429, 0.489)},
}
PAPER_TABLE2: dict[str, dict[str, tuple[float, float]]] = {
    "crossmodalnet": {"hspc": (0.564, 0.268), "myeloid": (0.246, 0.382)},
    "mlp_mse": {"hspc": (0.511, 0.134), "myeloid": (0.093, 0.202)},
    "mlp_nlc": {"hspc": (0.549, 0.260), "myeloid": (0.150, 0.372)},
    "lightgbm": {"hspc": (0.554, 0.267), "myeloid": (0.098, 0.829)},
    "linear": {"hspc": (0.534, 0.282), "myeloid": (0.102, 0.910)},
    "ridge": {"hspc": (0.535, 0.281), "myeloid": (0.105, 0.862)},
    "scipenn": {"hspc": (0.374, 0.437), "myeloid": (0.238, 0.408)},
}
# Table S2: total training time (s) on simulated data, Intel Xeon 6248R, no GPU. "MLP" is our mlp_mse.
PAPER_TABLE_S2: dict[str, dict[str, float]] = {
    "crossmodalnet": {"D1": 22.17, "D2": 147.66, "D3": 791.84},
    "mlp_mse": {"D1": 89.96, "D2": 302.67, "D3": 1604.53},
    "lightgbm": {"D1": 638.01, "D2": 4364.12, "D3": 29606.51},
    "linear": {"D1": 48.53, "D2": 850.14, "D3": 23845.28},
    "ridge": {"D1": 11.16, "D2": 97.32, "D3": 1099.67},
    "scipenn": {"D1": 42.28, "D2": 154.48, "D3": 626.36},
}
S2_SIZES: dict[str, tuple[int, int]] = {"D1": (1000, 3000), "D2": (3000, 5000), "D3": (10000, 8000)}
S2_QUICK_SIZES: dict[str, tuple[int, int]] = {"Q1": (200, 300), "Q2": (300, 400)}

# Held-out (intermediate) time point of Table 2 per data set (paper 3.2: HSPC day 3, myeloid week 2), and the last
# one (issue 18: extrapolation past the last time seen in training). Table 2 holds out each by default.
HOLDOUT_TIME: dict[str, object] = {"synthetic": 3, "synthetic_drift": 3, "hspc": 3, "myeloid": 2}
LAST_TIME: dict[str, object] = {"synthetic": 4, "synthetic_drift": 6, "hspc": 4, "myeloid": 3}
# time encodings a baseline row can take (model.time_features); onehot only knows the training times
TIME_ENCODINGS = ("onehot", "poly", "spline")
SEES_TIME_ALWAYS = {"crossmodalnet": "time embedding"}
NO_TIME_AXIS = {"bmmc": "BMMC has no time points: its condition (obs 'batch') is 2 donors (s1d1, s1d2), "
                        "unordered, so there is no intermediate time to hold out and interpolate"}

# Every run: no progress bar, no loggers or figures (tables only need metrics.json).
# The paper's input, the genes, whatever their number (svd_components=auto would read SVD components above 5,000
# genes); a run may still pass --override data.preprocess.svd_components=128 to compare.
COMMON_OVERRIDES = ["callbacks.progress_bar=null", "logger=none", "++plots=false",
                    "data.preprocess.svd_components=null"]
# --quick: tiny data and budgets, for CI and the tests (seconds per method).
QUICK_DATA = ["data.source.n_cells=300", "data.source.n_genes=200", "data.source.n_proteins=12",
              "data.batch_size=64"]
QUICK_METHOD: dict[str, list[str]] = {
    "crossmodalnet": ["trainer.max_epochs=2", "model.latent_dim=32", "model.dis_hidden=16"],
    "mlp_mse": ["trainer.max_epochs=2", "model.latent_dim=32"],
    "mlp_nlc": ["trainer.max_epochs=2", "model.latent_dim=32"],
    "lightgbm": ["model.n_iter=1", "model.cv=2", "model.search_proteins=2", "model.max_rounds=10",
                 "model.search_space.num_leaves=[7]"],
    "scipenn": ["model.n_epochs=2"],
    "svd_ridge": ["model.n_components=16"],
}


@dataclass
class TableSpec:
    """What to run: a data set (configs/data/<data>.yaml), methods, seeds, and overrides."""

    name: str                                     # table1 / table2 / table_s2
    data: str = "synthetic"
    methods: Sequence[str] = tuple(METHODS)
    seeds: Sequence[int] = (0, 1, 2)
    overrides: list[str] = field(default_factory=list)                 # for every method
    method_overrides: dict[str, list[str]] = field(default_factory=dict)  # per method
    quick: bool = False


def split_row(row: str) -> tuple[str, str | None]:
    """``"svd_ridge+poly"`` -> ("svd_ridge", "poly"); ``"ridge"`` -> ("ridge", None)."""
    model, _, encoding = row.partition("+")
    return model, encoding or None


def row_label(row: str) -> str:
    model, encoding = split_row(row)
    return METHODS[model] + (f" + time ({encoding})" if encoding else "")


def sees_time(row: str) -> str:
    """What the row's model knows of the cells' time: "no", or how it is given."""
    model, encoding = split_row(row)
    return f"yes ({encoding})" if encoding else (f"yes ({SEES_TIME_ALWAYS[model]})" if model in SEES_TIME_ALWAYS
                                                   else "no")


def parse_method_overrides(items: Iterable[str]) -> dict[str, list[str]]:
    """``["lightgbm:model.n_iter=2", ...]`` -> {"lightgbm": ["model.n_iter=2"], ...} (a row such as
    ``lightgbm+poly`` may be named too)."""
    out: dict[str, list[str]] = {}
    for item in items:
        method, sep, override = item.partition(":")
        if not sep or "=" not in override or split_row(method)[0] not in METHODS:
            raise ValueError(f"--set expects METHOD:key=value with METHOD in {list(METHODS)}, got {item!r}")
        out.setdefault(method, []).append(override)
    return out


def check_methods(methods: Iterable[str]) -> list[str]:
    """Rows: a method key, or ``<method>+<encoding>`` for a baseline given the time (``model.time_features``)."""
    methods = list(methods)
    unknown = [m for m in methods if split_row(m)[0] not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    bad = [m for m in methods if split_row(m)[1] is not None
           and (split_row(m)[1] not in TIME_ENCODINGS or split_row(m)[0] in SEES_TIME_ALWAYS)]
    if bad:
        raise ValueError(f"bad time-aware row(s) {bad}: use <baseline>+<encoding> with encoding in "
                         f"{TIME_ENCODINGS} (CrossmodalNet always sees the time)")
    return methods


def with_time_rows(methods: Sequence[str], encodings: Sequence[str]) -> list[str]:
    """Each time-blind baseline followed by its time-aware rows (``<method>+<encoding>``), so they sit side by side."""
    bad = [e for e in encodings if e not in TIME_ENCODINGS]
    if bad:
        raise ValueError(f"--time-features takes {TIME_ENCODINGS}, got {bad}")
    out = []
    for m in methods:
        out.append(m)
        if split_row(m)[1] is None and m not in SEES_TIME_ALWAYS:
            out += [f"{m}+{e}" for e in encodings if f"{m}+{e}" not in methods]
    return list(dict.fromkeys(out))


def data_overrides(data: str, quick: bool, data_seed: int = 0) -> list[str]:
    """``data=<name>``; the simulator's data set is fixed across seeds (seeds vary split and initialisation): the
    one simulated with ``data_seed``."""
    if not (Path(CONFIG_DIR) / "data" / f"{data}.yaml").exists():
        have = sorted(p.stem for p in (Path(CONFIG_DIR) / "data").glob("*.yaml"))
        raise ValueError(f"no data config configs/data/{data}.yaml (have: {have})")
    out = [f"data={data}"]
    if data.startswith("synthetic"):
        out.append(f"data.source.seed={data_seed}")
        if quick:
            out += QUICK_DATA
    return out


def compose_config(overrides: Sequence[str], output_dir: Path) -> DictConfig:
    """The same config ``python train.py <overrides>`` would get, writing to ``output_dir``."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=[*overrides, f"paths.output_dir={output_dir}"])


def run_method(method: str, seed: int, overrides: Sequence[str], output_dir: Path) -> dict:
    """One ``train(cfg)`` run; returns a row with its status ("ok", "unavailable", "failed") and metrics."""
    from crossmodalnet.training.run import train

    row = {"method": method, "seed": seed, "run_dir": str(output_dir), "status": "ok", "note": ""}
    start = time.perf_counter()
    model, encoding = split_row(method)
    time_input = [f"model.time_features={encoding}"] if encoding else []
    try:
        cfg = compose_config([f"model={model}", f"seed={seed}", *COMMON_OVERRIDES, *time_input, *overrides],
                             output_dir)
        metrics = train(cfg)
        row.update({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
    except BaselineUnavailable as err:
        row.update(status="unavailable", note=str(err))
    except Exception as err:  # a failed method is reported in its row, the table goes on
        log.error("%s (seed %d) failed: %s\n%s", method, seed, err, traceback.format_exc())
        row.update(status="failed", note=f"{type(err).__name__}: {err}".splitlines()[0][:300])
    row["wall_seconds"] = time.perf_counter() - start
    log.info("%s seed %d: %s corr=%s mse=%s (%.1f s)", method, seed, row["status"],
             _fmt(row.get("test/pearson_cell")), _fmt(row.get("test/mse")), row["wall_seconds"])
    return row


def run_table(spec: TableSpec, out_dir: Path) -> pd.DataFrame:
    """Run every method x seed of ``spec``; returns one row per run (also written to ``runs.csv``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    base = [*data_overrides(spec.data, spec.quick), *spec.overrides]
    rows = []
    for method in check_methods(spec.methods):
        model = split_row(method)[0]
        extra = [*(QUICK_METHOD.get(model, []) if spec.quick else []), *spec.method_overrides.get(model, []),
                 *(spec.method_overrides.get(method, []) if method != model else [])]
        for seed in spec.seeds:
            row = run_method(method, seed, [*base, *extra], out_dir / "runs" / method / f"seed{seed}")
            rows.append(row)
            write_csv(pd.DataFrame(rows), out_dir / "runs.csv")  # progress survives an interruption
            if row["status"] == "unavailable":
                break  # same reason for every seed
    return pd.DataFrame(rows)


def summarise(runs: pd.DataFrame, paper: dict[str, dict[str, tuple[float, float]]] | None = None) -> pd.DataFrame:
    """Mean and sample SD over seeds per method, with the paper's HSPC and myeloid numbers beside."""
    out = []
    for method in dict.fromkeys(runs["method"]):
        sub = runs[runs["method"] == method]
        ok = sub[sub["status"] == "ok"]
        row = {"method": method, "label": row_label(method), "sees_time": sees_time(method), "n_seeds": len(ok),
               "status": "ok" if len(ok) else sub["status"].iloc[0],
               "note": "" if len(ok) else str(sub["note"].iloc[0])}
        for key, name in (("test/pearson_cell", "corr"), ("test/mse", "mse"),
                          ("test/pearson_protein", "pearson_protein"), ("train/fit_seconds", "fit_seconds")):
            values = ok[key].to_numpy(dtype=float) if key in ok else np.array([])
            row[f"{name}_mean"] = float(values.mean()) if len(values) else np.nan
            row[f"{name}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else np.nan  # no spread from one seed
        for data in ("hspc", "myeloid"):
            corr, mse = (paper or {}).get(method, {}).get(data, (np.nan, np.nan))
            row[f"paper_{data}_corr"], row[f"paper_{data}_mse"] = corr, mse
        out.append(row)
    return pd.DataFrame(out)


def markdown_table(summary: pd.DataFrame, title: str, context: str, with_paper: bool = True) -> str:
    """Our Corr / MSE (mean +- SD over seeds) per method, and the paper's HSPC / myeloid numbers."""
    head = "| Method | sees time | Corr (ours) | MSE (ours) | per-protein r | fit (s) |"
    rule = "|---|---|---|---|---|---|"
    if with_paper:
        head += " HSPC Corr (paper) | HSPC MSE (paper) | Myeloid Corr (paper) | Myeloid MSE (paper) |"
        rule += "---|---|---|---|"
    lines = [f"# {title}", "", context, "", head, rule]
    notes = []
    for _, r in summary.iterrows():
        if r["status"] == "ok":
            n = int(r["n_seeds"])
            cells = [_pm(r["corr_mean"], r["corr_sd"], n), _pm(r["mse_mean"], r["mse_sd"], n),
                     _fmt(r["pearson_protein_mean"]), _fmt(r["fit_seconds_mean"], 1)]
        else:
            notes.append(f"- {r['label']}: {r['status']}: {r['note']}")
            cells = [f"{r['status']} [{len(notes)}]", "-", "-", "-"]
        if with_paper:
            cells += [_fmt(r[f"paper_{d}_{m}"]) for d in ("hspc", "myeloid") for m in ("corr", "mse")]
        lines.append(f"| {r['label']} | {r.get('sees_time', 'no')} | " + " | ".join(cells) + " |")
    if notes:
        lines += ["", *[f"[{i + 1}] {n[2:]}" for i, n in enumerate(notes)]]
    return "\n".join(lines) + "\n"


def write_table(summary: pd.DataFrame, out_dir: Path, name: str, title: str, context: str,
                with_paper: bool = True) -> tuple[Path, Path]:
    md, csv = out_dir / f"{name}.md", out_dir / f"{name}.csv"
    write_csv(summary, csv)
    atomic_text(md, markdown_table(summary, title, context, with_paper))
    return md, csv


def context_line(spec: TableSpec, split: str, command: str) -> str:
    other = "" if spec.data in ("hspc", "myeloid") else f" (a different data set from `{spec.data}`: reference only)"
    quick = " (quick mode: tiny data and budgets)" if spec.quick else ""
    return (f"Data: `{spec.data}`{quick}{_simulator_note(spec.data)}; split: {split}; "
            f"seeds {list(spec.seeds)} (mean ± sample SD over seeds; every method on the same split per seed). "
            f"'sees time': whether the row's model gets the cells' time (CrossmodalNet: its time embedding; "
            f"'+ time (enc)': the baseline with model.time_features=enc). "
            f"Corr = mean per-cell Pearson over test cells, MSE over all test values. The paper's columns are its "
            f"Table numbers for HSPC and myeloid data"
            f"{other}."
            f"\n\nCommand: `{command}`")


def _simulator_note(data: str) -> str:
    if data == "synthetic":
        return " (simulator, control: no time effect beyond the genes)"
    if data == "synthetic_drift":
        return " (simulator, drift: the gene -> protein relationship drifts with the day)"
    return ""


def _fmt(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "-"
    return f"{x:.{digits}f}"


def _pm(mean: float, sd: float, n: int = 2) -> str:
    """``mean ± sd`` over seeds; one seed has no spread to show: ``mean (n=1)``, not ``± 0.000``."""
    if n < 2 or sd is None or (isinstance(sd, float) and np.isnan(sd)):
        return f"{_fmt(mean)} (n={n})"
    return f"{_fmt(mean)} ± {_fmt(sd)}"


# -- command lines of scripts/reproduce_table1.py and scripts/reproduce_table2.py -----------------------------------
def table_cli(kind: str, argv: Sequence[str] | None = None) -> Path:
    """``kind`` = "table1" (in-distribution) or "table2" (held-out time point). Returns the markdown path."""
    import argparse
    import shlex
    import sys

    ood = kind == "table2"
    parser = argparse.ArgumentParser(
        prog=f"reproduce_{kind}.py",
        description=("Paper Table 2: train on the other time points, test on a held-out intermediate one."
                     if ood else "Paper Table 1: in-distribution 80/5/15 split stratified by time."))
    parser.add_argument("--data", default="synthetic",
                        help="configs/data/<name>.yaml: synthetic (control), synthetic_drift, bmmc, hspc, ...")
    parser.add_argument("--methods", nargs="+", default=list(METHODS),
                        help=f"subset of {list(METHODS)}; <baseline>+<encoding> adds one time-aware row")
    default_enc = ["poly"] if ood else ["onehot"]
    parser.add_argument("--time-features", nargs="*", default=default_enc, metavar="ENCODING",
                        help=f"beside each time-blind baseline, a row given the time with each of these encodings "
                             f"({', '.join(TIME_ENCODINGS)}; default {' '.join(default_enc)}; none: no such rows)"
                             + ("; onehot rows are left out of Table 2: a held-out time is not among the "
                                "one-hot columns" if ood else ""))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=None, help="output folder (default logs/tables/<kind>_<data>)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="Hydra override for every method (repeatable), e.g. trainer.max_epochs=100")
    parser.add_argument("--set", action="append", default=[], metavar="METHOD:KEY=VALUE",
                        help="Hydra override for one method (repeatable), e.g. lightgbm:model.n_iter=4")
    parser.add_argument("--quick", action="store_true", help="tiny data and budgets (CI, tests)")
    parser.add_argument("--from-runs", action="store_true",
                        help="train nothing: rebuild the table from <out>/runs.csv (e.g. after an interruption)")
    if ood:
        parser.add_argument("--holdout", nargs="+", default=None,
                            help=f"time point(s) to hold out, one table section each (default: the data set's "
                                 f"intermediate one {HOLDOUT_TIME} and its last one {LAST_TIME})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        encodings = [e for e in args.time_features if e != "none"]
        if ood:
            if args.data in NO_TIME_AXIS:
                raise ValueError(f"Table 2 does not apply to {args.data}: {NO_TIME_AXIS[args.data]}")
            holdouts = args.holdout or [t for t in (HOLDOUT_TIME.get(args.data), LAST_TIME.get(args.data))
                                        if t is not None]
            if not holdouts:
                raise ValueError(f"no default held-out time for {args.data}: pass --holdout TIME")
            if "onehot" in encodings:
                log.info("Table 2: no onehot rows (a held-out time is not among the one-hot columns)")
                encodings.remove("onehot")
        methods = check_methods(with_time_rows(check_methods(args.methods), encodings))
        if ood:
            methods = [m for m in methods if split_row(m)[1] != "onehot"]
        method_overrides = parse_method_overrides(args.set)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    out_dir = args.out or Path("logs") / "tables" / f"{kind}_{args.data}"
    command = f"python scripts/reproduce_{kind}.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    sections = []
    for holdout in (holdouts if ood else [None]):
        overrides = [*args.override, *([f"data.holdout_time={holdout}"] if ood else [])]
        spec = TableSpec(kind, args.data, methods, args.seeds, overrides, method_overrides, args.quick)
        part_dir = out_dir / f"holdout_{holdout}" if ood else out_dir
        runs = pd.read_csv(part_dir / "runs.csv") if args.from_runs else run_table(spec, part_dir)
        spec.seeds = sorted(int(s) for s in runs["seed"].unique())
        summary = summarise(runs, PAPER_TABLE2 if ood else PAPER_TABLE1)
        split = (f"held-out time point {holdout} as test, the other time points split 80:5 into train/val"
                 if ood else "in-distribution 80/5/15, stratified by time")
        title = (f"Table 2: held-out time point {holdout}" if ood
                 else "Table 1: in-distribution predictions") + f" ({args.data})"
        md, _ = write_table(summary, part_dir, kind, title, context_line(spec, split, command))
        sections.append(md.read_text())
    md = out_dir / f"{kind}.md"
    if ood:  # one file with a section per held-out time (each also in its own folder, with its CSV)
        atomic_text(md, "\n".join(sections))
    print(md.read_text())
    print(f"wrote {md} (per-run metrics: runs.csv in {out_dir}{'/holdout_*' if ood else ''})")
    return md


# -- Table S2: run time -----------------------------------------------------------------------------------------
S2_METHODS = ("crossmodalnet", "mlp_mse", "lightgbm", "linear", "ridge", "scipenn", "svd_ridge")


def run_s2(sizes: dict[str, tuple[int, int]], methods: Sequence[str], out_dir: Path, n_proteins: int = 40,
           seed: int = 0, overrides: Sequence[str] = (), method_overrides: dict[str, list[str]] | None = None,
           quick: bool = False) -> pd.DataFrame:
    """Training time (``train/fit_seconds``: the fit alone, no data loading or testing) per method and size.

    Neural models share one stopping rule: at most ``trainer.max_epochs`` (500) epochs, early stopping after 10
    epochs without a better validation per-cell Pearson (configs/callbacks/default.yaml); scIPENN keeps its
    own rule (validation loss, patience ``es_max``).
    """
    rows = []
    for size, (n_cells, n_genes) in sizes.items():
        data = ["data=synthetic", "data.source.seed=0", f"data.source.n_cells={n_cells}",
                f"data.source.n_genes={n_genes}", f"data.source.n_proteins={n_proteins}", *overrides]
        for method in check_methods(methods):
            extra = [*(QUICK_METHOD.get(method, []) if quick else []), *(method_overrides or {}).get(method, [])]
            row = run_method(method, seed, [*data, *extra], out_dir / "runs" / size / method)
            row.update(size=size, n_cells=n_cells, n_genes=n_genes, n_proteins=n_proteins)
            rows.append(row)
            write_csv(pd.DataFrame(rows), out_dir / "runs.csv")
    return pd.DataFrame(rows)


def summarise_s2(runs: pd.DataFrame, sizes: Sequence[str]) -> pd.DataFrame:
    """One row per method: our fit seconds per size (NaN where it did not run), epochs, and the paper's."""
    out = []
    for method in [m for m in METHODS if m in set(runs["method"])]:
        row = {"method": method, "label": METHODS[method]}
        for size in sizes:
            hit = runs[(runs["method"] == method) & (runs["size"] == size)]
            ok = hit[hit["status"] == "ok"]
            row[f"{size}_seconds"] = float(ok["train/fit_seconds"].iloc[0]) if len(ok) else np.nan
            row[f"{size}_epochs"] = float(ok["epochs"].iloc[0]) if len(ok) and "epochs" in ok else np.nan
            row[f"{size}_corr"] = float(ok["test/pearson_cell"].iloc[0]) if len(ok) else np.nan
            row[f"{size}_status"] = hit["status"].iloc[0] if len(hit) else "not run"
            row[f"{size}_note"] = "" if len(ok) or not len(hit) else str(hit["note"].iloc[0])
        for size in S2_SIZES:
            row[f"paper_{size}_seconds"] = PAPER_TABLE_S2.get(method, {}).get(size, np.nan)
        out.append(row)
    return pd.DataFrame(out)


def markdown_s2(summary: pd.DataFrame, sizes: dict[str, tuple[int, int]], context: str) -> str:
    head = "| Model | " + " | ".join(f"{s} ({c:,} x {g:,}) ours, s" for s, (c, g) in sizes.items())
    head += " | " + " | ".join(f"{s} ({c:,} x {g:,}) paper, s" for s, (c, g) in S2_SIZES.items()) + " |"
    lines = ["# Table S2: training time (s) on simulated data (cells x genes)", "", context, "", head,
             "|---" * (1 + len(sizes) + len(S2_SIZES)) + "|"]
    notes = []
    for _, r in summary.iterrows():
        cells = []
        for s in sizes:
            if r[f"{s}_status"] == "ok":
                epochs = r[f"{s}_epochs"]
                cells.append(_fmt(r[f"{s}_seconds"], 1) + ("" if np.isnan(epochs) else f" ({int(epochs)} ep.)"))
            else:
                if r[f"{s}_status"] != "not run":
                    notes.append(f"{r['label']} {s}: {r[f'{s}_status']}: {r[f'{s}_note']}")
                cells.append(r[f"{s}_status"] + (f" [{len(notes)}]" if r[f"{s}_status"] != "not run" else ""))
        cells += [_fmt(r[f"paper_{s}_seconds"], 2) for s in S2_SIZES]
        lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    if notes:
        lines += ["", *[f"[{i + 1}] {n}" for i, n in enumerate(notes)]]
    return "\n".join(lines) + "\n"


def s2_cli(argv: Sequence[str] | None = None) -> Path:
    import argparse
    import os
    import platform
    import shlex
    import sys

    parser = argparse.ArgumentParser(prog="runtime_table_s2.py", description=(
        "Paper Table S2: total training time of every method on simulated data D1 (1,000 x 3,000), "
        "D2 (3,000 x 5,000), D3 (10,000 x 8,000)."))
    parser.add_argument("--sizes", nargs="+", default=["D1", "D2"], help="subset of D1 D2 D3 (D3 takes hours)")
    parser.add_argument("--methods", nargs="+", default=list(S2_METHODS))
    parser.add_argument("--n-proteins", type=int, default=40, help="proteins simulated (the paper does not say)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("logs") / "tables" / "table_s2")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--set", action="append", default=[], metavar="METHOD:KEY=VALUE")
    parser.add_argument("--quick", action="store_true", help="two tiny sizes and budgets (CI, tests)")
    parser.add_argument("--from-runs", action="store_true",
                        help="train nothing: rebuild the table from <out>/runs.csv (e.g. after an interruption)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.quick:
            sizes = dict(S2_QUICK_SIZES)
        else:
            bad = [s for s in args.sizes if s not in S2_SIZES]
            if bad:
                raise ValueError(f"unknown size(s) {bad}; choose from {list(S2_SIZES)}")
            sizes = {s: S2_SIZES[s] for s in args.sizes}
        methods = check_methods(args.methods)
        method_overrides = parse_method_overrides(args.set)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    n_proteins = 12 if args.quick else args.n_proteins
    args.out.mkdir(parents=True, exist_ok=True)
    if args.from_runs:
        runs = pd.read_csv(args.out / "runs.csv")
    else:
        runs = run_s2(sizes, methods, args.out, n_proteins, args.seed, args.override, method_overrides, args.quick)
    summary = summarise_s2(runs, list(sizes))
    command = "python scripts/runtime_table_s2.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    context = (f"Training time = the fit alone (`train/fit_seconds` in each run's metrics.json), {n_proteins} "
               f"proteins, "
               f"seed {args.seed}{', quick mode' if args.quick else ''}. Neural models: at most 500 epochs, early "
               f"stopping after 10 epochs without a better validation per-cell Pearson (epochs run in brackets); "
               f"scIPENN keeps its own rule (validation loss). Here: {platform.processor() or platform.machine()}, "
               f"{os.cpu_count()} cores shared with other jobs; the paper: Intel Xeon 6248R, no GPU.\n\n"
               f"Command: `{command}`")
    md, csv = args.out / "table_s2.md", args.out / "table_s2.csv"
    write_csv(summary, csv)
    atomic_text(md, markdown_s2(summary, sizes, context))
    print(md.read_text())
    print(f"wrote {md} and {csv} (per-run metrics: {args.out / 'runs.csv'})")
    return md
