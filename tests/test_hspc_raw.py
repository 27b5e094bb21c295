"""``data=hspc_raw`` / ``experiment=hspc_raw``: HSPC from the Kaggle raw counts, normalised after the split (paper
A.2) - LogNormalize per cell, dsb fitted on the training cells only - on small files in the competition's layout."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crossmodalnet.data.dsb import DSB
from crossmodalnet.errors import DataError
from crossmodalnet.utils.config_dir import CONFIG_DIR

pytest.importorskip("tables", reason="pandas' HDF5 writer needs PyTables (pip install tables)")

ISOTYPES = ["Mouse-IgG1", "Rat-IgG2b"]


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory) -> Path:
    """Processed and raw Kaggle files for 120 cells x 30 genes x 8 proteins (two isotype controls), days 2-4."""
    rng = np.random.default_rng(7)
    n, g = 120, 30
    cells = pd.Index([f"c{i:04d}" for i in range(n)], name="cell_id")
    counts = rng.poisson(2.0, (n, g)).astype(np.float32)
    genes = pd.Index([f"ENSG{i:011d}_G{i}" for i in range(g)], name="gene_id")
    proteins = pd.Index([f"CD{i}" for i in range(6)] + ISOTYPES, name="gene_id")
    positive = rng.random((n, 6)) < 0.5  # a negative and a positive population per protein, as dsb expects
    adt = np.hstack([rng.poisson(np.where(positive, 200.0, 8.0)), rng.poisson(6.0, (n, 2))]).astype(np.float32)
    folder = tmp_path_factory.mktemp("hspc_raw")
    frames = {"train_cite_inputs": pd.DataFrame(np.log1p(counts), index=cells, columns=genes),
              "train_cite_inputs_raw": pd.DataFrame(counts, index=cells, columns=genes),
              "train_cite_targets": pd.DataFrame(rng.normal(size=(n, 8)).astype(np.float32), index=cells,
                                                 columns=proteins),
              "train_cite_targets_raw": pd.DataFrame(adt, index=cells, columns=proteins)}
    for key, frame in frames.items():
        frame.to_hdf(folder / f"{key}.h5", key=key, format="fixed")
    pd.DataFrame({"cell_id": cells, "day": np.tile([2, 3, 4], n // 3), "donor": 1, "cell_type": "HSC",
                  "technology": "citeseq"}).to_csv(folder / "metadata.csv", index=False)
    return folder


def _cfg(raw_dir: Path, out: Path, *extra: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=[
            "experiment=hspc_raw", f"data.data_dir={raw_dir}", f"data.preprocess.isotype_controls=[{','.join(ISOTYPES)}]",
            f"paths.output_dir={out}", *extra])


def test_hspc_raw_normalises_after_the_split(raw_dir, tmp_path):
    from crossmodalnet.training.run import build_datamodule

    cfg = _cfg(raw_dir, tmp_path)
    assert cfg.data.source.raw_protein and cfg.data.preprocess.protein == "dsb_no_empty"
    dm = build_datamodule(cfg)
    dm.setup()
    raw_rna = pd.read_hdf(raw_dir / "train_cite_inputs_raw.h5")
    raw_adt = pd.read_hdf(raw_dir / "train_cite_targets_raw.h5")
    test = dm.splits["test"]
    counts = raw_rna.loc[test.obs_names].to_numpy()
    np.testing.assert_allclose(test.X.toarray(), np.log1p(counts / counts.sum(1, keepdims=True) * 1e4), rtol=1e-5,
                               atol=1e-5)  # LogNormalize of each cell's own counts
    # dsb fitted on the training cells alone, then applied to the test cells: the paper's order
    fit = DSB(isotype_controls=ISOTYPES).fit(raw_adt.loc[dm.splits["train"].obs_names])
    expected = fit.transform(raw_adt.loc[test.obs_names])
    np.testing.assert_allclose(test.obsm["protein"].to_numpy(), expected.to_numpy(), rtol=1e-4, atol=1e-4)
    processed = pd.read_hdf(raw_dir / "train_cite_targets.h5").loc[test.obs_names]
    assert not np.allclose(test.obsm["protein"].to_numpy(), processed.to_numpy())  # not the organisers' values


def test_hspc_raw_without_raw_files_says_which_are_missing(tmp_path):
    from crossmodalnet.training.run import build_datamodule

    (tmp_path / "metadata.csv").write_text("cell_id,day\n")
    dm = build_datamodule(_cfg(tmp_path, tmp_path / "out"))
    with pytest.raises(DataError, match="train_cite_inputs_raw.h5"):
        dm.setup()


@pytest.mark.slow
def test_hspc_raw_training_run(raw_dir, tmp_path):
    from crossmodalnet.training.run import train

    metrics = train(_cfg(raw_dir, tmp_path, "trainer.max_epochs=2", "torch_threads=1", "callbacks.progress_bar=null",
                         "+plots=false", "model.latent_dim=16", "model.dis_hidden=8", "data.batch_size=32"))
    assert np.isfinite(metrics["test/pearson_cell"])
    assert (tmp_path / "metrics.json").is_file()
