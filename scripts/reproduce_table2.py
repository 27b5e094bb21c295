"""Paper Table 2 (held-out time point): train on the other time points, predict the held-out one; by default the
intermediate one and the last one (a section each), with a (t, t^2) time-aware row beside each baseline.

    python scripts/reproduce_table2.py                      # synthetic, days 3 and 4 held out -> logs/tables/table2_synthetic/
    python scripts/reproduce_table2.py --data synthetic_drift   # the drift simulator, days 3 and 6 held out
    python scripts/reproduce_table2.py --data hspc --holdout 3   # day 3 held out only (paper 3.2)
    python scripts/reproduce_table2.py --quick              # tiny, for CI
BMMC has no time points (two donors), so Table 2 does not apply to it.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crossmodalnet.training.tables import table_cli  # noqa: E402

if __name__ == "__main__":
    table_cli("table2")
