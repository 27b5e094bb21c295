"""Save and load any model ``train()`` fits: the saved model of a finished run (``<run dir>/model/``, see
:mod:`crossmodalnet.inference.manifest`), found from the run dir, the model folder or a file of the run. Every
loaded model answers the same call, ``model(x, time_weights) -> proteins`` (torch tensors), and carries
``gene_names``, ``protein_names``, ``preprocessing`` and ``time_axis``, so
:func:`crossmodalnet.inference.predict.predict` treats them alike.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from crossmodalnet.errors import DataError
from crossmodalnet.inference.manifest import (BASELINE_WEIGHTS, LIGHTNING_WEIGHTS, MANIFEST_FILE, MODEL_DIR,
                                              Manifest, package_version)

def find_model_dir(run_dir: str | Path) -> Path:
    """The saved model of a run dir (``<run>/model``), or the folder itself when it is a saved model."""
    folder = Path(run_dir).expanduser()
    for candidate in (folder, folder / MODEL_DIR):
        if (candidate / MANIFEST_FILE).is_file():
            return candidate
    if any(folder.glob("checkpoints/*.ckpt")) or any(folder.glob("checkpoints/*.joblib")):
        raise DataError(f"{folder} has no saved model ({MODEL_DIR}/{MANIFEST_FILE}): it was written by crossmodalnet "
                        f"0.2.0, or its run did not finish; crossmodalnet {package_version()} loads finished runs "
                        "(re-train, or predict with crossmodalnet==0.2.0)")
    present = sorted(p.name for p in folder.iterdir())[:10] if folder.is_dir() else []
    raise DataError(f"no saved model in {folder} (looked for {MANIFEST_FILE} and {MODEL_DIR}/{MANIFEST_FILE}; found "
                    f"{present})")


def resolve_model_path(path: str | Path) -> Path:
    """The saved-model folder for a run dir, a model folder, or a file inside a run (its manifest, the baseline's
    ``model.joblib``, the run's best training checkpoint); one line when there is none."""
    path = Path(path).expanduser()
    if path.is_dir():
        return find_model_dir(path)
    if not path.is_file():
        raise DataError(f"model not found: {path} (give a run dir, its model/ folder or its best checkpoint)")
    for folder in (path.parent, path.parent.parent / MODEL_DIR):
        if (folder / MANIFEST_FILE).is_file():
            manifest = Manifest.read(folder)
            if path.suffix == ".ckpt" and manifest.source_checkpoint not in (None, path.name):
                raise DataError(f"{path} is a training checkpoint, not the run's saved model (that holds "
                                f"{manifest.source_checkpoint}); pass the run dir {path.parent.parent}")
            return folder
    raise DataError(f"{path} has no saved-model manifest beside it ({MODEL_DIR}/{MANIFEST_FILE}): a checkpoint of "
                    f"crossmodalnet 0.2.0 or of a run that did not finish; crossmodalnet {package_version()} loads "
                    "finished runs (re-train, or predict with crossmodalnet==0.2.0)")


def load_trained(path: str | Path, map_location: str = "cpu"):
    """The model saved at ``path`` (run dir, model folder or a file of a run), in eval mode, ready for ``predict``."""
    folder = resolve_model_path(path)
    manifest = Manifest.read(folder)
    cls = manifest.model_type()
    if not hasattr(cls, "from_saved"):
        raise DataError(f"{folder}: model class {manifest.model_class} cannot be loaded (no from_saved)")
    model = cls.from_saved(folder / manifest.weights, manifest, map_location)
    from crossmodalnet.baselines.base import Baseline

    if isinstance(model, Baseline):
        model = BaselinePredictor(model)
    else:
        attach_manifest(model, manifest)
        if not manifest.uses_time:
            _mark_time_free(model)
    check_model(model, str(folder))
    model.checkpoint_path = str(folder)
    model.manifest = manifest
    return model.eval()


def attach_manifest(model: Any, manifest: Manifest) -> None:
    """Gene and protein names, normalisation, SVD projection and calibration of a saved model, onto the model."""
    from crossmodalnet.data.projection import GeneProjection

    model.gene_names, model.protein_names = manifest.gene_names, manifest.protein_names
    model.preprocessing = manifest.preprocessing
    model.projection = GeneProjection.from_dict(manifest.projection)
    model.conformal = manifest.calibration


def save_model(model: Any, folder: str | Path, source_checkpoint: str | None = None) -> Path:
    """Write the saved model of a finished run: weights and the manifest, once (see
    :mod:`crossmodalnet.inference.manifest`). Returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    from crossmodalnet.baselines.base import Baseline

    if isinstance(model, Baseline):
        weights = model.save(folder / BASELINE_WEIGHTS).name
    else:
        import torch

        from crossmodalnet.utils.atomic import atomic_write

        atomic_write(folder / LIGHTNING_WEIGHTS, lambda f: torch.save(model.state_dict(), f), binary=True)
        weights = LIGHTNING_WEIGHTS
    Manifest.of(model, weights, source_checkpoint).write(folder)
    return folder


def _mark_time_free(model) -> None:
    """Models without a time input (MLPs, baselines) get a one-row axis and ``uses_time = False``: predict
    then ignores any requested time instead of refusing it."""
    from crossmodalnet.data.timepoints import TimeAxis

    model.time_axis = TimeAxis(labels=["none"], values=None)
    model.uses_time = False


class BaselinePredictor:
    """A fitted fit/predict baseline behind the call a Lightning model answers: ``model(x, time_weights)``."""

    def __init__(self, baseline) -> None:
        self.baseline = baseline
        self.training = False
        self.network = SimpleNamespace(n_genes=baseline.n_genes, n_proteins=baseline.n_proteins)
        if getattr(baseline, "uses_time", False):  # model.time_features: the time is an input, over these times
            self.time_axis, self.uses_time = baseline.time_axis, True
        else:
            _mark_time_free(self)

    def __getattr__(self, name: str) -> Any:  # gene_names, protein_names, preprocessing, projection, ...
        if name == "baseline":
            raise AttributeError(name)
        return getattr(self.baseline, name)

    @property
    def name(self) -> str:
        return self.baseline.name

    def eval(self) -> "BaselinePredictor":
        return self

    def train(self, mode: bool = True) -> "BaselinePredictor":
        return self

    def __call__(self, x, time_weights=None):
        import numpy as np
        import torch

        values = x.numpy() if hasattr(x, "numpy") else np.asarray(x)
        if time_weights is not None and getattr(self.baseline, "uses_time", False):
            weights = time_weights.numpy() if hasattr(time_weights, "numpy") else np.asarray(time_weights)
            return torch.from_numpy(self.baseline.predict(values, weights))
        return torch.from_numpy(self.baseline.predict(values))


def load_model(checkpoint: str | Path, map_location: str = "cpu"):
    """A trained model in eval mode: a Lightning checkpoint written by ``train()`` (CrossmodalNet or MLP), a
    fit/predict baseline's ``.joblib``, or a run dir holding one (see :mod:`crossmodalnet.inference.load`)."""
    return load_trained(checkpoint, map_location)


def check_model(model, where: str = "model") -> None:
    """The metadata prediction needs: gene and protein names that match the network's sizes."""
    genes, proteins = getattr(model, "gene_names", None), getattr(model, "protein_names", None)
    if not genes or not proteins:
        raise DataError(f"{where} carries no gene/protein names; load a model saved by a finished run "
                        "(<run dir>/model, written by crossmodalnet.training.run.train())")
    net = model.network
    projection = getattr(model, "projection", None)  # SVD input: genes -> components -> network
    if projection is not None and (projection.n_genes != len(genes) or projection.n_outputs != net.n_genes):
        raise DataError(f"{where}: the SVD input projection maps {projection.n_genes} genes to "
                        f"{projection.n_outputs} components, but the metadata lists {len(genes)} genes and the "
                        f"network reads {net.n_genes} inputs; the checkpoint is inconsistent")
    n_in = len(genes) if projection is None else projection.n_outputs
    if n_in != net.n_genes or len(proteins) != net.n_proteins:
        raise DataError(f"{where}: metadata lists {len(genes)} genes / {len(proteins)} proteins but the network "
                        f"has {net.n_genes} / {net.n_proteins}; the checkpoint is inconsistent")


def as_model(model):
    """A loaded model as it is (checked), or the model saved at a path."""
    if isinstance(model, (str, Path)):
        return load_model(model)
    check_model(model)
    return model
