#!/usr/bin/env python
"""Load time and peak memory of the HSPC loader at the full Kaggle shape (or smaller).

Writes a synthetic data set in exactly the Kaggle layout (pandas HDF5 "fixed" frames, written chunk by chunk so
generation never holds the dense matrix): ``train_cite_inputs.h5`` (cells x genes at the given density),
``train_cite_targets.h5`` (cells x 140) and ``metadata.csv``; then, in a fresh process, loads it with
``crossmodalnet.data.kaggle.load_hspc`` and reports wall time, peak RSS and the size of the resulting CSR matrix.
The full shape (70,988 x 22,050, 15% non-zero) writes ~6.3 GB to ``--dir``; the files are deleted afterwards
unless ``--keep``.

    python scripts/benchmark_memory.py --quick            # 5,000 cells, seconds
    python scripts/benchmark_memory.py                    # the full HSPC shape, several minutes
    python scripts/benchmark_memory.py --cells 20000 --datamodule   # also time CiteDataModule.setup()
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

HSPC_CELLS, HSPC_GENES, HSPC_PROTEINS = 70_988, 22_050, 140


def _pandas_attrs(obj, **extra) -> None:
    for k, v in {"CLASS": b"ARRAY", "FLAVOR": b"numpy", "VERSION": b"2.4", "transposed": np.uint8(1),
                 **extra}.items():
        obj.attrs[k] = v


def write_kaggle_frame(path: Path, key: str, index: list[str], columns: list[str], rows_fn,
                       chunk_rows: int = 2048) -> None:
    """Write a pandas "fixed" frame (what ``DataFrame.to_hdf(format='fixed')`` writes) block of rows by block."""
    with h5py.File(path, "w") as f:
        g = f.create_group(key)
        for k, v in {"CLASS": b"GROUP", "VERSION": b"1.0", "pandas_type": b"frame", "pandas_version": b"0.15.2",
                     "ndim": np.int64(2), "nblocks": np.int64(1),
                     "axis0_variety": b"regular", "axis1_variety": b"regular",
                     "block0_items_variety": b"regular"}.items():
            g.attrs[k] = v
        cols = np.array(columns, dtype="S")
        for name, values in (("axis0", cols), ("axis1", np.array(index, dtype="S")), ("block0_items", cols)):
            ds = g.create_dataset(name, data=values)
            _pandas_attrs(ds, kind=b"string")
        ds = g.create_dataset("block0_values", shape=(len(index), len(columns)), dtype=np.float32)
        _pandas_attrs(ds)
        for start in range(0, len(index), chunk_rows):
            stop = min(start + chunk_rows, len(index))
            ds[start:stop] = rows_fn(start, stop)


def generate(folder: Path, n_cells: int, n_genes: int, density: float, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    cells = [f"cell{i:06d}" for i in range(n_cells)]
    genes = [f"ENSG{i:011d}_G{i}" for i in range(n_genes)]

    def gene_rows(start: int, stop: int) -> np.ndarray:
        block = rng.random((stop - start, n_genes), dtype=np.float32)
        block[block >= density] = 0.0
        block *= np.float32(5.0 / density)  # values in (0, 5], like log1p-normalised expression
        return block

    t = time.perf_counter()
    write_kaggle_frame(folder / "train_cite_inputs.h5", "train_cite_inputs", cells, genes, gene_rows)
    proteins = [f"P{i}" for i in range(HSPC_PROTEINS)]
    write_kaggle_frame(folder / "train_cite_targets.h5", "train_cite_targets", cells, proteins,
                       lambda a, b: rng.normal(size=(b - a, HSPC_PROTEINS)).astype(np.float32))
    pd.DataFrame({"cell_id": cells, "day": rng.choice([2, 3, 4], n_cells), "donor": rng.choice([1, 2, 3], n_cells),
                  "cell_type": rng.choice(["HSC", "MkP", "NeuP"], n_cells), "technology": "citeseq"}
                 ).to_csv(folder / "metadata.csv", index=False)
    return {"write_s": round(time.perf_counter() - t, 1),
            "file_gb": round((folder / "train_cite_inputs.h5").stat().st_size / 1e9, 3)}


CHILD = r"""
import json, resource, sys, time
import numpy as np
from crossmodalnet.data.kaggle import load_hspc
def rss_mb(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3  # Linux: KiB
base = rss_mb()
t = time.perf_counter()
adata = load_hspc(sys.argv[1], days=None, chunk_bytes=int(sys.argv[2]))
load_s = time.perf_counter() - t
x = adata.X
csr_mb = (x.data.nbytes + x.indices.nbytes + x.indptr.nbytes) / 1e6
out = {"shape": list(x.shape), "nnz": int(x.nnz), "density": x.nnz / (x.shape[0] * x.shape[1]),
       "dtype": str(x.dtype), "index_dtype": str(x.indices.dtype), "csr_mb": round(csr_mb, 1),
       "dense_mb": round(x.shape[0] * x.shape[1] * 4 / 1e6, 1), "load_s": round(load_s, 1),
       "baseline_rss_mb": round(base, 1), "peak_rss_mb": round(rss_mb(), 1)}
out["peak_over_csr"] = round(out["peak_rss_mb"] / csr_mb, 2)
out["peak_minus_baseline_over_csr"] = round((out["peak_rss_mb"] - base) / csr_mb, 2)
if sys.argv[3] == "1":
    from crossmodalnet.data.datamodule import CiteDataModule
    t = time.perf_counter()
    dm = CiteDataModule(adata, time_key="day", seed=0)
    dm.setup()
    out["datamodule_setup_s"] = round(time.perf_counter() - t, 1)
    out["peak_rss_after_setup_mb"] = round(rss_mb(), 1)
    batch = next(iter(dm.train_dataloader()))
    out["batch_x_shape"] = list(batch["x"].shape)
print("RESULT " + json.dumps(out))
"""


def measure(folder: Path, chunk_bytes: int, datamodule: bool) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(folder), str(chunk_bytes), "1" if datamodule else "0"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"loader failed:\n{proc.stderr[-3000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cells", type=int, default=HSPC_CELLS)
    p.add_argument("--genes", type=int, default=HSPC_GENES)
    p.add_argument("--density", type=float, default=0.15)
    p.add_argument("--quick", action="store_true", help="5,000 cells (seconds)")
    p.add_argument("--dir", default=None, help="where to write the files (default: a temporary folder in /tmp)")
    p.add_argument("--keep", action="store_true", help="keep the generated files")
    p.add_argument("--chunk-mb", type=int, default=128, help="dense rows read per chunk, in MB")
    p.add_argument("--datamodule", action="store_true", help="also run CiteDataModule.setup() on the loaded data")
    p.add_argument("--json", default=None, help="write the result here as JSON")
    args = p.parse_args(argv)
    if args.quick:
        args.cells = min(args.cells, 5000)
    folder = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="cmn_hspc_bench_", dir="/tmp"))
    try:
        print(f"writing {args.cells} x {args.genes} at {args.density:.0%} non-zero to {folder} ...", flush=True)
        result = {"cells": args.cells, "genes": args.genes, "target_density": args.density,
                  "chunk_mb": args.chunk_mb, **generate(folder, args.cells, args.genes, args.density)}
        print(f"written ({result['file_gb']} GB in {result['write_s']} s); loading ...", flush=True)
        result.update(measure(folder, args.chunk_mb * 2**20, args.datamodule))
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(result, indent=2))
    goal = "met" if result["peak_over_csr"] < 2.5 else "NOT met"
    print(f"peak RSS {result['peak_rss_mb']:.0f} MB = {result['peak_over_csr']}x the CSR size "
          f"({result['csr_mb']:.0f} MB;"
          f" {result['peak_minus_baseline_over_csr']}x above the interpreter's baseline); goal < 2.5x: {goal}; "
          f"a dense float32 matrix alone would be {result['dense_mb']:.0f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
