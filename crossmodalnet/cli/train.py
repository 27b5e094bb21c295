"""``crossmodalnet-train`` / ``python train.py``: Hydra composes ``configs/`` and calls
:func:`crossmodalnet.training.run.train`; a data or config problem ends in one line and exit status 2."""
from __future__ import annotations

import json
import os
import sys
import warnings

import hydra
from omegaconf import DictConfig

from crossmodalnet.baselines.base import BaselineUnavailable
from crossmodalnet.errors import DataError
from crossmodalnet.training.run import train
from crossmodalnet.utils.config_dir import CONFIG_DIR


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    try:
        metrics = train(cfg)
    except (DataError, BaselineUnavailable) as err:  # bad input / unusable baseline: one clear line, exit 2
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    shown = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float) and k.startswith("test/")}
    print(f"test metrics: {json.dumps(shown)}")
    print(f"run dir: {cfg.paths.output_dir}")
    objective = cfg.get("optimized_metric")
    return metrics.get(objective) if objective else None


def main() -> None:
    """Console entry point; a data/config problem ends in one clear line, not a traceback."""
    os.environ.setdefault("WANDB_MODE", "offline")
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    # data-parallel runs: every rank scores the whole validation/test split, so its values need no sync_dist
    warnings.filterwarnings("ignore", ".*sync_dist=True.*")
    _hydra_main()


if __name__ == "__main__":
    main()
