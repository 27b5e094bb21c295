"""Evaluation beyond the test loop: reference numbers that make a run's metrics interpretable.

``extra_metrics`` is called by :func:`crossmodalnet.train.train` after testing; every key it returns lands
in ``metrics.json``:
- always: the train-mean baseline on the test split;
- out-of-distribution runs (``data.holdout_time``): the held-out cells under the interpolated time embedding
  (what ``test/`` reports), the nearest learned time, each learned time, and no time embedding;
- simulator runs: how well saliency recovers each protein's causal genes vs the gene-protein correlation ranking.
``write_run_figures`` draws the run's figures into ``<run dir>/plots``.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from crossmodalnet.data.datamodule import CiteDataModule
from crossmodalnet.data.validate import PROTEIN_KEY
from crossmodalnet.metrics import regression_metrics

log = logging.getLogger("crossmodalnet")
# cells whose gradients are summed for the saliency ground-truth check (a seeded subset of the training split):
# one batch keeps it to seconds, and the ranking is stable at this size (AUROC 0.712 at 256 vs 0.712 at 1,888 cells
# on synthetic_ood)
RECOVERY_MAX_CELLS = 256


def train_mean_baseline(dm: CiteDataModule, split: str = "test") -> dict[str, float]:
    """Metrics of a predictor that outputs each protein's training mean for every cell."""
    train = dm.splits["train"].obsm[PROTEIN_KEY].to_numpy(dtype=np.float64)
    target = dm.splits[split].obsm[PROTEIN_KEY].to_numpy(dtype=np.float64)
    pred = np.tile(train.mean(0), (target.shape[0], 1))
    metrics = regression_metrics(pred, target, prefix=f"{split}/baseline_train_mean/")
    metrics.pop(f"{split}/baseline_train_mean/pearson_protein")  # undefined: a constant per protein
    return metrics


def _split_latent(model, dm: CiteDataModule, split: str) -> tuple[torch.Tensor, np.ndarray]:
    """Basal latent states z of a split's cells (encoded once, decoded under several time weightings)."""
    zs = []
    with torch.inference_mode():
        for batch in dm.loader(dm.datasets[split], shuffle=False):
            zs.append(model.network.encode(batch["x"]))
    target = dm.splits[split].obsm[PROTEIN_KEY].to_numpy(dtype=np.float64)
    return torch.cat(zs), target


def time_embedding_comparison(model, dm: CiteDataModule, split: str = "test") -> dict[str, float]:
    """The held-out time's cells predicted with the interpolated, nearest and no time embedding, and with each
    learned time; keys ``{split}/ood_{interpolate,nearest,none,at_<time>}/{pearson_cell,pearson_protein,mse}``."""
    model.eval()
    axis = model.time_axis
    labels = dm.cell_times(dm.splits[split])
    z, target = _split_latent(model, dm, split)
    weightings = {mode: axis.weight_matrix(labels, mode=mode) for mode in ("interpolate", "nearest", "none")}
    for i, t in enumerate(axis.labels):
        w = np.zeros((len(labels), axis.n_times), dtype=np.float32)
        w[:, i] = 1.0
        weightings[f"at_{t}"] = w
    out: dict[str, float] = {}
    with torch.inference_mode():
        for name, w in weightings.items():
            pred = model.network.decode(z, None if name == "none" else torch.from_numpy(w))
            out.update(regression_metrics(pred, target, prefix=f"{split}/ood_{name}/"))
    return out


def saliency_recovery(model, dm: CiteDataModule, split: str = "train", max_cells: int = RECOVERY_MAX_CELLS,
                      seed: int = 0) -> dict[str, float]:
    """Simulator ground truth: AUROC / precision@k / coding-gene-first of the saliency ranking (|gamma_j|, summed
    over a seeded subset of ``max_cells`` cells of ``split``) and of the |Pearson(gene, protein)| baseline (over
    all cells of ``split``: the baseline gets at least as much data as saliency)."""
    from crossmodalnet.interpret.recovery import causal_sets, compare_with_correlation
    from crossmodalnet.interpret.saliency import result_from_accumulator, saliency_from_batches

    part = dm.splits[split]
    causal = causal_sets(dm.adata)
    rows = np.arange(part.n_obs)
    if part.n_obs > max_cells:
        rows = np.sort(np.random.default_rng(seed).choice(part.n_obs, max_cells, replace=False))
    genes = part.X[rows]
    weights = dm.datasets[split].time_weights.numpy()[rows]
    batch = 256
    batches = ((genes[i:i + batch].toarray(), weights[i:i + batch]) for i in range(0, len(rows), batch))
    acc = saliency_from_batches(model, batches, list(range(dm.n_proteins)), dm.n_genes, per_cell=False)
    result = result_from_accumulator(acc, dm.protein_names, dm.gene_names)
    proteins = part.obsm[PROTEIN_KEY].to_numpy(dtype=np.float64)
    prefix = f"recovery/{split}/"
    out = compare_with_correlation(result.scores("magnitude"), part.X, proteins, causal, prefix=prefix)
    out[f"{prefix}n_cells_saliency"] = float(len(rows))
    out[f"{prefix}n_cells_correlation"] = float(part.n_obs)
    return out


def extra_metrics(model, dm: CiteDataModule, cfg) -> dict[str, float]:
    """Reference numbers for the held-out split, added to metrics.json."""
    metrics = train_mean_baseline(dm, "test")
    if dm.holdout_time is not None and has_time_embedding(model):
        metrics.update(time_embedding_comparison(model, dm, "test"))
    # saliency needs a differentiable model (not the scikit-learn / LightGBM baselines)
    if dm.adata is not None and "simulation" in dm.adata.uns and isinstance(model, torch.nn.Module):
        try:
            metrics.update(saliency_recovery(model, dm))
        except ValueError as err:  # e.g. a gene filter removed every causal gene
            log.warning("saliency recovery skipped: %s", err)
    return metrics


def has_time_embedding(model) -> bool:
    """CrossmodalNet has one; the MLP and fit/predict baselines do not (their time-specific checks are skipped)."""
    network = getattr(model, "network", None)
    return getattr(network, "time_embedding", None) is not None and hasattr(model, "time_axis")


def write_run_figures(model, dm: CiteDataModule, run_dir: str | Path, predictions=None) -> list[Path]:
    """Training curves, the time embedding (PCA; a held-out time placed by interpolation) and measured vs
    predicted for the best-predicted test protein, beside its coding gene when known, in ``run_dir/plots``."""
    from crossmodalnet.interpret import plots
    from crossmodalnet.interpret.time_embedding import time_embedding_pca

    out_dir = Path(run_dir) / "plots"
    written = []
    logs = sorted(Path(run_dir).glob("csv/**/metrics.csv"))
    if logs:
        written.append(plots.plot_training_curves(logs[-1], out_dir / "training_curves.png"))
    if has_time_embedding(model):
        extra = [dm.holdout_time] if dm.holdout_time is not None and model.time_axis.values is not None else []
        written.append(plots.plot_time_embedding(time_embedding_pca(model, extra),
                                                 out_dir / "time_embedding_pca.png"))
    if predictions is not None and predictions.n_obs > 2:
        from crossmodalnet.metrics import pearson_per_protein

        measured = predictions.layers["measured"]
        r = np.nan_to_num(pearson_per_protein(predictions.X, measured), nan=-1.0)
        j = int(np.argmax(r))
        protein = str(predictions.var_names[j])
        gene = _coding_gene(dm, protein)
        expr = None
        if gene is not None:
            col = dm.splits["test"][:, gene].X
            expr = np.asarray(col.toarray() if hasattr(col, "toarray") else col).ravel()
        written.append(plots.plot_measured_vs_predicted(measured[:, j], predictions.X[:, j], protein,
                                                        out_dir / "measured_vs_predicted.png", expr, gene))
    return written


def _coding_gene(dm: CiteDataModule, protein: str) -> str | None:
    sim = dm.adata.uns.get("simulation", {}) if dm.adata is not None else {}
    pairs = dict(zip(map(str, sim.get("protein_names", [])), map(str, sim.get("coding_gene", []))))
    gene = pairs.get(protein, protein)
    return gene if gene in set(dm.splits["test"].var_names) else None
