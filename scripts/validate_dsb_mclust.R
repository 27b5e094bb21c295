# Reference dsb computed with R's mclust (and limma), for scripts/validate_dsb_mclust.py.
#
# The R package dsb is not packaged for Debian, so this re-states its two entry points from their source
# (MattPM/dsb, R/dsb.r: DSBNormalizeProtein and ModelNegativeADTnorm) with the same calls:
#   step I  with empty droplets:    (log(x + 10) - mean(log(empty + 10))) / sd(log(empty + 10)) per protein
#   step I  without empty droplets: log(x + 1) - Mclust(G = 2)$parameters$mean[1] per protein (across cells);
#                                   a protein whose mixture cannot be fitted (Mclust returns NULL) is left uncentred
#   step II: per cell Mclust(G = 2)$parameters$mean[1] over the cell's proteins; with isotype controls the first
#            principal component of prcomp(t(rbind(isotypes, background)), scale = TRUE); regressed out with
#            limma::removeBatchEffect(norm, covariates = noise).
# Mclust is called exactly as dsb calls it: Mclust(x, G = 2, warn = FALSE, verbose = FALSE), i.e. models "E" and
# "V" chosen by BIC; a singular fit gets BIC NA and is never chosen.
#
# Usage: Rscript scripts/validate_dsb_mclust.R IN_DIR OUT_DIR
#   IN_DIR holds cells.tsv and empty.tsv (proteins x droplets, raw counts, header = droplet names, first column =
#   protein names) and isotypes.txt (one name a line). Writes TSVs to OUT_DIR.
suppressPackageStartupMessages({
  library(mclust)
  library(limma)
})

args <- commandArgs(trailingOnly = TRUE)
if (length(args) != 2) stop("usage: Rscript validate_dsb_mclust.R IN_DIR OUT_DIR")
in_dir <- args[1]
out_dir <- args[2]
set.seed(1)

read_counts <- function(path) {
  m <- read.delim(path, row.names = 1, check.names = FALSE)
  as.matrix(m)
}
cells <- read_counts(file.path(in_dir, "cells.tsv"))
empty <- read_counts(file.path(in_dir, "empty.tsv"))
isotypes <- readLines(file.path(in_dir, "isotypes.txt"))

fit_table <- function(x_by_row) {
  # one Mclust(G = 2) per row; model chosen, both BICs (NA = singular), lower-component parameters
  res <- t(apply(x_by_row, 1, function(x) {
    g <- mclust::Mclust(x, G = 2, warn = FALSE, verbose = FALSE)
    if (is.null(g)) return(c(NA, NA, NA, NA, NA, NA, NA, NA))
    b <- g$BIC
    s <- g$parameters$variance$sigmasq
    if (length(s) == 1) s <- c(s, s)
    c(if (g$modelName == "E") 0 else 1, b[1, "E"], b[1, "V"], g$parameters$mean[1], g$parameters$mean[2],
      s[1], s[2], g$parameters$pro[1])
  }))
  colnames(res) <- c("model_V", "bic_E", "bic_V", "mean1", "mean2", "var1", "var2", "pro1")
  data.frame(name = rownames(x_by_row), res, check.names = FALSE)
}

write_tsv <- function(x, name) {
  write.table(x, file.path(out_dir, name), sep = "\t", quote = FALSE, row.names = TRUE, col.names = NA)
}

step_two <- function(norm_adt, cell_fits, use_isotypes) {
  background <- cell_fits$mean1
  if (use_isotypes) {
    noise_matrix <- rbind(norm_adt[isotypes, ], background)
    noise <- stats::prcomp(t(noise_matrix), scale = TRUE)$x[, 1]
  } else {
    noise <- background
  }
  limma::removeBatchEffect(norm_adt, covariates = noise)
}

timing <- list()

# --- with empty droplets (DSBNormalizeProtein) -----------------------------------------------------------------
t0 <- proc.time()[["elapsed"]]
adt_log <- log(cells + 10)
empty_log <- log(empty[rownames(cells), ] + 10)
mu_u <- apply(empty_log, 1, mean)
sd_u <- apply(empty_log, 1, sd)
norm_empty <- apply(adt_log, 2, function(x) (x - mu_u) / sd_u)
cell_fits_empty <- fit_table(t(norm_empty))
write.table(cell_fits_empty, file.path(out_dir, "cell_fits_empty.tsv"), sep = "\t", quote = FALSE, row.names = FALSE)
write_tsv(step_two(norm_empty, cell_fits_empty, TRUE), "dsb_empty_iso.tsv")
write_tsv(step_two(norm_empty, cell_fits_empty, FALSE), "dsb_empty_noiso.tsv")
timing$empty <- proc.time()[["elapsed"]] - t0

# --- without empty droplets (ModelNegativeADTnorm) -------------------------------------------------------------
# Across cells each protein has more than 2,000 values, so Mclust starts from a random subset: run the mode as
# dsb does (seed 1), again with another seed (R against itself), and started from all values (deterministic).
adt_log1 <- log(cells + 1)
model_negative <- function(tag, seed, subset) {
  set.seed(seed)
  subset_default <- mclust.options("subset")
  mclust.options(subset = subset)
  protein_fits <- fit_table(adt_log1)
  mclust.options(subset = subset_default)
  write.table(protein_fits, file.path(out_dir, paste0("protein_fits", tag, ".tsv")), sep = "\t", quote = FALSE,
              row.names = FALSE)
  mu1 <- ifelse(is.na(protein_fits$mean1), 0, protein_fits$mean1)  # no fit: left uncentred, as dsb does
  norm_noempty <- apply(adt_log1, 2, function(x) x - mu1)
  rownames(norm_noempty) <- rownames(cells)
  cell_fits_noempty <- fit_table(t(norm_noempty))
  if (tag == "") {
    write_tsv(norm_noempty, "norm_noempty.tsv")
    write.table(cell_fits_noempty, file.path(out_dir, "cell_fits_noempty.tsv"), sep = "\t", quote = FALSE,
                row.names = FALSE)
  }
  write_tsv(step_two(norm_noempty, cell_fits_noempty, TRUE), paste0("dsb_noempty_iso", tag, ".tsv"))
  write_tsv(step_two(norm_noempty, cell_fits_noempty, FALSE), paste0("dsb_noempty_noiso", tag, ".tsv"))
}
t0 <- proc.time()[["elapsed"]]
model_negative("", 1, subset_default <- mclust.options("subset"))
timing$noempty <- proc.time()[["elapsed"]] - t0
model_negative("_seed2", 2, mclust.options("subset"))
model_negative("_fullinit", 1, Inf)

writeLines(c(paste("mclust", as.character(packageVersion("mclust"))),
             paste("limma", as.character(packageVersion("limma"))),
             paste("R", R.version.string),
             sprintf("seconds_empty %.1f", timing$empty), sprintf("seconds_noempty %.1f", timing$noempty)),
           file.path(out_dir, "versions.txt"))
