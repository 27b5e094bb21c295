"""How much of the time point the basal latent z still carries: the paper's claim that z is time-invariant, measured.

Two readouts, each beside its chance level:
- the model's own discriminator on the latents of a split (accuracy and cross-entropy);
- a fresh probe: a logistic regression trained on the *training* latents and scored on the split. The trained
  discriminator only has to be fooled; a probe fitted afterwards shows whether the time is really gone from z. The
  same probe on the genes (first 50 SVD components) says how much time the input itself carries, so a reader can
  tell "z hides the time" from "the data never showed it". On the simulator, the probe on the cells' true basal
  state (pseudotime, lineage) is the floor: the part of the time that is biology, not batch effect.
Chance: the accuracy of always answering the training split's most frequent time, and the cross-entropy of the
training prior on the split's labels (log c for balanced times).
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import torch

log = logging.getLogger("crossmodalnet")
INPUT_PROBE_COMPONENTS = 50
PROBE_MAX_TRAIN_CELLS = 3000  # training cells the fresh probes are fitted on (seeded subset)


def encode_split(model, dm, split: str) -> tuple[torch.Tensor, np.ndarray]:
    """Latents z of a split (eval mode) and each cell's time index (-1 for a time the model did not learn)."""
    model.eval()
    zs = []
    with torch.inference_mode():
        for batch in dm.loader(dm.datasets[split], shuffle=False):
            zs.append(model.network.encode(batch["x"]))
    z = torch.cat(zs) if zs else torch.zeros(0, 1)
    return z, dm.datasets[split].time_index.numpy()


def _chance(train_index: np.ndarray, index: np.ndarray, n_times: int) -> dict[str, float]:
    prior = np.bincount(train_index[train_index >= 0], minlength=n_times).astype(np.float64)
    prior /= prior.sum()
    return {"chance_accuracy": float(np.mean(index == np.argmax(prior))),
            "chance_ce": float(-np.mean(np.log(np.clip(prior[index], 1e-12, None))))}


def _fit_probe(train_x: np.ndarray, train_y: np.ndarray, seed: int):
    """A standardised logistic regression on at most ``PROBE_MAX_TRAIN_CELLS`` training cells (seeded subset).

    Fitted once and scored on every split: it is a diagnostic, and a few thousand cells pin a linear readout of
    a handful of time points as well as all of them do (at 8,000 cells x 512 latents the full fit took 1.6 s, four
    times per run)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rows = _probe_rows(len(train_y), seed)
    if np.unique(train_y[rows]).size < np.unique(train_y).size:  # a rare time missed by the subset: use every cell
        rows = np.arange(len(train_y))
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    return probe.fit(train_x[rows], train_y[rows])


def _probe_rows(n: int, seed: int) -> np.ndarray:
    if n <= PROBE_MAX_TRAIN_CELLS:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, PROBE_MAX_TRAIN_CELLS, replace=False))


def latent_time_metrics(model, dm, splits: tuple[str, ...] = ("val", "test"), seed: int = 0) -> dict[str, float]:
    """``{split}/time_dis_accuracy``, ``time_dis_ce``, ``time_probe_accuracy``, ``time_probe_input_accuracy``,
    ``time_chance_accuracy``, ``time_chance_ce`` for the cells of each split whose time the model learned; on the
    simulator also ``time_probe_basal_accuracy`` and ``time_probe_excess_over_basal`` (z probe minus basal probe)."""
    network = getattr(model, "network", None)
    if network is None or getattr(network, "discriminator", None) is None or model.time_axis.n_times < 2:
        return {}
    n_times = model.time_axis.n_times
    train_z, train_index = encode_split(model, dm, "train")
    keep_train = train_index >= 0
    if len(np.unique(train_index[keep_train])) < 2:
        return {}
    train_genes = dm.splits["train"].X[keep_train]
    basal_train = _basal_state(dm, "train")
    probes: dict[str, Any] = {}  # each fitted once on the training cells, on first use

    def probe(name: str, fit):
        if name not in probes:
            from threadpoolctl import threadpool_limits

            # one BLAS thread: these small problems ran 3x slower on two (3.6 s vs 1.2 s at D3)
            with threadpool_limits(limits=1, user_api="blas"):
                probes[name] = fit()
        return probes[name]

    out: dict[str, float] = {}
    for split in splits:
        if dm.splits[split].n_obs == 0:
            continue
        z, index = encode_split(model, dm, split)
        keep = index >= 0
        if keep.sum() == 0:  # e.g. the held-out time of an OOD run: the discriminator has no class for it
            continue
        z, index = z[keep], index[keep]
        with torch.inference_mode():
            logits = network.discriminator(z)
        ce = torch.nn.functional.cross_entropy(logits, torch.from_numpy(index)).item()
        acc = float((logits.argmax(1).numpy() == index).mean())
        chance = _chance(train_index, index, n_times)
        prefix = f"{split}/time_"
        out.update({f"{prefix}dis_accuracy": acc, f"{prefix}dis_ce": ce,
                    f"{prefix}chance_accuracy": chance["chance_accuracy"], f"{prefix}chance_ce": chance["chance_ce"]})
        latent_probe = probe("z", lambda: _fit_probe(train_z[keep_train].numpy(), train_index[keep_train], seed))
        out[f"{prefix}probe_accuracy"] = float(latent_probe.score(z.numpy(), index))
        projection = probe("svd", lambda: _input_projection(train_genes, seed))
        if projection is not None:
            input_probe = probe("genes", lambda: _fit_probe(projection.transform(train_genes),
                                                            train_index[keep_train], seed))
            genes = projection.transform(dm.splits[split].X[keep])
            out[f"{prefix}probe_input_accuracy"] = float(input_probe.score(genes, index))
        if basal_train is not None:
            basal_probe = probe("basal", lambda: _fit_probe(basal_train[keep_train], train_index[keep_train], seed))
            out[f"{prefix}probe_basal_accuracy"] = float(basal_probe.score(_basal_state(dm, split)[keep], index))
            # what z reads of the day beyond the biology (0: z keeps no more time than the true basal state)
            out[f"{prefix}probe_excess_over_basal"] = (out[f"{prefix}probe_accuracy"]
                                                       - out[f"{prefix}probe_basal_accuracy"])
    return out


def _basal_state(dm, split: str) -> np.ndarray | None:
    """Simulator only: the cells' true basal state (pseudotime, lineage), without any batch effect. The time a
    probe reads from it is biology (later days lie further along the continuum), which a latent that keeps the
    basal state must keep too: the floor for the z probe."""
    obs = dm.splits[split].obs
    if "pseudotime" not in obs or "lineage" not in obs or dm.adata is None or "simulation" not in dm.adata.uns:
        return None
    pt = obs["pseudotime"].to_numpy(dtype=np.float64)[:, None]
    lineage = np.asarray(pd.get_dummies(obs["lineage"].astype(str)).reindex(
        columns=sorted(map(str, dm.adata.obs["lineage"].unique())), fill_value=0), dtype=np.float64)
    return np.hstack([pt, pt**2, lineage, lineage * pt])


def _input_projection(genes, seed: int):
    from sklearn.decomposition import TruncatedSVD

    k = min(INPUT_PROBE_COMPONENTS, genes.shape[1] - 1, genes.shape[0] - 1)
    if k < 1:
        return None
    return TruncatedSVD(n_components=k, random_state=seed).fit(genes[_probe_rows(genes.shape[0], seed)])


def task_weight_summary(model) -> dict[str, float]:
    """Final GradNorm task weights and the smallest each reached during training (the floor is 1e-4)."""
    gradnorm = getattr(model, "gradnorm", None)
    if gradnorm is None:
        return {}
    w, lowest = gradnorm.weights.detach(), gradnorm.min_weights.detach()
    second = getattr(model, "second_task", "fader")  # "recon" when the adversary is outside GradNorm
    return {"train/final_w_nlc": float(w[0]), f"train/final_w_{second}": float(w[1]),
            "train/min_w_nlc": float(lowest[0]), f"train/min_w_{second}": float(lowest[1])}
