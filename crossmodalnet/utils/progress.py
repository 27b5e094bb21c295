"""Rich progress bars for long loops over large inputs (predict, saliency, GSEA); silent for small ones and when
stderr is not a terminal (logs, CI, notebooks get no bar noise)."""
from __future__ import annotations

import os
import sys
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
# below this many cells a prediction or saliency pass takes a second or two: a bar would only flicker
MIN_CELLS = int(os.environ.get("CROSSMODALNET_PROGRESS_MIN_CELLS", 20_000))


def progress(items: Iterable[T], total: int, description: str, show: bool = True) -> Iterator[T]:
    """``items`` with a transient rich bar on stderr when ``show`` and stderr is a terminal."""
    if not show or total <= 1 or not sys.stderr.isatty():
        yield from items
        return
    from rich.console import Console
    from rich.progress import track

    yield from track(items, total=total, description=description, transient=True,
                     console=Console(stderr=True))
