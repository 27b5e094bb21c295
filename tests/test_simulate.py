"""The time-resolved simulator: canonical form, droplet-like sparsity, modest gene-protein correlation."""
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from crossmodalnet.data.normalize import log_normalize_counts
from crossmodalnet.data.simulate import simulate_cite


@pytest.fixture(scope="module")
def sim():
    return simulate_cite(n_cells=1500, n_genes=600, n_proteins=20, seed=3)


def test_canonical_form(sim):
    assert sim.shape == (1500, 600)
    assert sp.isspmatrix_csr(sim.X) and sp.isspmatrix_csr(sim.layers["counts"])
    prot = sim.obsm["protein"]
    assert isinstance(prot, pd.DataFrame) and prot.shape == (1500, 20)
    assert (prot.index == sim.obs_names).all()
    assert sorted(sim.obs["day"].unique()) == [2, 3, 4]
    counts = sim.layers["counts"]
    assert np.allclose(counts.data, np.round(counts.data)) and counts.data.min() >= 0
    np.testing.assert_allclose(sim.X.toarray(), log_normalize_counts(counts).toarray(), rtol=1e-5)


def test_droplet_like_sparsity_and_library_sizes(sim):
    zero_fraction = 1 - sim.layers["counts"].nnz / np.prod(sim.shape)
    assert zero_fraction > 0.6
    lib = np.asarray(sim.layers["counts"].sum(1)).ravel()
    assert lib.std() / lib.mean() > 0.3                      # varying library sizes


def test_gene_protein_correlation_is_modest(sim):
    coding = sim.uns["simulation"]["coding_gene"]
    prot = sim.obsm["protein"].to_numpy()
    x = sim[:, list(coding)].X.toarray()
    r = np.array([np.corrcoef(x[:, j], prot[:, j])[0, 1] for j in range(len(coding))])
    assert 0.1 <= np.median(r) <= 0.5, r


def test_ground_truth_and_time_effects(sim):
    truth = sim.uns["simulation"]
    causal = truth["causal_genes"]
    assert causal.shape == (20, 4) and (causal[:, 0] == truth["coding_gene"]).all()
    assert set(causal.ravel()) <= set(sim.var_names)
    means = sim.obsm["protein"].groupby(sim.obs["day"].to_numpy()).mean()
    assert (means.max() - means.min()).max() > 0.2           # proteins shift with time
    assert sim.var["temporal_batch_effect"].mean() == pytest.approx(0.3, abs=0.08)


def test_seed_reproducibility_and_bad_sizes():
    a = simulate_cite(n_cells=50, n_genes=60, n_proteins=4, seed=9)
    b = simulate_cite(n_cells=50, n_genes=60, n_proteins=4, seed=9)
    assert (a.X != b.X).nnz == 0
    with pytest.raises(ValueError, match="times must be distinct"):
        simulate_cite(n_cells=10, n_genes=60, n_proteins=4, times=(1, 1))
