"""Say which configured settings a model does not use, instead of silently dropping them."""
from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("crossmodalnet")


def warn_ignored(name: str, ignored: dict[str, Any]) -> None:
    """Experiments written for CrossmodalNet may set its hyperparameters (latent_dim, dis_*): say they are unused."""
    if ignored:
        log.warning("%s ignores hyperparameters it does not have: %s", name, ", ".join(sorted(ignored)))
