"""``crossmodalnet-predict``: predict surface proteins for a new file with a trained model, score them against
measured proteins when the file has them, and draw the figures. The library behind it is
:mod:`crossmodalnet.inference.predict`."""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

from crossmodalnet.cli.common import add_verbose, run_cli
from crossmodalnet.errors import DataError
from crossmodalnet.inference.predict import NORMALIZE, TIME_MODES, defaults, load_model
from crossmodalnet.utils.lazy import lazy

ad = lazy("anndata")
pd = lazy("pandas")
sp = lazy("scipy.sparse")


def _parser() -> argparse.ArgumentParser:
    d = defaults()
    p = argparse.ArgumentParser(prog="crossmodalnet-predict",
                                description="Predict surface proteins for new scRNA-seq with a trained checkpoint.")
    p.add_argument("--checkpoint", required=True,
                   help="the model: a run dir, a Lightning .ckpt or a baseline's .joblib written by train()")
    p.add_argument("--input", required=True,
                   help=".h5ad (genes in X, or raw counts in layers['counts']) or .h5mu (the --rna-mod modality)")
    p.add_argument("--output", required=True,
                   help=".h5ad: cells x predicted proteins (the input's obs/obsm kept); .h5mu: a MuData with the "
                        "input's modalities and 'prot_pred'")
    p.add_argument("--add-to-input", action="store_true",
                   help="write the input AnnData with the predictions in obsm['protein_predicted'] instead")
    p.add_argument("--rna-mod", default="rna", help=".h5mu input: the RNA modality")
    p.add_argument("--protein-mod", default="prot", help=".h5mu input: measured proteins, scored when present")
    p.add_argument("--protein-key", help="obsm key of measured proteins to score against (default: 'protein' or "
                                          "'protein_expression' when present)")
    p.add_argument("--protein-names-key", help="uns key with the protein names when --protein-key is an array")
    p.add_argument("--protein-table", help="CSV/TSV of measured proteins (cells x proteins, barcode first)")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--time", help="one time for every cell (an unseen time between learned ones is interpolated)")
    when.add_argument("--time-key", help="obs column with each cell's time")
    p.add_argument("--time-mode", choices=TIME_MODES, default=d["time_mode"])
    p.add_argument("--outside-range", choices=("nearest", "error"), default=d["outside_range"],
                   help="a time outside the learned range: use the nearest learned time (warns) or fail")
    p.add_argument("--layer", help="read genes from this layer instead of X")
    p.add_argument("--normalize", choices=NORMALIZE, help="override the checkpoint's RNA normalisation")
    p.add_argument("--min-shared-genes", type=float, default=d["min_shared_genes"],
                   help="fraction (<=1) or number of the checkpoint's genes the input must have")
    p.add_argument("--batch-size", type=int, default=d["batch_size"])
    p.add_argument("--interval", type=float, metavar="LEVEL",
                   help="add split-conformal prediction intervals at this nominal coverage (e.g. 0.9) as "
                        "layers 'lower' and 'upper'")
    p.add_argument("--plots-dir", help="where figures go (default: <output dir>/<output stem>_plots); 'none' = off")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --output file and figures (default: refuse)")
    add_verbose(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """``crossmodalnet-predict``: a data problem ends in one clear line and exit status 2."""
    args = _parser().parse_args(argv)
    return run_cli(lambda: _run(args), verbose=args.verbose)


def _run(args) -> int:
    inp, outp = Path(args.input).expanduser(), Path(args.output).expanduser()
    if not inp.is_file():
        raise DataError(f"input file not found: {inp}")
    if outp.resolve() == inp.resolve():
        raise DataError(f"--output {outp} is the input file; write predictions to a new file")
    if not Path(args.checkpoint).expanduser().exists():
        raise DataError(f"--checkpoint not found: {args.checkpoint} (a run dir, a .ckpt or a baseline's .joblib)")
    if outp.suffix not in (".h5ad", ".h5mu"):
        raise DataError(f"--output must end in .h5ad or .h5mu, got {outp.name}")
    from crossmodalnet.training.rundir import check_output

    check_output(outp, args.overwrite)  # earlier predictions are never replaced silently
    if args.plots_dir is None or args.plots_dir.lower() != "none":
        check_output(args.plots_dir or outp.parent / f"{outp.stem}_plots", args.overwrite)
    from crossmodalnet.data.query import read_query
    from crossmodalnet.inference.outputs import predict_query, write_prediction, write_scores

    model = load_model(args.checkpoint)
    # one reader for every input form; an .h5ad stays on disk (backed) unless the input itself is written out
    query = read_query(inp, protein_key=args.protein_key, protein_names_key=args.protein_names_key,
                       protein_table=args.protein_table, rna_mod=args.rna_mod, protein_mod=args.protein_mod,
                       backed=not (args.add_to_input or outp.suffix == ".h5mu"),
                       default_protein_keys=_protein_keys(model))
    try:
        pred, scores = predict_query(model, query, time=args.time, time_key=args.time_key,
                                     time_mode=args.time_mode, outside_range=args.outside_range,
                                     batch_size=args.batch_size, layer=args.layer, normalize=args.normalize,
                                     min_shared=args.min_shared_genes, interval=args.interval)
        plots = args.plots_dir or str(outp.parent / f"{outp.stem}_plots")
        scored = (pd.DataFrame(pred.layers["measured"], index=pred.obs_names, columns=pred.var_names)
                  .dropna(axis=1, how="all") if "measured" in pred.layers else query.proteins)  # on the model's scale
        measured = _measured(scored, pred) if plots.lower() != "none" else None
        coding = _coding_expression(model, query.rna, pred) if measured is not None else {}
        what = write_prediction(pred, query, outp, into_input=args.add_to_input)
    finally:
        query.close()
    print(f"wrote {what} to {outp}")
    if scores is not None:
        path = write_scores(scores, outp)
        print(f"scored against the measured proteins ({scores['n_proteins']} shared, {scores['n_cells']} cells): "
              f"per-cell Pearson {scores['pearson_cell']:.3f}, per-protein Pearson {scores['pearson_protein']:.3f}, "
              f"MSE {scores['mse']:.4g} -> {path}")
        print(f"measured values: {scores['note']}")
    if plots.lower() != "none":
        for path in _write_figures(model, pred, measured, coding, Path(plots), inp):
            print(f"figure: {path}")
    return 0


def _protein_keys(model) -> tuple[str, ...]:
    """obsm keys tried for measured proteins: the training run's protein_key first, then the usual ones."""
    key = (getattr(model, "preprocessing", None) or {}).get("protein_key")
    return tuple(dict.fromkeys([k for k in (key, "protein", "protein_expression") if k]))


def _measured(prot: pd.DataFrame | None, pred: ad.AnnData) -> pd.DataFrame | None:
    """Measured proteins of the input, when it has them (for a measured-vs-predicted figure)."""
    if not isinstance(prot, pd.DataFrame):
        return None
    shared = [p for p in pred.var_names if p in prot.columns]
    return prot[shared] if shared else None


def _coding_expression(model, adata: ad.AnnData, pred: ad.AnnData) -> dict[str, np.ndarray]:
    """Expression of a protein's coding gene where one can be named (simulator ground truth or same name)."""
    sim = adata.uns.get("simulation", {}) if hasattr(adata, "uns") else {}
    pairs = dict(zip(map(str, sim.get("protein_names", [])), map(str, sim.get("coding_gene", []))))
    genes = pd.Index(adata.var_names.astype(str))
    out = {}
    for protein in pred.var_names[:1]:  # one figure: the first protein
        gene = pairs.get(protein, protein)
        if gene in genes:
            col = adata[:, gene].X
            col = col.toarray() if sp.issparse(col) else np.asarray(col)
            out[protein] = (gene, np.asarray(col, dtype=np.float32).ravel())
    return out


def _training_cells(model, inp: Path | None) -> set[str]:
    """Names of the cells the model was trained on when ``inp`` is a file its training read (a path in the run
    dir's config.yaml ``data.source``), from the run dir's ``split.csv``; else none (barcodes repeat across
    files, so names alone do not identify training cells)."""
    path = getattr(model, "checkpoint_path", None) or getattr(model, "model_path", None)
    if not path or inp is None:
        return set()
    for folder in (Path(path).parent, Path(path).parent.parent):
        split, config = folder / "split.csv", folder / "config.yaml"
        if not (split.is_file() and config.is_file()):
            continue
        from omegaconf import OmegaConf

        try:
            source = OmegaConf.to_container(OmegaConf.load(config).data.source, resolve=False)
        except Exception:  # an unreadable or unresolvable config: cannot tell, keep every cell
            return set()
        values = [str(v) for v in source.values() if isinstance(v, str)]
        roots = [Path(v).expanduser() for v in values if Path(v).expanduser().is_dir()]
        files = {Path(v).expanduser().resolve() for v in values}
        files |= {(r / v).resolve() for r in roots for v in values}
        if inp.resolve() not in files:
            return set()
        table = pd.read_csv(split, dtype=str)
        if {"cell", "split"} <= set(table.columns):
            return set(table.loc[table["split"] == "train", "cell"])
    return set()


def _write_figures(model, pred: ad.AnnData, measured, coding, outdir: Path, inp: Path | None = None) -> list[Path]:
    """With measured proteins in the input: measured vs predicted (best-predicted protein, y = x, coloured by
    the prediction time and a cell-type column), per-protein Pearson and accuracy by time, on the input's cells
    that the model was *not* trained on. (The time embedding is the model's, drawn once at training.)"""
    from crossmodalnet.reporting import figures as plots
    from crossmodalnet.reporting.annotations import cell_type_column
    from crossmodalnet.reporting.metrics import pearson_per_cell, pearson_per_protein

    if measured is None:
        return []
    names = pd.Index(pred.obs_names.astype(str))
    keep = ~names.isin(list(_training_cells(model, inp)))
    n_train = int((~keep).sum())
    if keep.sum() < 3:
        print(f"no figures: {n_train} of the input's {len(names)} cells were used to train this model")
        return []
    cells = "input cells" if not n_train else f"input cells not used in training ({n_train:,} training cells left out)"
    proteins = list(measured.columns)
    y = measured.to_numpy(dtype=np.float64)[keep]
    yhat = np.asarray(pred[:, proteins].X, dtype=np.float64)[keep]
    r = pd.Series(pearson_per_protein(yhat, y), index=proteins)
    j = int(np.argmax(np.nan_to_num(r.to_numpy(), nan=-1.0)))
    protein = proteins[j]
    gene, expr = coding.get(protein, (None, None))
    obs = pred.obs.loc[keep]
    times = obs["prediction_time"].to_numpy() if "prediction_time" in obs else None
    if times is not None and len(pd.unique(times)) < 2:
        times = None
    ct = cell_type_column(obs)
    name = str(getattr(model, "name", "") or type(model).__name__)  # a baseline's own name, e.g. "ridge"
    outdir.mkdir(parents=True, exist_ok=True)
    written = [plots.plot_measured_vs_predicted(
        y[:, j], yhat[:, j], protein, outdir / f"predicted_{re.sub(r'[^A-Za-z0-9_.-]+', '_', str(protein))}.png",
        gene_expression=None if expr is None else np.asarray(expr)[keep], gene=gene, time=times,
        time_label="prediction time", cell_type=None if ct is None else obs[ct].to_numpy(),
        cell_type_label=ct or "cell type", cells=cells, model_name=name,
        scale=plots.value_scale(getattr(model, "preprocessing", None)))]
    if len(proteins) > 1:  # the most variable measured proteins, on the training scale, with intervals if any
        frame = lambda values: pd.DataFrame(values, columns=proteins)  # noqa: E731
        interval = "lower" in pred.layers and "upper" in pred.layers
        written.append(plots.plot_measured_vs_predicted_grid(
            frame(y), frame(yhat), outdir / "measured_vs_predicted_grid.png",
            scale=plots.value_scale(getattr(model, "preprocessing", None)), cells=cells, model_name=name,
            lower=frame(np.asarray(pred[:, proteins].layers["lower"], dtype=np.float64)[keep]) if interval else None,
            upper=frame(np.asarray(pred[:, proteins].layers["upper"], dtype=np.float64)[keep]) if interval else None,
            level=(pred.uns.get("crossmodalnet", {}).get("interval") or {}).get("level")))
    if len(proteins) > 1 and r.notna().any():
        written.append(plots.plot_pearson_per_protein(r, outdir / "pearson_per_protein.png", cells, name))
    if times is not None:
        per_cell = pd.DataFrame({"time": times, "pearson_cell": pearson_per_cell(yhat, y)})
        written.append(plots.plot_accuracy_by_time(per_cell, outdir / "accuracy_by_time.png", "prediction time",
                                                   cells=cells, model_name=name))
    return written


if __name__ == "__main__":
    sys.exit(main())
