"""``crossmodalnet-train`` / ``python train.py``: Hydra composes ``configs/`` and calls
:func:`crossmodalnet.training.run.train`; a data or config problem ends in one line and exit status 2.

The arguments are checked before torch, Lightning and scanpy are imported (seconds on a busy machine): Hydra
composes the config (a misspelt override fails there), then :func:`check_inputs` looks for every input file the
config names (``data.source.path``, ``rna_path``, ``protein_path``, ``protein_table``, ``data_dir``, ``ckpt_path``)
from the Hydra callback that runs before Hydra writes into the run dir, so a typo leaves nothing behind.
``-v`` / ``--verbose`` (anywhere on the line) shows Lightning's and third-party libraries' lines too.
"""
from __future__ import annotations

import json
import os
import sys

import hydra
from omegaconf import DictConfig

from crossmodalnet.errors import DataError
from crossmodalnet.training.rundir import check_inputs, unlock_run_dir
from crossmodalnet.utils.config_dir import CONFIG_DIR

VERBOSE_FLAGS = ("-v", "--verbose")
_verbose = False


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    try:
        check_inputs(cfg)  # before the heavy imports: a wrong path fails in about a second
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    from crossmodalnet.baselines.base import BaselineUnavailable
    from crossmodalnet.training.run import train
    from crossmodalnet.utils.quiet import set_verbosity

    set_verbosity(_verbose)  # after Lightning's import, which sets its own loggers to INFO
    try:
        metrics = train(cfg)
    except (DataError, BaselineUnavailable) as err:  # bad input / unusable baseline: one clear line, exit 2
        unlock_run_dir(cfg.paths.output_dir)  # nothing runs in it any more
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    shown = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float) and k.startswith("test/")}
    print(f"test metrics: {json.dumps(shown)}")
    print(f"run dir: {cfg.paths.output_dir}")
    objective = cfg.get("optimized_metric")
    return metrics.get(objective) if objective else None


def main() -> None:
    """Console entry point; a data/config problem ends in one clear line, not a traceback."""
    global _verbose
    os.environ.setdefault("WANDB_MODE", "offline")
    _verbose = any(a in VERBOSE_FLAGS for a in sys.argv[1:])
    sys.argv[1:] = [a for a in sys.argv[1:] if a not in VERBOSE_FLAGS]  # Hydra knows only overrides
    from crossmodalnet.utils.quiet import set_verbosity

    set_verbosity(_verbose)  # warnings raised while importing (umap's TensorFlow note) are quiet too
    _hydra_main()


if __name__ == "__main__":
    main()
