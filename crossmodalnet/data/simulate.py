"""A time-resolved CITE-seq simulator: the default data set, and ground truth for interpretation.

What it models, and why:
- Cells lie on a continuum: a pseudotime u in [0, 1] from a progenitor state towards one of three lineages;
  the mix of pseudotime and lineage shifts with the time point (later days are further along).
- Genes: log-means = gene baseline + loadings x cell programmes + a temporal batch effect (linear plus
  quadratic in time, so partly nonlinear) on a subset of genes. Counts are negative binomial around
  library size x softmax(log-means), with log-normal library sizes, so most entries are zero as in droplets.
- Proteins: each protein is driven by its coding gene and a few regulator genes (their *basal* expression,
  i.e. without the temporal batch effect), passed through a soft nonlinearity, plus a smooth time-specific
  effect and noise; ADT counts are Poisson around that level plus ambient background. Measured gene-protein
  correlations end up modest (about 0.1-0.5), as in real CITE-seq.
- Ground truth (coding gene and causal genes per protein) is recorded in ``uns["simulation"]``.

Two settings of the proteins' dependence on time (``time_effect``):

- ``"none"`` (the default, the project's original simulator and the *control*): each protein gets a smooth
  per-protein offset per time point, but the genes carry the day strongly (the temporal batch effect), so a model
  that never sees the time can read it from the genes: proteins depend on time no more than the genes do.
- ``"drift"`` (issue 18): the gene -> protein relationship itself drifts with time. Protein p's level is
  ``gain_p(t) * signal_p + offset_p(t) + noise`` with ``gain_p(t) = exp(s * a_p * (tau - 1/2))`` and
  ``offset_p(t) = s * (c_p * (tau - 1/2) + q_p * ((tau - 1/2)^2 - 1/12))`` (``s = drift_strength``, ``tau`` the
  time rescaled to [0, 1] over ``times``), plus, with ``nonlinear_drift``, a sigmoid switch
  ``s * d_p * (sigmoid((tau - m_p) / 0.08) - 1/2)`` at a protein-specific time ``m_p`` that no low-order
  polynomial of t follows. A fraction ``lag_fraction`` of the proteins *lag* their mRNA by ``protein_lag`` time
  units (slow turnover): their driving genes are taken at the cell's earlier pseudotime (pushed back by the
  average progress along pseudotime over ``protein_lag``) and their gain and offset at ``t - protein_lag``. Nothing
  of the drift enters the genes: they carry the day only through the cells' states and the temporal batch effect
  (``batch_effect_strength``, lower in ``configs/data/synthetic_drift.yaml``).

The true time effect, in ``uns["simulation"]`` for both settings (rows = ``time_points``, columns = proteins):

- ``time_gain``, ``time_offset``: ``gain_p(t)`` and ``offset_p(t)`` on the latent level (lag applied; the
  control has gain 1 and its per-protein offset);
- ``reference_signal``: the reference basal state, per protein the mean over all cells of the (lagged where the
  protein lags) driving signal;
- ``protein_at_reference``: the noise-free expected normalised protein (the ``obsm["protein"]`` scale) of a cell
  at that reference basal state at time t: ``log1p(exp(scale_p + gain_p(t) * ref_p + offset_p(t)) + bg_p)
  - log1p(bg_p)``, without the Poisson and level noise;
- ``time_effect``: ``protein_at_reference`` minus its mean over the time points, per protein: what the time
  alone adds to each protein at a fixed basal state. A model's learned per-protein time effect (its prediction
  for a fixed cell at each time, centred over times) is scored against this.

Output is the canonical AnnData of this project: log-normalised genes in ``X`` (CSR), raw counts in
``layers["counts"]``, normalised proteins in ``obsm["protein"]`` (DataFrame), raw ADT counts in
``obsm["protein_counts"]``, time in ``obs[time_key]``.
"""
from __future__ import annotations

from typing import Sequence

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from crossmodalnet.data.normalize import log_normalize_counts  # noqa: F401  (also re-exported: old import path)

N_PROGRAMMES = 6
LINEAGES = ("erythroid", "myeloid", "lymphoid")
TIME_EFFECTS = ("none", "drift")
# d E[pseudotime] / d tau: Beta(2 + 4 tau, 4 - 2 tau) has mean (2 + 4 tau) / 6
PSEUDOTIME_SPEED = 2.0 / 3.0


def simulate_cite(
    n_cells: int = 3000,
    n_genes: int = 2000,
    n_proteins: int = 40,
    times: Sequence[float] = (2, 3, 4),
    time_key: str = "day",
    n_regulators: int = 3,
    mean_library_size: float = 1500.0,
    dispersion: float = 2.0,
    batch_effect_fraction: float = 0.3,
    batch_effect_strength: float = 0.8,
    protein_noise: float = 0.35,
    protein_time_effect: float = 0.6,
    time_effect: str = "none",
    drift_strength: float = 2.0,
    protein_lag: float = 1.0,
    lag_fraction: float = 0.3,
    nonlinear_drift: bool = False,
    seed: int = 0,
    chunk_size: int = 2048,
) -> ad.AnnData:
    """Simulate paired RNA + protein for ``n_cells`` cells spread evenly over ``times``.

    ``mean_library_size`` sets sparsity: with the defaults about 85-90% of gene counts are zero.
    ``time_effect="drift"`` lets the gene -> protein relationship drift with time (module docstring);
    ``drift_strength``, ``protein_lag`` (in the units of ``times``), ``lag_fraction`` and ``nonlinear_drift``
    shape it and are unused with ``time_effect="none"``. The default draws exactly the original simulator.
    """
    if n_cells < 1 or n_genes < n_proteins * (n_regulators + 1) // 2 or n_proteins < 2:
        raise ValueError(f"need n_cells >= 1, n_proteins >= 2 and enough genes for the proteins' drivers; "
                         f"got n_cells={n_cells}, n_genes={n_genes}, n_proteins={n_proteins}")
    if len(times) < 1 or len(set(times)) != len(times):
        raise ValueError(f"times must be distinct and non-empty, got {list(times)}")
    if time_effect not in TIME_EFFECTS:
        raise ValueError(f"time_effect must be one of {TIME_EFFECTS}, got {time_effect!r}")
    if drift_strength < 0 or protein_lag < 0 or not 0 <= lag_fraction <= 1:
        raise ValueError(f"need drift_strength >= 0, protein_lag >= 0 and 0 <= lag_fraction <= 1; got "
                         f"drift_strength={drift_strength}, protein_lag={protein_lag}, lag_fraction={lag_fraction}")
    rng = np.random.default_rng(seed)
    times = list(times)
    t_values = np.asarray(times, dtype=float)
    span = t_values.max() - t_values.min()
    tau_of_time = (t_values - t_values.min()) / span if span > 0 else np.zeros_like(t_values)

    # --- cells: time point, pseudotime, lineage, programme activities -------------------------------
    time_idx = rng.integers(0, len(times), size=n_cells)
    time_idx[: len(times)] = np.arange(len(times))[: n_cells]  # every time point present
    tau = tau_of_time[time_idx]
    pseudotime = rng.beta(2.0 + 4.0 * tau, 4.0 - 2.0 * tau)
    lineage_logits = np.stack([0.8 * tau, np.zeros_like(tau), -0.6 * tau], axis=1)
    lineage_p = np.exp(lineage_logits) / np.exp(lineage_logits).sum(1, keepdims=True)
    lineage = (lineage_p.cumsum(1) > rng.random((n_cells, 1))).argmax(1)
    progenitor = rng.normal(0, 1, N_PROGRAMMES)
    lineage_dirs = rng.normal(0, 1.5, (len(LINEAGES), N_PROGRAMMES))
    programmes = ((1 - pseudotime)[:, None] * progenitor + pseudotime[:, None] * lineage_dirs[lineage]
                  + rng.normal(0, 0.4, (n_cells, N_PROGRAMMES)))

    # --- genes: basal log-means and the temporal batch effect -------------------------------------------
    gene_base = rng.normal(-1.0, 1.5, n_genes)
    loadings = rng.normal(0, 0.6, (n_genes, N_PROGRAMMES)) * (rng.random((n_genes, N_PROGRAMMES)) < 0.35)
    affected = rng.random(n_genes) < batch_effect_fraction
    lin = rng.normal(0, batch_effect_strength, n_genes) * affected
    quad = rng.normal(0, batch_effect_strength, n_genes) * affected

    def log_means(rows: slice) -> np.ndarray:
        """Gene log-means of a block of cells: basal state + temporal batch effect."""
        t = tau[rows]
        return (gene_base + programmes[rows] @ loadings.T
                + np.outer(t, lin) + np.outer(t**2 - 0.5 * t, 3 * quad))

    library = rng.lognormal(np.log(mean_library_size) - 0.18, 0.6, n_cells)
    counts = _negative_binomial_csr(log_means, n_cells, library, dispersion, rng, chunk_size)

    # --- proteins: coding gene + regulators on basal expression, time effect, noise -----------------------
    informative = np.argsort(-np.abs(loadings).sum(1) - 0.3 * gene_base)
    coding = informative[:n_proteins]
    pool = informative[n_proteins: n_proteins + 4 * n_proteins * n_regulators]
    regulators = np.stack([rng.choice(pool, n_regulators, replace=False) for _ in range(n_proteins)])
    drivers = np.concatenate([coding[:, None], regulators], axis=1)   # (proteins, 1 + n_regulators)
    driver_weights = np.concatenate(
        [rng.uniform(0.8, 1.2, (n_proteins, 1)),
         rng.uniform(0.3, 0.7, (n_proteins, n_regulators)) * rng.choice([-1, 1], (n_proteins, n_regulators))],
        axis=1)
    basal_drivers = gene_base[drivers] + np.einsum("ck,pdk->cpd", programmes, loadings[drivers])
    driven = (basal_drivers - basal_drivers.mean(0)) / (basal_drivers.std(0) + 1e-8)  # (cells, proteins, drivers)
    signal = _softplus_signal(driven, driver_weights)
    t_lin = rng.normal(0, protein_time_effect, n_proteins)
    t_quad = rng.normal(0, protein_time_effect, n_proteins)
    if time_effect == "none":
        def gain_offset(tau_p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            """The control: gain 1, the per-protein offset of the original simulator."""
            offset = tau_p * t_lin + (tau_p**2 - 0.5 * tau_p) * 2 * t_quad
            return np.ones_like(offset), offset
        lag_tau, lagged = 0.0, np.zeros(n_proteins, dtype=bool)
    else:
        # the drift's own stream, so the control's draws (and data) stay exactly those of the original simulator
        gain_offset, lagged = _drift(np.random.default_rng([seed, 18]), n_proteins, drift_strength,
                                     nonlinear_drift, lag_fraction if protein_lag > 0 else 0.0)
        lag_tau = protein_lag / span if span > 0 else 0.0
        if lagged.any():  # lagging proteins read their drivers at the cell's earlier pseudotime
            earlier = np.clip(pseudotime - PSEUDOTIME_SPEED * lag_tau, 0.0, 1.0)
            prog_early = programmes + (pseudotime - earlier)[:, None] * (progenitor - lineage_dirs[lineage])
            basal_early = gene_base[drivers] + np.einsum("ck,pdk->cpd", prog_early, loadings[drivers])
            driven_early = (basal_early - basal_drivers.mean(0)) / (basal_drivers.std(0) + 1e-8)
            signal[:, lagged] = _softplus_signal(driven_early, driver_weights)[:, lagged]
    tau_protein = tau[:, None] - lag_tau * lagged[None, :]            # (cells, proteins): the time each protein sees
    gain, offset = gain_offset(tau_protein)
    level = gain * signal + offset + rng.normal(0, protein_noise, (n_cells, n_proteins))
    protein_scale = rng.uniform(1.5, 4.5, n_proteins)
    background = rng.uniform(5, 30, n_proteins)                       # ambient antibody
    adt_counts = rng.poisson(np.exp(protein_scale + level) + background).astype(np.float32)
    protein_norm = np.log1p(adt_counts) - np.log1p(background)         # dsb-like: log scale, background at 0

    # --- assemble ----------------------------------------------------------------------------------------------
    gene_names = [f"G{i:05d}" for i in range(n_genes)]
    protein_names = [f"P{j:03d}_{gene_names[coding[j]]}" for j in range(n_proteins)]
    obs_names = [f"cell{i:06d}" for i in range(n_cells)]
    obs = pd.DataFrame({
        time_key: np.asarray(times, dtype=object)[time_idx].tolist(),
        "pseudotime": pseudotime.astype(np.float32),
        "lineage": pd.Categorical(np.asarray(LINEAGES)[lineage]),
        "n_counts": np.asarray(counts.sum(1)).ravel().astype(np.float32),
    }, index=obs_names)
    if all(isinstance(t, (int, float, np.integer, np.floating)) for t in times):
        obs[time_key] = pd.to_numeric(obs[time_key])
    adata = ad.AnnData(X=log_normalize_counts(counts), obs=obs, var=pd.DataFrame(index=gene_names))
    adata.layers["counts"] = counts
    adata.var["temporal_batch_effect"] = affected
    adata.obsm["protein"] = pd.DataFrame(protein_norm.astype(np.float32), index=obs_names, columns=protein_names)
    adata.obsm["protein_counts"] = pd.DataFrame(adt_counts, index=obs_names, columns=protein_names)
    adata.uns["simulation"] = {
        "coding_gene": np.asarray([gene_names[c] for c in coding]),
        "protein_names": np.asarray(protein_names),
        "causal_genes": np.asarray([[gene_names[g] for g in row] for row in drivers]),
        "causal_weights": driver_weights.astype(np.float32),
        "time_key": time_key,
        "seed": seed,
        **_time_truth(gain_offset, tau_of_time, lag_tau, lagged, signal, protein_scale, background, t_values,
                      time_effect),
    }
    return adata


def _softplus_signal(driven: np.ndarray, driver_weights: np.ndarray) -> np.ndarray:
    """Weighted drivers through a softplus: a saturating response, (cells, proteins)."""
    signal = (driven * driver_weights[None]).sum(-1)
    return np.log1p(np.exp(1.5 * signal)) / 1.5


def _drift(rng: np.random.Generator, n_proteins: int, strength: float, nonlinear: bool, lag_fraction: float):
    """Per-protein gain and offset as smooth functions of tau (module docstring), and which proteins lag."""
    a = rng.normal(0, 0.6, n_proteins)             # log-gain slope
    c = rng.normal(0, 1.0, n_proteins)             # offset slope
    q = rng.normal(0, 1.5, n_proteins)             # offset curvature
    d = rng.normal(0, 0.8, n_proteins)             # switch height (nonlinear drift)
    m = rng.uniform(0.3, 0.7, n_proteins)          # switch time
    lagged = np.zeros(n_proteins, dtype=bool)
    lagged[rng.permutation(n_proteins)[: int(round(lag_fraction * n_proteins))]] = True

    def gain_offset(tau_p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = tau_p - 0.5
        gain = np.exp(strength * a * x)
        offset = strength * (c * x + q * (x**2 - 1.0 / 12))
        if nonlinear:
            offset = offset + strength * d * (1.0 / (1.0 + np.exp(-(tau_p - m) / 0.08)) - 0.5)
        return gain, offset

    return gain_offset, lagged


def _time_truth(gain_offset, tau_of_time: np.ndarray, lag_tau: float, lagged: np.ndarray, signal: np.ndarray,
                protein_scale: np.ndarray, background: np.ndarray, t_values: np.ndarray, mode: str) -> dict:
    """The true per-protein time effect at each simulated time point (definitions in the module docstring)."""
    tau_p = tau_of_time[:, None] - lag_tau * lagged[None, :]
    gain, offset = gain_offset(tau_p)
    reference = signal.mean(0)
    at_reference = (np.log1p(np.exp(protein_scale + gain * reference + offset) + background)
                    - np.log1p(background))
    return {
        "time_effect_mode": mode,
        "time_points": t_values.astype(np.float64),
        "time_gain": gain.astype(np.float32),
        "time_offset": offset.astype(np.float32),
        "reference_signal": reference.astype(np.float32),
        "protein_at_reference": at_reference.astype(np.float32),
        "time_effect": (at_reference - at_reference.mean(0)).astype(np.float32),
        "lagged_proteins": lagged,
        "protein_lag_tau": float(lag_tau),
    }


def _negative_binomial_csr(log_means, n_cells: int, library: np.ndarray, dispersion: float,
                           rng: np.random.Generator, chunk_size: int) -> sp.csr_matrix:
    """Gamma-Poisson counts, block by block of cells, so a big simulation never holds a dense matrix."""
    blocks = []
    for start in range(0, n_cells, chunk_size):
        eta = log_means(slice(start, start + chunk_size))
        p = np.exp(eta - eta.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        mu = p * library[start:start + chunk_size, None]
        lam = rng.gamma(dispersion, mu / dispersion)
        blocks.append(sp.csr_matrix(rng.poisson(lam).astype(np.float32)))
    return sp.vstack(blocks, format="csr")


def random_csr(n_cells: int, n_genes: int, density: float, seed: int = 0,
               chunk_size: int = 2048) -> sp.csr_matrix:
    """A log-normalised-looking CSR matrix of exact Bernoulli(density) sparsity, for benchmarks at scale.

    No biology: only shape, density and value range matter for timing and memory. Buffers are allocated once
    (expected nnz + 10 sd), so building the full HSPC shape never holds two copies of the matrix.
    """
    if not 0 < density <= 1:
        raise ValueError(f"density must be in (0, 1], got {density}")
    rng = np.random.default_rng(seed)
    total = n_cells * n_genes
    capacity = int(total * density + 10 * np.sqrt(total * density * (1 - density)) + 16)
    indices = np.empty(capacity, dtype=np.int32 if n_genes < 2**31 else np.int64)
    indptr = np.zeros(n_cells + 1, dtype=np.int64)
    nnz = 0
    for start in range(0, n_cells, chunk_size):
        m = min(chunk_size, n_cells - start)
        rows, cols = np.nonzero(rng.random((m, n_genes), dtype=np.float32) < density)
        if nnz + len(cols) > capacity:
            raise RuntimeError("random_csr capacity exceeded (a 10-sigma event); use another seed")
        indices[nnz:nnz + len(cols)] = cols
        indptr[start + 1:start + 1 + m] = nnz + np.cumsum(np.bincount(rows, minlength=m))
        nnz += len(cols)
    data = np.log1p(rng.gamma(1.0, 1.5, nnz).astype(np.float32) + 1.0)
    if indptr.max() < 2**31:
        indptr = indptr.astype(np.int32)
    return sp.csr_matrix((data, indices[:nnz], indptr), shape=(n_cells, n_genes))
