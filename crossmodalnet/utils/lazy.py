"""Modules imported on first use, so the console scripts answer ``--help`` in well under 2 s (torch, anndata
and pandas together take seconds to import)."""
from __future__ import annotations

import importlib
import types
from typing import Any


class LazyModule(types.ModuleType):
    """Stands in for ``name`` until an attribute is read; then imports it and forwards every access."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__dict__["_lazy_target"] = name

    def _load(self) -> types.ModuleType:
        module = importlib.import_module(self.__dict__["_lazy_target"])
        self.__dict__.update(module.__dict__)  # later reads are plain attribute hits
        return module

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._load(), attr)


def lazy(name: str) -> types.ModuleType:
    """``torch = lazy("torch")``: the real module when first used."""
    return LazyModule(name)
