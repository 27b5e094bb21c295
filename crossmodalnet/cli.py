"""Shared behaviour of the console scripts: a data problem ends in one clear line and exit status 2."""
from __future__ import annotations

import logging
import sys
import warnings
from typing import Callable

from crossmodalnet.data.timepoints import TimeError
from crossmodalnet.data.validate import DataError


def run_cli(run: Callable[[], int]) -> int:
    """Call ``run`` with plain log/warning output; DataError, TimeError and ValueError become ``error: ...``."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    warnings.simplefilter("default")
    warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"
    try:
        return run()
    except (DataError, TimeError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
