"""Load any model ``train()`` saved, for prediction: CrossmodalNet and MLP Lightning checkpoints, the fit/predict
baselines' ``.joblib`` files, or a run dir that holds one of them. Every loaded model answers the same call,
``model(x, time_weights) -> proteins`` (torch tensors), and carries ``gene_names``, ``protein_names``,
``preprocessing`` and ``time_axis``, so :func:`crossmodalnet.inference.predict.predict` treats them alike.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from crossmodalnet.errors import DataError

MODEL_SUFFIXES = (".ckpt", ".joblib")


def find_model_file(run_dir: str | Path) -> Path:
    """The saved model of a run dir: its best Lightning checkpoint, else a baseline's .joblib."""
    folder = Path(run_dir).expanduser()
    ckpt_dir = folder / "checkpoints"
    for pattern in ("best*.ckpt", "*.ckpt", "*.joblib"):
        found = sorted(ckpt_dir.glob(pattern)) or sorted(folder.glob(pattern))
        if found:
            return found[-1]
    present = sorted(p.name for p in (ckpt_dir.iterdir() if ckpt_dir.is_dir() else folder.iterdir()))[:10]
    raise DataError(f"no saved model in {folder} (looked for checkpoints/best*.ckpt, *.ckpt, *.joblib; found "
                    f"{present})")


def resolve_model_path(path: str | Path) -> Path:
    """A model file from a file or run-dir path, with a one-line error when there is none."""
    path = Path(path).expanduser()
    if path.is_dir():
        return find_model_file(path)
    if not path.is_file():
        raise DataError(f"checkpoint not found: {path} (give a run dir, a .ckpt or a baseline's .joblib)")
    return path


def load_trained(path: str | Path, map_location: str = "cpu"):
    """The model saved at ``path`` (file or run dir), in eval mode, ready for ``predict``."""
    file = resolve_model_path(path)
    if file.suffix == ".joblib":
        model = _load_baseline(file)
    else:
        model = _load_lightning(file, map_location)
    check_model(model, str(file))
    model.checkpoint_path = str(file)
    return model.eval()


def _load_lightning(file: Path, map_location: str):
    import torch

    from crossmodalnet.models.crossmodalnet import CrossmodalNet
    from crossmodalnet.models.mlp import MLP

    try:
        ckpt = torch.load(str(file), map_location=map_location, weights_only=False)
    except Exception as err:  # torch raises many types for a foreign or broken file
        raise DataError(f"cannot load {file} as a model checkpoint (.ckpt of train(), or a baseline's .joblib): "
                        f"{err}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise DataError(f"{file} is not a Lightning checkpoint (no state_dict); use a file written by train()")
    hparams = ckpt.get("hyper_parameters", {}) or {}
    is_mlp = not any(k.startswith("network.time_embedding") for k in ckpt["state_dict"]) and "loss" in hparams
    cls = MLP if is_mlp else CrossmodalNet
    try:
        model = cls.load_from_checkpoint(str(file), map_location=map_location, weights_only=False)
    except Exception as err:  # a checkpoint of another model or version
        raise DataError(f"cannot load {file} as a {cls.__name__} checkpoint: {err}") from None
    if is_mlp:
        _mark_time_free(model)
    return model


def _load_baseline(file: Path):
    import joblib

    from crossmodalnet.baselines.base import Baseline

    try:
        baseline = joblib.load(file)
    except Exception as err:  # pickle/joblib raise many types for a foreign or broken file
        raise DataError(f"cannot load {file} as a baseline model (.joblib): {err}") from None
    if not isinstance(baseline, Baseline):
        raise DataError(f"{file} holds a {type(baseline).__name__}, not a baseline saved by train()")
    return BaselinePredictor(baseline)


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
        return torch.from_numpy(self.baseline.predict(values))


def load_model(checkpoint: str | Path, map_location: str = "cpu"):
    """A trained model in eval mode: a Lightning checkpoint written by ``train()`` (CrossmodalNet or MLP), a
    fit/predict baseline's ``.joblib``, or a run dir holding one (see :mod:`crossmodalnet.inference.load`)."""
    return load_trained(checkpoint, map_location)


def check_model(model, where: str = "model") -> None:
    """The metadata prediction needs: gene and protein names that match the network's sizes."""
    genes, proteins = getattr(model, "gene_names", None), getattr(model, "protein_names", None)
    if not genes or not proteins:
        raise DataError(f"{where} carries no gene/protein names (checkpoint metadata 'crossmodalnet' missing); "
                        "use a checkpoint written by crossmodalnet.training.run.train()")
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
