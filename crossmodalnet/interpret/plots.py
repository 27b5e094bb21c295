"""Figures as PNG files, one function per figure (paper Figures 2, S2, S3, S4, and training curves).

Figures are drawn on ``matplotlib.figure.Figure`` objects (Agg canvas), without pyplot, so nothing touches a
notebook's or a server's global plotting state. Every function writes ``path`` and returns it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from crossmodalnet.data.validate import DataError


def _figure(ncols: int = 1, width: float = 4.6, height: float = 4.0):
    fig = Figure(figsize=(width * ncols, height), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, float).ravel(), np.asarray(b, float).ravel()
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def _scatter(ax, x, y, xlabel: str, ylabel: str, title: str) -> None:
    ax.scatter(x, y, s=6, alpha=0.5, linewidths=0, color="#3b6ea5")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)


def plot_measured_vs_predicted(measured: np.ndarray, predicted: np.ndarray, protein: str, path: str | Path,
                               gene_expression: np.ndarray | None = None, gene: str | None = None) -> Path:
    """Figure 2: the coding gene's expression vs the measured protein (when given) beside predicted vs measured,
    each titled with its Pearson r."""
    panels = 2 if gene_expression is not None else 1
    fig, axes = _figure(panels)
    if gene_expression is not None:
        r = _pearson(gene_expression, measured)
        _scatter(axes[0], gene_expression, measured, f"{gene or 'coding gene'} expression",
                 f"measured {protein}", f"{gene} vs {protein}: r = {r:.3f}")
    r = _pearson(predicted, measured)
    _scatter(axes[-1], predicted, measured, f"predicted {protein}", f"measured {protein}",
             f"CrossmodalNet {protein}: r = {r:.3f}")
    return _save(fig, path)


def plot_time_embedding(pca: pd.DataFrame, path: str | Path, title: str = "Learned time embedding (PCA)") -> Path:
    """Figure S2: the learned time vectors in PC1/PC2, each point labelled by its time (interpolated unseen
    times hollow)."""
    fig, (ax,) = _figure(1)
    for kind, marker, face in (("learned", "o", "#c0392b"), ("interpolated", "o", "none")):
        part = pca[pca["kind"] == kind]
        ax.scatter(part["PC1"], part["PC2"], s=70, marker=marker, facecolors=face, edgecolors="#c0392b",
                   label=kind if len(part) else None)
        for _, row in part.iterrows():
            ax.annotate(str(row["time"]), (row["PC1"], row["PC2"]), textcoords="offset points", xytext=(6, 6))
    ratio = pca.attrs.get("explained_variance_ratio", [np.nan, np.nan])
    ax.set_xlabel(f"PC1 ({100 * ratio[0]:.0f}%)")
    ax.set_ylabel(f"PC2 ({100 * ratio[1]:.0f}%)")
    ax.set_title(title, fontsize=10)
    ax.legend(frameon=False, fontsize=8)
    ax.margins(0.25)
    return _save(fig, path)


def plot_saliency_top(result, protein: str, path: str | Path, k: int = 10, by: str = "magnitude") -> Path:
    """Figure S3a: the top-k genes for a protein; bars are the mean per-cell gradient, error bars its 95%
    interval (1.96 sd / sqrt(cells)); the bar order follows the ranking ``by``."""
    top = result.top(protein, k=k, by=by)
    fig, (ax,) = _figure(1, width=5.0, height=0.35 * len(top) + 1.6)
    y = np.arange(len(top))[::-1]
    colors = np.where(top["mean_gradient"] >= 0, "#c0392b", "#2e86c1")
    ax.barh(y, top["mean_gradient"], xerr=top["ci95"], color=colors, capsize=3)
    ax.set_yticks(y, top["gene"])
    ax.axvline(0, color="black", lw=0.6)
    ax.set_xlabel(f"saliency (mean d {protein} / d gene per cell)")
    ax.set_title(f"Top {len(top)} genes by saliency for {protein}", fontsize=10)
    return _save(fig, path)


def plot_expression_vs_saliency(result, mean_expression: pd.Series, protein: str, path: str | Path,
                                k: int = 10, by: str = "magnitude", highlight: Sequence[str] = ()) -> Path:
    """Figure S3b: each gene's mean expression vs its saliency for a protein; the top-k genes and any
    ``highlight`` genes (e.g. the coding gene) are labelled."""
    scores = result.scores(by).loc[protein]
    expr = pd.Series(mean_expression).astype(float)
    expr.index = expr.index.astype(str)
    genes = scores.index.intersection(expr.index)
    if len(genes) == 0:
        raise DataError("mean_expression shares no gene with the saliency result")
    fig, (ax,) = _figure(1, width=5.2)
    ax.scatter(expr[genes], scores[genes], s=6, alpha=0.5, linewidths=0, color="grey")
    label = list(dict.fromkeys([*scores[genes].sort_values(ascending=False).index[:k], *highlight]))
    for g in label:
        if g in genes:
            ax.scatter(expr[g], scores[g], s=18, color="#c0392b" if g in highlight else "#3b6ea5")
            ax.annotate(g, (expr[g], scores[g]), fontsize=7, textcoords="offset points", xytext=(3, 3))
    ax.set_xlabel("mean expression")
    ax.set_ylabel(f"saliency ({by})")
    ax.set_title(f"Gene expression vs saliency for {protein}", fontsize=10)
    return _save(fig, path)


def plot_gsea_running_score(gsea, term: str, path: str | Path) -> Path:
    """Figure S4: the running enrichment score of one gene set along the ranking, with its hits marked."""
    if term not in gsea.running:
        raise DataError(f"gene set {term!r} not in the GSEA result; tested sets e.g. {list(gsea.running)[:5]}")
    res, hits = gsea.running[term]
    row = gsea.table.set_index("term").loc[term]
    fig = Figure(figsize=(6.0, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot(np.arange(len(res)), res, color="#27ae60", lw=1.5)
    top.axhline(0, color="black", lw=0.6)
    top.set_ylabel("running enrichment score")
    top.set_title(f"{term[:60]}\nNES = {row['nes']:.2f}, p = {row['pval']:.3g}, FDR = {row['fdr']:.3g}",
                  fontsize=9)
    bottom.vlines(hits, 0, 1, color="black", lw=0.8)
    bottom.set_yticks([])
    bottom.set_xlabel("gene rank (saliency)")
    return _save(fig, path)


def plot_training_curves(metrics_csv: str | Path, path: str | Path) -> Path:
    """Training curves from a Lightning CSV log: losses (left) and validation Pearson per epoch (right)."""
    metrics_csv = Path(metrics_csv)
    if not metrics_csv.is_file():
        raise DataError(f"training log not found: {metrics_csv}")
    log = pd.read_csv(metrics_csv)
    if "epoch" not in log.columns:
        raise DataError(f"{metrics_csv} has no 'epoch' column (not a Lightning CSV log?)")
    per_epoch = log.groupby("epoch").mean(numeric_only=True)
    fig, axes = _figure(2)
    losses = [c for c in ("train/loss", "train/nlc", "train/fader") if c in per_epoch]
    scores = [c for c in ("val/pearson_cell", "val/pearson_protein") if c in per_epoch]
    for ax, cols, ylabel in ((axes[0], losses, "training loss"), (axes[1], scores, "validation Pearson")):
        for c in cols:
            s = per_epoch[c].dropna()
            ax.plot(s.index, s.to_numpy(), marker="o", ms=3, label=c)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        if cols:
            ax.legend(frameon=False, fontsize=8)
    axes[0].set_title("Training curves", fontsize=10)
    return _save(fig, path)
