"""Shared behaviour of the console scripts: a data problem ends in one clear line and exit status 2."""
from __future__ import annotations

import logging
import sys
import warnings
from typing import Callable

from crossmodalnet.errors import DataError
from crossmodalnet.utils.quiet import set_verbosity


def add_verbose(parser) -> None:
    """``-v`` / ``--verbose``: third-party lines and warnings with their origin (quiet by default)."""
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also show third-party libraries' messages and where each warning comes from")


def run_cli(run: Callable[[], int], verbose: bool = False) -> int:
    """Call ``run`` with plain log/warning output; DataError (TimeError is one) and ValueError become
    ``error: ...``. Nothing heavy is imported before ``run`` checks its arguments."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    warnings.simplefilter("default")
    set_verbosity(verbose)  # after simplefilter, which would otherwise show anndata's per-element old-format lines
    try:
        return run()
    except (DataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
