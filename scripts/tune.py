"""Random search over Table S1 with Ray Tune; every trial runs the same train(cfg) as ``python train.py``.

    python scripts/tune.py experiment=hspc hparams_search=table_s1            # 100 trials on a local Ray
    python scripts/tune.py experiment=hspc ray.address=auto                   # on the cluster of `ray start --head`
    python scripts/tune.py experiment=demo_fast tune.num_samples=4 trainer.max_epochs=2 ray.num_cpus=2

Settings: configs/tune.yaml (ray.*) and configs/tune/default.yaml (tune.*). After an interruption, run the same
command with the same hydra.run.dir=... to resume the sweep.
"""
from __future__ import annotations

import os
import sys
import warnings

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from crossmodalnet.utils.config_dir import CONFIG_DIR  # noqa: E402


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="tune")
def main(cfg: DictConfig) -> float | None:
    from crossmodalnet.data.validate import DataError
    from crossmodalnet.tune.sweep import TuneConfigError, run_sweep
    from crossmodalnet.tune.results import metric_column

    try:
        outcome = run_sweep(cfg, choices=dict(HydraConfig.get().runtime.choices))
    except (TuneConfigError, DataError) as err:  # bad input: one clear line, exit status 2
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    col = metric_column(cfg.tune.metric, cfg.tune.mode)
    table = outcome.table
    for kind, path in outcome.files.items():
        print(f"{kind}: {path}")
    best = table.iloc[0][col] if len(table) else float("nan")
    print(f"{len(table)} trials; best {col} = {best:.4f}")
    if outcome.interrupted:
        print(f"sweep interrupted: resume it with the same command and hydra.run.dir={outcome.out_dir}",
              file=sys.stderr)
        sys.exit(130)
    return float(best)


if __name__ == "__main__":
    os.environ.setdefault("WANDB_MODE", "offline")
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    main()
