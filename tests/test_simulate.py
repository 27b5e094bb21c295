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


@pytest.fixture(scope="module")
def drift():
    return simulate_cite(n_cells=1400, n_genes=400, n_proteins=12, times=range(7), seed=5, time_effect="drift",
                         batch_effect_strength=0.3, protein_noise=0.05)


def test_default_is_the_control_with_its_truth(sim):
    truth = sim.uns["simulation"]
    assert truth["time_effect_mode"] == "none"
    np.testing.assert_array_equal(truth["time_points"], [2.0, 3.0, 4.0])
    np.testing.assert_array_equal(truth["time_gain"], 1.0)                 # the control: no gain drift
    assert not truth["lagged_proteins"].any()
    np.testing.assert_allclose(truth["time_effect"].mean(0), 0.0, atol=1e-6)   # centred over time points


def test_drift_truth_is_what_the_proteins_do(drift):
    """Per-day protein means follow the recorded time effect, and the gain drifts (unlike the control)."""
    truth = drift.uns["simulation"]
    assert truth["time_effect_mode"] == "drift" and truth["time_effect"].shape == (7, 12)
    assert truth["lagged_proteins"].sum() == round(0.3 * 12)
    assert np.ptp(truth["time_gain"], axis=0).max() > 0.5
    # a cell near the reference state at day d: per-day means over cells track protein_at_reference per protein
    means = drift.obsm["protein"].groupby(drift.obs["day"].to_numpy()).mean().to_numpy()
    centred = means - means.mean(0)
    r = [np.corrcoef(centred[:, j], truth["time_effect"][:, j])[0, 1] for j in range(12)
         if np.ptp(truth["time_effect"][:, j]) > 0.2]
    assert len(r) >= 6 and np.median(r) > 0.8, r


def test_drift_is_exact_function_of_documented_formula(drift):
    truth = drift.uns["simulation"]
    ref = truth["reference_signal"]
    # protein_at_reference is the documented noise-free transform of gain * ref + offset (scale/background cancel
    # in differences only approximately, so check monotonicity: higher latent level -> higher normalised protein)
    level = truth["time_gain"] * ref + truth["time_offset"]
    for j in range(12):
        order = np.argsort(level[:, j])
        assert np.all(np.diff(truth["protein_at_reference"][order, j]) >= -1e-5)


def test_drift_leaves_the_genes_alone():
    """The drift changes proteins only: same seed, same genes with and without it."""
    a = simulate_cite(n_cells=200, n_genes=120, n_proteins=6, times=range(4), seed=2)
    b = simulate_cite(n_cells=200, n_genes=120, n_proteins=6, times=range(4), seed=2, time_effect="drift")
    assert (a.X != b.X).nnz == 0
    assert not np.allclose(a.obsm["protein"].to_numpy(), b.obsm["protein"].to_numpy())


def test_drift_writes_to_h5ad(drift, tmp_path):
    import anndata as ad

    drift.write_h5ad(tmp_path / "d.h5ad")
    back = ad.read_h5ad(tmp_path / "d.h5ad").uns["simulation"]
    np.testing.assert_allclose(back["time_effect"], drift.uns["simulation"]["time_effect"])


def test_bad_drift_settings():
    with pytest.raises(ValueError, match="time_effect must be one of"):
        simulate_cite(n_cells=10, n_genes=60, n_proteins=4, time_effect="wobble")
    with pytest.raises(ValueError, match="drift_strength >= 0"):
        simulate_cite(n_cells=10, n_genes=60, n_proteins=4, time_effect="drift", drift_strength=-1)
