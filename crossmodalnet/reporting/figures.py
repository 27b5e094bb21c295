"""Figures as PNG files, one function per figure (paper Figures 2, S2, S3, S4, and training curves).

Figures are drawn on ``matplotlib.figure.Figure`` objects (Agg canvas), without pyplot, so nothing touches a
notebook's or a server's global plotting state. Every function writes ``path`` and returns it.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from crossmodalnet.errors import DataError
from crossmodalnet.utils.atomic import atomic_path


def _figure(ncols: int = 1, width: float = 4.6, height: float = 4.0):
    fig = Figure(figsize=(width * ncols, height), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    with atomic_path(path) as tmp:  # written whole, then renamed (crossmodalnet/utils/atomic.py)
        fig.savefig(tmp, format="png", metadata={"Description": figure_text(fig)})
    return path


def figure_text(fig: Figure) -> str:
    """Every title, axis label and legend entry of ``fig``, joined by " | ": stored as the PNG's Description
    (alt text for screen readers and image search; the tests read what a figure says from it)."""
    texts = [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        texts += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel(), *[t.get_text() for t in ax.texts]]
        legend = ax.get_legend()
        if legend is not None:
            texts += [legend.get_title().get_text(), *[t.get_text() for t in legend.get_texts()]]
    return " | ".join(" ".join(t.split()) for t in texts if t and t.strip())


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


PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
           "#7f7f7f", "#aec7e8", "#ff9896", "#98df8a", "#ffbb78", "#c5b0d5", "#c49c94", "#f7b6d2", "#9edae5"]
MAX_GROUPS = len(PALETTE)  # more categories than this: the rest are drawn grey as "other"


def _categories(values) -> tuple[list[str], np.ndarray]:
    """Category names in a natural order (numbers numerically) and each cell's index into them."""
    labels = pd.Series(np.asarray(values, dtype=object)).astype(str)
    if isinstance(values, pd.Categorical) or isinstance(getattr(values, "dtype", None), pd.CategoricalDtype):
        order = [str(c) for c in pd.Categorical(values).categories if str(c) in set(labels)]
    else:
        uniq = list(pd.unique(labels))
        numbers = [re.search(r"[-+]?\d*\.?\d+", u) for u in uniq]  # "day 2" < "day 10", as a biologist reads them
        if all(numbers):
            order = [u for _, u in sorted(zip([float(m.group()) for m in numbers], uniq))]
        else:
            order = sorted(uniq)
    return order, pd.Categorical(labels, categories=order).codes


def _colored_scatter(ax, x, y, groups, title_key: str, ordered: bool = False) -> None:
    """Scatter coloured by a categorical variable, with a legend: ``ordered`` (time) in a sequential colour map
    along the natural order, otherwise the largest groups first in the palette."""
    order, codes = _categories(groups)
    sizes = np.bincount(codes[codes >= 0], minlength=len(order))
    ranked = list(range(len(order))) if ordered else list(np.argsort(-sizes, kind="stable"))
    shown = set(ranked[:MAX_GROUPS])
    s = 8 if len(x) < 3000 else 3
    other = np.isin(codes, [i for i in range(len(order)) if i not in shown])
    if ordered:
        from matplotlib import colormaps

        cmap = colormaps["viridis"]
        colours = {i: cmap(0.9 * i / max(len(order) - 1, 1)) for i in range(len(order))}
    else:
        colours = {i: PALETTE[ranked.index(i) % len(PALETTE)] for i in range(len(order))}
    for i in (range(len(order)) if ordered else ranked[:MAX_GROUPS]):  # legend: time order, or largest first
        if i not in shown:
            continue
        m = codes == i
        ax.scatter(x[m], y[m], s=s, alpha=0.6, linewidths=0, color=colours[i], zorder=2,
                   label=f"{order[i]} (n={int(m.sum())})")
    if other.any():  # drawn underneath, listed last
        ax.scatter(x[other], y[other], s=s, alpha=0.4, linewidths=0, color="#cccccc", zorder=1,
                   label=f"other ({len(order) - len(shown)} groups, n={int(other.sum())})")
    ax.legend(title=title_key, fontsize=7, title_fontsize=8, frameon=False, markerscale=2,
              loc="upper left", bbox_to_anchor=(1.01, 1.0))


def _identity_line(ax, x, y) -> None:
    lo = float(np.nanmin([np.nanmin(x), np.nanmin(y)]))
    hi = float(np.nanmax([np.nanmax(x), np.nanmax(y)]))
    pad = 0.03 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="black", lw=0.8, ls="--", label="_y = x")
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_aspect("equal", adjustable="box")
    ax.text(0.98, 0.02, "y = x", transform=ax.transAxes, ha="right", va="bottom", fontsize=7, color="black")


def plot_measured_vs_predicted(measured: np.ndarray, predicted: np.ndarray, protein: str, path: str | Path,
                               gene_expression: np.ndarray | None = None, gene: str | None = None, *,
                               time=None, time_label: str = "time", cell_type=None,
                               cell_type_label: str = "cell type", cells: str = "test cells",
                               model_name: str = "CrossmodalNet", scale: str = "") -> Path:
    """Figure 2: predicted vs measured ``protein`` over ``cells`` (named in the title, with n and Pearson r),
    with the y = x line; one panel coloured by ``time`` and one by ``cell_type`` when given, and the coding
    gene's expression vs the measured protein beside them when ``gene_expression`` is given. ``scale`` (e.g.
    'CLR', 'dsb': :func:`value_scale`) is named on both axes."""
    measured = np.asarray(measured, dtype=float).ravel()
    predicted = np.asarray(predicted, dtype=float).ravel()
    colourings = [(v, k) for v, k in ((time, time_label), (cell_type, cell_type_label)) if v is not None]
    panels = (1 if gene_expression is not None else 0) + max(1, len(colourings))
    fig, axes = _figure(panels, width=5.6 if colourings else 4.6, height=4.4)
    r = _pearson(predicted, measured)
    if gene_expression is not None:
        rg = _pearson(gene_expression, measured)
        _scatter(axes[0], np.asarray(gene_expression, float).ravel(), measured, f"{gene or 'coding gene'} RNA",
                 f"measured {protein}", f"{gene} RNA vs {protein} protein: r = {rg:.3f}")
    for ax, (values, key) in zip(axes[1 if gene_expression is not None else 0:], colourings or [(None, None)]):
        if values is None:
            ax.scatter(measured, predicted, s=6, alpha=0.5, linewidths=0, color="#3b6ea5")
        else:
            _colored_scatter(ax, measured, predicted, values, key, ordered=key == time_label)
        _identity_line(ax, measured, predicted)
        unit = f" ({scale})" if scale else ""
        ax.set_xlabel(f"measured {protein}{unit}")
        ax.set_ylabel(f"predicted {protein}{unit}")
        by = f", by {key}" if key else ""
        ax.set_title(f"{model_name}: {protein} on {len(measured):,} {cells}{by}\nPearson r = {r:.3f}",
                     fontsize=9)
    return _save(fig, path)


# how a value scale is named on the axes (preprocessing["protein"] of the run)
SCALE_NAMES = {"clr": "CLR", "dsb": "dsb", "dsb_no_empty": "dsb (no empty droplets)", "as_is": "as given",
               "log_normalize": "log-normalised"}


def value_scale(preprocessing: dict | None) -> str:
    """The name of the proteins' scale for axis labels: 'CLR', 'dsb', or 'as given' (values as in the file)."""
    method = (preprocessing or {}).get("protein", "as_is")
    return SCALE_NAMES.get(str(method), str(method))


def most_variable(measured: pd.DataFrame, n: int = 9) -> list[str]:
    """The ``n`` proteins whose measured values vary most across the cells (the default grid)."""
    var = measured.var(axis=0, skipna=True).sort_values(ascending=False, kind="stable")
    return [str(p) for p in var.index[:n]]


def plot_measured_vs_predicted_grid(measured: pd.DataFrame, predicted: pd.DataFrame, path: str | Path,
                                    proteins: Sequence[str] | None = None, n: int = 9, scale: str = "",
                                    lower: pd.DataFrame | None = None, upper: pd.DataFrame | None = None,
                                    cells: str = "test cells", model_name: str = "CrossmodalNet",
                                    level: float | None = None) -> Path:
    """Measured vs predicted for several proteins (default: the ``n`` most variable measured ones), one panel
    each with y = x and Pearson r, both axes naming the value ``scale`` (CLR, dsb, ...); with ``lower``/``upper``
    (prediction intervals) each cell's interval is drawn as a vertical line and the panel gives its coverage."""
    chosen = proteins is not None
    proteins = [p for p in (proteins or most_variable(measured, n)) if p in measured.columns
                and p in predicted.columns]
    if not proteins:
        raise DataError("no protein to draw: none of the chosen proteins is both measured and predicted")
    ncols = min(3, len(proteins))
    nrows = int(np.ceil(len(proteins) / ncols))
    fig = Figure(figsize=(3.3 * ncols, 3.3 * nrows + 0.5), dpi=110)
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    unit = f" ({scale})" if scale else ""
    for ax, protein in zip(axes, proteins):
        x = measured[protein].to_numpy(dtype=float)
        y = predicted[protein].to_numpy(dtype=float)
        ok = np.isfinite(x) & np.isfinite(y)
        x, y = x[ok], y[ok]
        title = f"{protein}: r = {_pearson(y, x):.2f}"
        if lower is not None and upper is not None and protein in lower.columns:
            lo = lower[protein].to_numpy(dtype=float)[ok]
            hi = upper[protein].to_numpy(dtype=float)[ok]
            ax.vlines(x, lo, hi, color="#9ab7d3", alpha=0.5, lw=0.7, zorder=1,
                      label="prediction interval" if ax is axes[0] else None)
            covered = float(np.mean((x >= lo) & (x <= hi)))
            title += f", {int(round(100 * level)) if level else ''}{'% ' if level else ''}interval covers " \
                     f"{100 * covered:.0f}%"
        ax.scatter(x, y, s=5 if len(x) < 3000 else 2, alpha=0.6, linewidths=0, color="#3b6ea5", zorder=2)
        _identity_line(ax, np.concatenate([x, y]), np.concatenate([x, y]))
        ax.set_title(title, fontsize=8)
        ax.set_xlabel(f"measured{unit}", fontsize=8)
        ax.set_ylabel(f"predicted{unit}", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[len(proteins):]:
        ax.set_axis_off()
    how = "chosen" if chosen else "most variable"
    fig.suptitle(f"{model_name}: measured vs predicted on {len(measured):,} {cells} ({len(proteins)} {how} "
                 f"proteins)", fontsize=9)
    return _save(fig, path)


def plot_pearson_per_protein(r: pd.Series, path: str | Path, cells: str = "test cells",
                             model_name: str = "CrossmodalNet", max_bars: int = 60) -> Path:
    """Per-protein Pearson r (across cells) for every protein: a sorted bar chart, or a histogram with the
    best and worst five named when there are more than ``max_bars`` proteins."""
    r = pd.Series(r, dtype=float).dropna().sort_values(ascending=False)
    if r.empty:
        raise DataError("no per-protein Pearson values to plot (constant proteins only?)")
    title = (f"{model_name}: per-protein Pearson r on {cells}\n{len(r)} proteins, median {r.median():.3f}")
    if len(r) <= max_bars:
        fig, (ax,) = _figure(1, width=max(5.0, 0.18 * len(r) + 1.5), height=4.2)
        x = np.arange(len(r))
        ax.bar(x, r.to_numpy(), color=np.where(r.to_numpy() >= 0, "#3b6ea5", "#c0392b"))
        ax.set_xticks(x, r.index, rotation=90, fontsize=7 if len(r) > 25 else 8)
        ax.set_xlim(-0.7, len(r) - 0.3)
        ax.set_ylabel("Pearson r (across cells)")
    else:
        fig, (ax,) = _figure(1, width=6.4, height=4.2)
        ax.hist(r.to_numpy(), bins=30, color="#3b6ea5")
        ax.set_xlabel("Pearson r (across cells)")
        ax.set_ylabel("proteins")
        lines = [f"best: {', '.join(f'{p} {v:.2f}' for p, v in r.head(5).items())}",
                 f"worst: {', '.join(f'{p} {v:.2f}' for p, v in r.tail(5).items())}"]
        ax.text(0.02, 0.98, "\n".join(lines), transform=ax.transAxes, ha="left", va="top", fontsize=7)
    ax.axhline(0, color="black", lw=0.6) if len(r) <= max_bars else ax.axvline(0, color="black", lw=0.6)
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def plot_accuracy_by_time(per_cell: pd.DataFrame, path: str | Path, time_label: str = "time",
                          reference: pd.Series | None = None, cells: str = "test cells",
                          model_name: str = "CrossmodalNet") -> Path:
    """Per-cell Pearson r (proteins of one cell vs measured) per time point as box plots, with the train-mean
    predictor's median per time as a reference marker. ``per_cell``: columns ``time`` and ``pearson_cell``."""
    order, codes = _categories(per_cell["time"].to_numpy())
    data = [per_cell["pearson_cell"].to_numpy(float)[codes == i] for i in range(len(order))]
    data = [d[np.isfinite(d)] for d in data]
    fig, (ax,) = _figure(1, width=max(5.2, 1.0 * len(order) + 2.0), height=4.4)
    ax.boxplot(data, showfliers=False, widths=0.6, medianprops={"color": "black"})
    ax.set_xticks(np.arange(1, len(order) + 1), [f"{t}\n(n={len(d)})" for t, d in zip(order, data)], fontsize=8)
    if reference is not None:
        ref = [float(reference.get(t, np.nan)) for t in order]
        ax.scatter(np.arange(1, len(order) + 1), ref, marker="_", s=400, color="#c0392b",
                   label="train-mean predictor (median)", zorder=3)
        ax.legend(frameon=False, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22))
    ax.set_xlabel(time_label)
    ax.set_ylabel("per-cell Pearson r")
    ax.set_title(f"{model_name}: accuracy by {time_label}\non {cells}", fontsize=9)
    return _save(fig, path)


def plot_time_embedding(pca: pd.DataFrame | None, path: str | Path, title: str = "Learned time embedding (PCA)",
                        effects: pd.DataFrame | None = None, truth: pd.DataFrame | None = None,
                        kinds: dict[str, str] | None = None, top: int = 20) -> Path:
    """Figure S2: the learned time vectors in PC1/PC2, each point labelled by its time (interpolated unseen
    times hollow). With two learned times there is one direction only: the times are drawn along PC1 alone,
    and the title says so, instead of a PC2 axis at 0%.

    ``effects`` (proteins x times, crossmodalnet.interpret.time_effects): what the time adds to each protein,
    drawn beside the PCA as a heatmap of the ``top`` proteins whose effect varies most; ``truth`` (the simulator's
    true effect, same layout) as a second heatmap on the same colour scale; ``kinds`` marks unseen times
    (``3 (i)`` interpolated, ``7 (e)`` extrapolated). ``pca=None`` draws the heatmaps alone."""
    n_heat = 0 if effects is None else 1 + (truth is not None)
    ncols = (pca is not None) + n_heat
    if ncols == 0:
        raise ValueError("plot_time_embedding needs a PCA table or time effects")
    ratio = pca.attrs.get("explained_variance_ratio", [np.nan, np.nan]) if pca is not None else [np.nan, np.nan]
    one_dim = bool(pca is not None and np.isfinite(ratio[1]) and ratio[1] < 1e-9)
    height = 4.0 if n_heat == 0 else max(4.0, 0.22 * min(top, len(effects)) + 1.8)
    fig, axes = _figure(ncols, height=2.4 if (one_dim and n_heat == 0) else height)
    if pca is not None:
        ax = axes[0]
        for kind, marker, face in (("learned", "o", "#c0392b"), ("interpolated", "o", "none")):
            part = pca[pca["kind"] == kind]
            ax.scatter(part["PC1"], part["PC2"], s=70, marker=marker, facecolors=face, edgecolors="#c0392b",
                       label=kind if len(part) else None)
            for _, row in part.iterrows():
                ax.annotate(str(row["time"]), (row["PC1"], row["PC2"]), textcoords="offset points", xytext=(6, 6))
        ax.set_xlabel(f"PC1 ({100 * ratio[0]:.0f}%)")
        if one_dim:
            ax.set_yticks([])
            title = f"{title}\n{int((pca['kind'] == 'learned').sum())} learned times span one direction (PC1 only)"
        else:
            ax.set_ylabel(f"PC2 ({100 * ratio[1]:.0f}%)")
        ax.set_title(title, fontsize=10)
        ax.legend(frameon=False, fontsize=8)
        ax.margins(0.25)
    if effects is not None:
        _time_effect_heatmaps(fig, axes[ncols - n_heat:], effects, truth, kinds or {}, top)
    return _save(fig, path)


def _time_effect_heatmaps(fig: Figure, axes, effects: pd.DataFrame, truth: pd.DataFrame | None,
                          kinds: dict[str, str], top: int) -> None:
    spread = (effects.max(1) - effects.min(1)).sort_values(ascending=False, kind="stable")
    rows = list(spread.index[:top])
    cols = [str(c) for c in effects.columns]
    learned_cols = [c for c in cols if kinds.get(c, "learned") == "learned"] or cols
    panels = [("Learned time effect: mean prediction at t\nminus its mean over the learned times",
               effects.loc[rows].to_numpy(float))]
    if truth is not None:  # centred like the learned table: on the mean over the learned times
        shown = truth.reindex(index=rows, columns=cols)
        shown = shown.sub(shown[learned_cols].mean(1), axis=0)
        learned, true = panels[0][1], shown.to_numpy(float)
        ok = np.isfinite(true)
        slope = float((learned[ok] * true[ok]).sum() / (true[ok] ** 2).sum()) if (true[ok] ** 2).sum() > 0 else np.nan
        panels.append((f"True time effect (simulator), same centring\nlearned vs true: r = "
                       f"{_pearson(learned[ok], true[ok]):.2f}, slope = {slope:.2f} (these {len(rows)} proteins)",
                       true))
    vmax = max(float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 0.0 for _, values in panels)
    vmax = vmax if vmax > 0 else 1.0
    tag = {"interpolated": " (i)", "extrapolated": " (e)"}
    labels = [f"{c}{tag.get(kinds.get(c, 'learned'), '')}" for c in cols]
    for ax, (name, values) in zip(axes, panels):
        im = ax.imshow(values, aspect="auto", cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
        ax.set_xticks(range(len(cols)), labels, rotation=45 if len(cols) > 8 else 0, fontsize=8)
        ax.set_yticks(range(len(rows)), [str(r) for r in rows], fontsize=7)
        ax.set_xlabel("time ((i) interpolated, (e) extrapolated: not seen in training)"
                      if any(k != "learned" for k in kinds.values()) else "time", fontsize=9)
        ax.set_title(name, fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03, label="change in predicted protein")
    axes[0].set_ylabel(f"top {len(rows)} proteins by the range of the learned effect", fontsize=8)


def plot_nlc_curve(path: str | Path, eps: float = 1e-6, n: int = 401) -> Path:
    """Figure S1: the NLC loss of one cell, -log(max((r + 1) / 2, eps)), against the Pearson correlation r of its
    predicted and measured proteins. Zero at r = 1, log 2 at r = 0, and steep towards r = -1, where ``eps`` caps it
    at -log(eps)."""
    r = np.linspace(-1.0, 1.0, n)
    loss = -np.log(np.maximum((r + 1.0) / 2.0, eps))
    fig, (ax,) = _figure(1, width=4.8, height=3.8)
    ax.plot(r, loss, color="#c0392b", lw=2)
    for x, dx in ((-0.5, 6), (0.0, 6), (0.5, 6)):
        y = -np.log((x + 1) / 2)
        ax.plot([x], [y], "o", color="black", ms=4)
        ax.annotate(f"r = {x:g}: {y:.3f}", (x, y), textcoords="offset points", xytext=(dx, 8), fontsize=8)
    ax.set_ylim(0, min(float(loss.max()), 6.0))
    ax.set_xlim(-1, 1)
    ax.set_xticks([-1.0, -0.5, 0.0, 0.5, 1.0])
    ax.set_xlabel("Pearson correlation r of a cell's predicted and measured proteins")
    ax.set_ylabel("NLC loss  -log(max((r + 1) / 2, eps))")
    ax.set_title(f"NLC loss across correlations (eps = {eps:g}: at r = -1 the loss\nis capped at "
                 f"-log(eps) = {-np.log(eps):.1f}, above this axis)", fontsize=9)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _rank_by(by: str | None, result=None) -> str:
    """``by``, else the ranking the saliency result was made with (figures take numbers, not the saliency code)."""
    return by or getattr(result, "default_rank_by", None) or "absolute"


def plot_saliency_top(result, protein: str, path: str | Path, k: int = 10, by: str | None = None) -> Path:
    """Figure S3a: the top-k genes for a protein; bars are the mean per-cell gradient (or the result's attribution
    method), error bars its 95% interval (1.96 sd / sqrt(cells)); the bar order follows the ranking ``by``."""
    by = _rank_by(by, result)
    top = result.top(protein, k=k, by=by)
    fig, (ax,) = _figure(1, width=5.0, height=0.35 * len(top) + 1.6)
    y = np.arange(len(top))[::-1]
    colors = np.where(top["mean_gradient"] >= 0, "#c0392b", "#2e86c1")
    ax.barh(y, top["mean_gradient"], xerr=top["ci95"], color=colors, capsize=3)
    ax.set_yticks(y, top["gene"])
    ax.axvline(0, color="black", lw=0.6)
    method = result.meta.get("method", "gradient")
    ax.set_xlabel(f"saliency (mean d {protein} / d gene per cell)" if method == "gradient" else
                  f"saliency (mean {method} attribution per cell)")
    ax.set_title(f"Top {len(top)} genes by saliency for {protein}", fontsize=10)
    return _save(fig, path)


def plot_expression_vs_saliency(result, mean_expression: pd.Series, protein: str, path: str | Path,
                                k: int = 10, by: str | None = None, highlight: Sequence[str] = ()) -> Path:
    """Figure S3b: each gene's mean expression vs its saliency for a protein; the top-k genes and any
    ``highlight`` genes (e.g. the coding gene) are labelled."""
    by = _rank_by(by, result)
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


def plot_gsea_running_score(gsea, term: str, path: str | Path, protein: str | None = None) -> Path:
    """Figure S4: the running enrichment score of one gene set along the ranking (of ``protein``'s saliency,
    named in the title), with its hits marked."""
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
    ranking = f"GSEA of the {protein} saliency ranking\n" if protein else ""
    p = f"p = {row['pval']:.3g}" if row["pval"] > 0 else "p < 1/permutations"  # 0 is below the resolution
    top.set_title(f"{ranking}{term[:60]}\nNES = {row['nes']:.2f}, {p}, FDR = {row['fdr']:.3g}", fontsize=9)
    bottom.vlines(hits, 0, 1, color="black", lw=0.8)
    bottom.set_yticks([])
    bottom.set_xlabel(f"gene rank ({protein} saliency)" if protein else "gene rank (saliency)")
    return _save(fig, path)


# logged metric names -> what a reader of the figure calls them
CURVE_NAMES = {
    "train/loss": "total generator loss", "train/nlc": "NLC, -log((r + 1) / 2) per cell",
    "train/recon": "reconstruction (MSE)", "train/fader": "Fader task (MSE + adversary)",
    "train/adv": "adversary term (confusion)", "val/pearson_cell": "per-cell Pearson (validation)",
    "val/pearson_protein": "per-protein Pearson (validation)", "train/w_nlc": "weight of NLC",
    "train/w_fader": "weight of the Fader task", "train/w_recon": "weight of reconstruction",
    "train/dis_loss": "discriminator loss",
    "train/dis_ce": "discriminator cross-entropy", "train/dis_acc": "discriminator accuracy",
}


def curve_name(key: str) -> str:
    """A legend entry for a logged metric: its human name, or the key without its ``train/``/``val/`` prefix."""
    if key in CURVE_NAMES:
        return CURVE_NAMES[key]
    prefix, _, rest = key.partition("/")
    name = (rest or prefix).replace("_", " ")
    if rest.startswith("w_"):
        return f"weight of {rest[2:].replace('_', ' ')}"
    return f"{name} (validation)" if prefix == "val" else name


def plot_training_curves(metrics_csv: str | Path, path: str | Path, reference: float | None = None) -> Path:
    """Training curves from a Lightning CSV log, per epoch: losses; validation Pearson with the train-mean
    predictor's validation per-cell Pearson (``reference``) as a dashed line; the task weights (GradNorm's
    ``train/w_*``) and the discriminator's loss (``train/dis_*``), each panel only when logged."""
    metrics_csv = Path(metrics_csv)
    if not metrics_csv.is_file():
        raise DataError(f"training log not found: {metrics_csv}")
    log = pd.read_csv(metrics_csv)
    if "epoch" not in log.columns:
        raise DataError(f"{metrics_csv} has no 'epoch' column (not a Lightning CSV log?)")
    per_epoch = log.groupby("epoch").mean(numeric_only=True)

    def logged(cols):
        return [c for c in cols if c in per_epoch and per_epoch[c].notna().any()]

    losses = logged(["train/loss", "train/nlc", "train/recon", "train/fader", "train/adv"])
    scores = logged(["val/pearson_cell", "val/pearson_protein"])
    weights = logged(sorted(c for c in per_epoch.columns if c.startswith("train/w_")))
    dis = logged(sorted(c for c in per_epoch.columns if c.startswith("train/dis_") and "penalty" not in c))
    panels = [(losses, "training loss", "Losses"), (scores, "validation Pearson r", "Validation accuracy")]
    if weights:
        panels.append((weights, "task weight", "Task weights (GradNorm)"))
    if dis:
        panels.append((dis, "discriminator loss", "Discriminator (adversary)"))
    ncols = 2
    nrows = (len(panels) + 1) // 2
    fig = Figure(figsize=(5.0 * ncols, 3.6 * nrows), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (cols, ylabel, title) in zip(axes, panels):
        for c in cols:
            series = per_epoch[c].dropna()
            ax.plot(series.index, series.to_numpy(), marker="o", ms=3, label=curve_name(c))
        if title == "Validation accuracy" and reference is not None and np.isfinite(reference):
            ax.axhline(reference, color="#c0392b", ls="--", lw=1,
                       label=f"train-mean predictor, per-cell r ({reference:.3f})")
        values = per_epoch[cols].to_numpy(float) if cols else np.empty(0)
        values = values[np.isfinite(values)]
        if title == "Losses" and len(values) and values.min() > 0 and values.max() > 20 * values.min():
            ax.set_yscale("log")  # the first epochs' losses would flatten the rest
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(frameon=False, fontsize=7)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    return _save(fig, path)
