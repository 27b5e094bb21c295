"""The error types behind the console scripts' one-line ``error: ...`` messages, in a module that imports
nothing heavy, so ``crossmodalnet-predict --help`` starts without loading anndata, pandas or torch."""
from __future__ import annotations


class DataError(ValueError):
    """Input data that cannot be used as given; the message says what and where."""
