"""Saliency (paper 2.5): gamma_j = sum over cells i of d yhat_ij / d x_i, a gene ranking for each protein.

In eval mode (BatchNorm on running statistics, no dropout) cells do not interact, so the gradient of
``sum_i yhat_ij`` with respect to a whole batch ``X`` holds every cell's own gradient in its rows. One backward
pass per batch, vectorised over the selected proteins with ``is_grads_batched`` (vmap), gives all of them:
no Python loop over cells. Besides the signed sum we keep the sum of absolute per-cell gradients and their
spread over cells (for error bars).

``method`` picks the per-cell attribution a_ij that is summed over cells in place of the raw gradient:
``gradient`` (the paper's d yhat_ij / d x_i, computed as above), and from Captum (the PyTorch attribution
library) ``grad_x_input`` (gradient times expression), ``integrated_gradients`` (path integral of the gradient
from an all-zero = no-expression baseline, times the difference), ``integrated_gradients_mean`` (the same from the
mean expression) and ``smoothgrad`` (gradient averaged over Gaussian-noised copies of the cell). Every method
works on any module ``module(x, time_weights)`` with the genes as its input ``x``: to attribute a model that sees
a projection of the genes (e.g. SVD components), wrap it in a module that applies the projection first and
attribute that wrapper (the gradients then flow back to the genes). A model trained on
``data.preprocess.svd_components`` carries its projection (``model.projection``) and is wrapped here
automatically (:class:`ProjectedInput`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import anndata as ad
import numpy as np
import pandas as pd
import torch
from torch import nn

from crossmodalnet.data.validate import DataError
from crossmodalnet.models.network import first_layer

RANK_BY = ("magnitude", "absolute", "signed")
# per-cell attributions, see the module docstring; the default recovers the simulator's causal genes best
# (docs/interpretation.md, scripts/saliency_recovery.py)
METHODS = ("gradient", "grad_x_input", "integrated_gradients", "integrated_gradients_mean", "smoothgrad")
DEFAULT_METHOD = "grad_x_input"     # best mean AUROC, 3 seeds of the default simulator (docs/interpretation.md)
DEFAULT_RANK_BY = "absolute"        # sum over cells of |attribution|: never cancels between cells
IG_STEPS = 32              # Gauss-Legendre points of the integrated-gradients path integral
SMOOTHGRAD_SAMPLES = 16    # noisy copies per cell
SMOOTHGRAD_NOISE = 0.1     # noise sd as a fraction of the batch's expression range (Smilkov et al. use 0.1-0.2)
# floats held by one (proteins x cells x genes) gradient block; proteins are chunked to stay under it
GRADIENT_BUDGET = 2**25


def protein_indices(protein_names: Sequence[str], proteins: str | Iterable[str] | None) -> list[int]:
    """Indices of the requested proteins (None = all); an unknown name is an error that lists a few known ones."""
    names = [str(p) for p in protein_names]
    if proteins is None:
        return list(range(len(names)))
    wanted = [proteins] if isinstance(proteins, str) else [str(p) for p in proteins]
    lookup = {p: i for i, p in enumerate(names)}
    unknown = [p for p in wanted if p not in lookup]
    if unknown:
        raise DataError(f"unknown protein {unknown[0]!r}: the model predicts {len(names)} proteins, e.g. "
                        f"{names[:8]}")
    return [lookup[p] for p in wanted]


def _selector(out: torch.Tensor, proteins: Sequence[int]) -> torch.Tensor:
    """One-hot grad_outputs, (proteins, cells, outputs): row k picks protein proteins[k] in every cell."""
    k = len(proteins)
    select = torch.zeros((k, *out.shape), dtype=out.dtype)
    select[torch.arange(k), :, torch.as_tensor(list(proteins))] = 1.0
    return select


def batch_gradients(module: nn.Module, x: torch.Tensor, time_weights: torch.Tensor | None,
                    proteins: Sequence[int]) -> torch.Tensor:
    """Per-cell gradients d yhat_ij / d x_i, shape (len(proteins), cells, genes), for one batch.

    ``module(x, time_weights)`` must treat cells independently (call it in eval mode).
    """
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = module(x, time_weights)
        (grads,) = torch.autograd.grad(out, x, grad_outputs=_selector(out, proteins), is_grads_batched=True)
    return grads


def check_method(method: str) -> str:
    """``method`` if it is one of :data:`METHODS`, else a one-line error naming the choices."""
    if method not in METHODS:
        raise DataError(f"unknown saliency method {method!r}: choose one of {', '.join(METHODS)}")
    return method


def needs_baseline(method: str) -> bool:
    """Whether ``method`` needs a per-gene baseline vector (the mean expression)."""
    return method == "integrated_gradients_mean"


def captum_attributions(module: nn.Module, x: torch.Tensor, time_weights: torch.Tensor | None,
                        proteins: Sequence[int], method: str, baseline: torch.Tensor | None = None, *,
                        n_steps: int = IG_STEPS, n_samples: int = SMOOTHGRAD_SAMPLES,
                        noise_level: float = SMOOTHGRAD_NOISE, seed: int = 0) -> torch.Tensor:
    """Per-cell attributions of one batch by a Captum method, shape (len(proteins), cells, genes).

    Vectorised over proteins by stacking the batch once per protein (Captum takes one target per row); the time
    weights go in as ``additional_forward_args``, so only ``x`` is attributed. ``baseline``: genes vector for
    integrated gradients (None = zeros). Call with ``module`` in eval mode (BatchNorm on running statistics).
    """
    from captum.attr import InputXGradient, IntegratedGradients, NoiseTunnel, Saliency

    check_method(method)
    if method == "gradient":
        raise ValueError("method 'gradient' is computed by batch_gradients, not by Captum")
    k, b = len(proteins), x.shape[0]
    xs = x.detach().repeat(k, 1).requires_grad_(True)        # rows l*b:(l+1)*b are the batch for proteins[l]
    target = torch.as_tensor(list(proteins)).repeat_interleave(b)
    extra = (None if time_weights is None else time_weights.detach().repeat(k, 1),)
    rows = max(1, GRADIENT_BUDGET // max(x.shape[1], 1))     # rows per internal forward/backward pass
    with torch.enable_grad():
        if method == "grad_x_input":
            attr = InputXGradient(module).attribute(xs, target=target, additional_forward_args=extra)
        elif method.startswith("integrated_gradients"):
            base = torch.zeros_like(x[:1]) if baseline is None else baseline.to(x.dtype).reshape(1, -1)
            attr = IntegratedGradients(module).attribute(
                xs, baselines=base, target=target, additional_forward_args=extra, n_steps=n_steps,
                internal_batch_size=max(rows, len(xs)))
        else:  # smoothgrad: the signed mean gradient over noisy copies
            sigma = noise_level * float(x.max() - x.min()) if x.numel() else 0.0
            with torch.random.fork_rng():                   # the same noise on every call, global RNG untouched
                torch.manual_seed(seed)
                attr = NoiseTunnel(Saliency(module)).attribute(
                    xs, nt_type="smoothgrad", nt_samples=n_samples, stdevs=sigma, target=target,
                    additional_forward_args=extra, nt_samples_batch_size=max(1, rows // len(xs)), abs=False)
    return attr.detach().reshape(k, b, -1)


class ProjectedInput(nn.Module):
    """``module`` fed with genes: applies the model's SVD input projection first, so autograd and Captum
    attribute the genes themselves (gradients flow back through ``x @ components_.T``)."""

    def __init__(self, module: nn.Module, projection) -> None:
        super().__init__()
        self.inner, self.projection = module, projection

    def forward(self, x: torch.Tensor, time_weights: torch.Tensor | None = None) -> torch.Tensor:
        return self.inner(self.projection.transform_torch(x), time_weights)


def _network(module: nn.Module):
    """The CrossmodalNetwork inside ``module`` (or None for any other model)."""
    net = getattr(module, "network", module)
    return net if all(hasattr(net, a) for a in ("input_layer", "encoder_rest", "decode")) else None


def hidden_gradients(net, x: torch.Tensor, time_weights: torch.Tensor | None,
                     proteins: Sequence[int]) -> torch.Tensor:
    """d yhat_ij / d h_i at the first layer's output h = x W^T + b, shape (proteins, cells, latent).

    Since d h_i / d x_i = W, the gene gradients are these times W: backpropagating only through the
    (latent-sized) upper layers and multiplying by W once is much cheaper than a backward pass per protein
    through the (gene-sized) first layer.
    """
    with torch.no_grad():
        h0 = first_layer(x, net.input_layer)
    h = h0.requires_grad_(True)
    with torch.enable_grad():
        out = net.decode(net.encoder_rest(h), time_weights)
        (grads,) = torch.autograd.grad(out, h, grad_outputs=_selector(out, proteins), is_grads_batched=True)
    return grads


@dataclass
class SaliencyAccumulator:
    """Running sums over batches of cells: signed and absolute per-cell gradients, and the sum of squared
    deviations from the mean (combined across batches the numerically stable way, Chan et al.).

    With ``per_cell=False`` only the signed sum (gamma) is kept; absolute and deviations stay NaN.
    """

    n_proteins: int
    n_genes: int
    per_cell: bool = True
    n_cells: int = 0
    signed: np.ndarray = field(init=False)
    absolute: np.ndarray = field(init=False)
    sq_dev: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        shape = (self.n_proteins, self.n_genes)
        self.signed = np.zeros(shape, np.float64)
        fill = 0.0 if self.per_cell else np.nan
        self.absolute, self.sq_dev = np.full(shape, fill), np.full(shape, fill)

    def add(self, rows: slice, grads: torch.Tensor) -> None:
        """Add per-cell gene gradients (proteins, cells, genes) of a batch not yet counted in ``n_cells``."""
        total = grads.sum(1).double().numpy()
        if self.per_cell:
            n_a, n_b = self.n_cells, grads.shape[1]
            mean_b = total / n_b
            dev_b = (grads - torch.from_numpy(mean_b).to(grads.dtype)[:, None, :]).square().sum(1).double().numpy()
            delta = mean_b - (self.signed[rows] / n_a if n_a else 0.0)
            self.sq_dev[rows] += dev_b + delta**2 * (n_a * n_b / (n_a + n_b))
            self.absolute[rows] += grads.abs().sum(1).double().numpy()
        self.signed[rows] += total

    def add_signed(self, rows: slice, signed: torch.Tensor) -> None:
        self.signed[rows] += signed.double().numpy()

    def std(self) -> np.ndarray:
        return np.sqrt(self.sq_dev / max(self.n_cells, 1))


def saliency_from_batches(module: nn.Module, batches: Iterable[tuple[np.ndarray, np.ndarray | None]],
                          proteins: Sequence[int], n_genes: int, per_cell: bool = True,
                          method: str = "gradient", baseline: np.ndarray | None = None,
                          **options: Any) -> SaliencyAccumulator:
    """Accumulate saliency over ``(dense genes block, time weights block or None)`` batches.

    ``method``: one of :data:`METHODS` (``gradient`` = the paper's); ``baseline``: genes vector for
    ``integrated_gradients_mean`` (required there) or ``integrated_gradients`` (default zeros); ``options``:
    ``n_steps``, ``n_samples``, ``noise_level``, ``seed`` of :func:`captum_attributions`.
    ``per_cell=False`` keeps only gamma (the signed sum), which for a CrossmodalNet and ``gradient`` costs about
    one forward pass per batch: cheap enough for every training run's metrics.
    """
    check_method(method)
    unknown = sorted(set(options) - {"n_steps", "n_samples", "noise_level", "seed"})
    if unknown:
        raise TypeError(f"unknown saliency option {unknown[0]!r}: use n_steps, n_samples, noise_level or seed")
    if needs_baseline(method) and baseline is None:
        raise ValueError(f"method {method!r} needs a baseline (the genes' mean expression)")
    base_t = None if baseline is None else torch.as_tensor(np.asarray(baseline, dtype=np.float32).reshape(-1))
    if base_t is not None and base_t.numel() != n_genes:
        raise ValueError(f"baseline has {base_t.numel()} values, the model has {n_genes} genes")
    acc = SaliencyAccumulator(len(proteins), n_genes, per_cell)
    net = _network(module) if method == "gradient" else None
    # SVD input (data.preprocess.svd_components): batches hold genes, the network reads their projection; the
    # genes' gradient is the components' gradient @ components_ (chain rule, see crossmodalnet.data.projection)
    projection = getattr(module, "projection", None)
    target = module if projection is None else ProjectedInput(module, projection)
    if net is not None:  # d h / d genes: the first layer's weight, through the projection when there is one
        weight = net.input_layer.weight.detach()
        weight = weight if projection is None else projection.gene_gradient(weight)   # (latent, genes)
    was_training = module.training
    module.eval()
    try:
        for x, tw in batches:
            x_t = torch.as_tensor(np.asarray(x, dtype=np.float32))
            tw_t = None if tw is None else torch.as_tensor(np.asarray(tw, dtype=np.float32))
            b = x_t.shape[0]
            if b == 0:
                continue
            width = net.input_layer.out_features if net is not None else n_genes
            per_protein = b * (max(width, n_genes) if per_cell or net is None else width)  # floats per protein
            chunk = max(1, GRADIENT_BUDGET // per_protein)
            for lo in range(0, len(proteins), chunk):
                sel = list(proteins[lo:lo + chunk])
                rows = slice(lo, lo + len(sel))
                if net is None:
                    grads = (batch_gradients(target, x_t, tw_t, sel) if method == "gradient" else
                             captum_attributions(target, x_t, tw_t, sel, method, base_t, **options))
                    if per_cell:
                        acc.add(rows, grads)
                    else:
                        acc.add_signed(rows, grads.sum(1))
                    continue
                x_in = x_t if projection is None else projection.transform_torch(x_t)
                g_h = hidden_gradients(net, x_in, tw_t, sel)               # (k, b, latent)
                if per_cell:
                    acc.add(rows, torch.matmul(g_h, weight))
                else:
                    acc.add_signed(rows, g_h.sum(1) @ weight)
            acc.n_cells += b
    finally:
        module.train(was_training)
    return acc


@dataclass
class SaliencyResult:
    """Saliency of genes for proteins; each table is proteins x genes.

    With ``meta["method"] == "gradient"`` (the paper's): ``signed``: gamma_j = sum_i d yhat_ij / d x_i;
    ``absolute``: sum_i |d yhat_ij / d x_i| (ranked by it: the authors' mean |gradient|); ``std``: standard deviation
    of the per-cell gradient over cells. With another method the same sums hold that method's per-cell
    attribution instead of the gradient. ``meta["mean_expression"]`` (from :func:`saliency`): each gene's mean over
    the same cells, as the model read it (aligned, normalised).
    """

    signed: pd.DataFrame
    absolute: pd.DataFrame
    std: pd.DataFrame
    n_cells: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def proteins(self) -> list[str]:
        return list(self.signed.index)

    def scores(self, by: str = DEFAULT_RANK_BY) -> pd.DataFrame:
        """Ranking scores: ``magnitude`` = |gamma_j|, ``absolute`` = sum over cells of |per-cell attribution|
        (for ``gradient``: the authors' mean |gradient| ranking), ``signed`` = gamma_j."""
        if by not in RANK_BY:
            raise ValueError(f"rank by one of {RANK_BY}, got {by!r}")
        return {"magnitude": self.signed.abs(), "absolute": self.absolute, "signed": self.signed}[by]

    def ranking(self, protein: str, by: str = DEFAULT_RANK_BY) -> pd.Series:
        """All genes for one protein, highest score first."""
        self._check(protein)
        return self.scores(by).loc[protein].sort_values(ascending=False)

    def top(self, protein: str, k: int = 10, by: str = DEFAULT_RANK_BY) -> pd.DataFrame:
        """The ``k`` highest-ranked genes: saliency, per-cell mean and sd, 95% interval of the mean."""
        genes = self.ranking(protein, by).index[:k]
        n = max(self.n_cells, 1)
        sd = self.std.loc[protein, genes].to_numpy()
        return pd.DataFrame({
            "protein": protein, "gene": genes, "rank": np.arange(1, len(genes) + 1),
            "saliency": self.signed.loc[protein, genes].to_numpy(),
            "abs_saliency": self.absolute.loc[protein, genes].to_numpy(),
            "mean_gradient": self.signed.loc[protein, genes].to_numpy() / n,
            "sd_gradient": sd, "ci95": 1.96 * sd / np.sqrt(n)})

    def to_long(self, by: str = DEFAULT_RANK_BY) -> pd.DataFrame:
        """Long format: one row per (protein, gene) with its rank within the protein."""
        long = self.signed.stack().rename("saliency").to_frame()
        long["abs_saliency"] = self.absolute.stack()
        long["sd_gradient"] = self.std.stack()
        long["rank"] = self.scores(by).rank(axis=1, ascending=False, method="first").astype(int).stack()
        long.index.names = ["protein", "gene"]
        return long.reset_index().sort_values(["protein", "rank"], ignore_index=True)

    def add_to(self, adata: ad.AnnData, key: str = "saliency", k: int = 10, by: str = DEFAULT_RANK_BY) -> None:
        """Store in ``adata``: ``varm[key]`` / ``varm[key + '_abs']`` (genes x proteins, 0 for genes the model
        lacks) and ``uns[key]`` (proteins, number of cells, top-k genes per protein)."""
        genes = pd.Index(adata.var_names.astype(str))
        signed = self.signed.T.reindex(genes).fillna(0.0)
        absolute = self.absolute.T.reindex(genes).fillna(0.0)
        adata.varm[key] = signed.to_numpy(np.float32)
        adata.varm[f"{key}_abs"] = absolute.to_numpy(np.float32)
        adata.uns[key] = {"proteins": np.asarray(self.proteins, dtype=object).astype(str),
                          "n_cells": int(self.n_cells), "rank_by": by,
                          "top_genes": {p: np.asarray(self.ranking(p, by).index[:k]).astype(str)
                                        for p in self.proteins}}

    def _check(self, protein: str) -> None:
        if protein not in self.signed.index:
            raise DataError(f"unknown protein {protein!r}: saliency was computed for {self.proteins[:8]}")


def saliency(model, adata: ad.AnnData, proteins: str | Iterable[str] | None = None, *, time: Any = None,
             time_key: str | None = None, time_mode: str = "interpolate", batch_size: int = 256,
             layer: str | None = None, normalize: str | None = None, min_shared: float | None = None,
             max_cells: int | None = None, seed: int = 0, where: str = "input",
             method: str = DEFAULT_METHOD, **options: Any) -> SaliencyResult:
    """Saliency of the checkpoint's genes for ``proteins`` (a name, a list, or None = all) over ``adata``'s cells.

    Genes are aligned and normalised exactly as in :func:`crossmodalnet.predict.predict`; the time of each cell
    is resolved the same way. ``max_cells`` takes a random subset (seeded) to bound the cost on big files.
    ``method``: the per-cell attribution (:data:`METHODS`); ``integrated_gradients_mean`` starts its path at the
    mean expression of the same cells (one extra reading pass). ``options``: see :func:`captum_attributions`.
    """
    check_method(method)
    from crossmodalnet.predict import _as_model, gene_source, resolve_time

    model = _as_model(model)
    if getattr(model, "baseline", None) is not None:  # crossmodalnet.loading.BaselinePredictor
        raise DataError(f"saliency needs a neural model (crossmodalnet, mlp_mse, mlp_nlc); "
                        f"{model.name} is a fit/predict baseline without gradients")
    if not getattr(model, "uses_time", True):
        time_mode = "none"  # an MLP has no time input
    idx = protein_indices(model.protein_names, proteins)
    source = gene_source(model, adata, layer=layer, normalize=normalize, min_shared=min_shared, where=where)
    _, weights = resolve_time(model, adata.obs, time, time_key, time_mode, "nearest", where)
    keep = np.ones(adata.n_obs, dtype=bool)
    if max_cells is not None and adata.n_obs > max_cells:
        keep[:] = False
        keep[np.random.default_rng(seed).choice(adata.n_obs, max_cells, replace=False)] = True

    expr_sum = np.zeros(len(model.gene_names), dtype=np.float64)

    def batches(count: bool = True):  # consecutive blocks (bounded memory), keeping the sampled cells of each
        for start, stop, block in source.batches(batch_size):
            rows = np.flatnonzero(keep[start:stop])
            if len(rows):
                if count:
                    expr_sum[:] += block[rows].sum(0)
                yield block[rows], (None if time_mode == "none" else weights[start + rows])

    baseline = None
    if needs_baseline(method):  # a first pass for the mean expression of these cells
        for _ in batches():
            pass
        baseline = expr_sum / max(int(keep.sum()), 1)
    acc = saliency_from_batches(model, batches(count=baseline is None), idx, len(model.gene_names),
                                method=method, baseline=baseline, **options)
    names = [model.protein_names[i] for i in idx]
    mean_expr = pd.Series(expr_sum / max(acc.n_cells, 1), index=[str(g) for g in model.gene_names])
    return result_from_accumulator(acc, names, model.gene_names,
                                   meta={"time_mode": time_mode, "n_missing_genes": len(source.alignment.missing),
                                         "mean_expression": mean_expr, "method": method})


def result_from_accumulator(acc: SaliencyAccumulator, proteins: Sequence[str], genes: Sequence[str],
                            meta: dict | None = None) -> SaliencyResult:
    frame = lambda a: pd.DataFrame(a, index=pd.Index(list(proteins), name="protein"),  # noqa: E731
                                   columns=pd.Index([str(g) for g in genes], name="gene"))
    return SaliencyResult(frame(acc.signed), frame(acc.absolute), frame(acc.std()), acc.n_cells, meta or {})
