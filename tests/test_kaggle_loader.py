"""The Kaggle HSPC loader on small files written in exactly the competition's layout (pandas HDF5 "fixed")."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from crossmodalnet.data.datamodule import CiteDataModule
from crossmodalnet.data.kaggle import load_hspc, read_frame, read_frame_csr
from crossmodalnet.data.validate import DataError

pytest.importorskip("tables", reason="pandas' HDF5 writer needs PyTables (pip install tables)")

REPO = Path(__file__).resolve().parent.parent
N_CELLS, N_GENES, N_PROTEINS = 90, 40, 8


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _frames(seed: int = 0):
    rng = np.random.default_rng(seed)
    cells = [f"{h:012x}" for h in rng.integers(0, 2**48, N_CELLS)]
    counts = rng.poisson(0.4, (N_CELLS, N_GENES)).astype(np.float32)
    norm = np.log1p(counts / np.maximum(counts.sum(1, keepdims=True), 1) * 1e4).astype(np.float32)
    genes = [f"ENSG{i:011d}_GENE{i}" for i in range(N_GENES)]
    rows, gcols = pd.Index(cells, name="cell_id"), pd.Index(genes, name="gene_id")
    proteins = [f"CD{i}" for i in range(N_PROTEINS - 2)] + ["Mouse-IgG1", "Rat-IgG2b"]
    adt = rng.poisson(rng.uniform(2, 40, N_PROTEINS), (N_CELLS, N_PROTEINS)).astype(np.float32)
    return {
        "inputs": pd.DataFrame(norm, index=rows, columns=gcols),
        "inputs_raw": pd.DataFrame(counts, index=rows, columns=gcols),
        "targets": pd.DataFrame(rng.normal(size=(N_CELLS, N_PROTEINS)).astype(np.float32),
                                index=rows, columns=pd.Index(proteins, name="gene_id")),
        "targets_raw": pd.DataFrame(adt, index=rows, columns=pd.Index(proteins, name="gene_id")),
        "metadata": pd.DataFrame({"cell_id": cells[::-1] + ["someothercell"],  # other order, an extra cell
                                  "day": ([2, 3, 4] * N_CELLS)[:N_CELLS][::-1] + [7],
                                  "donor": ([13176, 31800, 32606] * N_CELLS)[:N_CELLS][::-1] + [1],
                                  "cell_type": (["HSC", "MasP", "NeuP"] * N_CELLS)[:N_CELLS][::-1] + ["BP"],
                                  "technology": "citeseq"}),
    }


@pytest.fixture(scope="module")
def hspc_dir(tmp_path_factory) -> Path:
    """The competition files, written by pandas itself (``DataFrame.to_hdf``, format 'fixed')."""
    folder = tmp_path_factory.mktemp("hspc")
    frames = _frames()
    for name, key in (("inputs", "train_cite_inputs"), ("targets", "train_cite_targets"),
                      ("inputs_raw", "train_cite_inputs_raw"), ("targets_raw", "train_cite_targets_raw")):
        frames[name].to_hdf(folder / f"{key}.h5", key=key, format="fixed")
    frames["metadata"].to_csv(folder / "metadata.csv", index=False)
    return folder


def test_chunked_csr_reader_matches_pandas(hspc_dir):
    ref = pd.read_hdf(hspc_dir / "train_cite_inputs.h5")
    for chunk_bytes in (N_GENES * 4 * 7, 1 << 20):  # 7 rows per chunk, and one chunk
        x, cells, genes = read_frame_csr(hspc_dir / "train_cite_inputs.h5", chunk_bytes=chunk_bytes)
        assert sp.isspmatrix_csr(x) and x.dtype == np.float32
        assert x.nnz == int((ref.to_numpy() != 0).sum())
        np.testing.assert_array_equal(x.toarray(), ref.to_numpy())
        assert cells.tolist() == ref.index.tolist() and genes.tolist() == ref.columns.tolist()
    keep = np.arange(N_CELLS) % 4 == 1
    x, cells, _ = read_frame_csr(hspc_dir / "train_cite_inputs.h5", rows=keep, chunk_bytes=N_GENES * 4 * 5)
    np.testing.assert_array_equal(x.toarray(), ref.to_numpy()[keep])
    assert cells.tolist() == ref.index[keep].tolist()
    pd.testing.assert_frame_equal(read_frame(hspc_dir / "train_cite_targets.h5"), pd.read_hdf(
        hspc_dir / "train_cite_targets.h5"), check_names=False)


def test_mixed_dtype_blocks_read_like_pandas(tmp_path):
    frame = _frames()["inputs"].copy()
    frame["ENSG00000000003_GENE3"] = frame["ENSG00000000003_GENE3"].astype(np.float64)  # pandas: 2 blocks
    frame.to_hdf(tmp_path / "two_blocks.h5", key="frame", format="fixed")
    with h5py.File(tmp_path / "two_blocks.h5") as f:
        assert "block1_values" in f["frame"]
    x, _, genes = read_frame_csr(tmp_path / "two_blocks.h5", chunk_bytes=600)
    np.testing.assert_array_equal(x.toarray(), frame.to_numpy(np.float32))
    assert genes.tolist() == frame.columns.tolist()


def test_load_hspc_canonical_form(hspc_dir):
    frames = _frames()
    adata = load_hspc(str(hspc_dir), days=[2, 4])
    days = frames["metadata"].set_index("cell_id").loc[frames["inputs"].index, "day"].to_numpy()
    keep = np.isin(days, [2, 4])
    assert adata.n_obs == keep.sum() and set(adata.obs["day"]) == {2, 4}
    assert sp.isspmatrix_csr(adata.X)
    np.testing.assert_array_equal(adata.X.toarray(), frames["inputs"].to_numpy()[keep])
    np.testing.assert_array_equal(adata.obsm["protein"].to_numpy(), frames["targets"].to_numpy()[keep])
    assert adata.obs_names.tolist() == frames["inputs"].index[keep].tolist()
    assert {"donor", "cell_type", "technology"} <= set(adata.obs.columns)
    assert "counts" not in adata.layers  # processed files: nothing to normalise again


def test_raw_files_normalised_after_the_split(hspc_dir):
    adata = load_hspc(str(hspc_dir), raw_rna=True, raw_protein=True, days=None)
    assert adata.layers["counts"] is adata.X  # counts held once
    dm = CiteDataModule(adata, time_key="day", batch_size=16,
                        preprocess={"rna": "log_normalize", "protein": "dsb_no_empty",
                                    "isotype_controls": ["Mouse-IgG1", "Rat-IgG2b"]})
    dm.setup()
    test = dm.splits["test"]
    counts = _frames()["inputs_raw"].loc[test.obs_names].to_numpy()
    expected = np.log1p(counts / counts.sum(1, keepdims=True) * 1e4)
    np.testing.assert_allclose(test.X.toarray(), expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(test.obsm["protein"].to_numpy(), test.obsm["protein_counts"].to_numpy())


def test_prepare_cache_roundtrip_and_guards(hspc_dir, tmp_path, capsys):
    prepare = _script("prepare_hspc")
    out = prepare.main(["--data-dir", str(hspc_dir), "--out", str(tmp_path / "cache.h5ad")])
    with pytest.raises(SystemExit) as exc:
        prepare.main(["--data-dir", str(hspc_dir), "--out", str(tmp_path / "cache.h5ad")])
    assert exc.value.code == 2 and "already exists" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        prepare.main(["--data-dir", str(hspc_dir), "--out", "metadata.csv", "--force"])
    assert exc.value.code == 2 and "overwrite an input" in capsys.readouterr().err
    cached = load_hspc(str(tmp_path / "nowhere"), cache=str(out), days=[3])
    direct = load_hspc(str(hspc_dir), days=[3])
    np.testing.assert_array_equal(cached.X.toarray(), direct.X.toarray())
    assert cached.obs_names.tolist() == direct.obs_names.tolist()
    with pytest.raises(DataError, match="prepared with"):
        load_hspc(str(hspc_dir), cache=str(out), raw_rna=True)


def test_not_kaggle_layout_is_a_clear_error(tmp_path):
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["X"] = np.zeros((3, 2))
    with pytest.raises(DataError, match="not in the Kaggle layout"):
        read_frame_csr(tmp_path / "other.h5")
    (tmp_path / "text.h5").write_text("cell_id,day\n")
    with pytest.raises(DataError, match="not an HDF5 file"):
        read_frame_csr(tmp_path / "text.h5")
    pd.DataFrame(np.ones((3, 2)), columns=["a", "b"]).to_hdf(tmp_path / "table.h5", key="t", format="table")
    with pytest.raises(DataError, match="'table' format"):
        read_frame_csr(tmp_path / "table.h5")


def test_metadata_must_cover_the_cells(hspc_dir, tmp_path):
    for name in ("train_cite_inputs.h5", "train_cite_targets.h5"):
        (tmp_path / name).symlink_to(hspc_dir / name)
    meta = _frames()["metadata"]
    meta.iloc[5:].to_csv(tmp_path / "metadata.csv", index=False)
    with pytest.raises(DataError, match=r"no row for 5 of the 90 cells"):
        load_hspc(str(tmp_path))
    meta.drop(columns="day").to_csv(tmp_path / "metadata.csv", index=False)
    with pytest.raises(DataError, match="no time column 'day'"):
        load_hspc(str(tmp_path))
    meta.to_csv(tmp_path / "metadata.csv", index=False)
    with pytest.raises(DataError, match=r"none of the times \[9\] occur in 'day'"):
        load_hspc(str(tmp_path), days=[9])


def test_missing_files_message_says_what_where(tmp_path):
    with pytest.raises(DataError) as err:
        load_hspc(str(tmp_path), cache=None)
    msg = str(err.value)
    for part in ("train_cite_inputs.h5", "train_cite_targets.h5", "metadata.csv", "kaggle.com", str(tmp_path),
                 "data.data_dir"):
        assert part in msg


def test_benchmark_script_small(tmp_path):
    bench = _script("benchmark_memory")
    result = bench.main(["--cells", "400", "--genes", "300", "--density", "0.2", "--dir", str(tmp_path / "b")])
    assert result["shape"] == [400, 300]
    assert abs(result["density"] - 0.2) < 0.02
    assert result["csr_mb"] > 0 and result["peak_rss_mb"] > 0 and result["load_s"] >= 0
    assert not (tmp_path / "b").exists()  # generated files removed


def test_benchmark_writer_is_pandas_readable(tmp_path):
    bench = _script("benchmark_memory")
    values = np.arange(12, dtype=np.float32).reshape(4, 3)
    bench.write_kaggle_frame(tmp_path / "w.h5", "train_cite_inputs", ["a", "b", "c", "d"], ["g1", "g2", "g3"],
                             lambda s, e: values[s:e], chunk_rows=3)
    back = pd.read_hdf(tmp_path / "w.h5")
    np.testing.assert_array_equal(back.to_numpy(), values)
    assert back.index.tolist() == ["a", "b", "c", "d"]


def test_hspc_ood_experiment_config_on_kaggle_files(hspc_dir, tmp_path):
    """experiment=hspc_ood as composed by Hydra: the loader, days 2/4 for training and day 3 held out."""
    from hydra import compose, initialize_config_dir

    from crossmodalnet.training.run import build_datamodule

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=hspc_ood", f"data.data_dir={hspc_dir}",
                                                      f"paths.output_dir={tmp_path}"])
    dm = build_datamodule(cfg)
    dm.setup()
    assert dm.time_axis.labels == [2, 4] and set(dm.splits["test"].obs["day"]) == {3}
    assert dm.n_genes == N_GENES and dm.n_proteins == N_PROTEINS
    np.testing.assert_allclose(dm.datasets["test"].time_weights.numpy(), 0.5)  # day 3: halfway between 2 and 4
    # processed Kaggle values pass through untouched
    ref = pd.read_hdf(hspc_dir / "train_cite_inputs.h5").loc[dm.splits["test"].obs_names]
    np.testing.assert_array_equal(dm.splits["test"].X.toarray(), ref.to_numpy())
