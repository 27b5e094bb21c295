#!/usr/bin/env python
"""Convert the Kaggle HSPC CITE-seq files once into an .h5ad that later runs load in seconds.

    python scripts/prepare_hspc.py --data-dir data/hspc            # -> data/hspc/crossmodalnet_hspc.h5ad
    python scripts/prepare_hspc.py --data-dir data/hspc --raw-rna --raw-protein --out hspc_raw.h5ad

The cache keeps every training cell (all days; ``data.source.days`` selects at load time) and records whether it
holds raw or normalised values, so a config that asks for the other kind gets a clear error instead of silently
wrong values. ``configs/data/hspc.yaml`` reads ``data_dir/crossmodalnet_hspc.h5ad`` when it exists
(``data.source.cache``). Input files are only read; an existing output is kept unless ``--force``.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from crossmodalnet.data.kaggle import load_hspc, write_cache
from crossmodalnet.data.validate import DataError


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", required=True, help="folder with train_cite_inputs.h5, ... and metadata.csv")
    p.add_argument("--out", default="crossmodalnet_hspc.h5ad", help="output .h5ad (relative paths: in --data-dir)")
    p.add_argument("--raw-rna", action="store_true", help="use train_cite_inputs_raw.h5 (counts)")
    p.add_argument("--raw-protein", action="store_true", help="use train_cite_targets_raw.h5 (counts)")
    p.add_argument("--inputs", default="train_cite_inputs.h5")
    p.add_argument("--targets", default="train_cite_targets.h5")
    p.add_argument("--metadata", default="metadata.csv")
    p.add_argument("--overwrite", "--force", dest="force", action="store_true",
                   help="replace an existing output file (default: refuse)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.out)
    if not out.is_absolute():
        out = Path(args.data_dir) / out
    inputs = {Path(args.data_dir) / f for f in (args.inputs, args.targets, args.metadata)}
    if out.resolve() in {i.resolve() for i in inputs}:
        print(f"error: --out {out} would overwrite an input file", file=sys.stderr)
        raise SystemExit(2)
    if out.exists() and not args.force:  # a cache is never replaced silently (exit 2, like every data error)
        print(f"error: {out} already exists; choose another --out or pass --overwrite to replace it",
              file=sys.stderr)
        raise SystemExit(2)
    t = time.perf_counter()
    try:
        adata = load_hspc(args.data_dir, inputs=args.inputs, targets=args.targets, metadata=args.metadata,
                          raw_rna=args.raw_rna, raw_protein=args.raw_protein, days=None, cache=None)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    write_cache(adata, out)
    print(f"wrote {out}: {adata.n_obs} cells x {adata.n_vars} genes, {adata.obsm['protein'].shape[1]} proteins "
          f"({time.perf_counter() - t:.0f} s)")
    return out


if __name__ == "__main__":
    main()
