"""Warnings that are noise to a user, silenced in one place.

anndata warns once per element (``Element '/obs/x' was written without encoding metadata``) when reading a file
written by anndata < 0.7, e.g. the BMMC starter: 25 lines per read that bury the one line that matters, and
nothing a user of the file can act on (the data are read correctly).
"""
from __future__ import annotations

import warnings

OLD_FORMAT_MESSAGE = r"Element '.*' was written without encoding metadata"


def silence_noise() -> None:
    """Ignore anndata's per-element old-format warnings (only those; every other warning still shows)."""
    warnings.filterwarnings("ignore", message=OLD_FORMAT_MESSAGE)
