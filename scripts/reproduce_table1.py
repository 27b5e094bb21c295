"""Paper Table 1 (in-distribution): every method on the same split and seeds, via train(cfg).

    python scripts/reproduce_table1.py                      # synthetic data, 3 seeds -> logs/tables/table1_synthetic/
    python scripts/reproduce_table1.py --data bmmc --seeds 0 1 2
    python scripts/reproduce_table1.py --data synthetic_drift   # proteins drift with the day; one-hot day rows beside
    python scripts/reproduce_table1.py --quick              # tiny, for CI
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crossmodalnet.training.tables import table_cli  # noqa: E402

if __name__ == "__main__":
    table_cli("table1")
