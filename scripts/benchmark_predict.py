"""Prediction throughput of a trained model on a file, in memory: ``crossmodalnet.inference.predict()`` alone.

    python scripts/benchmark_predict.py --checkpoint outputs/<run dir> --input cells.h5ad [--repeats 2]

Reads the file once (not timed), predicts a warm-up block, then times ``predict(model, adata)`` on every cell
``--repeats`` times (input checks, the training-range monitor and annotations included; no file writing) and
prints one JSON line: cells, genes, non-zero fraction, torch threads, best seconds and cells per second.
``crossmodalnet-predict`` adds start-up, reading and writing the files to this.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="run dir, .ckpt or .joblib")
    parser.add_argument("--input", required=True, help=".h5ad with the model's genes")
    parser.add_argument("--time-key", default=None, help="obs column with the time (default: the model's)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    import anndata as ad
    import numpy as np
    import scipy.sparse as sp
    import torch

    from crossmodalnet.inference.predict import load_model, predict

    model = load_model(args.checkpoint)
    adata = ad.read_h5ad(args.input)
    kwargs = {"time_key": args.time_key} if args.time_key else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "cells outside the training range": not what is measured here
        predict(model, adata[: min(2048, adata.n_obs)].copy(), **kwargs)
        times = []
        for _ in range(max(1, args.repeats)):
            start = time.perf_counter()
            predict(model, adata, **kwargs)
            times.append(time.perf_counter() - start)
    x = adata.X
    nonzero = x.nnz / (x.shape[0] * x.shape[1]) if sp.issparse(x) else float(np.count_nonzero(x)) / x.size
    best = min(times)
    print(json.dumps({"cells": adata.n_obs, "genes": adata.n_vars, "nonzero_fraction": round(nonzero, 4),
                      "torch_threads": torch.get_num_threads(), "seconds": round(best, 3),
                      "cells_per_s": round(adata.n_obs / best, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
