"""Evaluation beyond the test loop: reference numbers that make a run's metrics interpretable.

``extra_metrics`` is called by :func:`crossmodalnet.training.run.train` after testing; every key it returns lands
in ``metrics.json``:
- always: the train-mean baseline on the test split;
- out-of-distribution runs (``data.holdout_time``): the held-out cells under the interpolated time embedding
  (what ``test/`` reports), the nearest learned time, each learned time, and no time embedding;
- simulator runs: how well saliency recovers each protein's causal genes vs the gene-protein correlation ranking.
``write_run_figures`` draws the run's figures into ``<run dir>/plots``.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import torch

from crossmodalnet.data.datamodule import CiteDataModule
from crossmodalnet.data.validate import PROTEIN_KEY
from crossmodalnet.interpret.latent_time import encode_split
from crossmodalnet.reporting.metrics import regression_metrics

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


def time_embedding_comparison(model, dm: CiteDataModule, split: str = "test") -> dict[str, float]:
    """The held-out time's cells predicted with the interpolated, nearest and no time embedding, and with each
    learned time; keys ``{split}/ood_{interpolate,nearest,none,at_<time>}/{pearson_cell,pearson_protein,mse}``."""
    model.eval()
    axis = model.time_axis
    labels = dm.cell_times(dm.splits[split])
    z, _ = encode_split(model, dm, split)  # basal states, encoded once and decoded under several time weightings
    target = dm.splits[split].obsm[PROTEIN_KEY].to_numpy(dtype=np.float64)
    weightings = {mode: axis.weight_matrix(labels, mode=mode) for mode in ("interpolate", "nearest", "none")}
    for i, t in enumerate(axis.labels):
        w = np.zeros((len(labels), axis.n_times), dtype=np.float32)
        w[:, i] = 1.0
        weightings[f"at_{metric_key(t)}"] = w
    out: dict[str, float] = {}
    with torch.inference_mode():
        for name, w in weightings.items():
            pred = model.network.decode(z, None if name == "none" else torch.from_numpy(w))
            out.update(regression_metrics(pred, target, prefix=f"{split}/ood_{name}/"))
    return out


def recovery_saliency(model, dm: CiteDataModule, split: str = "train", max_cells: int = RECOVERY_MAX_CELLS,
                      seed: int = 0, method: str | None = None, per_cell: bool = True, **options):
    """Saliency of every protein by ``method`` (None = the default) over a seeded subset of ``max_cells`` cells
    of ``split``, as a :class:`~crossmodalnet.interpret.saliency.SaliencyResult`. ``integrated_gradients_mean``
    starts at the mean expression of all of ``split``'s cells (the training mean for ``train``)."""
    from crossmodalnet.interpret.saliency import DEFAULT_METHOD, saliency_of_cells

    method = method or DEFAULT_METHOD
    part = dm.splits[split]
    rows = np.arange(part.n_obs)
    if part.n_obs > max_cells:
        rows = np.sort(np.random.default_rng(seed).choice(part.n_obs, max_cells, replace=False))
    weights = dm.datasets[split].time_weights.numpy()[rows]
    baseline = np.asarray(part.X.mean(0)).ravel() if method == "integrated_gradients_mean" else None
    return saliency_of_cells(model, part.X[rows], weights, list(range(dm.n_proteins)), dm.protein_names,
                             dm.gene_names, method=method, per_cell=per_cell, baseline=baseline, **options)


def saliency_recovery(model, dm: CiteDataModule, split: str = "train", max_cells: int = RECOVERY_MAX_CELLS,
                      seed: int = 0, method: str | None = None, rank_by: str | None = None,
                      **options) -> dict[str, float]:
    """Simulator ground truth: AUROC / precision@k / coding-gene-first of the saliency ranking (``method``,
    ranked ``rank_by``; None = the defaults; summed over a seeded subset of ``max_cells`` cells of ``split``) and
    of the |Pearson(gene, protein)| baseline (over all cells of ``split``: the baseline gets at least as much data
    as saliency)."""
    from crossmodalnet.interpret.recovery import causal_sets, compare_with_correlation
    from crossmodalnet.interpret.saliency import DEFAULT_RANK_BY

    rank_by = rank_by or DEFAULT_RANK_BY
    causal = causal_sets(dm.adata)
    result = recovery_saliency(model, dm, split, max_cells, seed, method, per_cell=rank_by == "absolute",
                               **options)
    part = dm.splits[split]
    proteins = part.obsm[PROTEIN_KEY].to_numpy(dtype=np.float64)
    prefix = f"recovery/{split}/"
    out = compare_with_correlation(result.scores(rank_by), part.X, proteins, causal, prefix=prefix)
    out[f"{prefix}n_cells_saliency"] = float(result.n_cells)
    out[f"{prefix}n_cells_correlation"] = float(part.n_obs)
    return out


def extra_metrics(model, dm: CiteDataModule, cfg) -> dict[str, float]:
    """Reference numbers for the held-out split, added to metrics.json."""
    metrics = train_mean_baseline(dm, "test")
    metrics.update(interval_metrics(model, dm, cfg))
    if has_time_embedding(model):  # does z still carry the time? (the adversary's job; crossmodalnet/interpret/latent_time.py)
        from crossmodalnet.interpret.latent_time import latent_time_metrics

        metrics.update(latent_time_metrics(model, dm, seed=int(cfg.get("seed", 0) or 0) if cfg is not None else 0))
    from omegaconf import OmegaConf

    from crossmodalnet.interpret.time_effects import has_time_input, run_time_effects

    if has_time_input(model):  # what the time adds per protein and time: time_effects.csv, scored on the simulator
        run_dir = OmegaConf.select(cfg, "paths.output_dir", default=None, throw_on_resolution_failure=False) \
            if OmegaConf.is_config(cfg) else None
        metrics.update(run_time_effects(model, dm, run_dir, seed=int(cfg.get("seed", 0) or 0) if cfg else 0)[1])
    if dm.holdout_time is not None and has_time_embedding(model):
        metrics.update(time_embedding_comparison(model, dm, "test"))
    # saliency needs a differentiable model (not the scikit-learn / LightGBM baselines)
    if dm.adata is not None and "simulation" in dm.adata.uns and isinstance(model, torch.nn.Module):
        try:
            metrics.update(saliency_recovery(model, dm))
        except ValueError as err:  # e.g. a gene filter removed every causal gene
            log.warning("saliency recovery skipped: %s", err)
    return metrics


def interval_metrics(model, dm: CiteDataModule, cfg) -> dict[str, float]:
    """Split-conformal prediction intervals (crossmodalnet/inference/intervals.py): calibrated on the validation cells and
    attached to ``model.conformal`` (train() stores them with the model); coverage and mean width of
    ``cfg.uncertainty.level`` intervals on the test cells as ``test/interval/*``."""
    from crossmodalnet.inference.intervals import fit_and_score

    settings = cfg.get("uncertainty") if cfg is not None else None
    if settings is not None and not settings.get("enabled", True):
        return {}
    settings = dict(settings) if settings is not None else {}
    cal, metrics = fit_and_score(model, dm, settings)
    if cal is not None:
        model.conformal = cal
    return metrics


def metric_key(label) -> str:
    """A time/condition label as it appears inside a metric key: no spaces (``day 2`` -> ``day_2``), so keys
    work as Hydra overrides, wandb panels and shell arguments."""
    return re.sub(r"[\s/]+", "_", str(label).strip())


def reference_warning(metrics: dict) -> str | None:
    """One line when the run predicts test cells no better than each protein's training mean (per-cell Pearson)."""
    ours, ref = metrics.get("test/pearson_cell"), metrics.get("test/baseline_train_mean/pearson_cell")
    if ours is None or ref is None or not np.isfinite(ours) or not np.isfinite(ref) or ours > ref:
        return None
    return (f"this run does not beat the train-mean reference: test/pearson_cell {ours:.3f} <= {ref:.3f} "
            "(predicting each protein's training mean); train longer (trainer.max_epochs), check the "
            "preprocessing, or treat its predictions with care")


def has_time_embedding(model) -> bool:
    """CrossmodalNet has one; the MLP and fit/predict baselines do not (their time-specific checks are skipped)."""
    network = getattr(model, "network", None)
    return getattr(network, "time_embedding", None) is not None and hasattr(model, "time_axis")


def _grid_figure(model, predictions, measured: np.ndarray, pred: np.ndarray, out_dir: Path, cells: str,
                 name: str, level: float = 0.9) -> list[Path]:
    """measured_vs_predicted_grid.png: the most variable proteins, with the run's 90% conformal intervals."""
    import pandas as pd

    from crossmodalnet.reporting import figures as plots

    if predictions.n_vars < 2:
        return []
    names = [str(p) for p in predictions.var_names]
    cal = getattr(model, "conformal", None)
    lower = upper = None
    if cal is not None and hasattr(cal, "interval"):
        lower, upper = (pd.DataFrame(v, columns=names) for v in cal.interval(pred, level))
    return [plots.plot_measured_vs_predicted_grid(
        pd.DataFrame(measured, columns=names), pd.DataFrame(pred, columns=names),
        out_dir / "measured_vs_predicted_grid.png", scale=plots.value_scale(getattr(model, "preprocessing", None)),
        lower=lower, upper=upper, level=level if lower is not None else None, cells=cells, model_name=name)]


def write_run_figures(model, dm: CiteDataModule, run_dir: str | Path, predictions=None,
                      cell_type_key: str | None = None) -> list[Path]:
    """A run's figures in ``run_dir/plots``: training curves (with the train-mean reference, task weights and
    discriminator when logged), the time embedding (PCA, only with three or more learned times: two span one
    direction, and an interpolated time lies on it), and on the test cells: measured vs predicted for the
    best-predicted protein (y = x, coloured by time and by a cell-type column), a grid of the most variable
    proteins with their prediction intervals, per-protein Pearson for all proteins, and accuracy by time point."""
    import pandas as pd

    from crossmodalnet.reporting import figures as plots
    from crossmodalnet.reporting.annotations import cell_type_column
    from crossmodalnet.interpret.time_effects import has_time_input, match_times, read_time_effects, true_time_effects
    from crossmodalnet.interpret.time_embedding import time_embedding_pca
    from crossmodalnet.reporting.metrics import pearson_per_cell, pearson_per_protein

    out_dir = Path(run_dir) / "plots"
    written = []
    name = str(getattr(model, "name", "") or type(model).__name__)  # a baseline's own name, e.g. "ridge"
    logs = sorted(Path(run_dir).glob("csv/**/metrics.csv"))
    if logs:
        reference = None
        if dm.splits["val"].n_obs > 1:
            reference = train_mean_baseline(dm, "val").get("val/baseline_train_mean/pearson_cell")
        written.append(plots.plot_training_curves(logs[-1], out_dir / "training_curves.png", reference))
    pca = None
    if has_time_embedding(model):
        extra = [dm.holdout_time] if dm.holdout_time is not None and model.time_axis.values is not None else []
        if model.time_axis.n_times >= 3:  # two learned rows span one direction: PC2 would be 0%, by construction
            pca = time_embedding_pca(model, extra)
    # beside the PCA: what the time adds per protein (time_effects.csv, written by extra_metrics), and the truth
    effects = read_time_effects(Path(run_dir) / "time_effects.csv", model.time_axis) if has_time_input(model) else None
    if pca is not None or effects is not None:
        written.append(plots.plot_time_embedding(
            pca, out_dir / ("time_embedding_pca.png" if pca is not None else "time_effects.png"), effects=effects,
            truth=match_times(true_time_effects(dm.adata), effects.columns)
            if effects is not None and true_time_effects(dm.adata) is not None else None,
            kinds=effects.attrs.get("kind") if effects is not None else None))
    if predictions is None or predictions.n_obs <= 2:
        return written
    measured = np.asarray(predictions.layers["measured"], dtype=np.float64)
    pred = np.asarray(predictions.X, dtype=np.float64)
    cells = "held-out test cells" if dm.holdout_time is None else f"held-out {dm.time_key} {dm.holdout_time} cells"
    r = pd.Series(pearson_per_protein(pred, measured), index=[str(p) for p in predictions.var_names])
    j = int(np.argmax(np.nan_to_num(r.to_numpy(), nan=-1.0)))
    protein = str(predictions.var_names[j])
    gene = _coding_gene(dm, protein)
    expr = None
    if gene is not None:
        col = dm.splits["test"][:, gene].X
        expr = np.asarray(col.toarray() if hasattr(col, "toarray") else col).ravel()
    obs = predictions.obs
    times = obs[dm.time_key].to_numpy() if dm.time_key and dm.time_key in obs else None
    if times is not None and len(pd.unique(times)) < 2:
        times = None  # one time: colouring by it says nothing
    ct_key = cell_type_column(obs, cell_type_key)
    written.append(plots.plot_measured_vs_predicted(
        measured[:, j], pred[:, j], protein, out_dir / "measured_vs_predicted.png", expr, gene,
        time=times, time_label=dm.time_key or "time", cell_type=None if ct_key is None else obs[ct_key].to_numpy(),
        cell_type_label=ct_key or "cell type", cells=cells, model_name=name,
        scale=plots.value_scale(getattr(model, "preprocessing", None))))
    written += _grid_figure(model, predictions, measured, pred, out_dir, cells, name)
    if r.notna().any():
        written.append(plots.plot_pearson_per_protein(r, out_dir / "pearson_per_protein.png", cells, name))
    if times is not None and len(pd.unique(times)) >= 2:
        per_cell = pd.DataFrame({"time": times, "pearson_cell": pearson_per_cell(pred, measured)})
        train_mean = dm.splits["train"].obsm[PROTEIN_KEY].to_numpy(dtype=np.float64).mean(0)
        ref = pd.DataFrame({"time": pd.Series(times).astype(str),
                            "r": pearson_per_cell(np.tile(train_mean, (len(measured), 1)), measured)})
        written.append(plots.plot_accuracy_by_time(per_cell, out_dir / "accuracy_by_time.png",
                                                   dm.time_key or "time", ref.groupby("time")["r"].median(),
                                                   cells, name))
    return written


def _coding_gene(dm: CiteDataModule, protein: str) -> str | None:
    sim = dm.adata.uns.get("simulation", {}) if dm.adata is not None else {}
    pairs = dict(zip(map(str, sim.get("protein_names", [])), map(str, sim.get("coding_gene", []))))
    gene = pairs.get(protein, protein)
    return gene if gene in set(dm.splits["test"].var_names) else None
