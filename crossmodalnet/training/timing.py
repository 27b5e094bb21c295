"""Wall time of a run's stages (data, fit, test, diagnostics, writing): where the time to a model goes.

Recorded in metrics.json as ``time/<stage>_s`` and in one log line, so a slow run says which stage was slow
(``scripts/benchmark_time_to_accuracy.py`` reports the same split for every run it makes).
"""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import Iterator

log = logging.getLogger("crossmodalnet")


class StageClock:
    """``with clock("fit"): ...`` adds the block's wall time to stage ``fit``; ``metrics()`` gives them all."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t0

    def metrics(self) -> dict[str, float]:
        out = {f"time/{stage}_s": s for stage, s in self.seconds.items()}
        out["time/total_s"] = time.perf_counter() - self.start
        return out

    def summary(self) -> str:
        parts = ", ".join(f"{stage} {s:.1f} s" for stage, s in self.seconds.items())
        return f"time: {parts} (run total {time.perf_counter() - self.start:.1f} s)"
