"""Predict surface proteins for new scRNA-seq with a trained checkpoint: ``predict(model, adata, time=...)`` and the
``crossmodalnet-predict`` console script.

The checkpoint written by ``train()`` carries what a new file needs to be read the way the training data was:
gene names and order, protein names, the learned time axis and the RNA normalisation. A new file's genes are
aligned by *name* (reordered; missing genes zero-filled with a warning that counts them; too few shared genes is
an error), raw counts are normalised as in training, and cells are streamed in batches straight from the (CSR or
backed) matrix, so a large file never becomes one dense array. The input is never modified.
"""
from __future__ import annotations

import argparse
import logging
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from crossmodalnet.data.simulate import log_normalize_counts
from crossmodalnet.data.timepoints import TimeAxis
from crossmodalnet.data.validate import DataError
from crossmodalnet.cli import run_cli

log = logging.getLogger("crossmodalnet")

CONFIG_FILE = Path(__file__).resolve().parent.parent / "configs" / "predict.yaml"
# Fallbacks when configs/predict.yaml is not around (an installed, non-editable package).
DEFAULTS: dict[str, Any] = {"batch_size": 1024, "min_shared_genes": 0.5, "time_mode": "interpolate",
                            "outside_range": "nearest"}
TIME_MODES = ("interpolate", "nearest", "none")
NORMALIZE = ("as_is", "log_normalize")


def defaults() -> dict[str, Any]:
    """Prediction defaults: ``configs/predict.yaml`` over the built-in fallbacks."""
    out = dict(DEFAULTS)
    if CONFIG_FILE.exists():
        from omegaconf import OmegaConf
        out.update(OmegaConf.to_container(OmegaConf.load(CONFIG_FILE), resolve=True))
    return out


# -- loading -----------------------------------------------------------------------------------------------------
def load_model(checkpoint: str | Path, map_location: str = "cpu"):
    """A trained CrossmodalNet from a Lightning checkpoint written by ``train()``, in eval mode."""
    from crossmodalnet.models.crossmodalnet import CrossmodalNet

    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise DataError(f"checkpoint not found: {path}")
    try:
        model = CrossmodalNet.load_from_checkpoint(str(path), map_location=map_location, weights_only=False)
    except Exception as err:  # torch/Lightning raise many types for a foreign or broken file
        raise DataError(f"cannot load {path} as a CrossmodalNet checkpoint: {err}") from None
    check_model(model, str(path))
    model.checkpoint_path = str(path)
    return model.eval()


def check_model(model, where: str = "model") -> None:
    """The metadata prediction needs: gene and protein names that match the network's sizes."""
    genes, proteins = getattr(model, "gene_names", None), getattr(model, "protein_names", None)
    if not genes or not proteins:
        raise DataError(f"{where} carries no gene/protein names (checkpoint metadata 'crossmodalnet' missing); "
                        "use a checkpoint written by crossmodalnet.train.train()")
    net = model.network
    if len(genes) != net.n_genes or len(proteins) != net.n_proteins:
        raise DataError(f"{where}: metadata lists {len(genes)} genes / {len(proteins)} proteins but the network "
                        f"has {net.n_genes} / {net.n_proteins}; the checkpoint is inconsistent")


def _as_model(model):
    if isinstance(model, (str, Path)):
        return load_model(model)
    check_model(model)
    return model


# -- gene alignment and normalisation ------------------------------------------------------------------------------
@dataclass
class GeneAlignment:
    """Where each of the model's genes comes from in the input: ``src`` input columns -> ``dst`` model columns."""

    n_model: int
    src: np.ndarray
    dst: np.ndarray
    missing: list[str]
    identity: bool

    @property
    def n_shared(self) -> int:
        return len(self.dst)


def align_genes(model_genes: list[str], input_genes, min_shared: float = 0.5, where: str = "input") -> GeneAlignment:
    """Match the input's genes to the model's by name; warn on missing genes, fail when too few are shared.

    ``min_shared`` is a fraction (<= 1) of the model's genes or an absolute count (> 1).
    """
    names = pd.Index([str(g) for g in input_genes])
    if not names.is_unique:
        dup = names[names.duplicated()][:3].tolist()
        raise DataError(f"gene names (var_names) are not unique in {where}, e.g. {dup}")
    model_genes = [str(g) for g in model_genes]
    pos = names.get_indexer(model_genes)
    present = pos >= 0
    n_model, n_shared = len(model_genes), int(present.sum())
    needed = min_shared * n_model if min_shared <= 1 else min_shared
    if n_shared < max(needed, 1):
        raise DataError(
            f"{where} shares only {n_shared} of the checkpoint's {n_model} genes (need >= {int(np.ceil(needed))}, "
            f"min_shared_genes={min_shared}); the checkpoint was trained on a different gene set "
            f"(checkpoint genes e.g. {model_genes[:3]}, input genes e.g. {names[:3].tolist()})")
    missing = [g for g, ok in zip(model_genes, present) if not ok]
    if missing:
        warnings.warn(f"{len(missing)} of the checkpoint's {n_model} genes are missing from {where} and are "
                      f"zero-filled (e.g. {missing[:5]})", stacklevel=3)
    identity = not missing and len(names) == n_model and bool((pos == np.arange(n_model)).all())
    return GeneAlignment(n_model, pos[present].astype(np.int64), np.flatnonzero(present), missing, identity)


def _rows(matrix, start: int, stop: int):
    """Rows [start, stop) of an in-memory or backed matrix, as CSR or a dense float32 array."""
    block = matrix[start:stop]
    if sp.issparse(block):
        return sp.csr_matrix(block, dtype=np.float32)
    return np.asarray(block, dtype=np.float32)


def _looks_like_counts(block) -> bool:
    values = block.data if sp.issparse(block) else np.asarray(block).ravel()
    values = values[:100_000]
    return values.size > 0 and bool(np.all(values >= 0) and np.all(values == np.round(values))
                                    and values.max() > 1)


@dataclass
class GeneSource:
    """The input matrix the model reads, and how each batch is normalised and aligned."""

    matrix: Any
    method: str
    target_sum: float
    alignment: GeneAlignment
    description: str

    def batches(self, batch_size: int) -> Iterator[tuple[int, int, np.ndarray]]:
        """(start, stop, dense float32 block of the model's genes) for consecutive blocks of cells."""
        n = self.matrix.shape[0]
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            yield start, stop, self.block(start, stop)

    def block(self, start: int, stop: int) -> np.ndarray:
        raw = _rows(self.matrix, start, stop)
        if self.method == "log_normalize":  # library size over all of the file's genes, as in training
            raw = log_normalize_counts(sp.csr_matrix(raw), self.target_sum)
        al = self.alignment
        if al.identity:
            return raw.toarray() if sp.issparse(raw) else np.ascontiguousarray(raw)
        out = np.zeros((stop - start, al.n_model), dtype=np.float32)
        sub = raw[:, al.src]
        out[:, al.dst] = sub.toarray() if sp.issparse(sub) else sub
        return out


def gene_source(model, adata: ad.AnnData, layer: str | None = None, normalize: str | None = None,
                counts_layer: str = "counts", min_shared: float | None = None, where: str = "input") -> GeneSource:
    """Pick the matrix to read (X, ``layer`` or raw counts) and the normalisation the checkpoint asks for."""
    pre = getattr(model, "preprocessing", None) or {}
    method = normalize or pre.get("rna", "as_is")
    if method not in NORMALIZE:
        raise ValueError(f"normalize must be one of {NORMALIZE}, got {method!r}")
    target_sum = float(pre.get("target_sum", 1e4))
    if layer is not None:
        if layer not in adata.layers:
            raise DataError(f"layer {layer!r} not found in {where}; layers: {list(adata.layers.keys())}")
        matrix, desc = adata.layers[layer], f"layers[{layer!r}]"
    elif method == "log_normalize" and counts_layer in adata.layers:
        matrix, desc = adata.layers[counts_layer], f"layers[{counts_layer!r}]"
    else:
        matrix, desc = adata.X, "X"
    if matrix is None:
        raise DataError(f"{where} has no gene matrix {desc}")
    if sp.issparse(matrix) and matrix.format != "csr":
        matrix = sp.csr_matrix(matrix)  # row slicing of CSC/COO is slow
    first = _rows(matrix, 0, min(matrix.shape[0], 512))
    counts = _looks_like_counts(first)
    if method == "log_normalize" and not counts:
        raise DataError(f"the model was trained on log-normalised raw counts, but {where} {desc} does not hold "
                        f"raw counts; put them in layers[{counts_layer!r}] (or pass layer=...)")
    if method == "as_is" and counts:
        warnings.warn(f"{where} {desc} holds integer counts, but the model was trained on the matrix as given "
                      "(preprocess.rna=as_is); if training used normalised values, pass normalize='log_normalize'",
                      stacklevel=3)
    min_shared = defaults()["min_shared_genes"] if min_shared is None else min_shared
    alignment = align_genes(model.gene_names, adata.var_names, min_shared, where)
    return GeneSource(matrix, method, target_sum, alignment, desc)


# -- time ----------------------------------------------------------------------------------------------------------
def resolve_time(model, obs: pd.DataFrame, time: Any = None, time_key: str | None = None,
                 time_mode: str = "interpolate", outside_range: str = "nearest",
                 where: str = "input") -> tuple[list[Any], np.ndarray]:
    """Per-cell time labels and the weight matrix (cells x learned times) the network gets.

    ``time``: one label for every cell; ``time_key``: an obs column. With neither, a one-time model uses its only
    time and otherwise the training time column is used when the input has it. Unseen times between learned ones
    are interpolated; outside the learned range the nearest learned time is used with a warning, or an error with
    ``outside_range="error"``. ``time_mode="none"`` leaves the time embedding out (the basal prediction).
    """
    axis: TimeAxis = model.time_axis
    n = len(obs)
    if time_mode not in TIME_MODES:
        raise ValueError(f"time_mode must be one of {TIME_MODES}, got {time_mode!r}")
    if outside_range not in ("nearest", "error"):
        raise ValueError(f"outside_range must be 'nearest' or 'error', got {outside_range!r}")
    if time is not None and time_key is not None:
        raise ValueError("give either time (one time for all cells) or time_key (an obs column), not both")
    if time_mode == "none":
        return ["none"] * n, np.zeros((n, axis.n_times), dtype=np.float32)
    if time is not None:
        labels = [time] * n
    elif time_key is not None:
        if time_key not in obs.columns:
            raise DataError(f"time column {time_key!r} not found in obs of {where}; columns: {list(obs.columns)}")
        column = obs[time_key]
        if column.isna().any():
            raise DataError(f"time column {time_key!r} of {where} has {int(column.isna().sum())} missing values")
        labels = column.tolist()
    elif axis.n_times == 1:
        labels = [axis.labels[0]] * n
    else:
        train_key = (getattr(model, "preprocessing", None) or {}).get("time_key")
        if not (train_key and train_key in obs.columns):
            raise DataError(f"the model learned times {axis.labels}: pass time=... (e.g. --time "
                            f"{axis.labels[0]}) or time_key=... (an obs column of {where}), or time_mode='none'")
        log.info("using the training time column %r of %s", train_key, where)
        labels = obs[train_key].tolist()
    for label in pd.unique(pd.Series(labels, dtype=object)):
        axis.check(label, outside_range)
    return labels, axis.weight_matrix(labels, mode=time_mode)


# -- prediction -------------------------------------------------------------------------------------------------------
def predict(model, adata: ad.AnnData, time: Any = None, time_key: str | None = None, *,
            time_mode: str | None = None, outside_range: str | None = None, batch_size: int | None = None,
            layer: str | None = None, normalize: str | None = None, min_shared: float | None = None,
            where: str = "input") -> ad.AnnData:
    """Predicted proteins for the cells of ``adata`` (not modified).

    ``model``: a trained CrossmodalNet or a checkpoint path. Returns AnnData with the input's cells and obs,
    predicted proteins in ``X``, protein names in ``var_names``, the requested time in
    ``obs["prediction_time"]`` and the weights over learned times actually used in ``obsm["time_weights"]``.
    """
    cfg = defaults()
    time_mode = time_mode or cfg["time_mode"]
    outside_range = outside_range or cfg["outside_range"]
    batch_size = int(batch_size or cfg["batch_size"])
    model = _as_model(model)
    if adata.n_obs == 0:
        raise DataError(f"{where} has no cells")
    source = gene_source(model, adata, layer=layer, normalize=normalize, min_shared=min_shared, where=where)
    labels, weights = resolve_time(model, adata.obs, time, time_key, time_mode, outside_range, where)
    was_training = model.training
    model.eval()
    pred = np.empty((adata.n_obs, len(model.protein_names)), dtype=np.float32)
    w_all = torch.from_numpy(weights)
    try:
        with torch.inference_mode():
            for start, stop, x in source.batches(batch_size):
                tw = None if time_mode == "none" else w_all[start:stop]
                pred[start:stop] = model(torch.from_numpy(x), tw).numpy()
    finally:
        model.train(was_training)
    obs = adata.obs.copy()
    obs["prediction_time"] = pd.Categorical([str(t) for t in labels])
    out = ad.AnnData(X=pred, obs=obs, var=pd.DataFrame(index=pd.Index(model.protein_names, name="protein")))
    out.obsm["time_weights"] = pd.DataFrame(weights, index=obs.index,
                                            columns=[str(t) for t in model.time_axis.labels])
    out.uns["crossmodalnet"] = {
        "checkpoint": str(getattr(model, "checkpoint_path", "")), "time_mode": time_mode,
        "learned_times": [str(t) for t in model.time_axis.labels], "gene_matrix": source.description,
        "normalization": source.method, "n_model_genes": source.alignment.n_model,
        "n_missing_genes": len(source.alignment.missing)}
    return out


# -- command line -------------------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    d = defaults()
    p = argparse.ArgumentParser(prog="crossmodalnet-predict",
                                description="Predict surface proteins for new scRNA-seq with a trained checkpoint.")
    p.add_argument("--checkpoint", required=True, help="Lightning .ckpt written by train()")
    p.add_argument("--input", required=True, help=".h5ad with genes (X, or raw counts in layers['counts'])")
    p.add_argument("--output", required=True, help=".h5ad to write: cells x predicted proteins")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--time", help="one time for every cell (an unseen time between learned ones is interpolated)")
    when.add_argument("--time-key", help="obs column with each cell's time")
    p.add_argument("--time-mode", choices=TIME_MODES, default=d["time_mode"])
    p.add_argument("--outside-range", choices=("nearest", "error"), default=d["outside_range"],
                   help="a time outside the learned range: use the nearest learned time (warns) or fail")
    p.add_argument("--layer", help="read genes from this layer instead of X")
    p.add_argument("--normalize", choices=NORMALIZE, help="override the checkpoint's RNA normalisation")
    p.add_argument("--min-shared-genes", type=float, default=d["min_shared_genes"],
                   help="fraction (<=1) or number of the checkpoint's genes the input must have")
    p.add_argument("--batch-size", type=int, default=d["batch_size"])
    p.add_argument("--plots-dir", help="where figures go (default: <output dir>/<output stem>_plots); 'none' = off")
    return p


def main(argv: list[str] | None = None) -> int:
    """``crossmodalnet-predict``: a data problem ends in one clear line and exit status 2."""
    args = _parser().parse_args(argv)
    return run_cli(lambda: _run(args))


def _run(args) -> int:
    inp, outp = Path(args.input).expanduser(), Path(args.output).expanduser()
    if not inp.is_file():
        raise DataError(f"input file not found: {inp}")
    if outp.resolve() == inp.resolve():
        raise DataError(f"--output {outp} is the input file; write predictions to a new file")
    model = load_model(args.checkpoint)
    try:
        adata = ad.read_h5ad(inp, backed="r")  # X stays on disk; batches are read as needed
    except Exception as err:
        raise DataError(f"cannot read input file {inp} as .h5ad: {err}") from None
    try:
        pred = predict(model, adata, time=args.time, time_key=args.time_key, time_mode=args.time_mode,
                       outside_range=args.outside_range, batch_size=args.batch_size, layer=args.layer,
                       normalize=args.normalize, min_shared=args.min_shared_genes, where=str(inp))
        plots = args.plots_dir or str(outp.parent / f"{outp.stem}_plots")
        measured = _measured(adata, pred) if plots.lower() != "none" else None
        coding = _coding_expression(model, adata, pred) if measured is not None else {}
    finally:
        if adata.isbacked:
            adata.file.close()
    outp.parent.mkdir(parents=True, exist_ok=True)
    pred.write_h5ad(outp)
    print(f"wrote {pred.n_obs} cells x {pred.n_vars} proteins to {outp}")
    if plots.lower() != "none":
        for path in _write_figures(model, pred, measured, coding, Path(plots)):
            print(f"figure: {path}")
    return 0


def _measured(adata: ad.AnnData, pred: ad.AnnData) -> pd.DataFrame | None:
    """Measured proteins of the input, when it has them (for a measured-vs-predicted figure)."""
    prot = adata.obsm["protein"] if "protein" in adata.obsm else None
    if not isinstance(prot, pd.DataFrame):
        return None
    shared = [p for p in pred.var_names if p in prot.columns]
    return prot[shared] if shared else None


def _coding_expression(model, adata: ad.AnnData, pred: ad.AnnData) -> dict[str, np.ndarray]:
    """Expression of a protein's coding gene where one can be named (simulator ground truth or same name)."""
    sim = adata.uns.get("simulation", {}) if hasattr(adata, "uns") else {}
    pairs = dict(zip(map(str, sim.get("protein_names", [])), map(str, sim.get("coding_gene", []))))
    genes = pd.Index(adata.var_names.astype(str))
    out = {}
    for protein in pred.var_names[:1]:  # one figure: the first protein
        gene = pairs.get(protein, protein)
        if gene in genes:
            col = adata[:, gene].X
            col = col.toarray() if sp.issparse(col) else np.asarray(col)
            out[protein] = (gene, np.asarray(col, dtype=np.float32).ravel())
    return out


def _write_figures(model, pred: ad.AnnData, measured, coding, outdir: Path) -> list[Path]:
    from crossmodalnet.interpret import plots
    from crossmodalnet.interpret.time_embedding import time_embedding_pca

    outdir.mkdir(parents=True, exist_ok=True)
    written = [plots.plot_time_embedding(time_embedding_pca(model), outdir / "time_embedding_pca.png")]
    if measured is not None:
        protein = measured.columns[0]
        gene, expr = coding.get(protein, (None, None))
        written.append(plots.plot_measured_vs_predicted(
            measured[protein].to_numpy(), pred[:, protein].X.ravel(), protein, outdir / f"predicted_{protein}.png",
            gene_expression=expr, gene=gene))
    return written


if __name__ == "__main__":
    sys.exit(main())
