"""What a saved model is, written once when a run finishes: ``<run dir>/model/``.

``manifest.json`` says, in one readable file, everything prediction needs besides the weights: the model class and
the package version that wrote it, the genes (names and order) and proteins, the learned time axis, how genes and
proteins were normalised (with the per-gene training ranges), the SVD input projection and the conformal
calibration; ``arrays.npz`` holds the large arrays the manifest names (``{"__array__": key}``); the weights sit
beside them (``weights.pt`` for the Lightning models, ``model.joblib`` for the fit/predict baselines). This is the
role scvi-tools' registry plays: loading reads the manifest and never guesses a model's kind from its weights, and
nothing rewrites a training checkpoint after the fact (``checkpoints/`` holds training state, for resuming).
"""
from __future__ import annotations

import importlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crossmodalnet.errors import DataError
from crossmodalnet.utils.atomic import atomic_text, atomic_write
from crossmodalnet.utils.version import __version__

FORMAT = 1
MODEL_DIR = "model"
MANIFEST_FILE = "manifest.json"
ARRAYS_FILE = "arrays.npz"
LIGHTNING_WEIGHTS = "weights.pt"
BASELINE_WEIGHTS = "model.joblib"
ARRAY_MIN_LENGTH = 64  # numeric lists at least this long go to arrays.npz instead of the JSON


def package_version() -> str:
    return __version__


@dataclass
class Manifest:
    """Everything a saved model was set up with (see the module docstring)."""

    model_class: str                      # import path, e.g. crossmodalnet.models.crossmodalnet.CrossmodalNet
    weights: str                          # file name in the model folder
    gene_names: list[str]
    protein_names: list[str]
    time_axis: dict | None
    uses_time: bool
    preprocessing: dict = field(default_factory=dict)
    hyper_parameters: dict = field(default_factory=dict)
    projection: dict | None = None        # GeneProjection.to_dict() of an SVD-input model
    calibration: dict | None = None       # ConformalCalibration.to_dict()
    source_checkpoint: str | None = None  # the training checkpoint the weights come from (Lightning models)
    package_version: str = field(default_factory=package_version)
    format: int = FORMAT

    # -- building -------------------------------------------------------------------------------------------------
    @classmethod
    def of(cls, model: Any, weights: str, source_checkpoint: str | None = None) -> "Manifest":
        """The manifest of a trained model object (a Lightning module or a fit/predict baseline)."""
        genes, proteins = getattr(model, "gene_names", None), getattr(model, "protein_names", None)
        if not genes or not proteins:
            raise ValueError(f"{type(model).__name__} has no gene/protein names: build it with train(cfg)")
        axis = getattr(model, "time_axis", None)
        axis = axis.to_dict() if hasattr(axis, "to_dict") else axis
        projection = getattr(model, "projection", None)
        calibration = getattr(model, "conformal", None)
        hparams = getattr(model, "hparams", None)
        return cls(model_class=f"{type(model).__module__}.{type(model).__qualname__}", weights=weights,
                   gene_names=[str(g) for g in genes], protein_names=[str(p) for p in proteins],
                   time_axis=axis, uses_time=bool(getattr(model, "uses_time", True)),
                   preprocessing=dict(getattr(model, "preprocessing", None) or {}),
                   hyper_parameters=dict(hparams) if hparams is not None else {},
                   projection=None if projection is None else projection.to_dict(),
                   calibration=None if calibration is None else (
                       calibration if isinstance(calibration, dict) else calibration.to_dict()),
                   source_checkpoint=None if source_checkpoint is None else Path(source_checkpoint).name)

    # -- files ----------------------------------------------------------------------------------------------------
    def write(self, folder: str | Path) -> Path:
        """``manifest.json`` and ``arrays.npz`` in ``folder``, each written whole and then renamed into place."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {}
        document = _to_json(asdict(self), "", arrays)
        atomic_write(folder / ARRAYS_FILE, lambda f: np.savez(f, **arrays), binary=True)
        atomic_text(folder / MANIFEST_FILE, json.dumps(document, indent=1) + "\n")
        return folder / MANIFEST_FILE

    @classmethod
    def read(cls, folder: str | Path) -> "Manifest":
        folder = Path(folder)
        path = folder / MANIFEST_FILE
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise DataError(f"cannot read the saved-model manifest {path}: {err}") from None
        if not isinstance(document, dict) or "model_class" not in document:
            raise DataError(f"{path} is not a crossmodalnet saved-model manifest (no model_class)")
        if int(document.get("format", 0)) > FORMAT:
            raise DataError(f"{path} was written by crossmodalnet {document.get('package_version')} (manifest format "
                            f"{document.get('format')}); this is crossmodalnet {package_version()}: upgrade to load it")
        with np.load(folder / ARRAYS_FILE, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        document = _from_json(document, arrays)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in document.items() if k in known})

    def model_type(self) -> type:
        """The class named by the manifest; only the package's own classes are imported."""
        module, _, name = self.model_class.rpartition(".")
        if not module.startswith("crossmodalnet."):
            raise DataError(f"the manifest names model class {self.model_class!r}, which is not crossmodalnet's")
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as err:
            raise DataError(f"the saved model's class {self.model_class} does not exist in crossmodalnet "
                            f"{package_version()} (written by {self.package_version}): {err}") from None


def _to_json(value: Any, key: str, arrays: dict[str, np.ndarray]) -> Any:
    """JSON-able copy of ``value``; arrays (and long numeric lists) go to ``arrays`` under their dotted key."""
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray) or (isinstance(value, (list, tuple)) and len(value) >= ARRAY_MIN_LENGTH
                                         and all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
                                                 for v in value)):
        arr = np.asarray(value)
        if arr.dtype.kind == "O":
            arr = arr.astype(str)
        arrays[key] = arr
        return {"__array__": key}
    if isinstance(value, dict):
        return {str(k): _to_json(v, f"{key}.{k}" if key else str(k), arrays) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v, f"{key}.{i}", arrays) for i, v in enumerate(value)]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"manifest entry {key!r} of type {type(value).__name__} cannot be saved")


def _from_json(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__array__"}:
            return arrays[value["__array__"]]
        return {k: _from_json(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v, arrays) for v in value]
    return value
