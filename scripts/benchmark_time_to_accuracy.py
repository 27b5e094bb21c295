"""Time to accuracy: default early-stopped training end to end, this package vs the authors' (PyPI 0.1.0).

    python scripts/benchmark_time_to_accuracy.py                       # D3: simulator 10,000 cells x 8,000 genes
    python scripts/benchmark_time_to_accuracy.py --quick               # tiny smoke run (CI)
    python scripts/benchmark_time_to_accuracy.py --variant svd=data.preprocess.svd_components=256
    python scripts/benchmark.py --time-to-accuracy ...                 # the same, through the main benchmark

Data: the built-in simulator (:func:`crossmodalnet.data.simulate.simulate_cite`, real signal so accuracy means
something) at the requested shape, written once to ``<out>/data``. Our runs use exactly ``python train.py``
(``data=anndata``, the default 80/5/15 split stratified by day, seed 0), each in its own process; the authors' run
(``scripts/benchmark_authors.py`` in its own venv, ``--authors-python``) gets the same training + validation cells
(it draws its own 5% validation set) and is scored on the same test cells. Wall time is the whole process, from
start to a tested final model (imports, data loading, fitting, testing); ``fit_s`` is the fit alone, and for our
runs ``startup_s`` (interpreter, imports, Hydra), ``data_s``, ``test_s``, ``diagnostics_s`` and ``write_s`` split
the rest (the run's ``time/*`` metrics). Before the timed runs both packages run once on tiny data, untimed, so
byte-code caches and the file cache are warm for both alike (a user's install has them).

``--variant NAME=OVERRIDE[+OVERRIDE...]`` adds runs of ours with Hydra overrides (e.g. no LR schedule, no SVD).
Results (CSV, JSON, Markdown) go to ``--out`` (default ``./benchmark-results``), never into the repository.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SIZES = {  # name: (cells, genes, proteins)
    "D3": (10_000, 8_000, 100),
    "HSPC": (70_988, 22_050, 140),
    "quick": (600, 300, 12),
}
DEFAULT_AUTHORS_PYTHON = "/tmp/authors-venv/bin/python"
STAGES = ("data", "test", "diagnostics", "write")
COLUMNS = ["size", "method", "wall_s", "fit_s", "epochs", "test_pearson_cell", "speedup_vs_authors", "startup_s",
           *[f"{stage}_s" for stage in STAGES], "overrides"]


def prepare(size: str, out: Path, seed: int = 0) -> dict[str, Path]:
    """Simulated data as one .h5ad for ours and train/test X/Y files for the authors' package (same split)."""
    import anndata as ad
    import numpy as np
    import pandas as pd

    from crossmodalnet.data.simulate import simulate_cite
    from crossmodalnet.data.splits import stratified_split

    n, g, p = SIZES[size]
    folder = out / "data" / f"{size}_seed{seed}"
    paths = {k: folder / f"{k}.h5ad" for k in ("full", "train_x", "train_y", "test_x", "test_y")}
    if all(path.exists() for path in paths.values()):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    adata = simulate_cite(n_cells=n, n_genes=g, n_proteins=p, seed=seed)
    adata.uns.pop("simulation", None)  # no ground-truth saliency check: both sides just fit and test
    adata.write_h5ad(paths["full"])
    split = stratified_split(adata.obs["day"].tolist(), seed=seed)  # what data=anndata does with seed=0
    proteins = adata.obsm["protein"]
    for name, rows in (("train", np.concatenate([split.train, split.val])), ("test", split.test)):
        part = adata[rows]
        obs = part.obs[["day"]].copy()
        ad.AnnData(X=part.X.copy(), obs=obs, var=part.var[[]].copy()).write_h5ad(paths[f"{name}_x"])
        y = proteins.iloc[rows]
        ad.AnnData(X=y.to_numpy(np.float32), obs=obs.copy(),
                   var=pd.DataFrame(index=[str(c) for c in y.columns])).write_h5ad(paths[f"{name}_y"])
    return paths


def _env(threads: int) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), WANDB_MODE="offline")
    env.pop("PYTHONPATH", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # a user's install has byte-code caches; compiling is not training
    return env


def run_ours(paths: dict[str, Path], run_dir: Path, overrides: list[str], threads: int,
             quick: bool) -> dict:
    """``python train.py`` on the file, in a fresh process; wall time and the run's metrics.json."""
    cmd = [sys.executable, str(REPO / "train.py"), "data=anndata", f"data.source.path={paths['full']}",
           "data.time_key=day", f"torch_threads={threads}", "+plots=false", "logger=csv",
           "callbacks.progress_bar=null", f"hydra.run.dir={run_dir}"]
    if quick:
        cmd += ["trainer.max_epochs=2", "model.latent_dim=32", "model.dis_hidden=16", "data.batch_size=64"]
    cmd += overrides
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(threads), cwd=str(REPO))
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"train.py failed ({' '.join(overrides)}):\n{proc.stderr[-3000:]}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    row = {"wall_s": wall, "fit_s": metrics.get("train/fit_seconds"), "epochs": metrics.get("epochs"),
           "test_pearson_cell": metrics.get("test/pearson_cell")}
    # where the wall time went (crossmodalnet/training/timing.py); start-up = interpreter, imports and Hydra
    row.update({f"{stage}_s": metrics.get(f"time/{stage}_s") for stage in STAGES})
    if metrics.get("time/total_s") is not None:
        row["startup_s"] = wall - metrics["time/total_s"]
    return row


def run_authors(paths: dict[str, Path], python: str, threads: int, quick: bool, optimizer: str) -> dict:
    """The authors' default run (scripts/benchmark_authors.py) from a folder outside this repository."""
    cmd = [python, str(REPO / "scripts" / "benchmark_authors.py"), "--train-x", str(paths["train_x"]),
           "--train-y", str(paths["train_y"]), "--test-x", str(paths["test_x"]), "--test-y", str(paths["test_y"]),
           "--optimizer", optimizer]
    if quick:
        cmd += ["--max-epochs", "2"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(threads), cwd=str(paths["full"].parent))
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"authors' package failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"wall_s": wall, "fit_s": result["fit_s"], "epochs": result["epochs"],
            "test_pearson_cell": result["test_pearson_cell"]}


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1 else f"{v:,.1f}"
    return str(v)


def markdown_table(rows: list[dict], columns: list[str], fmt=_fmt) -> str:
    """A Markdown table of ``rows`` (dicts) in ``columns`` order, cells formatted by ``fmt``."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def parse_variants(specs: list[str]) -> list[tuple[str, list[str]]]:
    """``NAME=OVR[+OVR...]`` -> (name, overrides); the name ``default`` with no overrides comes first."""
    out = [("ours (default)", [])]
    for spec in specs:
        name, _, rest = spec.partition("=")
        if not name or not rest:
            raise SystemExit(f"error: --variant needs NAME=OVERRIDE[+OVERRIDE...], got {spec!r}")
        out.append((f"ours ({name})", [o for o in rest.split("+") if o]))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="D3", help=f"comma-separated from {list(SIZES)}")
    parser.add_argument("--quick", action="store_true", help="tiny data, 2 epochs (CI smoke test)")
    parser.add_argument("--variant", action="append", default=[], help="NAME=OVERRIDE[+OVERRIDE...] (repeatable)")
    parser.add_argument("--no-default", action="store_true", help="skip the run with default settings")
    parser.add_argument("--authors-python", default=DEFAULT_AUTHORS_PYTHON,
                        help="python of the venv with the authors' package ('none' = skip)")
    parser.add_argument("--authors-optimizer", default="SGD", choices=["SGD", "Adam"],
                        help="their CLI default is SGD")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "0")) or 2)
    parser.add_argument("--repeats", type=int, default=1, help="runs per method (seeded identically)")
    parser.add_argument("--out", default="benchmark-results", help="folder for results (default ./benchmark-results)")
    args = parser.parse_args(argv)
    sizes = ["quick"] if args.quick else [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        parser.error(f"unknown size(s) {unknown}; choose from {list(SIZES)}")
    out = Path(args.out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    variants = parse_variants(args.variant)
    if args.no_default:
        variants = variants[1:]
    authors = args.authors_python.lower() != "none"
    if authors and not Path(args.authors_python).exists():
        print(f"warning: {args.authors_python} not found: skipping the authors' package (see "
              f"scripts/benchmark_authors.py for its venv)", file=sys.stderr)
        authors = False
    rows: list[dict] = []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if not args.quick:  # untimed: byte-code caches and the OS file cache warm for both packages alike
        quick_paths = prepare("quick", out)
        if authors:
            run_authors(quick_paths, args.authors_python, args.threads, True, args.authors_optimizer)
        run_ours(quick_paths, out / "runs" / f"{stamp}-warmup", [], args.threads, True)
    for size in sizes:
        paths = prepare(size, out)
        size_rows = []
        for rep in range(args.repeats):
            if authors:  # first: the reference every other row is compared with
                row = {"size": size, "method": f"authors 0.1.0 ({args.authors_optimizer})", "overrides": "",
                       **run_authors(paths, args.authors_python, args.threads, args.quick, args.authors_optimizer)}
                size_rows.append(row)
                print(f"{size} authors: {row}", file=sys.stderr, flush=True)
            for name, overrides in variants:
                run_dir = out / "runs" / f"{stamp}-{size}-{len(size_rows)}"
                row = {"size": size, "method": name, "overrides": " ".join(overrides),
                       **run_ours(paths, run_dir, overrides, args.threads, args.quick)}
                size_rows.append(row)
                print(f"{size} {name}: {row}", file=sys.stderr, flush=True)
        ref = [r["wall_s"] for r in size_rows if r["method"].startswith("authors")]
        for r in size_rows:
            r["speedup_vs_authors"] = (sum(ref) / len(ref)) / r["wall_s"] if ref else None
        rows += size_rows
    import torch
    header = (f"time to accuracy; torch {torch.__version__}, {args.threads} threads per process, "
              f"{os.cpu_count()} CPUs, load average at the end {os.getloadavg()[0]:.1f}")
    report = f"{header}\n\n{markdown_table(rows, COLUMNS)}\n"
    print(report)
    write_report(out, "time_to_accuracy", report, {"header": header, "rows": rows}, rows, COLUMNS)
    return 0


def write_report(out: Path, stem: str, report: str, payload: dict, rows: list[dict], columns: list[str]) -> None:
    """``<stem>.md`` (the printed report), ``<stem>.json`` (``payload``) and ``<stem>.csv`` (``rows``) under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(payload, indent=2))
    with open(out / f"{stem}.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    (out / f"{stem}.md").write_text(report)


if __name__ == "__main__":
    sys.exit(main())
