"""Compare CrossmodalNet's time encodings / injections with time-aware baselines (issue 18 items 3, 4, 6).

Each run is a real ``python train.py`` in its own process; metrics come from its metrics.json. Choose on the
selection seeds, report on disjoint seeds:

    python scripts/compare_time_encodings.py --seeds 100,101 --settings drift,drift_mid,drift_last,sim,bmmc \
        --variants paper,spline_film_output,svd_ridge_poly --out /tmp/time_select
    python scripts/compare_time_encodings.py --collect --out /tmp/time_select     # summary.md

Simulator seeds change the simulated data set as well as the split and initialisation, so a selection seed's
held-out day is a development data set the report seeds never see. Writes ``runs.csv`` and ``summary.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
SHARED_BMMC = REPO.parent / "shared" / "data" / "bmmc_cite_starter"
SMALL = ["data.source.n_cells=2000", "data.source.n_genes=1000", "data.source.n_proteins=30"]

SETTINGS: dict[str, list[str]] = {
    "drift": ["experiment=synthetic_drift", *SMALL],
    "drift_mid": ["experiment=synthetic_drift_ood", *SMALL],
    "drift_last": ["experiment=synthetic_drift_last", *SMALL],
    "sim": ["experiment=synthetic", *SMALL],
    "bmmc": ["experiment=bmmc", f"data.data_dir={SHARED_BMMC}"],
}


def _cmn(encoding: str, injection: str, extrapolation: str = "extrapolate", *extra: str) -> list[str]:
    return [f"model.time_encoding={encoding}", f"model.time_injection={injection}",
            f"model.time_extrapolation={extrapolation}", *extra]


VARIANTS: dict[str, list[str]] = {
    # CrossmodalNet
    "paper": _cmn("lookup", "add_latent", "nearest"),
    "lookup_after_bn": _cmn("lookup", "after_bn", "nearest"),
    "lookup_film_output": _cmn("lookup", "film+output", "nearest"),
    "spline_add_latent": _cmn("spline", "add_latent"),
    "spline_after_bn": _cmn("spline", "after_bn"),
    "spline_film": _cmn("spline", "film"),
    "spline_output": _cmn("spline", "output"),
    "spline_film_output": _cmn("spline", "film+output"),
    "spline2_film_output": _cmn("spline", "film+output", "extrapolate", "model.time_knots=2"),
    "spline3_film_output": _cmn("spline", "film+output", "extrapolate", "model.time_knots=3"),
    "poly_film_output": _cmn("poly", "film+output"),
    "poly_output_lr03": _cmn("poly", "output", "extrapolate", "model.time_lr=0.03"),
    "spline_output_lr03": _cmn("spline", "output", "extrapolate", "model.time_lr=0.03"),
    "poly_film_output_lr03": _cmn("poly", "film+output", "extrapolate", "model.time_lr=0.03"),
    "poly_after_bn_output_lr03": _cmn("poly", "after_bn+output", "extrapolate", "model.time_lr=0.03"),
    "mlp_output_lr03": _cmn("mlp", "output", "extrapolate", "model.time_lr=0.03"),
    "lookup_output_lr03": _cmn("lookup", "output", "nearest", "model.time_lr=0.03"),
    "poly_output_lr01": _cmn("poly", "output", "extrapolate", "model.time_lr=0.01"),
    "spline_film_output_lr01": _cmn("spline", "film+output", "extrapolate", "model.time_lr=0.01"),
    "poly_film_output_lr01": _cmn("poly", "film+output", "extrapolate", "model.time_lr=0.01"),
    "poly_output": _cmn("poly", "output"),
    "poly_after_bn_output": _cmn("poly", "after_bn+output"),
    "spline_after_bn_output": _cmn("spline", "after_bn+output"),
    "fourier_film_output": _cmn("fourier", "film+output"),
    "mlp_film_output": _cmn("mlp", "film+output"),
    # the shipped default, and one change at a time (issue 18 item 6: re-state the defaults on selection seeds)
    "default": [],
    "default_patience20": ["callbacks.early_stopping.patience=20"],
    "default_dis_lambda0": ["model.dis_lambda=0.0"],
    "default_dis_lambda05": ["model.dis_lambda=0.5"],
    "default_time_init_std1": ["model.time_init_std=1.0"],
    "default_sq_norm": ["model.reconstruction=sq_norm"],
    "default_spline": ["model.time_encoding=spline"],
    "default_poly3": ["model.time_degree=3"],
    "default_lookup": ["model.time_encoding=lookup", "model.time_extrapolation=nearest"],
    # baselines (time-blind and time-aware rows)
    "mlp_mse_poly": ["model=mlp_mse", "model.time_features=poly"],
    "mlp_mse_poly_patience20": ["model=mlp_mse", "model.time_features=poly", "callbacks.early_stopping.patience=20"],
    "mlp_nlc_poly": ["model=mlp_nlc", "model.time_features=poly"],
    "mlp_nlc_poly_patience20": ["model=mlp_nlc", "model.time_features=poly", "callbacks.early_stopping.patience=20"],
    "svd_ridge": ["model=svd_ridge"],
    "svd_ridge_onehot": ["model=svd_ridge", "model.time_features=onehot"],
    "svd_ridge_poly": ["model=svd_ridge", "model.time_features=poly"],
    "mlp_nlc": ["model=mlp_nlc"],
}
COLUMNS = ["test/pearson_cell", "val/best_pearson_cell", "val/pearson_cell", "test/pearson_protein", "test/mse",
           "test/ood_none/pearson_cell", "test/ood_nearest/pearson_cell", "epochs", "train/fit_seconds"]


def run_one(out: Path, variant: str, setting: str, seed: int, extra: list[str]) -> dict:
    run_dir = out / f"{setting}__{variant}__s{seed}"
    metrics_file = run_dir / "metrics.json"
    start = time.time()
    if not metrics_file.exists():
        cmd = [sys.executable, str(REPO / "train.py"), f"hydra.run.dir={run_dir}", "callbacks.progress_bar=null",
               "torch_threads=1", f"seed={seed}", "+plots=false", *SETTINGS[setting], *VARIANTS[variant], *extra]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore"}
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"FAILED {run_dir.name}: {proc.stderr[-1500:]}", file=sys.stderr, flush=True)
            return {"variant": variant, "setting": setting, "seed": seed, "failed": True}
    metrics = json.loads(metrics_file.read_text())
    row = {"variant": variant, "setting": setting, "seed": seed}
    row.update({c: metrics.get(c) for c in COLUMNS})
    val = row["val/best_pearson_cell"] if row["val/best_pearson_cell"] is not None else row["val/pearson_cell"]
    row["val"] = val
    print(f"{run_dir.name}: test r={row['test/pearson_cell']:.4f} val r={val if val is None else round(val, 4)} "
          f"({time.time() - start:.0f} s)", flush=True)
    return row


def collect(out: Path) -> pd.DataFrame:
    rows = []
    for f in sorted(out.glob("*__*__s*/metrics.json")):
        setting, variant, seed = f.parent.name.split("__")
        m = json.loads(f.read_text())
        row = {"variant": variant, "setting": setting, "seed": int(seed[1:])}
        row.update({c: m.get(c) for c in COLUMNS})
        row["val"] = row["val/best_pearson_cell"] if row["val/best_pearson_cell"] is not None else row["val/pearson_cell"]
        rows.append(row)
    return pd.DataFrame(rows)


def summarise(df: pd.DataFrame) -> str:
    lines = []
    for setting, part in df.groupby("setting", sort=False):
        lines += [f"\n#### {setting}\n", "| variant | seeds | test r (cell) | val r (cell) | test r, no time | epochs |",
                  "|---|---|---|---|---|---|"]
        stats = []
        for variant, g in part.groupby("variant"):
            def fmt(col):
                v = pd.to_numeric(g[col], errors="coerce").dropna()
                if v.empty:
                    return "", float("nan")
                return (f"{v.mean():.4f} ± {v.std(ddof=1):.4f}" if len(v) > 1 else f"{v.mean():.4f}"), v.mean()
            test, mean = fmt("test/pearson_cell")
            stats.append((mean, f"| {variant} | {len(g)} | {test} | {fmt('val')[0]} | "
                                f"{fmt('test/ood_none/pearson_cell')[0]} | {fmt('epochs')[0]} |"))
        lines += [s for _, s in sorted(stats, key=lambda t: -t[0] if t[0] == t[0] else 1)]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seeds", default="100,101")
    p.add_argument("--settings", default="drift,drift_mid,drift_last,sim,bmmc")
    p.add_argument("--variants", default="paper,spline_film_output,svd_ridge_poly")
    p.add_argument("--extra", action="append", default=[], help="an override added to every run")
    p.add_argument("--collect", action="store_true", help="only summarise the runs under --out")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.collect:
        for seed in [int(s) for s in args.seeds.split(",")]:
            for setting in args.settings.split(","):
                for variant in args.variants.split(","):
                    run_one(args.out, variant, setting, seed, args.extra)
    df = collect(args.out)
    df.to_csv(args.out / "runs.csv", index=False)
    text = summarise(df)
    (args.out / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
