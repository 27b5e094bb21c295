"""Speed and memory benchmark: one command, a table (and CSV/JSON) of what matters for CrossmodalNet.

    python scripts/benchmark.py                 # D1, D2, D3 and the full HSPC shape (minutes)
    python scripts/benchmark.py --quick         # tiny, for CI
    python scripts/benchmark.py --sizes D3 --epochs 5 --autograd
    python scripts/benchmark.py --sizes HSPC --svd 128      # + the model on 128 SVD components of the genes
    python scripts/benchmark.py --time-to-accuracy          # end-to-end training vs the authors' package

Per size (random CSR genes at the given density, 100 proteins, 3 time points, batch 256, latent 512):
- ``cmn_epoch_s``: median per-epoch training time of CrossmodalNet (full Algorithm 1: discriminator steps,
  GradNorm), through a real Lightning Trainer, after warm-up epochs;
- ``mlp_epoch_s``: the same for a plain MLP of the same body on MSE alone (the floor), measured in the same
  process; ``ratio`` = cmn / mlp;
- ``autograd_epoch_s`` (with --autograd): CrossmodalNet with ``gradnorm_mode=autograd`` (the straightforward
  two-backward computation), to show what the closed-form step saves;
- ``predict_cells_s`` / ``saliency_cells_s``: throughput of ``crossmodalnet.inference.predict``-style inference from
  CSR and of saliency for one protein;
- ``peak_rss_mb`` of the process (each size runs in its own subprocess) and its ratio to the CSR size.
A second table times the first layer (forward + weight gradient) on dense vs sparse batches by density.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

SIZES = {  # name: (cells, genes, density)
    "D1": (1_000, 3_000, 0.15),
    "D2": (3_000, 5_000, 0.15),
    "D3": (10_000, 8_000, 0.15),
    "HSPC": (70_988, 22_050, 0.15),
    # HSPC's genes and density with a seventh of its cells: per-cell epoch and prediction cost as at HSPC, in a
    # seventh of the time (for a busy machine; epoch time scales linearly with cells)
    "HSPC-10k": (10_000, 22_050, 0.15),
    "quick": (800, 600, 0.15),
}
N_PROTEINS, N_TIMES = 100, 3


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_size(name: str, epochs: int, warmup: int, batch_size: int, latent: int, autograd: bool,
             threads: int | None, accelerator: str = "cpu", svd: int | None = None) -> dict:
    """Benchmark one size in this process (called in a subprocess so peak RSS is per size)."""
    import lightning as L
    import numpy as np
    import torch
    from torch import nn

    from crossmodalnet.data.datamodule import CellBatches, batch_loader
    from crossmodalnet.data.simulate import random_csr
    from crossmodalnet.models.base import adam
    from crossmodalnet.models.crossmodalnet import CrossmodalNet
    from crossmodalnet.models.network import CrossmodalNetwork

    if threads:
        torch.set_num_threads(threads)
    n, g, density = SIZES[name]
    t0 = time.perf_counter()
    genes = random_csr(n, g, density, seed=0)
    gen_s = time.perf_counter() - t0
    csr_mb = (genes.data.nbytes + genes.indices.nbytes + genes.indptr.nbytes) / 2**20
    rng = np.random.default_rng(0)
    proteins = rng.normal(size=(n, N_PROTEINS)).astype(np.float32) + rng.normal(size=N_PROTEINS).astype(np.float32)
    time_index = rng.integers(0, N_TIMES, n)
    weights = np.eye(N_TIMES, dtype=np.float32)[time_index]
    dataset = CellBatches(genes, proteins, weights, time_index)
    time_axis = {"labels": [2, 3, 4], "values": [2.0, 3.0, 4.0]}

    class EpochTimer(L.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_train_epoch_start(self, trainer, module) -> None:
            self._t = time.perf_counter()

        def on_train_epoch_end(self, trainer, module) -> None:
            self.times.append(time.perf_counter() - self._t)

    class PlainMLP(L.LightningModule):
        """The floor: MLP1 + MLP2 of the same sizes, MSE only, one Adam step per batch."""

        def __init__(self) -> None:
            super().__init__()
            self.network = CrossmodalNetwork(g, N_PROTEINS, N_TIMES, latent_dim=latent)

        def training_step(self, batch, batch_idx):
            return nn.functional.mse_loss(self.network(batch["x"]), batch["y"])

        def configure_optimizers(self):
            return adam(self.network.generator_parameters(), lr=1e-3, weight_decay=5e-6)

    def epoch_time(module, data=None) -> float:
        timer = EpochTimer()
        trainer = L.Trainer(max_epochs=warmup + epochs, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                            num_sanity_val_steps=0, accelerator=accelerator, devices=1, callbacks=[timer])
        trainer.fit(module, train_dataloaders=batch_loader(data or dataset, batch_size, shuffle=True))
        return statistics.median(timer.times[warmup:])

    L.seed_everything(0, verbose=False)
    model = CrossmodalNet(n_genes=g, n_proteins=N_PROTEINS, time_axis=time_axis, latent_dim=latent)
    row = {"size": name, "cells": n, "genes": g, "density": density, "csr_mb": round(csr_mb, 1),
           "generate_s": round(gen_s, 2)}
    row["cmn_epoch_s"] = epoch_time(model)
    row["mlp_epoch_s"] = epoch_time(PlainMLP())
    row["ratio"] = row["cmn_epoch_s"] / row["mlp_epoch_s"]
    if autograd:
        slow = CrossmodalNet(n_genes=g, n_proteins=N_PROTEINS, time_axis=time_axis, latent_dim=latent,
                             gradnorm_mode="autograd")
        row["autograd_epoch_s"] = epoch_time(slow)
        row["fast_vs_autograd"] = row["autograd_epoch_s"] / row["cmn_epoch_s"]

    device = torch.device("cuda" if accelerator == "gpu" else "cpu")
    model = model.to(device).eval()
    loader = batch_loader(dataset, 2048, shuffle=False)
    with torch.inference_mode():
        t0 = time.perf_counter()
        for batch in loader:
            model(batch["x"].to(device), batch["time_weights"].to(device)).cpu()
        row["predict_cells_s"] = n / (time.perf_counter() - t0)
    row["device"] = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu x{torch.get_num_threads()}"
    row["saliency_cells_s"] = (_saliency_throughput(model, genes, time_index, min(n, 4096))
                               if device.type == "cpu" else None)
    if svd:
        row.update(_svd_rows(svd, genes, proteins, weights, time_index, time_axis, latent, epoch_time,
                             row["cmn_epoch_s"], row["predict_cells_s"]))
    row["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    row["rss_over_csr"] = row["peak_rss_mb"] / csr_mb
    return row


def _svd_rows(k: int, genes, proteins, weights, time_index, time_axis, latent: int, epoch_time,
              full_epoch_s: float, full_predict: float) -> dict:
    """The same model on ``k`` truncated-SVD components (data.preprocess.svd_components=k, default fit
    settings): fit and projection time, epoch time, and prediction throughput from the CSR genes (projection
    included), with their ratios to the full-gene model measured in the same process."""
    import torch

    from crossmodalnet.data.datamodule import CellBatches
    from crossmodalnet.data.projection import GeneProjection
    from crossmodalnet.models.crossmodalnet import CrossmodalNet

    t0 = time.perf_counter()
    proj = GeneProjection(k).fit(genes)
    out = {"svd_k": proj.n_outputs, "svd_fit_s": time.perf_counter() - t0}
    t0 = time.perf_counter()
    z = proj.transform(genes)
    out["svd_project_s"] = time.perf_counter() - t0
    model = CrossmodalNet(n_genes=proj.n_outputs, n_proteins=proteins.shape[1], time_axis=time_axis,
                          latent_dim=latent)
    out["svd_epoch_s"] = epoch_time(model, CellBatches(z, proteins, weights, time_index))
    out["epoch_speedup"] = full_epoch_s / out["svd_epoch_s"]
    model.eval()
    w = torch.from_numpy(weights)
    n = genes.shape[0]
    with torch.inference_mode():
        t0 = time.perf_counter()
        for start in range(0, n, 2048):
            x = torch.from_numpy(proj.transform(genes[start:start + 2048]))
            model(x, w[start:start + 2048])
        out["svd_predict_cells_s"] = n / (time.perf_counter() - t0)
    out["predict_speedup"] = out["svd_predict_cells_s"] / full_predict
    return out


def _saliency_throughput(model, genes, time_index, n_cells: int) -> float | None:
    """Cells/s of saliency for one protein through the user-facing API (None if it is not available)."""
    try:
        from crossmodalnet.interpret.saliency import saliency
    except ImportError:
        return None
    import anndata as ad
    import pandas as pd

    model.gene_names = [f"G{i}" for i in range(genes.shape[1])]
    model.protein_names = [f"P{j}" for j in range(N_PROTEINS)]
    sub = ad.AnnData(X=genes[:n_cells], obs=pd.DataFrame({"day": [2, 3, 4] * (n_cells // 3) + [2] * (n_cells % 3)}),
                     var=pd.DataFrame(index=model.gene_names))
    sub.obs_names = [f"c{i}" for i in range(n_cells)]
    t0 = time.perf_counter()
    saliency(model, sub, proteins="P0", time_key="day")
    return n_cells / (time.perf_counter() - t0)


def first_layer_table(genes: int, batch: int, latent: int, densities: list[float], repeats: int) -> list[dict]:
    """Forward + weight gradient of the first layer, dense vs sparse CSR batch, by density."""
    import numpy as np
    import torch

    from crossmodalnet.data.datamodule import csr_rows_to_torch
    from crossmodalnet.data.simulate import random_csr

    weight = torch.randn(latent, genes) * 0.01
    delta = torch.randn(batch, latent)
    rows = []
    for density in densities:
        x = random_csr(batch, genes, density, seed=1)
        timings = {}
        for mode in ("dense", "sparse"):
            def step():
                xb = csr_rows_to_torch(x, None, sparse=(mode == "sparse"))
                h = xb @ weight.t()
                grad = delta.t() @ xb if mode == "dense" else (xb.t() @ delta).t()
                return h, grad
            step()
            samples = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                step()
                samples.append(time.perf_counter() - t0)
            timings[mode] = statistics.median(samples) * 1e3
        rows.append({"density": density, "dense_ms": timings["dense"], "sparse_ms": timings["sparse"],
                     "sparse_over_dense": timings["sparse"] / timings["dense"]})
    return rows


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _markdown(rows: list[dict], columns: list[str]) -> str:
    from benchmark_time_to_accuracy import markdown_table  # the sibling script (scripts/ is on sys.path)

    return markdown_table(rows, columns, _fmt)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="D1,D2,D3,HSPC", help="comma-separated: D1,D2,D3,HSPC,HSPC-10k,quick")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few epochs (CI)")
    parser.add_argument("--epochs", type=int, default=3, help="measured epochs per model (median)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--latent", type=int, default=512)
    parser.add_argument("--autograd", action="store_true", help="also time gradnorm_mode=autograd")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--svd", type=int, default=None, metavar="K",
                        help="also time the model on K truncated-SVD components (data.preprocess.svd_components)")
    parser.add_argument("--out", default="benchmark-results",
                        help="folder for benchmark.csv / .json / .md (default ./benchmark-results, outside the "
                             "repository's benchmarks/ unless you ask for it)")
    parser.add_argument("--time-to-accuracy", action="store_true",
                        help="run scripts/benchmark_time_to_accuracy.py instead (other options are passed on)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--time-to-accuracy" in argv:  # a sibling script with its own options
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from benchmark_time_to_accuracy import main as time_to_accuracy

        return time_to_accuracy([a for a in argv if a != "--time-to-accuracy"])
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_size(args.one, args.epochs, args.warmup, args.batch_size, args.latent,
                                  args.autograd, args.threads, args.accelerator, args.svd)))
        return 0
    sizes = ["quick"] if args.quick else [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        parser.error(f"unknown size(s) {unknown}; choose from {list(SIZES)}")
    epochs, warmup = (1, 1) if args.quick else (args.epochs, args.warmup)
    rows = []
    for name in sizes:
        cmd = [sys.executable, __file__, "--one", name, "--epochs", str(epochs), "--warmup", str(warmup),
               "--batch-size", str(args.batch_size), "--latent", str(args.latent)]
        cmd += ["--autograd"] if args.autograd else []
        cmd += ["--threads", str(args.threads)] if args.threads else []
        cmd += ["--accelerator", args.accelerator]
        cmd += ["--svd", str(args.svd)] if args.svd else []
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return proc.returncode
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"done {name}: {rows[-1]}", file=sys.stderr)
    import torch
    layer = first_layer_table(600 if args.quick else 22_050, args.batch_size, args.latent,
                              [0.15] if args.quick else [0.005, 0.01, 0.02, 0.05, 0.10, 0.15, 0.20],
                              2 if args.quick else 5)
    columns = ["size", "device", "cells", "genes", "csr_mb", "cmn_epoch_s", "mlp_epoch_s", "ratio", "autograd_epoch_s",
               "fast_vs_autograd", "predict_cells_s", "saliency_cells_s", "peak_rss_mb", "rss_over_csr"]
    if args.svd:
        columns += ["svd_k", "svd_fit_s", "svd_project_s", "svd_epoch_s", "epoch_speedup", "svd_predict_cells_s",
                    "predict_speedup"]
    header = f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, " \
             f"latent {args.latent}, medians of {epochs} epochs after {warmup} warm-up"
    report = (f"{header}\n\n{_markdown(rows, columns)}\n\nFirst layer, forward + weight gradient, batch "
              f"{args.batch_size} x {600 if args.quick else 22_050} genes (ms):\n\n"
              f"{_markdown(layer, ['density', 'dense_ms', 'sparse_ms', 'sparse_over_dense'])}\n")
    print(report)
    out = Path(args.out)
    from benchmark_time_to_accuracy import write_report

    write_report(out, "benchmark", report, {"header": header, "sizes": rows, "first_layer": layer}, rows, columns)
    return 0


if __name__ == "__main__":
    sys.exit(main())
