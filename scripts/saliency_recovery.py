"""Which saliency method recovers the simulator's causal genes best? One table, per method and ranking.

    python scripts/saliency_recovery.py                       # seeds 0 1 2 of the default simulator
    python scripts/saliency_recovery.py --seeds 0 --methods gradient grad_x_input --max-cells 64
    python scripts/saliency_recovery.py --retrain --markdown docs/saliency_recovery.md

Per seed: trains the default configuration (``python train.py seed=S torch_threads=1``) into
``<runs-dir>/seed<S>`` unless that run dir already has a checkpoint (``--retrain`` trains again), rebuilds the
same data and split from the run's ``config.yaml``, then for every attribution method of
:mod:`crossmodalnet.interpret.saliency` sums the per-cell attributions over the same seeded subset of training
cells (``--max-cells``, default 256 as in every run's metrics.json) and scores both rankings
(``magnitude`` = |sum over cells|, ``absolute`` = sum of |per-cell attribution|) against the causal genes with
:mod:`crossmodalnet.interpret.recovery` (AUROC, precision@k with k = number of causal genes, coding gene first),
beside the |Pearson(gene, protein)| baseline over all training cells. Prints mean +- sd over seeds; writes the
per-seed rows as CSV and JSON into ``--runs-dir``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from crossmodalnet.interpret.saliency import METHODS  # noqa: E402

METRICS = ("auroc", "precision_at_k", "coding_gene_top1")


def train_run(seed: int, run_dir: Path, threads: int, overrides: list[str]) -> None:
    """The default training run for ``seed`` into ``run_dir`` (the user's entry point, in a subprocess)."""
    cmd = [sys.executable, str(ROOT / "train.py"), f"seed={seed}", f"torch_threads={threads}",
           f"hydra.run.dir={run_dir}", "callbacks.progress_bar=null", *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "WANDB_MODE": "offline"}
    print("+", " ".join(cmd), flush=True)
    with open(run_dir.parent / f"{run_dir.name}.train.log", "w") as log:
        subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)


def checkpoint(run_dir: Path) -> Path | None:
    found = sorted((run_dir / "checkpoints").glob("best*.ckpt"))
    return found[-1] if found else None


def measure(run_dir: Path, methods: list[str], max_cells: int) -> list[dict]:
    """Recovery of every (method, ranking) on one trained run."""
    from omegaconf import OmegaConf

    from crossmodalnet.data.validate import PROTEIN_KEY
    from crossmodalnet.evaluate import recovery_saliency
    from crossmodalnet.interpret.recovery import causal_sets, compare_with_correlation
    from crossmodalnet.predict import load_model
    from crossmodalnet.train import build_datamodule

    cfg = OmegaConf.load(run_dir / "config.yaml")
    dm = build_datamodule(cfg)
    dm.setup()
    saved = pd.read_csv(run_dir / "split.csv", index_col=0)["split"]
    train_cells = list(dm.splits["train"].obs_names)
    if sorted(train_cells) != sorted(saved.index[saved == "train"]):
        raise SystemExit(f"error: the rebuilt training split differs from {run_dir / 'split.csv'}")
    ckpt = checkpoint(run_dir)
    model = load_model(ckpt)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    part = dm.splits["train"]
    proteins = part.obsm[PROTEIN_KEY].to_numpy(dtype=np.float64)
    causal = causal_sets(dm.adata)
    rows = []
    for method in methods:
        start = time.perf_counter()
        result = recovery_saliency(model, dm, "train", max_cells, seed=0, method=method)
        seconds = time.perf_counter() - start
        for by in ("magnitude", "absolute"):
            rec = compare_with_correlation(result.scores(by), part.X, proteins, causal)
            row = {"seed": int(cfg.seed), "method": method, "rank_by": by, "seconds": seconds,
                   **{m: rec[f"saliency_{m}"] for m in METRICS}}
            rows.append(row)
            print(f"seed {cfg.seed} {method:26s} {by:9s} auroc {row['auroc']:.3f}  p@k {row['precision_at_k']:.3f}"
                  f"  top1 {row['coding_gene_top1']:.3f}  ({seconds:.1f} s)", flush=True)
    rows.append({"seed": int(cfg.seed), "method": "Pearson correlation, absolute (baseline)", "rank_by": "-", "seconds": float("nan"),
                 **{m: rec[f"correlation_{m}"] for m in METRICS}})
    for row in rows:
        row.update({"checkpoint": str(ckpt), "checkpoint_mtime": time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(ckpt.stat().st_mtime)),
            "test_pearson_cell": metrics.get("test/pearson_cell"), "n_cells_saliency": min(max_cells, part.n_obs)})
    return rows


def summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd over seeds per (method, ranking), best AUROC first."""
    grouped = rows.groupby(["method", "rank_by"], sort=False)
    out = grouped[list(METRICS)].agg(["mean", "std"])
    out[("seconds", "mean")] = grouped["seconds"].mean()
    out[("seeds", "n")] = grouped["seed"].nunique()
    return out.sort_values(("auroc", "mean"), ascending=False)


def markdown(table: pd.DataFrame) -> str:
    lines = ["| method | ranking | AUROC | precision@k | coding gene first | seconds (per run) |",
             "|---|---|---|---|---|---|"]
    for (method, by), r in table.iterrows():
        cell = lambda m: f"{r[(m, 'mean')]:.3f} ± {r[(m, 'std')]:.3f}"  # noqa: E731
        secs = "" if np.isnan(r[("seconds", "mean")]) else f"{r[('seconds', 'mean')]:.1f}"
        lines.append(f"| {method} | {by} | {cell('auroc')} | {cell('precision_at_k')} | "
                     f"{cell('coding_gene_top1')} | {secs} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--runs-dir", default=str(ROOT / "outputs" / "saliency_recovery"))
    p.add_argument("--retrain", action="store_true", help="train again even where a checkpoint exists")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--max-cells", type=int, default=256, help="training cells whose attributions are summed")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--markdown", help="also write the summary table to this file")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides for training, e.g. trainer.max_epochs=10")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    runs = Path(args.runs_dir).expanduser().resolve()
    runs.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in args.seeds:
        run_dir = runs / f"seed{seed}"
        if args.retrain or checkpoint(run_dir) is None:
            train_run(seed, run_dir, args.threads, args.overrides)
        rows += measure(run_dir, args.methods, args.max_cells)
    frame = pd.DataFrame(rows)
    frame.to_csv(runs / "recovery.csv", index=False)
    (runs / "recovery.json").write_text(json.dumps(rows, indent=1))
    table = markdown(summary(frame))
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
