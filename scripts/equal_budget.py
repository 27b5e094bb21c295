"""Every method tuned with the same budget through the project's sweep, reported on seeds the sweep never saw.

    python scripts/equal_budget.py --data synthetic_drift --trials 10 \
        --override data.source.n_cells=2000 --override data.source.n_genes=1000 --override data.source.n_proteins=30
    python scripts/equal_budget.py --data bmmc --trials 10
    python scripts/equal_budget.py --data synthetic_drift --methods ridge svd_ridge --trials 2 --quick   # seconds

Writes <out>/equal_budget.md (the table, the budget, the chosen values), runs.csv, choices.json, and each method's
sweep (sweeps/<method>/: tune_results.csv, tune_top10.md, the best configuration as an experiment file). Run the
same command again to go on after an interruption: finished sweeps and runs are read, not repeated.
"""
from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crossmodalnet.tune.equal_budget import SPACES, Budget, EqualBudgetSpec, run_equal_budget  # noqa: E402


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="equal_budget.py", description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="synthetic_drift", help="synthetic_drift | synthetic | bmmc")
    parser.add_argument("--methods", nargs="+", default=list(SPACES), help=f"subset of {list(SPACES)}")
    parser.add_argument("--trials", type=int, default=10, help="trials per method (the same for every method)")
    parser.add_argument("--selection-seed", type=int, default=100, help="seed (and simulated data set) of the sweeps")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="report seeds")
    parser.add_argument("--settings", nargs="+", default=None,
                        help="in_distribution holdout_3 holdout_6 (default: every setting of the data set)")
    parser.add_argument("--time-features", default=None, help="the baselines' time input (default: poly for the "
                        "simulators, onehot for BMMC's donors)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE", help="for every run")
    parser.add_argument("--defaults", action="store_true", help="also report each method's shipped configuration")
    parser.add_argument("--cpus", type=int, default=1, help="Ray CPUs per sweep (parallel trials)")
    parser.add_argument("--quick", action="store_true", help="tiny data and budgets (tests)")
    parser.add_argument("--out", type=Path, default=None, help="default logs/tables/equal_budget_<data>")
    args = parser.parse_args(argv)
    out = (args.out or Path("logs") / "tables" / f"equal_budget_{args.data}").resolve()
    spec = EqualBudgetSpec(data=args.data, methods=args.methods,
                           budget=Budget(trials=args.trials, selection_seed=args.selection_seed,
                                         report_seeds=args.seeds, cpus=args.cpus),
                           overrides=args.override, time_input=args.time_features, settings=args.settings,
                           defaults=args.defaults, quick=args.quick)
    try:
        run_equal_budget(spec, out)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    md = out / "equal_budget.md"
    print(md.read_text())
    print(f"Command: python scripts/equal_budget.py {shlex.join(argv if argv is not None else sys.argv[1:])}")
    print(f"written: {md}")
    return md


if __name__ == "__main__":
    os.environ.setdefault("WANDB_MODE", "offline")
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    main()
