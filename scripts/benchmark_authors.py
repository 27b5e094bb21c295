"""Per-epoch training time of the authors' package (PyPI ``crossmodalnet`` 0.1.0) at a Table S2 size.

It clashes with this project's import name, so run it from its own virtual environment and from a folder
outside this repository:

    python3 -m venv /tmp/authors-venv
    /tmp/authors-venv/bin/pip install "torch==2.13.0" "crossmodalnet==0.1.0"
    cd /tmp && /tmp/authors-venv/bin/python /path/to/repo/scripts/benchmark_authors.py --size D3

Same shape as ``scripts/benchmark.py`` (random genes at 15% non-zero, 100 proteins, 3 days, batch 256,
their default latent 512); prints one JSON line with the median epoch time (their epoch includes their
per-cell Python correlation loop and a 5% validation pass, as users of that package get).

Time to accuracy (called by ``scripts/benchmark_time_to_accuracy.py``): ``--train-x/--train-y`` (.h5ad, the
training + validation cells; the package draws its own 5% validation set) and ``--test-x/--test-y``: the
package's default run (its CLI defaults: SGD, 30 epochs, patience 10, batch 256) end to end, then the test cells'
per-cell Pearson; prints one JSON line with the wall time.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

SIZES = {"D1": (1_000, 3_000), "D2": (3_000, 5_000), "D3": (10_000, 8_000), "quick": (600, 500)}


class _EpochClock:
    """Timestamps the package's per-epoch '(Val) epoch' lines on stdout."""

    def __init__(self, stream) -> None:
        self.stream, self.stamps = stream, []

    def write(self, text: str) -> int:
        if "(Val) epoch" in text:
            self.stamps.append(time.perf_counter())
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="D3", choices=list(SIZES))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--density", type=float, default=0.15)
    parser.add_argument("--train-x")
    parser.add_argument("--train-y")
    parser.add_argument("--test-x")
    parser.add_argument("--test-y")
    parser.add_argument("--optimizer", default="SGD", choices=["SGD", "Adam"], help="their CLI default: SGD")
    parser.add_argument("--max-epochs", type=int, default=30, help="their CLI default: 30")
    parser.add_argument("--seed", type=int, default=3559, help="their CLI default seed")
    args = parser.parse_args()
    if args.train_x:
        return time_to_accuracy(args)
    import anndata as ad
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp
    import torch
    from crossmodalnet.training.run import train  # the authors' package

    n, g = SIZES[args.size]
    rng = np.random.default_rng(0)
    x = sp.random(n, g, density=args.density, format="csr", dtype=np.float32, random_state=0)
    x.data = np.log1p(x.data * 5).astype(np.float32)
    obs = pd.DataFrame({"day": rng.integers(2, 5, n)}, index=[f"c{i}" for i in range(n)])
    y = rng.normal(size=(n, 100)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        ad.AnnData(X=x, obs=obs).write_h5ad(Path(tmp) / "x.h5ad")
        ad.AnnData(X=y, obs=obs).write_h5ad(Path(tmp) / "y.h5ad")
        cli = SimpleNamespace(data_x=str(Path(tmp) / "x.h5ad"), data_y=str(Path(tmp) / "y.h5ad"), tkey="day",
                              prep=None, save=False, batch_size=256, hparams_path=None, optimizer="Adam",
                              log_dir=None, n_epochs=args.epochs, verbose=True, save_dir=None)
        clock = _EpochClock(sys.stdout)
        sys.stdout = clock
        start = time.perf_counter()
        train(cli)
        sys.stdout = clock.stream
    stamps = [start] + clock.stamps
    epochs = [b - a for a, b in zip(stamps, stamps[1:])]
    print(json.dumps({"package": "crossmodalnet 0.1.0 (PyPI)", "size": args.size, "cells": n, "genes": g,
                      "torch_threads": torch.get_num_threads(), "epoch_s": epochs,
                      "median_epoch_s_after_first": statistics.median(epochs[1:] or epochs)}))
    return 0


def time_to_accuracy(args) -> int:
    """Their default training on the given files, end to end, and per-cell Pearson on the test cells."""
    import random

    start = time.perf_counter()
    import anndata as ad
    import numpy as np
    import torch
    from crossmodalnet.training.run import train  # the authors' package

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    cli = SimpleNamespace(data_x=args.train_x, data_y=args.train_y, tkey="day", prep=None, save=False,
                          batch_size=256, hparams_path=None, optimizer=args.optimizer, log_dir=None,
                          n_epochs=args.max_epochs, verbose=True, save_dir=None)
    clock = _EpochClock(sys.stdout)
    sys.stdout = clock
    try:
        model = train(cli)
    finally:
        sys.stdout = clock.stream
    fit_s = time.perf_counter() - start
    # the genes the package kept (its own filter_genes(min_cells=5)), in its order, and its one-hot days
    import scanpy as sc
    ref = ad.read_h5ad(args.train_x)
    sc.pp.filter_genes(ref, min_cells=5)
    kept = ref.var_names
    test_x, test_y = ad.read_h5ad(args.test_x), ad.read_h5ad(args.test_y)
    x = test_x[:, kept].X
    x = torch.as_tensor(x.toarray() if hasattr(x, "toarray") else np.asarray(x), dtype=torch.float32)
    days = np.sort(np.unique(ref.obs["day"].to_numpy()))
    onehot = torch.as_tensor((test_x.obs["day"].to_numpy()[:, None] == days[None, :]).astype(np.float32))
    model.eval()
    with torch.no_grad():
        pred = model(x, onehot).numpy().astype(np.float64)
    y = np.asarray(test_y.X, dtype=np.float64)
    pc, yc = pred - pred.mean(1, keepdims=True), y - y.mean(1, keepdims=True)
    r = (pc * yc).sum(1) / np.sqrt((pc * pc).sum(1) * (yc * yc).sum(1) + 1e-12)
    print(json.dumps({"package": "crossmodalnet 0.1.0 (PyPI)", "optimizer": args.optimizer,
                      "epochs": len(clock.stamps), "fit_s": fit_s, "wall_s": time.perf_counter() - start,
                      "test_pearson_cell": float(r.mean()), "torch_threads": torch.get_num_threads()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
