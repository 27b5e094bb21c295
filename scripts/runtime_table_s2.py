"""Paper Table S2: training time of every method on simulated D1 (1,000 x 3,000), D2 (3,000 x 5,000) and
D3 (10,000 x 8,000), with the paper's numbers beside ours.

    python scripts/runtime_table_s2.py                      # D1 and D2 -> logs/tables/table_s2/
    python scripts/runtime_table_s2.py --sizes D1 D2 D3     # D3 takes hours here (LightGBM above all)
    python scripts/runtime_table_s2.py --quick              # two tiny sizes, for CI
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crossmodalnet.training.tables import s2_cli  # noqa: E402

if __name__ == "__main__":
    s2_cli()
