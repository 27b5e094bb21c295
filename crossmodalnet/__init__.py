"""CrossmodalNet: time-aware prediction of cell-surface proteins (CITE-seq ADT) from scRNA-seq.

``crossmodalnet.fit(adata, ...)`` trains, ``crossmodalnet.load(run_dir)`` loads any saved model; both return a
:class:`crossmodalnet.api.Run`. They are imported on first use, so ``import crossmodalnet`` stays cheap.
"""
from __future__ import annotations

from typing import Any

from crossmodalnet.utils.version import __version__

__all__ = ["fit", "load", "Run", "__version__"]

_API = {"fit", "load", "Run"}


def __getattr__(name: str) -> Any:
    if name in _API:
        from crossmodalnet import api

        return getattr(api, name)
    raise AttributeError(f"module 'crossmodalnet' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])


from crossmodalnet.utils.quiet import silence_noise as _silence_noise  # noqa: E402

_silence_noise()  # anndata's per-element "written without encoding metadata" lines (crossmodalnet/utils/quiet.py)
