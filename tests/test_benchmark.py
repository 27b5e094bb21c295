"""The benchmark's building blocks, and the script itself in --quick mode (no timing is asserted)."""
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT
from crossmodalnet.data.datamodule import CellBatches, batch_loader
from crossmodalnet.data.simulate import random_csr


def test_random_csr_has_the_requested_shape_and_density():
    x = random_csr(3000, 400, 0.1, seed=2, chunk_size=512)
    x.check_format(full_check=True)
    assert x.shape == (3000, 400)
    assert x.nnz / (3000 * 400) == pytest.approx(0.1, abs=0.003)
    assert x.data.min() > 0 and x.has_sorted_indices
    with pytest.raises(ValueError, match="density"):
        random_csr(10, 10, 0.0)


def test_batch_loader_slices_whole_batches_and_covers_every_cell():
    x = random_csr(1001, 50, 0.2)
    data = CellBatches(x, np.zeros((1001, 3), np.float32), np.ones((1001, 1), np.float32), np.zeros(1001))
    sizes = [b["x"].shape[0] for b in batch_loader(data, 100, shuffle=False)]
    assert sizes == [100] * 10 + [1]
    train_sizes = [b["x"].shape[0] for b in batch_loader(data, 100, shuffle=True)]
    assert train_sizes == [100] * 10          # a trailing single cell is dropped in training (BatchNorm)
    first = next(iter(batch_loader(data, 7, shuffle=False)))
    np.testing.assert_array_equal(first["x"].numpy(), x[:7].toarray())


@pytest.mark.slow
def test_benchmark_script_quick_mode_writes_its_table(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "benchmark.py"), "--quick",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "benchmark.json").read_text())
    row = result["sizes"][0]
    for key in ("cmn_epoch_s", "mlp_epoch_s", "ratio", "predict_cells_s", "peak_rss_mb"):
        assert row[key] > 0, key
    assert "| quick |" in proc.stdout and (tmp_path / "benchmark.csv").exists()
