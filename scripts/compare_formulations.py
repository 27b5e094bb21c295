"""Compare CrossmodalNet's Fader/GradNorm formulations (docs/formulation.md) on accuracy and on how time-invariant z is.

Each run is a real ``python train.py`` in its own process (the path users take); metrics come from its metrics.json.

    python scripts/compare_formulations.py --seeds 0,1,2 --settings sim,sim_ood,bmmc --jobs 2 --out /tmp/formulations
    python scripts/compare_formulations.py --formulations paper_stop,plateau --variant paper_stop=callbacks=default \
        --variant plateau=callbacks=plateau --out /tmp/stopping       # any named set of overrides, e.g. stopping rules

Writes ``runs.csv`` (one row per run) and ``summary.md`` (mean ± sd over seeds) under --out.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
SHARED_BMMC = REPO.parent / "shared" / "data" / "bmmc_cite_starter"

FORMULATIONS: dict[str, list[str]] = {
    # v0.2 as shipped, except GradNorm no longer clamps a negative loss ratio (it skips the weight update)
    "v0.2": ["model.reconstruction=mse", "model.adversarial_loss=flip", "model.adversary_in_gradnorm=true"],
    # (a) the authors' code: GradNorm over NLC and MSE; -lambda * CE added at a fixed weight
    "authors": ["model.reconstruction=mse", "model.adversarial_loss=flip", "model.adversary_in_gradnorm=false"],
    # (b) the paper: Fader = per-cell squared norm + lambda * log P(t|z), inside GradNorm
    "paper": ["model.reconstruction=sq_norm", "model.adversarial_loss=flip", "model.adversary_in_gradnorm=true"],
    # (a') the authors' arrangement with the paper's per-cell squared-norm reconstruction
    "authors_sq": ["model.reconstruction=sq_norm", "model.adversarial_loss=flip", "model.adversary_in_gradnorm=false"],
    "authors_sq_l2": ["model.reconstruction=sq_norm", "model.adversarial_loss=flip",
                      "model.adversary_in_gradnorm=false", "model.dis_lambda=2"],
    # (c) confusion adversary (KL(uniform || P(t|z)) >= 0), variants
    "confusion_sq_in": ["model.reconstruction=sq_norm", "model.adversarial_loss=confusion",
                        "model.adversary_in_gradnorm=true"],
    "confusion_mse_in": ["model.reconstruction=mse", "model.adversarial_loss=confusion",
                         "model.adversary_in_gradnorm=true"],
    "confusion_mse_out": ["model.reconstruction=mse", "model.adversarial_loss=confusion",
                          "model.adversary_in_gradnorm=false"],
    "confusion_mse_out_l0.1": ["model.reconstruction=mse", "model.adversarial_loss=confusion",
                               "model.adversary_in_gradnorm=false", "model.dis_lambda=0.1"],
    "confusion_sq_in_l5": ["model.reconstruction=sq_norm", "model.adversarial_loss=confusion",
                           "model.adversary_in_gradnorm=true", "model.dis_lambda=5"],
}
SETTINGS: dict[str, list[str]] = {
    "sim": ["experiment=synthetic"],
    "sim_ood": ["experiment=synthetic_ood"],
    "bmmc": ["experiment=bmmc", f"data.data_dir={SHARED_BMMC}"],
}
COLUMNS = ["test/pearson_cell", "val/best_pearson_cell", "test/pearson_protein", "test/mse",
           "val/time_dis_accuracy", "val/time_probe_accuracy", "val/time_probe_input_accuracy",
           "val/time_chance_accuracy", "train/min_w_nlc", "train/min_w_second", "train/final_w_second", "epochs",
           "train/fit_seconds"]


def run_one(out: Path, formulation: str, setting: str, seed: int, extra: list[str]) -> dict:
    run_dir = out / f"{setting}__{formulation}__s{seed}"
    metrics_file = run_dir / "metrics.json"
    if not metrics_file.exists():
        cmd = [sys.executable, str(REPO / "train.py"), f"hydra.run.dir={run_dir}", "callbacks.progress_bar=null",
               "torch_threads=1", f"seed={seed}", "+plots=false", *SETTINGS[setting], *FORMULATIONS[formulation],
               *extra]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore"}
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"FAILED {run_dir.name}: {proc.stderr[-2000:]}", file=sys.stderr)
            return {"formulation": formulation, "setting": setting, "seed": seed, "failed": True}
    metrics = json.loads(metrics_file.read_text())
    row = {"formulation": formulation, "setting": setting, "seed": seed}
    for prefix in ("train/min_w_", "train/final_w_"):  # GradNorm's second task: fader or recon, by formulation
        metrics.setdefault(f"{prefix}second", metrics.get(f"{prefix}fader", metrics.get(f"{prefix}recon")))
    row.update({c: metrics.get(c) for c in COLUMNS})
    print(f"{run_dir.name}: test r={row['test/pearson_cell']:.4f} dis acc={row['val/time_dis_accuracy']} "
          f"min w_second={row['train/min_w_second']}", flush=True)
    return row


def collect(out: Path) -> pd.DataFrame:
    """Every finished run under ``out`` (``<setting>__<formulation>__s<seed>``), with its early-stopping rule."""
    import yaml

    rows = []
    for metrics_file in sorted(out.glob("*__*__s*/metrics.json")):
        setting, formulation, seed = metrics_file.parent.name.split("__")
        if not seed[1:].isdigit():
            continue
        metrics = json.loads(metrics_file.read_text())
        config = yaml.safe_load((metrics_file.parent / "config.yaml").read_text())
        stopping = config.get("callbacks", {}).get("early_stopping", {})
        row = {"setting": setting, "formulation": formulation, "seed": int(seed[1:]),
               "stopping": f"{stopping.get('monitor')} patience {stopping.get('patience')}"}
        for prefix in ("train/min_w_", "train/final_w_"):  # GradNorm's second task: fader or recon, by formulation
            metrics.setdefault(f"{prefix}second", metrics.get(f"{prefix}fader", metrics.get(f"{prefix}recon")))
        row.update({c: metrics.get(c) for c in COLUMNS})
        rows.append(row)
    return pd.DataFrame(rows)


def summarise(rows: pd.DataFrame) -> str:
    numeric = [c for c in COLUMNS if c in rows]
    grouped = rows.groupby(["setting", "formulation"])[numeric]
    mean, sd, n = grouped.mean(), grouped.std(), grouped.size()
    lines = ["| setting | formulation | n | " + " | ".join(numeric) + " |",
             "|---|---|---|" + "---|" * len(numeric)]
    for key in mean.index:
        cells = []
        for c in numeric:
            m, s = mean.loc[key, c], sd.loc[key, c]
            cells.append("-" if pd.isna(m) else (f"{m:.3f}" if n[key] < 2 or pd.isna(s) else f"{m:.3f} ± {s:.3f}"))
        lines.append(f"| {key[0]} | {key[1]} | {n[key]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--formulations", default=",".join(FORMULATIONS))
    parser.add_argument("--settings", default="sim,sim_ood,bmmc")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("formulation-comparison"))
    parser.add_argument("--collect", action="store_true",
                        help="train nothing: summarise every finished run under --out")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=OVR[+OVR...]",
                        help="add a named setting of Hydra overrides to the formulations (e.g. a stopping rule: "
                             "plateau=callbacks=plateau); list NAME in --formulations to run it")
    parser.add_argument("extra", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args()
    for spec in args.variant:
        name, _, rest = spec.partition("=")
        if not name or not rest or "__" in name:
            sys.exit(f"error: --variant needs NAME=OVERRIDE[+OVERRIDE...] (no '__' in NAME), got {spec!r}")
        FORMULATIONS[name] = [o for o in rest.split("+") if o]
    if args.collect:
        table = collect(args.out)
        table.to_csv(args.out / "all_runs.csv", index=False)
        summary = summarise(table)
        (args.out / "summary_all.md").write_text(summary + "\n")
        print(summary)
        return
    unknown = [f for f in args.formulations.split(",") if f not in FORMULATIONS]
    if unknown or any(s not in SETTINGS for s in args.settings.split(",")):
        sys.exit(f"error: unknown formulation/setting: {unknown or args.settings}; known: {list(FORMULATIONS)}, "
                 f"{list(SETTINGS)}")
    if "bmmc" in args.settings and not SHARED_BMMC.exists():
        sys.exit(f"error: BMMC data not found at {SHARED_BMMC}; drop 'bmmc' from --settings")
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [(f, s, int(seed)) for s in args.settings.split(",") for seed in args.seeds.split(",")
            for f in args.formulations.split(",")]
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda j: run_one(args.out, *j, args.extra), jobs))
    table = pd.DataFrame(rows)
    table.to_csv(args.out / "runs.csv", index=False)
    summary = summarise(table[~table.get("failed", pd.Series(False, index=table.index)).fillna(False)])
    (args.out / "summary.md").write_text(summary + "\n")
    print(summary)


if __name__ == "__main__":
    main()
