"""Figure S1 of the paper: the NLC loss of one cell against the Pearson correlation of its predicted and measured
proteins (crossmodalnet.reporting.figures.plot_nlc_curve; the loss is crossmodalnet.models.losses.nlc_loss).

    python scripts/figure_s1.py                       # writes docs/figures/nlc_loss.png
    python scripts/figure_s1.py --out fig.png --eps 1e-6
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    from crossmodalnet.reporting.figures import plot_nlc_curve

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "docs" / "figures" / "nlc_loss.png")
    p.add_argument("--eps", type=float, default=1e-6, help="model.nlc_eps (the default config's value)")
    args = p.parse_args(argv)
    print(plot_nlc_curve(args.out, eps=args.eps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
