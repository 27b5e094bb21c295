"""Interpretation of a trained CrossmodalNet: saliency (gene rankings per protein), the learned time embedding,
GSEA on a ranking, ground-truth recovery on the simulator, and figures.

The names below are imported on first use (PEP 562), so ``crossmodalnet-saliency --help`` does not load torch.
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import Any

_EXPORTS = {"SaliencyResult": "saliency", "saliency": "saliency",
            "time_embedding_pca": "time_embedding", "interpolated_embedding": "time_embedding"}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"crossmodalnet.interpret.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'crossmodalnet.interpret' has no attribute {name!r}")


class _Package(types.ModuleType):
    """``crossmodalnet.interpret.saliency`` is both a submodule and the function it defines; as with an eager
    ``from .saliency import saliency``, the package attribute stays the function when the submodule loads."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == name and hasattr(value, name):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
