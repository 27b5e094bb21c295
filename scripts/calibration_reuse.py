"""Does calibrating the conformal intervals on the validation cells, which also chose the checkpoint, cost coverage?

Each run sets aside a calibration split as large as the validation split (``data.split.calibration``); the run then
scores, on the same test cells, the intervals calibrated on the fresh calibration cells (``test/interval/*``) and
those calibrated on the validation cells that stopped training and chose the checkpoint
(``test/interval/val_calibrated/*``). The paired difference over seeds is the effect of the reuse.

    python scripts/calibration_reuse.py --out /tmp/calib --seeds 0 1 2 3 4 --setting sim --setting bmmc

Writes ``runs.csv`` and ``summary.csv`` (mean and sd over seeds of each coverage and of the paired difference).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import warnings
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
SHARED_BMMC = REPO.parent / "shared" / "data" / "bmmc_cite_starter"
# equal validation and calibration shares (5% each), the rest as the default 80/5/15 split
SPLIT = ["data.split.train=0.75", "data.split.val=0.05", "data.split.test=0.15", "data.split.calibration=0.05"]
SETTINGS = {
    "sim": ["experiment=synthetic"],
    "sim_drift": ["experiment=synthetic_drift"],
    "bmmc": ["experiment=bmmc", f"data.data_dir={SHARED_BMMC}"],
}
KEYS = ["coverage", "coverage_min_protein", "mean_width", "n_calibration_cells"]


def run_one(out: Path, setting: str, seed: int, extra: list[str]) -> dict:
    from crossmodalnet.training.run import train
    from crossmodalnet.training.tables import compose_config

    run_dir = out / "runs" / f"{setting}__s{seed}"
    if not (run_dir / "metrics.json").exists():
        if run_dir.exists():
            shutil.rmtree(run_dir)
        cfg = compose_config([*SETTINGS[setting], *SPLIT, f"seed={seed}", "torch_threads=1",
                              "callbacks.progress_bar=null", "+plots=false", *extra], run_dir)
        train(cfg)
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    m = json.loads((run_dir / "metrics.json").read_text())
    row = {"setting": setting, "seed": seed, "test/pearson_cell": m.get("test/pearson_cell")}
    for k in KEYS:
        row[f"fresh/{k}"] = m.get(f"test/interval/{k}")
        row[f"reused_val/{k}"] = m.get(f"test/interval/val_calibrated/{k}")
    row["difference/coverage"] = row["reused_val/coverage"] - row["fresh/coverage"]
    print(f"{setting} seed {seed}: coverage fresh {row['fresh/coverage']:.4f}, reused validation cells "
          f"{row['reused_val/coverage']:.4f} ({row['fresh/n_calibration_cells']:.0f} / "
          f"{row['reused_val/n_calibration_cells']:.0f} cells)", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--setting", action="append", choices=sorted(SETTINGS), help="repeatable; default sim")
    p.add_argument("--override", action="append", default=[], help="extra Hydra override (repeatable)")
    args = p.parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "offline")
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [run_one(args.out, s, seed, args.override) for s in (args.setting or ["sim"]) for seed in args.seeds]
    runs = pd.DataFrame(rows)
    runs.to_csv(args.out / "runs.csv", index=False)
    cols = ["fresh/coverage", "reused_val/coverage", "difference/coverage", "fresh/coverage_min_protein",
            "reused_val/coverage_min_protein", "fresh/mean_width", "reused_val/mean_width", "test/pearson_cell"]
    summary = runs.groupby("setting")[cols].agg(["mean", "std"])
    summary.columns = [f"{a} {b}" for a, b in summary.columns]
    summary.insert(0, "seeds", runs.groupby("setting").size())
    summary.to_csv(args.out / "summary.csv")
    print(summary.round(4).T.to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
