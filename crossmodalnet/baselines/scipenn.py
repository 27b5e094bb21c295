"""scIPENN (Lakkis et al. 2022) through the real ``sciPENN`` package from PyPI, behind the common interface.

Why it is not a declared dependency: sciPENN 0.9.6 (the latest release, 2021) pins ``numba<=0.50.0``, while
scanpy 1.11 needs ``numba>=0.57.1``, so ``pip install sciPENN`` cannot resolve against this project's
dependency set (and numba 0.50 / llvmlite 0.33 have no wheels for Python 3.11: building them from source
fails). Its code does not use numba, and it runs on this stack when installed without its pins:
``pip install --no-deps sciPENN==0.9.6``. Without it this baseline raises :class:`BaselineUnavailable`
(the table scripts then mark the row unavailable).

sciPENN's own pipeline is kept: genes and training proteins are z-scored per batch (``sc.pp.scale``, as
``sciPENN.Preprocessing.preprocess`` does; test cells are scaled on their own, as sciPENN does), it holds out
``val_split`` of the training cells for its own early stopping (``ES_max`` epochs without improvement), and
its point prediction (the MSE head) is mapped back to the protein scale with the training mean and std.
Inputs are the data module's preprocessed genes, so cell/log normalisation and HVG selection are off.

Time as an input (``time_features``): the time columns join the genes as extra input features. They are already
standardised on the training cells, so sciPENN's own z-scoring of the training input leaves them as they are; at
prediction only the genes are scaled on the test cells (scaling a held-out day's constant time columns on their own
would erase them).
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import torch

from crossmodalnet.baselines.base import Baseline, BaselineUnavailable, Matrix, as_dense

log = logging.getLogger(__name__)

INSTALL_HINT = ("sciPENN is not installed: `pip install sciPENN` cannot resolve against this project "
                "(sciPENN 0.9.6 pins numba<=0.50.0, scanpy 1.11 needs numba>=0.57.1, and numba 0.50 has no "
                "Python 3.11 wheel); install it without its pins: pip install --no-deps sciPENN==0.9.6")


def scipenn_available() -> tuple[bool, str]:
    """(True, version) when the package imports, else (False, the reason)."""
    try:
        from importlib.metadata import version

        import sciPENN.sciPENN_API  # noqa: F401
        return True, version("sciPENN")
    except ImportError as err:
        return False, f"{INSTALL_HINT} ({err})"


class ScipennBaseline(Baseline):
    name = "scipenn"
    auto_svd_input = False  # its own treatment of the genes: svd_components=auto keeps them

    def __init__(self, n_epochs: int = 500, es_max: int = 12, decay_max: int = 6, decay_step: float = 0.1,
                 lr: float = 1e-3, batch_size: int = 128, val_split: float = 0.1,
                 quantiles: list[float] | None = None, use_gpu: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        ok, why = scipenn_available()
        if not ok:
            raise BaselineUnavailable(why)
        self.n_epochs, self.es_max, self.decay_max = int(n_epochs), int(es_max), int(decay_max)
        self.decay_step, self.lr, self.batch_size = float(decay_step), float(lr), int(batch_size)
        self.val_split, self.use_gpu = float(val_split), bool(use_gpu)
        self.quantiles = [0.1, 0.25, 0.75, 0.9] if quantiles is None else list(quantiles)
        self.api = None
        self.protein_mean_: np.ndarray | None = None
        self.protein_std_: np.ndarray | None = None
        self.log_tail_: str = ""

    def _fit(self, x: Matrix, y: np.ndarray, x_val, y_val) -> None:
        from sciPENN.sciPENN_API import sciPENN_API

        n = x.shape[0]
        obs = pd.DataFrame(index=[f"cell{i}" for i in range(n)])
        names = list(self.gene_names or [f"g{i}" for i in range(self.n_genes)])
        names += [f"time_feature_{i}" for i in range(x.shape[1] - self.n_genes)]
        self.n_inputs_ = int(x.shape[1])  # genes + time features: the network's input width, to rebuild it
        genes = ad.AnnData(as_dense(x), obs=obs.copy(), var=pd.DataFrame(index=names))
        proteins = ad.AnnData(y.astype(np.float32), obs=obs.copy(),
                              var=pd.DataFrame(index=self.protein_names or [f"p{i}" for i in range(y.shape[1])]))
        # sciPENN's z-scoring of the training proteins (sc.pp.scale: unbiased std, zero std -> 1), to undo later
        self.protein_mean_ = y.mean(0)
        std = y.std(0, ddof=1)
        self.protein_std_ = np.where(std > 0, std, 1.0)
        np.random.seed(self.seed)          # sciPENN draws its validation cells with numpy's global RNG
        torch.manual_seed(self.seed)
        buf = io.StringIO()
        cwd = os.getcwd()
        with tempfile.TemporaryDirectory(prefix="scipenn-") as tmp, contextlib.redirect_stdout(buf):
            os.chdir(tmp)  # sciPENN's build_dir loops forever on an absolute weights_dir: give it a relative one
            try:
                self.api = sciPENN_API([genes], [proteins], gene_test=None, select_hvg=False,
                                       cell_normalize=False, log_normalize=False, gene_normalize=True,
                                       min_cells=0, min_genes=0, batch_size=self.batch_size,
                                       val_split=self.val_split, use_gpu=self.use_gpu)
                self.api.train(quantiles=self.quantiles, n_epochs=self.n_epochs, ES_max=self.es_max,
                               decay_max=self.decay_max, decay_step=self.decay_step, lr=self.lr,
                               weights_dir="weights", load=False)
            finally:
                os.chdir(cwd)
        lines = buf.getvalue().strip().splitlines()
        self.epochs_ = sum(line.startswith("Epoch") for line in lines)
        self.log_tail_ = "\n".join(lines[-3:])
        log.info("scipenn: %d epochs; %s", self.epochs_, lines[-1] if lines else "")

    def _predict(self, x: Matrix) -> np.ndarray:
        import scanpy as sc

        gene_part, time = self.split_time(x)
        genes = ad.AnnData(as_dense(gene_part))
        if genes.n_obs > 1:
            sc.pp.scale(genes)  # sciPENN scales the test cells' genes on their own (gene_normalize)
        inputs = np.hstack([np.asarray(genes.X, dtype=np.float32), time])
        model = self.api.model
        model.eval()
        with torch.no_grad():
            out = model(torch.as_tensor(inputs, dtype=torch.float32, device=self.api.device))["modality 2"]
        point = out[0] if isinstance(out, (tuple, list)) else out
        return point.cpu().numpy() * self.protein_std_ + self.protein_mean_

    # -- saving: the network's weights and shape, not sciPENN's API object (it holds the training data loaders) ----
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        api = state.pop("api", None)
        if api is not None:
            model = api.model
            state["network_state_"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        weights = state.pop("network_state_", None)
        self.__dict__.update(state)
        self.api = None
        if weights is not None:
            self.api = _rebuilt_api(weights, int(self.n_inputs_), int(self.n_proteins), self.quantiles)

    def params(self) -> dict[str, Any]:
        return {"epochs": float(getattr(self, "epochs_", 0))}


def _rebuilt_api(weights: dict, n_inputs: int, n_proteins: int, quantiles: list[float]):
    """sciPENN's network with saved weights, behind the two attributes prediction reads (``model``, ``device``)."""
    from types import SimpleNamespace

    from sciPENN.Network.Losses import mse_quantile, no_loss
    from sciPENN.Network.Model import sciPENN_Model

    device = torch.device("cpu")
    model = sciPENN_Model(n_inputs, n_proteins, no_loss(device), mse_quantile(device, quantiles), quantiles, None)
    model.load_state_dict(weights)
    model.eval()
    return SimpleNamespace(model=model, device=device)
