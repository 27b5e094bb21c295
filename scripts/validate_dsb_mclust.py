"""Cross-check crossmodalnet's dsb (both modes) and its 2-component mixture against R's mclust.

    python scripts/validate_dsb_mclust.py                      # dsb's PBMC example in ../shared/data/dsb_pbmc_adt
    python scripts/validate_dsb_mclust.py --r-out /tmp/dsb_r   # reuse (or keep) R's results
    python scripts/validate_dsb_mclust.py --muon               # also muon.prot.pp.dsb against R
    python scripts/validate_dsb_mclust.py --write-test-reference tests/data/mclust_dsb_pbmc.csv

Needs R with mclust and limma (Debian: ``apt-get install r-base-core r-cran-mclust r-bioc-limma``); not a CI
dependency. ``scripts/validate_dsb_mclust.R`` states dsb's two entry points (DSBNormalizeProtein,
ModelNegativeADTnorm) with mclust and limma called exactly as the dsb package calls them; this script runs it,
runs crossmodalnet.data.dsb on the same counts, and prints the agreement as numbers:

* the mixture step on identical inputs: per-protein fits across cells (ModelNegativeADTnorm's step I) and
  per-cell fits across proteins (step II, on R's own step-I matrix): fraction where the same model ("E" equal or
  "V" unequal variances) is selected, how many fits have a collapsed (zero-variance) component, correlation and
  largest difference of the lower component's mean, BIC differences;
* the final dsb values in both modes, with and without isotype controls: Pearson r over all values, mean and
  99th percentile of |difference|, and the smallest per-protein r.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from crossmodalnet.data.dsb import DSB, two_component_mixture  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "dsb_pbmc_adt"
ISOTYPES = ["MouseIgG1kappaisotype_PROT", "MouseIgG2akappaisotype_PROT", "Mouse IgG2bkIsotype_PROT",
            "RatIgG2bkIsotype_PROT"]


def _frame(path: Path) -> pd.DataFrame:
    a = ad.read_h5ad(path)
    x = a.X.toarray() if hasattr(a.X, "toarray") else np.asarray(a.X)
    return pd.DataFrame(x, index=a.obs_names.astype(str), columns=a.var_names.astype(str))


def run_r(cells: pd.DataFrame, empty: pd.DataFrame, out: Path) -> None:
    """Write the counts for R and run the reference script (a few minutes: one Mclust per cell and mode)."""
    if shutil.which("Rscript") is None:
        sys.exit("error: Rscript not found; install R with mclust and limma (apt-get install r-base-core "
                 "r-cran-mclust r-bioc-limma)")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # distinct droplet names: the R matrices are indexed by name
        cells.set_axis([f"c{i}" for i in range(len(cells))]).T.astype(int).to_csv(tmp / "cells.tsv", sep="\t")
        empty.set_axis([f"e{i}" for i in range(len(empty))]).T.astype(int).to_csv(tmp / "empty.tsv", sep="\t")
        (tmp / "isotypes.txt").write_text("\n".join(ISOTYPES) + "\n")
        subprocess.run(["Rscript", str(REPO / "scripts" / "validate_dsb_mclust.R"), str(tmp), str(out)], check=True)


def _read_matrix(path: Path) -> np.ndarray:
    """R's proteins x cells matrix as cells x proteins."""
    return pd.read_csv(path, sep="\t", index_col=0).to_numpy().T


def mixture_agreement(ours: dict[str, np.ndarray], ref: pd.DataFrame, data: np.ndarray) -> dict[str, float]:
    """Agreement of our mixture fits with mclust's on the same rows."""
    ref_ok = ref["model_V"].notna().to_numpy()
    our_v = ours["model"] == 1
    ref_v = ref["model_V"].to_numpy() == 1
    scale = data.var(1)
    our_spike = ours["variances"].min(1) <= 1e-6 * scale
    ref_spike = np.nan_to_num(ref[["var1", "var2"]].min(1).to_numpy(), nan=0.0) <= 1e-6 * scale
    # BIC on our scale (-2 loglik + p log n); mclust reports 2 loglik - p log n
    ref_bic = -ref[["bic_E", "bic_V"]].max(1).to_numpy()
    m_ours, m_ref = ours["means"][ref_ok, 0], ref["mean1"].to_numpy()[ref_ok]
    return {
        "rows": int(len(ref)),
        "mclust_failed": int((~ref_ok).sum()),
        "mclust_V_singular": int((ref["bic_V"].isna() & ref["bic_E"].notna()).sum()),
        "same_model": float((our_v == ref_v)[ref_ok].mean()),
        "ours_V": int(our_v.sum()), "mclust_V": int(ref_v.sum()),
        "ours_spike_components": int(our_spike.sum()), "mclust_spike_components": int(ref_spike.sum()),
        "r_lower_mean": float(np.corrcoef(m_ours, m_ref)[0, 1]),
        "max_abs_diff_lower_mean": float(np.abs(m_ours - m_ref).max()),
        "frac_lower_mean_within_1e-3": float((np.abs(m_ours - m_ref) <= 1e-3).mean()),
        "median_bic_ours_minus_mclust": float(np.median(ours["bic"][ref_ok] - ref_bic[ref_ok])),
        "max_bic_ours_minus_mclust": float((ours["bic"][ref_ok] - ref_bic[ref_ok]).max()),
    }


def value_agreement(ours: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    diff = np.abs(ours - ref)
    per_protein = [np.corrcoef(ours[:, j], ref[:, j])[0, 1] for j in range(ours.shape[1])]
    return {"r": float(np.corrcoef(ours.ravel(), ref.ravel())[0, 1]), "mean_abs_diff": float(diff.mean()),
            "p99_abs_diff": float(np.quantile(diff, 0.99)), "max_abs_diff": float(diff.max()),
            "min_per_protein_r": float(np.nanmin(per_protein))}


def _muon_dsb(cells: pd.DataFrame, empty: pd.DataFrame, isotypes: list[str] | None) -> np.ndarray:
    """muon's dsb (scikit-learn mixtures, noise matrix not standardised) on the same counts."""
    import warnings

    import muon as mu
    var = pd.DataFrame(index=cells.columns)
    a = ad.AnnData(cells.to_numpy(), obs=pd.DataFrame(index=cells.index), var=var)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # muon drops "empty droplets" whose names are also cell names
        mu.prot.pp.dsb(a, ad.AnnData(empty.to_numpy(), obs=pd.DataFrame(index=[f"e{i}" for i in range(len(empty))]),
                                     var=var), isotype_controls=isotypes, random_state=0)
    return np.asarray(a.X, dtype=np.float64)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with cells.h5ad, empty_droplets.h5ad")
    p.add_argument("--r-out", type=Path, default=None,
                   help="folder for R's results; reused when it already holds them (default: a temporary folder)")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    p.add_argument("--muon", action="store_true",
                   help="also compare muon.prot.pp.dsb (with empty droplets; dev extra) with R (a few minutes)")
    p.add_argument("--write-test-reference", type=Path, default=None, metavar="CSV",
                   help="write mclust's deterministic fits used by tests/test_dsb.py (tests/data/"
                        "mclust_dsb_pbmc.csv): per protein across cells (started from all values) and per cell "
                        "(first 300 cells, with empty droplets)")
    args = p.parse_args()
    for name in ("cells.h5ad", "empty_droplets.h5ad"):
        if not (args.data / name).exists():
            sys.exit(f"error: {args.data / name} not found")
    cells, empty = _frame(args.data / "cells.h5ad"), _frame(args.data / "empty_droplets.h5ad")
    empty = empty[cells.columns]

    r_out = args.r_out or Path(tempfile.mkdtemp(prefix="dsb_mclust_"))
    if not (r_out / "versions.txt").exists():
        t0 = time.perf_counter()
        run_r(cells, empty, r_out)
        print(f"R reference: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    versions = (r_out / "versions.txt").read_text().splitlines()

    results: dict[str, dict] = {"versions": dict(v.split(" ", 1) for v in versions)}
    counts = cells.to_numpy(np.float64)
    # mixture step on identical inputs
    log1 = np.log1p(counts).T
    results["mixture_protein_step1_noempty"] = mixture_agreement(
        two_component_mixture(log1), pd.read_csv(r_out / "protein_fits.tsv", sep="\t"), log1)
    if (r_out / "protein_fits_fullinit.tsv").exists():
        results["mixture_protein_step1_noempty_fullinit"] = mixture_agreement(
            two_component_mixture(log1), pd.read_csv(r_out / "protein_fits_fullinit.tsv", sep="\t"), log1)
    norm_empty = (np.log(counts + 10) - np.log(empty.to_numpy(np.float64) + 10).mean(0)) \
        / np.log(empty.to_numpy(np.float64) + 10).std(0, ddof=1)
    results["mixture_cell_step2_empty"] = mixture_agreement(
        two_component_mixture(norm_empty), pd.read_csv(r_out / "cell_fits_empty.tsv", sep="\t"), norm_empty)
    norm_noempty_r = _read_matrix(r_out / "norm_noempty.tsv")
    results["mixture_cell_step2_noempty"] = mixture_agreement(
        two_component_mixture(norm_noempty_r), pd.read_csv(r_out / "cell_fits_noempty.tsv", sep="\t"),
        norm_noempty_r)
    # whole dsb, each mode, with and without isotype controls
    timings = {}
    for mode, e in (("empty", empty), ("noempty", None)):
        for iso in ("iso", "noiso"):
            t0 = time.perf_counter()
            ours = DSB(isotype_controls=ISOTYPES if iso == "iso" else None).fit_transform(cells, e).to_numpy()
            timings[f"{mode}_{iso}"] = time.perf_counter() - t0
            ref = _read_matrix(r_out / f"dsb_{mode}_{iso}.tsv")
            results[f"dsb_{mode}_{iso}"] = value_agreement(ours.astype(np.float64), ref)
            if mode == "noempty":  # R against R (another random start), and R started from all values
                for tag in ("seed2", "fullinit"):
                    other = _read_matrix(r_out / f"dsb_{mode}_{iso}_{tag}.tsv")
                    results[f"dsb_{mode}_{iso}_{tag}"] = value_agreement(ours.astype(np.float64), other)
                    if tag == "seed2":
                        results[f"dsb_{mode}_{iso}_R_seed1_vs_R_seed2"] = value_agreement(ref, other)
    results["seconds_ours"] = timings

    for key, val in results.items():
        if isinstance(val, dict):
            print(f"{key}: " + ", ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}"
                                         for k, v in val.items()))
    if args.muon:
        for iso in ("iso", "noiso"):
            results[f"muon_vs_R_empty_{iso}"] = value_agreement(
                _muon_dsb(cells, empty, ISOTYPES if iso == "iso" else None),
                _read_matrix(r_out / f"dsb_empty_{iso}.tsv"))
            print(f"muon_vs_R_empty_{iso}: " + ", ".join(f"{k}={v:.5g}"
                                                       for k, v in results[f"muon_vs_R_empty_{iso}"].items()))
    if args.write_test_reference:
        proteins = pd.read_csv(r_out / "protein_fits_fullinit.tsv", sep="\t").assign(
            kind="protein_log1p", name=list(cells.columns))
        per_cell = pd.read_csv(r_out / "cell_fits_empty.tsv", sep="\t").iloc[:300].assign(
            kind="cell_empty", name=list(cells.index[:300]))
        cols = ["kind", "name", "model_V", "mean1", "bic_E", "bic_V"]
        pd.concat([proteins[cols], per_cell[cols]]).to_csv(args.write_test_reference, index=False,
                                                          float_format="%.10g")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
