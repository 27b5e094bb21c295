"""The tutorial notebook runs top to bottom (executed with nbclient on this interpreter's ipykernel)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "tutorial.ipynb"


@pytest.mark.slow
def test_tutorial_notebook_runs(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel", reason="the tutorial test needs ipykernel (pip install -e .[dev])")
    monkeypatch.setenv("CROSSMODALNET_TUTORIAL_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # kernel "python3" is ipykernel's own spec; jupyter_client launches it with this interpreter (sys.executable)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 7, f"expected the tutorial's figures, got {len(images)} images"
    work = tmp_path / "work"
    for name in ("figS2_time_embedding.png", "figS3a_saliency_top.png", "figS3b_expression_vs_saliency.png",
                 "figS4_gsea.png", "fig2_measured_vs_predicted.png"):
        assert (work / name).stat().st_size > 0
    assert (work / "run" / "metrics.json").exists()


BMMC_NOTEBOOK = NOTEBOOK.parent / "bmmc_tutorial.ipynb"


@pytest.mark.slow
def test_bmmc_tutorial_notebook_runs(tmp_path, monkeypatch):
    """The real-data tutorial (BMMC starter from the shared folder): train, figures, intervals, saliency, GSEA."""
    from conftest import shared_data

    data = shared_data("bmmc_cite_starter")
    gmt = shared_data("genesets", "ReactomePathways.gmt")
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel", reason="the tutorial test needs ipykernel (pip install -e .[dev])")
    monkeypatch.setenv("CROSSMODALNET_TUTORIAL_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("CROSSMODALNET_BMMC_DIR", str(data))
    monkeypatch.setenv("CROSSMODALNET_GMT", str(gmt))
    monkeypatch.setenv("WANDB_MODE", "offline")
    nb = nbformat.read(BMMC_NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(BMMC_NOTEBOOK.parent)}})
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert "Element '/obs" not in text, "anndata's per-element old-format warnings leaked into the notebook"
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 7, f"expected the tutorial's figures, got {len(images)} images"
    metrics = json.loads((tmp_path / "work" / "run" / "metrics.json").read_text())
    assert metrics["test/pearson_cell"] > metrics["test/baseline_train_mean/pearson_cell"]
    for name in ("saliency_top.png", "expression_vs_saliency.png", "gsea.png"):
        assert (tmp_path / "work" / name).stat().st_size > 0
