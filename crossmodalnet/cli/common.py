"""Shared behaviour of the console scripts: a data problem ends in one clear line and exit status 2."""
from __future__ import annotations

import logging
import sys
import warnings
from typing import Callable

from crossmodalnet.utils.quiet import silence_noise
from crossmodalnet.errors import DataError


def run_cli(run: Callable[[], int]) -> int:
    """Call ``run`` with plain log/warning output; DataError, TimeError and ValueError become ``error: ...``."""
    from crossmodalnet.data.timepoints import TimeError  # here, not at import: --help stays fast

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    warnings.simplefilter("default")
    silence_noise()  # after simplefilter, which would otherwise show anndata's per-element old-format lines
    warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"
    try:
        return run()
    except (DataError, TimeError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
