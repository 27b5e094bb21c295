"""Per-epoch training time of the authors' package (PyPI ``crossmodalnet`` 0.1.0) at a Table S2 size.

It clashes with this project's import name, so run it from its own virtual environment and from a folder
outside this repository:

    python3 -m venv /tmp/authors-venv
    /tmp/authors-venv/bin/pip install "torch==2.13.0" "crossmodalnet==0.1.0"
    cd /tmp && /tmp/authors-venv/bin/python /path/to/repo/scripts/benchmark_authors.py --size D3

Same shape as ``scripts/benchmark.py`` (random genes at 15% non-zero, 100 proteins, 3 days, batch 256,
their default latent 512); prints one JSON line with the median epoch time (their epoch includes their
per-cell Python correlation loop and a 5% validation pass, as users of that package get).
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
    args = parser.parse_args()
    import anndata as ad
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp
    import torch
    from crossmodalnet.train import train  # the authors' package

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


if __name__ == "__main__":
    sys.exit(main())
