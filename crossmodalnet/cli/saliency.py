"""``crossmodalnet-saliency``: which genes drive a protein, from a checkpoint and an .h5ad file.

Writes, into ``--output-dir`` (default: ``<run dir of the checkpoint>/saliency``): ``saliency.csv`` (long format:
protein, gene, saliency, abs_saliency, sd_gradient, score, rank), ``top_genes.csv`` (with each gene's rank interval
over bootstrap samples of the cells and its association with the predicted protein), ``unranked.csv`` (genes that
could not be ranked, with the reason), per protein the top-k bar chart and the expression-vs-saliency scatter, and
with ``--gmt`` a GSEA table and running-score plot per protein.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from crossmodalnet.utils.lazy import lazy
from crossmodalnet.cli.common import add_verbose, run_cli
from crossmodalnet.errors import DataError
from crossmodalnet.utils.atomic import atomic_path

# imported on first use: `crossmodalnet-saliency --help` must not wait seconds for them
ad = lazy("anndata")
pd = lazy("pandas")
# = crossmodalnet.interpret.saliency.RANK_BY, copied so that --help does not import torch (a test checks they match)
RANK_BY = ("magnitude", "absolute", "signed", "directional")
# = METHODS / DEFAULT_METHOD / DEFAULT_RANK_BY of crossmodalnet.interpret.saliency, copied for the same reason
# (tests/test_saliency.py checks they match)
METHODS = ("gradient", "grad_x_sd", "variance_share", "grad_x_input", "integrated_gradients",
           "integrated_gradients_mean", "smoothgrad")
DEFAULT_METHOD = "variance_share"
DEFAULT_RANK_BY = "magnitude"
DEFAULT_HIGH_CELLS = 0.5
NULLS = ("none", "expression_matched")   # = crossmodalnet.interpret.ranking.NULLS
DEFAULT_NULL = "none"
DEFAULT_BOOT = 20


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="crossmodalnet-saliency",
                                description="Saliency of genes for proteins (paper 2.5), top genes, figures, GSEA.")
    p.add_argument("--checkpoint", required=True, help="a finished run dir or its Lightning .ckpt")
    p.add_argument("--input", required=True,
                   help=".h5ad or .h5mu with the cells to aggregate over (never modified)")
    p.add_argument("--rna-mod", default="rna", help=".h5mu input: the RNA modality")
    p.add_argument("--protein", action="append", help="protein name (repeat for several; default: all)")
    p.add_argument("--top", type=int, default=10, help="genes per protein in tables and figures")
    p.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD,
                   help=f"per-cell attribution summed over cells (default {DEFAULT_METHOD}): gradient (paper), "
                        "grad_x_sd (gradient per unit of the gene's sd), variance_share (the gene's share of the "
                        "predicted protein's variation over cells), grad_x_input, integrated_gradients (from zero "
                        "expression), integrated_gradients_mean (from the cells' mean expression), smoothgrad; "
                        "see docs/interpretation.md")
    p.add_argument("--rank-by", choices=RANK_BY, default=DEFAULT_RANK_BY,
                   help="magnitude = |sum over cells| (the paper's |gamma|), absolute = sum of |per-cell values| "
                        "(with --method gradient: the authors' mean |gradient|), signed, directional = "
                        "magnitude signed by the gene's association with the predicted protein (rising genes first)")
    p.add_argument("--null", choices=NULLS, default=DEFAULT_NULL,
                   help="expression_matched: score each gene against the genes of similar mean and sparsity "
                        f"(removes the expression confound); default {DEFAULT_NULL}")
    p.add_argument("--high-cells", type=float, metavar="FRACTION", default=DEFAULT_HIGH_CELLS,
                   help="sum each protein's attributions over this fraction of cells with the most protein only "
                        f"(measured with --protein-key, else predicted; default {DEFAULT_HIGH_CELLS}, 1 = all cells)")
    p.add_argument("--protein-key", help="obsm key of measured proteins (cells x proteins) for --high-cells")
    p.add_argument("--bootstrap", type=int, default=DEFAULT_BOOT,
                   help=f"bootstrap samples of the cells for each top gene's rank interval (default {DEFAULT_BOOT}; "
                        "0 = none)")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--time", help="one time for every cell")
    when.add_argument("--time-key", help="obs column with each cell's time (default: the training column)")
    p.add_argument("--time-mode", choices=("interpolate", "nearest", "none"), default="interpolate")
    p.add_argument("--layer", help="read genes from this layer instead of X")
    p.add_argument("--max-cells", type=int, help="aggregate over a random subset of this many cells")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--gmt", help="gene sets (.gmt) for GSEA prerank on each protein's ranking")
    p.add_argument("--gsea-permutations", type=int, default=200)
    p.add_argument("--gsea-top", type=int,
                   help="GSEA on only the top N genes of each ranking (the paper: 100); default: all genes")
    p.add_argument("--gsea-direction", choices=("up", "any"), default="up",
                   help="up (default): genes ordered by score signed by their association with the predicted "
                        "protein (sets of genes that rise with it at the top); any: the ranking as it is")
    p.add_argument("--output-dir", help="default: <checkpoint's run dir>/saliency")
    p.add_argument("--output-h5ad", help="also write a copy of the input with varm['saliency'] and uns['saliency']")
    p.add_argument("--overwrite", action="store_true",
                   help="replace earlier saliency results in --output-dir / --output-h5ad (default: refuse)")
    add_verbose(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; a data problem ends in one clear line and exit status 2."""
    args = _parser().parse_args(argv)
    return run_cli(lambda: _run(args), verbose=args.verbose)


def _csv(frame, path: Path) -> None:
    """A table written whole, then renamed into place (crossmodalnet/utils/atomic.py)."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _default_dir(checkpoint: Path) -> Path:
    """``<run dir>/saliency`` for a run dir, a file in its ``checkpoints/`` or ``model/`` folder, or that folder."""
    folder = checkpoint if checkpoint.is_dir() else checkpoint.parent
    if folder.name in ("checkpoints", "model") and (folder.parent / "config.yaml").is_file():
        folder = folder.parent
    elif folder.name == "checkpoints" and not checkpoint.is_dir():
        folder = folder.parent
    return folder / "saliency"


def _run(args) -> int:
    inp = Path(args.input).expanduser()  # the arguments first: a wrong path fails before torch is imported
    if not inp.is_file():
        raise DataError(f"input file not found: {inp}")
    if not Path(args.checkpoint).expanduser().exists():
        raise DataError(f"--checkpoint not found: {args.checkpoint} (a run dir or a .ckpt)")
    from crossmodalnet.inference.predict import load_model
    from crossmodalnet.interpret.saliency import saliency
    from crossmodalnet.reporting import figures as plots

    if args.output_h5ad and Path(args.output_h5ad).expanduser().resolve() == inp.resolve():
        raise DataError(f"--output-h5ad {args.output_h5ad} is the input file; write to a new file")
    ckpt = Path(args.checkpoint).expanduser()
    from crossmodalnet.training.rundir import check_output

    out = Path(args.output_dir).expanduser() if args.output_dir else _default_dir(ckpt)
    check_output(out / "saliency.csv", args.overwrite)  # earlier results are never replaced silently
    if args.output_h5ad:
        check_output(args.output_h5ad, args.overwrite)
    model = load_model(ckpt)
    from crossmodalnet.data.query import read_query

    # .h5ad or .h5mu, through the same reader as training and predict; an .h5ad stays on disk (backed) and is
    # read batch by batch (in memory only to write --output-h5ad)
    adata = read_query(inp, rna_mod=args.rna_mod, backed=not args.output_h5ad, default_protein_keys=()).rna
    try:
        result = saliency(model, adata, args.protein, time=args.time, time_key=args.time_key,
                          time_mode=args.time_mode, batch_size=args.batch_size, layer=args.layer,
                          max_cells=args.max_cells, where=str(inp), method=args.method,
                          high_cells=args.high_cells, protein_values=args.protein_key, n_boot=args.bootstrap,
                          rank_by=args.rank_by, null=args.null)
        sim = dict(adata.uns.get("simulation", {}))
    finally:
        if adata.isbacked:
            adata.file.close()
    out.mkdir(parents=True, exist_ok=True)
    _csv(result.to_long(args.rank_by), out / "saliency.csv")
    top = pd.concat([result.top(p, args.top) for p in result.proteins], ignore_index=True)
    _csv(top, out / "top_genes.csv")
    _csv(result.unranked, out / "unranked.csv")
    shown_cols = [c for c in ("protein", "rank", "gene", "score", "rank_lo", "rank_hi", "association")
                  if c in top.columns]
    with pd.option_context("display.width", 120, "display.max_rows", 60):
        print(top[shown_cols].to_string(index=False))
    if args.bootstrap:
        print(f"rank_lo-rank_hi: 90% interval of the gene's rank over {args.bootstrap} bootstrap samples of the "
              "cells; association: r with the predicted protein (+ up, - down where it is high)")
    coding_missing = result.unranked[result.unranked["protein"] != ""]
    for r in coding_missing.itertuples():
        print(f"not ranked: {r.gene} ({r.reason})")
    if len(result.unranked) > len(coding_missing):
        print(f"{len(result.unranked) - len(coding_missing)} genes of the input could not be ranked "
              f"(reasons in {out / 'unranked.csv'})")
    for note in result.notes:
        print(f"note: {note}")
    mean_expr = result.meta["mean_expression"]
    coding = dict(zip(map(str, sim.get("protein_names", [])), map(str, sim.get("coding_gene", []))))
    from crossmodalnet.interpret.coding_genes import coding_genes

    table_genes = coding_genes(result.proteins)    # real proteins: their coding genes from the curated table
    from crossmodalnet.utils.progress import progress

    shown = result.proteins[:20]  # figures for at most 20 proteins; the tables hold all
    for protein in progress(shown, len(shown), "figures and GSEA per protein", show=bool(args.gmt)):
        tag = _safe(protein)
        plots.plot_saliency_top(result, protein, out / f"saliency_top_{tag}.png", args.top)
        known = (coding[protein],) if protein in coding else table_genes.get(protein, (protein,))
        highlight = [g for g in known if g in mean_expr.index]
        plots.plot_expression_vs_saliency(result, mean_expr, protein, out / f"expression_vs_saliency_{tag}.png",
                                          args.top, None, highlight)
        if args.gmt:
            _gsea(result, protein, args, out / f"gsea_{tag}")
    if args.output_h5ad:
        result.add_to(adata, k=args.top)
        with atomic_path(Path(args.output_h5ad).expanduser()) as tmp:  # written whole, then renamed
            adata.write_h5ad(tmp)
    print(f"saliency ({args.method}) of {len(result.proteins)} proteins over {result.n_cells} cells written to "
          f"{out}")
    return 0


def _gsea(result, protein: str, args, stem: Path) -> None:
    from crossmodalnet.reporting import figures as plots
    from crossmodalnet.interpret.gsea import saliency_gsea

    res = saliency_gsea(result, protein, args.gmt, direction=args.gsea_direction, top=args.gsea_top,
                        permutation_num=args.gsea_permutations, min_size=3 if args.gsea_top else 5)
    _csv(res.table, Path(f"{stem}.csv"))
    plots.plot_gsea_running_score(res, res.table["term"].iloc[0], f"{stem}.png", protein=protein)
    print(f"GSEA {protein}: top set {res.table['term'].iloc[0]!r} (NES {res.table['nes'].iloc[0]:.2f}, "
          f"FDR {res.table['fdr'].iloc[0]:.3g})")


if __name__ == "__main__":
    sys.exit(main())
