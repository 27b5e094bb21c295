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
from crossmodalnet.interpret.ranking import NULLS, apply_null, gene_stats, matched_neighbours, rank_interval
from crossmodalnet.models.network import first_layer

RANK_BY = ("magnitude", "absolute", "signed", "directional")
# per-cell attributions, see the module docstring; the default recovers the simulator's causal genes best
# (docs/interpretation.md, scripts/saliency_recovery.py)
METHODS = ("gradient", "grad_x_sd", "variance_share", "grad_x_input", "integrated_gradients",
           "integrated_gradients_mean", "smoothgrad")
GRADIENT_METHODS = ("gradient", "grad_x_sd", "variance_share")   # computed by the fast gradient path
# the default rule, chosen on real BMMC coding genes and the simulator's causal genes together (selection seeds 0-2
# of scripts/saliency_recovery.py; docs/interpretation.md "Does it hold on real data?")
DEFAULT_METHOD = "variance_share"   # each gene's share of the predicted protein's variation over cells
DEFAULT_RANK_BY = "magnitude"       # |sum over cells|
DEFAULT_NULL = "none"
DEFAULT_HIGH_CELLS = 0.5            # sum over the half of the cells with the most (predicted) protein
DEFAULT_BOOT = 20           # Poisson bootstrap replicates of the cells for rank intervals
BOOT_BUDGET = 2**26         # float32s held by the replicate sums (256 MiB); fewer replicates above it
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
    return method in ("integrated_gradients_mean", "variance_share")


def prediction_centre(module: nn.Module, batches: Iterable[tuple], proteins: Sequence[int]
                      ) -> tuple[np.ndarray, np.ndarray]:
    """One forward pass: the genes' mean expression and, per selected protein, the mean prediction and the sum of
    squared deviations from it, ``(proteins, 2)`` (what ``variance_share`` centres and scales by)."""
    projection = getattr(module, "projection", None)
    target = module if projection is None else ProjectedInput(module, projection)
    was_training = module.training
    module.eval()
    x_sum, n, preds = None, 0, []
    try:
        with torch.no_grad():
            for x, tw, *_ in batches:
                x_t = torch.as_tensor(np.asarray(x, dtype=np.float32))
                if x_t.shape[0] == 0:
                    continue
                tw_t = None if tw is None else torch.as_tensor(np.asarray(tw, dtype=np.float32))
                preds.append(target(x_t, tw_t)[:, list(proteins)].double().numpy())
                x_sum = x_t.double().sum(0).numpy() + (0.0 if x_sum is None else x_sum)
                n += x_t.shape[0]
    finally:
        module.train(was_training)
    if not n:
        raise ValueError("no cells to centre the variance share on")
    y = np.concatenate(preds)
    return x_sum / n, np.column_stack([y.mean(0), ((y - y.mean(0)) ** 2).sum(0)])


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
    if method in GRADIENT_METHODS:
        raise ValueError(f"method {method!r} is computed by batch_gradients, not by Captum")
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
    """Running sums over batches of cells: signed and absolute per-cell attributions, the sum of squared
    deviations from the mean (combined across batches the numerically stable way, Chan et al.), the genes'
    expression sums (for per-SD scaling and the expression-matched null) and, with ``n_boot``, the same sums under
    Poisson bootstrap weights of the cells (a streaming bootstrap: each replicate weighs every cell by a Poisson(1)
    count, so rank intervals need no second pass).

    A per-protein cell mask (``add(..., mask=)``) restricts each protein's sums to some cells (e.g. the cells that
    express it); ``counts`` holds each protein's number of cells. With ``per_cell=False`` only the signed sum
    (gamma) is kept; absolute and deviations stay NaN.
    """

    n_proteins: int
    n_genes: int
    per_cell: bool = True
    n_boot: int = 0
    n_cells: int = 0
    signed: np.ndarray = field(init=False)
    absolute: np.ndarray = field(init=False)
    sq_dev: np.ndarray = field(init=False)
    counts: np.ndarray = field(init=False)
    boot_signed: np.ndarray | None = field(init=False, default=None)
    boot_absolute: np.ndarray | None = field(init=False, default=None)
    expr_sum: np.ndarray = field(init=False)
    expr_sq: np.ndarray = field(init=False)
    expr_nonzero: np.ndarray = field(init=False)
    expr_cells: int = field(init=False, default=0)
    pred_sum: np.ndarray = field(init=False)
    pred_sq: np.ndarray = field(init=False)
    pred_x: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        shape = (self.n_proteins, self.n_genes)
        self.signed = np.zeros(shape, np.float64)
        fill = 0.0 if self.per_cell else np.nan
        self.absolute, self.sq_dev = np.full(shape, fill), np.full(shape, fill)
        self.counts = np.zeros(self.n_proteins, np.float64)
        if self.n_boot:
            self.boot_signed = np.zeros((self.n_boot, *shape), np.float32)
            self.boot_absolute = np.zeros((self.n_boot, *shape), np.float32)
        self.expr_sum, self.expr_sq, self.expr_nonzero = (np.zeros(self.n_genes, np.float64) for _ in range(3))
        self.pred_sum, self.pred_sq = np.zeros(self.n_proteins), np.zeros(self.n_proteins)
        self.pred_x = np.zeros(shape, np.float64)

    def add_prediction(self, yhat: torch.Tensor, x: torch.Tensor) -> None:
        """Count the selected proteins' predictions (proteins x cells) of a batch counted by
        :meth:`add_expression`, for each gene's correlation with each predicted protein (its direction)."""
        y = yhat.double()
        self.pred_sum += y.sum(1).numpy()
        self.pred_sq += y.square().sum(1).numpy()
        self.pred_x += (y @ x.double()).numpy()

    def association(self) -> np.ndarray:
        """Pearson correlation over the cells seen of every gene with every predicted protein (0 where either is
        constant): whether a gene goes up (+) or down (-) where the model predicts more of the protein."""
        n = max(self.expr_cells, 1)
        cov = self.pred_x / n - np.outer(self.pred_sum / n, self.expr_sum / n)
        var_y = np.clip(self.pred_sq / n - (self.pred_sum / n) ** 2, 0, None)
        var_x = np.clip(self.expr_sq / n - (self.expr_sum / n) ** 2, 0, None)
        denom = np.sqrt(np.outer(var_y, var_x))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denom > 1e-12, cov / denom, 0.0)

    def add_expression(self, x: torch.Tensor) -> None:
        """Count a batch of cells' expression (cells x genes) once, for the genes' mean, sd and sparsity."""
        xd = x.double()
        self.expr_sum += xd.sum(0).numpy()
        self.expr_sq += xd.square().sum(0).numpy()
        self.expr_nonzero += (x != 0).sum(0).double().numpy()
        self.expr_cells += x.shape[0]

    def add(self, rows: slice, grads: torch.Tensor, mask: torch.Tensor | None = None,
            boot_weights: torch.Tensor | None = None) -> None:
        """Add per-cell attributions (proteins, cells, genes) of a batch. ``mask``: (proteins, cells) 0/1, which
        cells count for each protein (None = all); ``boot_weights``: (n_boot, cells) Poisson counts."""
        k, b = grads.shape[:2]
        m = torch.ones((k, b), dtype=grads.dtype) if mask is None else mask.to(grads.dtype)
        weighted = grads * m[:, :, None]
        total = weighted.sum(1).double().numpy()
        n_b = m.sum(1).double().numpy()
        if self.per_cell:
            n_a = self.counts[rows]
            mean_b = total / np.maximum(n_b, 1)[:, None]
            dev_b = ((grads - torch.from_numpy(mean_b).to(grads.dtype)[:, None, :]).square()
                     * m[:, :, None]).sum(1).double().numpy()
            delta = mean_b - self.signed[rows] / np.maximum(n_a, 1)[:, None]
            self.sq_dev[rows] += dev_b + delta**2 * (n_a * n_b / np.maximum(n_a + n_b, 1))[:, None]
            self.absolute[rows] += weighted.abs().sum(1).double().numpy()
        self.signed[rows] += total
        self.counts[rows] += n_b
        if self.n_boot and boot_weights is not None:
            w = boot_weights.to(grads.dtype)[:, None, :] * m[None]           # (n_boot, proteins, cells)
            self.boot_signed[:, rows] += torch.einsum("bkc,kcg->bkg", w, grads).numpy()
            if self.per_cell:
                self.boot_absolute[:, rows] += torch.einsum("bkc,kcg->bkg", w, grads.abs()).numpy()

    def add_signed(self, rows: slice, signed: torch.Tensor, n_b: int | np.ndarray) -> None:
        """Add the signed sum over a batch's cells only (``per_cell=False``), ``n_b`` cells per protein."""
        self.signed[rows] += signed.double().numpy()
        self.counts[rows] += n_b

    def std(self) -> np.ndarray:
        return np.sqrt(self.sq_dev / np.maximum(self.counts, 1)[:, None])


def _poisson_weights(n_boot: int, n: int, generator: torch.Generator) -> torch.Tensor | None:
    """Poisson(1) bootstrap counts (n_boot, n) from a seeded generator: the same for every protein of a batch."""
    return torch.poisson(torch.ones((n_boot, n)), generator=generator) if n_boot else None


def saliency_from_batches(module: nn.Module, batches: Iterable[tuple], proteins: Sequence[int], n_genes: int,
                          per_cell: bool = True, method: str = "gradient", baseline: np.ndarray | None = None,
                          n_boot: int = 0, boot_seed: int = 0, centre: np.ndarray | None = None,
                          **options: Any) -> SaliencyAccumulator:
    """Accumulate saliency over ``(dense genes block, time weights block or None[, mask])`` batches.

    ``mask``, optional: (cells, len(proteins)) 0/1, which cells count for each selected protein (e.g. the cells
    that express it). ``method``: one of :data:`METHODS` (``gradient`` = the paper's; ``grad_x_sd`` accumulates the
    gradient here and is scaled by the genes' sd in :func:`result_from_accumulator`); ``baseline``: genes vector
    for ``integrated_gradients_mean`` (required there) or ``integrated_gradients`` (default zeros); ``n_boot``:
    Poisson bootstrap replicates of the cells (seeded by ``boot_seed``) for rank intervals; ``centre``: for
    ``variance_share`` (with ``baseline`` = the genes' mean), the (proteins, 2) mean prediction and sum of squared
    deviations of :func:`prediction_centre`; ``options``:
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
    share = method == "variance_share"
    if share and (centre is None or np.shape(centre) != (len(proteins), 2)):
        raise ValueError("method 'variance_share' needs centre=(proteins, 2) mean prediction and sum of squares "
                         "(prediction_centre)")
    acc = SaliencyAccumulator(len(proteins), n_genes, per_cell, n_boot)
    generator = torch.Generator().manual_seed(boot_seed)
    plain = method in GRADIENT_METHODS
    net = _network(module) if plain else None
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
        for x, tw, *rest in batches:
            x_t = torch.as_tensor(np.asarray(x, dtype=np.float32))
            tw_t = None if tw is None else torch.as_tensor(np.asarray(tw, dtype=np.float32))
            mask = None if not rest or rest[0] is None else torch.as_tensor(np.asarray(rest[0], np.float32)).T
            b = x_t.shape[0]
            if b == 0:
                continue
            acc.add_expression(x_t)
            with torch.no_grad():
                yhat_all = target(x_t, tw_t).double().T                                    # (outputs, b)
            acc.add_prediction(yhat_all[list(proteins)], x_t)
            boot = _poisson_weights(n_boot, b, generator)
            width = net.input_layer.out_features if net is not None else n_genes
            per_protein = b * (max(width, n_genes) if per_cell or net is None else width)  # floats per protein
            chunk = max(1, GRADIENT_BUDGET // (per_protein * (1 + bool(n_boot))))
            for lo in range(0, len(proteins), chunk):
                sel = list(proteins[lo:lo + chunk])
                rows = slice(lo, lo + len(sel))
                m = None if mask is None else mask[rows]
                if net is None:
                    grads = (batch_gradients(target, x_t, tw_t, sel) if plain else
                             captum_attributions(target, x_t, tw_t, sel, method, base_t, **options))
                else:
                    x_in = x_t if projection is None else projection.transform_torch(x_t)
                    g_h = hidden_gradients(net, x_in, tw_t, sel)               # (k, b, latent)
                    if not per_cell and not n_boot and not share:
                        g_h = g_h if m is None else g_h * m[:, :, None]
                        acc.add_signed(rows, g_h.sum(1) @ weight, b if m is None else m.sum(1).double().numpy())
                        continue
                    grads = torch.matmul(g_h, weight)
                if share:  # each cell's first-order contribution of a gene, times its prediction's deviation
                    yhat = yhat_all[sel]                                                     # (k, b)
                    c = torch.as_tensor(np.asarray(centre, np.float64)[rows])
                    dev = ((yhat - c[:, :1]) / c[:, 1:].clamp_min(1e-12)).to(grads.dtype)
                    grads = grads * (x_t - base_t)[None] * dev[:, :, None]
                if per_cell or n_boot:
                    acc.add(rows, grads, m, boot)
                else:
                    g = grads if m is None else grads * m[:, :, None]
                    acc.add_signed(rows, g.sum(1), b if m is None else m.sum(1).double().numpy())
            acc.n_cells += b
    finally:
        module.train(was_training)
    return acc


@dataclass(repr=False)
class SaliencyResult:
    """Saliency of genes for proteins; each table is proteins x genes.

    With ``meta["method"] == "gradient"`` (the paper's): ``signed``: gamma_j = sum_i d yhat_ij / d x_i;
    ``absolute``: sum_i |d yhat_ij / d x_i| (ranked by it: the authors' mean |gradient|); ``std``: standard deviation
    of the per-cell gradient over cells. With another method the same sums hold that method's per-cell
    attribution instead of the gradient. ``gene_stats``: each gene's mean, sd and fraction of cells expressing it
    over the cells analysed, as the model read them (aligned, normalised); ``meta["mean_expression"]`` is its mean.
    ``boot_signed`` / ``boot_absolute``: the same sums under Poisson bootstrap weights of the cells (replicates x
    proteins x genes; None without ``n_boot``), for rank intervals. ``unranked``: genes that could not be ranked
    (gene, protein whose coding gene it is or "", reason); ``notes``: caveats every ranking carries (e.g. SVD input).
    """

    signed: pd.DataFrame
    absolute: pd.DataFrame
    std: pd.DataFrame
    n_cells: int
    meta: dict[str, Any] = field(default_factory=dict)
    gene_stats: pd.DataFrame | None = None
    boot_signed: np.ndarray | None = None
    boot_absolute: np.ndarray | None = None
    unranked: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["gene", "protein", "reason"]))
    notes: list[str] = field(default_factory=list)
    association: pd.DataFrame | None = None

    def __repr__(self) -> str:
        n_boot = 0 if self.boot_signed is None else len(self.boot_signed)
        cells = self.meta.get("cells", "all")
        return (f"SaliencyResult(method={self.meta.get('method', 'gradient')!r}, {len(self.proteins)} proteins x "
                f"{self.signed.shape[1]} genes, {self.n_cells} cells ({cells}), bootstrap={n_boot}, "
                f"unranked genes={len(self.unranked)}, notes={len(self.notes)})")

    @property
    def proteins(self) -> list[str]:
        return list(self.signed.index)

    @property
    def genes(self) -> list[str]:
        return list(self.signed.columns)

    @property
    def default_rank_by(self) -> str:
        """The ranking used when none is given: ``meta["rank_by"]`` (set by :func:`saliency`), else
        :data:`DEFAULT_RANK_BY`; figures use it too."""
        return self.meta.get("rank_by") or DEFAULT_RANK_BY

    @property
    def default_null(self) -> str:
        """The null used when none is given: ``meta["null"]``, else :data:`DEFAULT_NULL`."""
        return self.meta.get("null") or DEFAULT_NULL

    def _neighbours(self) -> np.ndarray:
        if "_nbr_cache" not in self.__dict__:
            self.__dict__["_nbr_cache"] = matched_neighbours(self._stats())
        return self.__dict__["_nbr_cache"]

    def _stats(self) -> pd.DataFrame:
        if self.gene_stats is None:
            raise ValueError("the expression-matched null needs gene_stats (the genes' mean and fraction "
                             "expressed over the cells analysed); this result has none")
        return self.gene_stats

    def _score_array(self, signed: np.ndarray, absolute: np.ndarray, by: str, null: str) -> np.ndarray:
        by, null = by or self.default_rank_by, null or self.default_null
        if by not in RANK_BY:
            raise ValueError(f"rank by one of {RANK_BY}, got {by!r}")
        if by == "directional":  # |gamma| signed by the gene's direction: genes that rise with the protein first
            if self.association is None:
                raise ValueError("rank_by='directional' needs the genes' association with the predicted protein")
            direction = np.sign(self.association.to_numpy())
            raw = np.abs(signed) * np.where(direction == 0, 1.0, direction)
        else:
            raw = {"magnitude": np.abs(signed), "absolute": absolute, "signed": signed}[by]
        if by == "absolute" and np.isnan(raw).all():
            raise ValueError("rank_by='absolute' needs per-cell sums: compute the saliency with per_cell=True")
        if null not in NULLS:
            raise ValueError(f"null must be one of {NULLS}, got {null!r}")
        return raw if null == "none" else apply_null(raw, null, self._stats(), self._neighbours())

    def scores(self, by: str | None = None, null: str | None = None) -> pd.DataFrame:
        """Ranking scores: ``magnitude`` = |gamma_j|, ``absolute`` = sum over cells of |per-cell attribution|
        (for ``gradient``: the authors' mean |gradient| ranking), ``signed`` = gamma_j, ``directional`` = |gamma_j|
        signed by the gene's association with the predicted protein (genes that rise with it first); with
        ``null="expression_matched"`` each turned into a robust z-score against the genes of similar mean and
        sparsity (:mod:`crossmodalnet.interpret.ranking`)."""
        arr = self._score_array(self.signed.to_numpy(), self.absolute.to_numpy(), by, null)
        return pd.DataFrame(arr, index=self.signed.index, columns=self.signed.columns)

    def ranking(self, protein: str, by: str | None = None, null: str | None = None) -> pd.Series:
        """All genes for one protein, highest score first."""
        self._check(protein)
        return self.scores(by, null).loc[protein].sort_values(ascending=False, kind="stable")

    def rank_replicates(self, protein: str, by: str | None = None, null: str | None = None) -> np.ndarray:
        """The protein's scores in every bootstrap replicate (replicates x genes), under the same rule."""
        if self.boot_signed is None:
            raise ValueError("no bootstrap replicates: compute the saliency with n_boot > 0")
        j = self.proteins.index(protein)
        return self._score_array(self.boot_signed[:, j].astype(np.float64),
                                 self.boot_absolute[:, j].astype(np.float64), by, null)

    def top(self, protein: str, k: int = 10, by: str | None = None, null: str | None = None,
            level: float = 0.9) -> pd.DataFrame:
        """The ``k`` highest-ranked genes: score, saliency, per-cell mean and sd, 95% interval of the mean and,
        with bootstrap replicates, the ``level`` interval of the gene's rank over bootstrap samples of the cells
        (``rank_lo``, ``rank_hi``) and how often it stays in the top k (``in_top<k>``); ``association``: the gene's
        Pearson r with the predicted protein over the cells (+ up, - down where the protein is high)."""
        ranked = self.ranking(protein, by, null)
        genes = ranked.index[:k]
        n = max(float(self.meta.get("cells_per_protein", {}).get(protein, self.n_cells)), 1.0)
        sd = self.std.loc[protein, genes].to_numpy()
        out = pd.DataFrame({
            "protein": protein, "gene": genes, "rank": np.arange(1, len(genes) + 1),
            "score": ranked.iloc[:k].to_numpy(),
            "saliency": self.signed.loc[protein, genes].to_numpy(),
            "abs_saliency": self.absolute.loc[protein, genes].to_numpy(),
            "mean_gradient": self.signed.loc[protein, genes].to_numpy() / n,
            "sd_gradient": sd, "ci95": 1.96 * sd / np.sqrt(n)})
        if self.association is not None:  # + : the gene goes up where the model predicts more of the protein
            out["association"] = self.association.loc[protein, genes].to_numpy()
        if self.boot_signed is not None:
            idx = self.signed.columns.get_indexer(genes)
            interval = rank_interval(self.rank_replicates(protein, by, null), idx, level, k)
            out = pd.concat([out, interval.set_axis(out.index)], axis=1)
        return out

    def to_long(self, by: str | None = None, null: str | None = None) -> pd.DataFrame:
        """Long format: one row per (protein, gene) with its score and rank within the protein."""
        long = self.signed.stack().rename("saliency").to_frame()
        long["abs_saliency"] = self.absolute.stack()
        long["sd_gradient"] = self.std.stack()
        scores = self.scores(by, null)
        long["score"] = scores.stack()
        long["rank"] = scores.rank(axis=1, ascending=False, method="first").astype(int).stack()
        long.index.names = ["protein", "gene"]
        return long.reset_index().sort_values(["protein", "rank"], ignore_index=True)

    def add_to(self, adata: ad.AnnData, key: str = "saliency", k: int = 10, by: str | None = None,
               null: str | None = None) -> None:
        """Store in ``adata``: ``varm[key]`` / ``varm[key + '_abs']`` (genes x proteins, 0 for genes the model
        lacks) and ``uns[key]`` (proteins, number of cells, ranking rule, top-k genes per protein, unranked genes
        and notes)."""
        genes = pd.Index(adata.var_names.astype(str))
        signed = self.signed.T.reindex(genes).fillna(0.0)
        absolute = self.absolute.T.reindex(genes).fillna(0.0)
        adata.varm[key] = signed.to_numpy(np.float32)
        adata.varm[f"{key}_abs"] = absolute.to_numpy(np.float32)
        scores = self.scores(by, null)
        by, null = by or self.default_rank_by, null or self.default_null
        adata.uns[key] = {"proteins": np.asarray(self.proteins, dtype=object).astype(str),
                          "n_cells": int(self.n_cells), "rank_by": by, "null": null,
                          "method": str(self.meta.get("method", "")),
                          "top_genes": {p: np.asarray(scores.loc[p].sort_values(ascending=False, kind="stable")
                                                      .index[:k]).astype(str) for p in self.proteins},
                          "unranked_genes": np.asarray(self.unranked["gene"], dtype=object).astype(str),
                          "unranked_reasons": np.asarray(self.unranked["reason"], dtype=object).astype(str),
                          "notes": np.asarray(self.notes, dtype=object).astype(str)}

    def _check(self, protein: str) -> None:
        if protein not in self.signed.index:
            raise DataError(f"unknown protein {protein!r}: saliency was computed for {self.proteins[:8]}")


def saliency(model, adata: ad.AnnData, proteins: str | Iterable[str] | None = None, *, time: Any = None,
             time_key: str | None = None, time_mode: str = "interpolate", batch_size: int = 256,
             layer: str | None = None, normalize: str | None = None, min_shared: float | None = None,
             max_cells: int | None = None, seed: int = 0, where: str = "input",
             method: str = DEFAULT_METHOD, high_cells: float | None = DEFAULT_HIGH_CELLS,
             protein_values: str | pd.DataFrame | np.ndarray | None = None, n_boot: int = DEFAULT_BOOT,
             rank_by: str | None = None, null: str | None = None, **options: Any) -> SaliencyResult:
    """Saliency of the checkpoint's genes for ``proteins`` (a name, a list, or None = all) over ``adata``'s cells.

    Genes are aligned and normalised exactly as in :func:`crossmodalnet.inference.predict.predict`; the time of each cell
    is resolved the same way. ``max_cells`` takes a random subset (seeded) to bound the cost on big files.
    ``method``: the per-cell attribution (:data:`METHODS`); ``integrated_gradients_mean`` starts its path at the
    mean expression of the same cells (one extra reading pass). ``options``: see :func:`captum_attributions`.
    ``high_cells``: a fraction; sum each protein's attributions only over that fraction of cells with the highest
    protein (``protein_values``: an obsm key or DataFrame of measured proteins; None = the model's prediction);
    None or 1 = every cell.
    ``n_boot``: Poisson bootstrap replicates of the cells, for the rank intervals of :meth:`SaliencyResult.top`
    (0 = none). ``rank_by`` / ``null``: the ranking rule the result uses when none is given (None = the
    defaults, :data:`DEFAULT_RANK_BY` / :data:`DEFAULT_NULL`). The result lists the genes it could not rank
    (``unranked``) and its caveats (``notes``).
    """
    check_method(method)
    if rank_by is not None and rank_by not in RANK_BY:
        raise DataError(f"unknown rank_by {rank_by!r}: choose one of {', '.join(RANK_BY)}")
    if null is not None and null not in NULLS:
        raise DataError(f"unknown null {null!r}: choose one of {', '.join(NULLS)}")
    from crossmodalnet.inference.load import as_model
    from crossmodalnet.inference.predict import gene_source, resolve_time

    model = as_model(model)
    if getattr(model, "baseline", None) is not None:  # crossmodalnet.inference.load.BaselinePredictor
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

    protein_names = [model.protein_names[i] for i in idx]
    if high_cells is not None and high_cells >= 1:
        high_cells = None                                              # every cell
    wanted = _protein_values(model, adata, protein_names, protein_values, keep) if high_cells is not None else None

    def batches(with_mask: bool = True):  # consecutive blocks (bounded memory), keeping the sampled cells of each
        for start, stop, block in source.batches(batch_size):
            rows = np.flatnonzero(keep[start:stop])
            if len(rows):
                tw = None if time_mode == "none" else weights[start + rows]
                mask = None if not with_mask or masks is None else masks[start + rows]
                yield block[rows], tw, mask

    masks = None
    if high_cells is not None:
        if wanted is None:  # the model's own prediction says which cells express each protein
            wanted = predicted_proteins(model, batches(with_mask=False), idx, keep)
        masks = high_cell_mask(wanted, keep, high_cells)
    baseline = None
    centre = None
    if needs_baseline(method):  # a first pass for the mean expression (and prediction) of these cells
        baseline, centre = prediction_centre(model, batches(with_mask=False), idx)
    asked_boot = n_boot
    n_boot = min(int(n_boot), BOOT_BUDGET // max(2 * len(idx) * len(model.gene_names), 1))
    acc = saliency_from_batches(model, batches(), idx, len(model.gene_names), method=method, baseline=baseline,
                                n_boot=n_boot, boot_seed=seed, centre=centre if method == "variance_share" else None,
                                **options)
    meta = {"time_mode": time_mode, "n_missing_genes": len(source.alignment.missing), "method": method,
            "rank_by": rank_by or DEFAULT_RANK_BY, "null": null or DEFAULT_NULL,
            "cells": "all" if high_cells is None else
            f"top {high_cells:.0%} by {'measured' if protein_values is not None else 'predicted'} protein"}
    result = result_from_accumulator(acc, protein_names, model.gene_names, meta=meta)
    result.unranked = unranked_genes(model.gene_names, adata.var_names, source.alignment.missing, protein_names)
    result.notes = ranking_notes(model, source.alignment.missing)
    if n_boot < asked_boot:
        result.notes.append(f"{n_boot} bootstrap replicates instead of {asked_boot}: {len(idx)} proteins x "
                            f"{len(model.gene_names)} genes; ask for fewer proteins for more")
    return result


def saliency_of_cells(model, x, time_weights: np.ndarray | None, proteins: Sequence[int],
                      protein_names: Sequence[str], gene_names: Sequence[str], *, method: str = DEFAULT_METHOD,
                      per_cell: bool = True, mask: np.ndarray | None = None,
                      high_cells: float | None = DEFAULT_HIGH_CELLS, baseline: np.ndarray | None = None,
                      n_boot: int = 0, seed: int = 0, batch_size: int = 256, meta: dict | None = None,
                      **options: Any) -> SaliencyResult:
    """Saliency of cells already in memory (``x``: cells x genes, dense or sparse, as the model reads them):
    what the training run's recovery metrics and the benchmark use. ``proteins``: indices of the model's outputs,
    named ``protein_names``; ``mask``: (cells, len(proteins)) 0/1 cells that count per protein (None: with
    ``high_cells``, that fraction of cells with the most predicted protein, else all); ``baseline``: the
    genes' reference for ``integrated_gradients_mean`` / ``variance_share`` (None = the mean of these cells)."""
    n = x.shape[0]

    def batches(with_mask: bool = True):
        for i in range(0, n, batch_size):
            block = x[i:i + batch_size]
            block = block.toarray() if hasattr(block, "toarray") else np.asarray(block)
            tw = None if time_weights is None else time_weights[i:i + batch_size]
            yield block, tw, (mask[i:i + batch_size] if with_mask and mask is not None else None)

    if mask is None and high_cells is not None and high_cells < 1:
        keep = np.ones(n, dtype=bool)
        mask = high_cell_mask(predicted_proteins(model, batches(False), proteins, keep), keep, high_cells)
    centre = None
    if needs_baseline(method):
        mean, centre = prediction_centre(model, batches(False), proteins)
        baseline = mean if baseline is None else baseline
    acc = saliency_from_batches(model, batches(), list(proteins), len(gene_names), per_cell=per_cell, method=method,
                                baseline=baseline, n_boot=n_boot, boot_seed=seed,
                                centre=centre if method == "variance_share" else None, **options)
    return result_from_accumulator(acc, protein_names, gene_names, meta={"method": method, **(meta or {})})


def high_cell_mask(values: np.ndarray, keep: np.ndarray, fraction: float) -> np.ndarray:
    """(cells, proteins) 0/1: per protein, the ``fraction`` of the kept cells with the highest values (at least
    one cell; ties at the threshold are all kept)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"high_cells must be a fraction in (0, 1], got {fraction}")
    values = np.asarray(values, dtype=np.float64)
    kept = values[keep]
    threshold = np.quantile(kept, 1 - fraction, axis=0, method="higher") if len(kept) else np.inf
    return ((values >= threshold) & keep[:, None]).astype(np.float32)


def _protein_values(model, adata: ad.AnnData, proteins: Sequence[str], source, keep) -> np.ndarray | None:
    """Measured proteins (cells x ``proteins``) from ``source``: an obsm key or a DataFrame (cells x proteins);
    None = use the model's prediction."""
    if source is None:
        return None
    if isinstance(source, str) and source not in adata.obsm:
        raise DataError(f"protein_values={source!r} is not an obsm key of the input ({list(adata.obsm.keys())})")
    table = adata.obsm[source] if isinstance(source, str) else source
    if isinstance(table, pd.DataFrame):
        missing = [p for p in proteins if p not in table.columns]
        if missing:
            raise DataError(f"protein {missing[0]!r} is not among the measured proteins' columns "
                            f"(e.g. {list(table.columns[:5])})")
        table = table[list(proteins)].to_numpy()
    else:
        table = np.asarray(table.toarray() if hasattr(table, "toarray") else table)
        if table.shape[1] != len(model.protein_names):
            raise DataError(f"measured proteins have {table.shape[1]} columns, the model predicts "
                            f"{len(model.protein_names)}: pass a DataFrame with protein names as columns")
        table = table[:, protein_indices(model.protein_names, proteins)]
    if len(table) != len(keep):
        raise DataError(f"measured proteins have {len(table)} rows, the input has {len(keep)} cells")
    return np.asarray(table, dtype=np.float64)


def predicted_proteins(model, batches, idx: Sequence[int], keep: np.ndarray) -> np.ndarray:
    """The model's prediction of the selected proteins for the kept cells (other cells NaN), cells x proteins:
    which cells express a protein when none was measured (``high_cells``). ``batches``: (genes, time weights,
    anything) blocks of the kept cells in order."""
    projection = getattr(model, "projection", None)
    module = model if projection is None else ProjectedInput(model, projection)
    out = np.full((len(keep), len(idx)), np.nan)
    rows = np.flatnonzero(keep)
    pos = 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for x, tw, _ in batches:
                x_t = torch.as_tensor(np.asarray(x, dtype=np.float32))
                tw_t = None if tw is None else torch.as_tensor(np.asarray(tw, dtype=np.float32))
                out[rows[pos:pos + len(x_t)]] = module(x_t, tw_t)[:, list(idx)].double().numpy()
                pos += len(x_t)
    finally:
        model.train(was_training)
    return out


def unranked_genes(model_genes: Sequence[str], input_genes: Iterable[str], missing: Sequence[str],
                   proteins: Sequence[str]) -> pd.DataFrame:
    """What a ranking could not rank, with the reason: the input's genes the checkpoint lacks, the checkpoint's
    genes missing from the input (zero-filled: their attributions say nothing) and the proteins' coding genes
    (:mod:`crossmodalnet.interpret.coding_genes`) absent from both."""
    from crossmodalnet.interpret.coding_genes import coding_gene_status

    model_set = {str(g) for g in model_genes}
    input_list = [str(g) for g in input_genes]
    rows = [{"gene": g, "protein": "", "reason": "in the input but not in the checkpoint's genes (not trained on)"}
            for g in input_list if g not in model_set]
    rows += [{"gene": str(g), "protein": "", "reason": "missing from the input: zero-filled, attribution "
              "meaningless"} for g in missing]
    status = coding_gene_status(proteins, model_genes, input_list)
    for r in status[~status["in_model"]].itertuples():
        rows.append({"gene": r.gene, "protein": r.protein, "reason": f"coding gene of {r.protein}: {r.reason}"})
    return pd.DataFrame(rows, columns=["gene", "protein", "reason"])


def ranking_notes(model, missing: Sequence[str]) -> list[str]:
    """Caveats that every ranking of this model carries."""
    notes = []
    projection = getattr(model, "projection", None)
    if projection is not None:
        k = getattr(projection, "n_components", None) or getattr(getattr(projection, "components_", None),
                                                                   "shape", ["?"])[0]
        notes.append(f"the model reads {k} SVD components of the genes, not the genes: each gene's attribution is "
                     "spread over the genes it co-varies with, so neighbours of a driver rank high too; for a "
                     "gene-level list train on genes (data.preprocess.svd_components=null)")
    if missing:
        notes.append(f"{len(missing)} of the checkpoint's genes are missing from the input and zero-filled")
    return notes


def result_from_accumulator(acc: SaliencyAccumulator, proteins: Sequence[str], genes: Sequence[str],
                            meta: dict | None = None) -> SaliencyResult:
    """The accumulator's sums as a :class:`SaliencyResult`; ``grad_x_sd`` scales every sum by the genes' sd over
    the cells seen (attribution per unit of a gene's sd, i.e. of standardised inputs)."""
    meta = dict(meta or {})
    stats = (gene_stats(acc.expr_sum, acc.expr_sq, acc.expr_nonzero, acc.expr_cells, genes)
             if acc.expr_cells else None)
    scale = (stats["sd"].to_numpy() if meta.get("method") == "grad_x_sd" and stats is not None
             else np.ones(len(genes)))
    frame = lambda a: pd.DataFrame(a * scale, index=pd.Index(list(proteins), name="protein"),  # noqa: E731
                                   columns=pd.Index([str(g) for g in genes], name="gene"))
    if stats is not None:
        meta.setdefault("mean_expression", stats["mean"].copy())
    meta.setdefault("cells_per_protein", dict(zip(map(str, proteins), acc.counts.tolist())))
    boot = lambda a: None if a is None else (a * scale.astype(np.float32))  # noqa: E731
    assoc = (pd.DataFrame(acc.association(), index=pd.Index(list(proteins), name="protein"),
                          columns=pd.Index([str(g) for g in genes], name="gene")) if acc.expr_cells else None)
    return SaliencyResult(frame(acc.signed), frame(acc.absolute), frame(acc.std()), acc.n_cells, meta, stats,
                          boot(acc.boot_signed), boot(acc.boot_absolute), association=assoc)
