"""``train(cfg) -> metrics``: the one code path behind ``python train.py``, ``crossmodalnet.fit``, the Ray Tune
trainable and the table-reproduction scripts.

Run dir contents: config.yaml, split.csv, model/ (the saved model: manifest.json, weights, arrays.npz), metrics.json,
predictions.h5ad (test cells x proteins, measured values in ``layers["measured"]``), calibration.npz, plots/,
checkpoints/ (Lightning training state, for resuming), csv/ (Lightning CSV logs).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anndata as ad
import hydra
import lightning as L
import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from crossmodalnet.baselines.base import Baseline, BaselineUnavailable
from crossmodalnet.data.datamodule import CiteDataModule
from crossmodalnet.data.validate import DataError, value_ranges
from crossmodalnet.reporting.metrics import regression_metrics
from crossmodalnet.inference.intervals import FILE_NAME as CALIBRATION_FILE
from crossmodalnet.inference.intervals import ConformalCalibration
from crossmodalnet.inference.load import save_model
from crossmodalnet.inference.manifest import MODEL_DIR
from crossmodalnet.inference.split_predictions import predict_split
from crossmodalnet.training.evaluate import extra_metrics, reference_warning, write_run_figures
from crossmodalnet.utils.atomic import atomic_path, atomic_text
from crossmodalnet.training.guards import FiniteGuard, write_metrics
from crossmodalnet.training.rundir import prepare_from_config, unlock_run_dir
from crossmodalnet.training.distributed import DistributedTraining, GlobalBatchNormSync
from crossmodalnet.training.resume import (check_accelerator, check_baseline_setup, check_resume_checkpoint,
                                  check_strategy, trainer_error)
from crossmodalnet.interpret.latent_time import task_weight_summary
from crossmodalnet.training.timing import StageClock

log = logging.getLogger("crossmodalnet")


def build_datamodule(cfg: DictConfig) -> CiteDataModule:
    """The data module ``cfg.data`` describes (its ``_target_``, CiteDataModule); the source is loaded on ``setup``."""
    data = cfg.data

    def load():
        try:
            return hydra.utils.instantiate(data.source, _convert_="all")
        except hydra.errors.InstantiationException as err:  # a loader's DataError: show it, not Hydra's wrapper
            if isinstance(err.__cause__, DataError):
                raise err.__cause__ from None
            raise

    spec = {k: v for k, v in OmegaConf.to_container(data, resolve=True).items() if k not in ("source", "preprocess")}
    spec.setdefault("_target_", f"{CiteDataModule.__module__}.{CiteDataModule.__qualname__}")  # an older data config
    return hydra.utils.instantiate(spec, source=load, preprocess=_preprocess_settings(cfg), seed=cfg.seed)


def _preprocess_settings(cfg: DictConfig) -> dict | None:
    """``cfg.data.preprocess``; ``svd_components: auto`` becomes the genes for a model that treats them itself."""
    if not cfg.data.get("preprocess"):
        return None
    settings = OmegaConf.to_container(cfg.data.preprocess, resolve=True)
    if settings.get("svd_components") == "auto" and cfg.get("model") is not None:
        try:
            model_class = hydra.utils.get_class(cfg.model._target_)
        except Exception:  # an unknown target fails later, at instantiation, with Hydra's message
            return settings
        if not getattr(model_class, "auto_svd_input", True):
            settings["svd_components"] = None
    return settings


def build_model(cfg: DictConfig, dm: CiteDataModule) -> L.LightningModule:
    try:
        model = hydra.utils.instantiate(cfg.model, n_genes=dm.n_inputs, n_proteins=dm.n_proteins,
                                        time_axis=dm.time_axis.to_dict(), _convert_="all")
    except hydra.errors.InstantiationException as err:  # say why a baseline cannot run, not Hydra's wrapper
        if isinstance(err.__cause__, BaselineUnavailable):
            raise err.__cause__ from None
        raise
    model.gene_names, model.protein_names = dm.gene_names, dm.protein_names
    model.projection = dm.preprocessor.projection_  # SVD input (svd_components): predict/saliency apply it
    pre = dm.preprocessor  # saved in the checkpoint so crossmodalnet-predict normalises new files the same way
    model.preprocessing = {"rna": pre.rna, "target_sum": float(pre.target_sum), "time_key": dm.time_key,
                           "protein": pre.protein,  # the scale of the predictions (recorded in predict's uns)
                           "protein_key": (cfg.data.get("source") or {}).get("protein_key", "protein")}
    # per-gene training min/max: prediction reports new cells far outside them (crossmodalnet.inference.predict)
    model.preprocessing.update(value_ranges(dm.splits["train"].X), integer_counts=bool(pre.integer_counts))
    if pre.dsb_ is not None:  # the fitted dsb: predict scores a query's raw ADT counts on the training scale
        model.preprocessing["dsb_state"] = pre.dsb_.state()
    return model


def build_trainer(cfg: DictConfig, run_dir: Path, extra_callbacks: list[L.Callback] | None = None) -> L.Trainer:
    callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    callbacks += [*(extra_callbacks or []), FiniteGuard(run_dir)]  # stop at the first NaN/inf loss or gradient
    callbacks.append(DistributedTraining(cfg.seed))  # per-batch RNG seed (exact resume), BatchNorm stats across ranks
    loggers = [hydra.utils.instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    check_strategy(cfg.trainer)
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    # trainer.sync_batchnorm: our global-batch BatchNorm (CPU and GPU, twice differentiable), not torch's
    # SyncBatchNorm (GPU only, no double backward for the discriminator's gradient penalty)
    plugins = [GlobalBatchNormSync()] if trainer_cfg.pop("sync_batchnorm", False) else []
    if plugins and trainer_cfg.get("plugins"):
        plugins = [*trainer_cfg.pop("plugins"), *plugins]
    try:
        return hydra.utils.instantiate(trainer_cfg, callbacks=callbacks, logger=loggers or False,
                                       default_root_dir=str(run_dir), **({"plugins": plugins} if plugins else {}))
    except hydra.errors.InstantiationException as err:  # no GPU here, a strategy needing one: one line
        reason = trainer_error(err.__cause__) if err.__cause__ is not None else None
        if reason is not None:
            raise reason from None
        raise


@dataclass
class Fitted:
    """What fitting hands to the after-training steps."""

    model: Any                                   # the model to keep: the best checkpoint's, or the fitted baseline
    metrics: dict[str, Any]                      # test (and validation) metrics, training summary
    best_checkpoint: str | None = None           # the training checkpoint the kept model comes from
    test_predictions: ad.AnnData | None = None   # when fitting already computed them (baselines)
    writes_run_dir: bool = True                  # False on data-parallel ranks other than 0


def train(cfg: DictConfig, callbacks: list[L.Callback] | None = None) -> dict[str, float]:
    """Fit on train (early stopping on validation Pearson), test the best model, write the run dir.

    Steps: claim the run dir; data and model from their configs; fit and test (a Lightning Trainer, or fit/predict
    for a baseline); then :func:`finish_run` (diagnostics, prediction intervals, the saved model, predictions,
    figures, metrics.json). ``callbacks`` join ``cfg.callbacks`` (the Ray Tune trainable passes its reporter).
    """
    clock = StageClock()
    run_dir = start_run(cfg)
    with clock("data"):
        dm = build_datamodule(cfg)
        dm.setup("fit")
        model = build_model(cfg, dm)
    if isinstance(model, Baseline):
        fitted = fit_baseline(cfg, model, dm, run_dir, clock)
    else:
        fitted = fit_lightning(cfg, model, dm, run_dir, clock, callbacks)
    if not fitted.writes_run_dir:
        return fitted.metrics
    return finish_run(cfg, fitted, dm, run_dir, clock)


def start_run(cfg: DictConfig) -> Path:
    """Check the set-up (one line, before any data loads), claim the run dir, seed, set the thread count."""
    check_accelerator(cfg.trainer)  # no GPU here / a strategy the models cannot use
    check_strategy(cfg.trainer)
    run_dir = prepare_from_config(cfg)  # refuses to replace a finished run unless overwrite=true
    L.seed_everything(cfg.seed, workers=True)
    if cfg.get("torch_threads"):
        torch.set_num_threads(int(cfg.torch_threads))
    return run_dir


def write_run_inputs(cfg: DictConfig, dm: CiteDataModule, run_dir: Path) -> None:
    """The resolved config and the split: enough to rerun the run or to know which cells it saw."""
    atomic_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    dm.save_split(run_dir / "split.csv")


def fit_lightning(cfg: DictConfig, model: L.LightningModule, dm: CiteDataModule, run_dir: Path, clock: StageClock,
                  callbacks: list[L.Callback] | None = None) -> Fitted:
    """Trainer.fit (resuming from ``cfg.ckpt_path`` when set), then Trainer.test on the best checkpoint."""
    trainer = build_trainer(cfg, run_dir, callbacks)
    ckpt_path = cfg.get("ckpt_path")
    resumed_epochs = None
    if ckpt_path:  # another model, architecture or gene set: one line, before any process starts
        resumed = check_resume_checkpoint(ckpt_path, model, dm.gene_names, dm.protein_names)
        resumed_epochs = int(resumed.get("epoch", -1)) + 1  # epochs the killed run had finished
        del resumed
    if trainer.global_rank == 0:  # data-parallel runs: only rank 0 writes the run dir
        write_run_inputs(cfg, dm, run_dir)
    with clock("fit"):
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path or None)
    weight_summary = task_weight_summary(model)  # of the trained model, before the best checkpoint is reloaded
    best = best_checkpoint(trainer)
    with clock("test"):
        if best:
            model = type(model).load_from_checkpoint(best, map_location="cpu")
        # every rank tests on the whole test split (its loader is not sharded), so all ranks agree ...
        test_results = trainer.test(model, datamodule=dm, verbose=False)
    metrics: dict[str, Any] = {k: float(v) for k, v in (test_results[0] if test_results else {}).items()}
    metrics.update(training_summary(trainer))
    if resumed_epochs is not None:
        metrics["train/epochs_before_resume"] = float(resumed_epochs)
    if trainer.global_rank != 0:  # ... and only rank 0 writes predictions, figures and metrics.json
        return Fitted(model, metrics, best, writes_run_dir=False)
    metrics.update(weight_summary)
    metrics["train/fit_seconds"] = clock.seconds["fit"]
    return Fitted(model, metrics, best)


def best_checkpoint(trainer: L.Trainer) -> str | None:
    """The best checkpoint's path, or None (no checkpointing, or a resumed run whose earlier best is gone)."""
    ckpt_cb = trainer.checkpoint_callback
    best = ckpt_cb.best_model_path if ckpt_cb is not None and ckpt_cb.best_model_path else None
    if best and not Path(best).is_file():  # a resumed run whose earlier best checkpoint is gone (another node)
        log.warning("best checkpoint %s is missing; testing the last epoch's model instead", best)
        return None
    return best


def fit_baseline(cfg: DictConfig, model: Baseline, dm: CiteDataModule, run_dir: Path, clock: StageClock) -> Fitted:
    """The fit/predict path: same data module, split and preprocessing, same run dir and metric names."""
    check_baseline_setup(type(model).__name__, cfg.trainer, cfg.get("ckpt_path"))
    write_run_inputs(cfg, dm, run_dir)

    def proteins(split: str) -> np.ndarray:
        return dm.splits[split].obsm["protein"].to_numpy(dtype=np.float64)

    def times(split: str) -> np.ndarray:  # the cells' time weights: read by baselines with model.time_features
        return dm.datasets[split].time_weights.numpy()

    has_val = dm.splits["val"].n_obs > 0
    with clock("fit"):
        model.fit(dm.model_input("train"), proteins("train"), dm.model_input("val") if has_val else None,
                  proteins("val") if has_val else None, times("train"), times("val") if has_val else None)
    metrics: dict[str, Any] = {"train/fit_seconds": clock.seconds["fit"]}
    predictions = prediction_anndata(model.predict(dm.model_input("test"), times("test")), dm, "test")
    metrics.update(regression_metrics(predictions.X, predictions.layers["measured"], prefix="test/"))
    if has_val:
        metrics.update(regression_metrics(model.predict(dm.model_input("val"), times("val")), proteins("val"),
                                          prefix="val/"))
        metrics["val/best_pearson_cell"] = metrics["val/pearson_cell"]
    metrics.update({f"model/{k}": float(v) for k, v in model.params().items()})
    return Fitted(model, metrics, test_predictions=predictions)


def finish_run(cfg: DictConfig, fitted: Fitted, dm: CiteDataModule, run_dir: Path, clock: StageClock) -> dict:
    """The after-training steps, in order: reference numbers, time diagnostics and the prediction-interval
    calibration (crossmodalnet.training.evaluate.extra_metrics); then the saved model (written once, with its
    manifest), the test predictions, the figures and, last, metrics.json (all finite, or the run fails)."""
    model, metrics = fitted.model, fitted.metrics
    with clock("diagnostics"):
        metrics.update(extra_metrics(model, dm, cfg))
    with clock("write"):
        write_calibration(model, run_dir)
        metrics["model_dir"] = str(save_model(model, run_dir / MODEL_DIR, fitted.best_checkpoint))
        predictions = fitted.test_predictions
        if predictions is None:
            predictions = prediction_anndata(predict_split(model, dm, "test"), dm, "test")
        with atomic_path(run_dir / "predictions.h5ad") as tmp:
            predictions.write_h5ad(tmp)
        if cfg.get("plots", True):  # run_dir/plots: training curves, time embedding, measured vs predicted
            write_run_figures(model, dm, run_dir, predictions)
    if fitted.best_checkpoint:
        metrics["best_checkpoint"] = str(fitted.best_checkpoint)
    warn_below_reference(metrics)
    metrics.update(clock.metrics())
    log.info(clock.summary())
    written = write_metrics(run_dir, metrics)
    unlock_run_dir(run_dir)  # a finished run: its dir is free (crossmodalnet.training.rundir)
    return written


def prediction_anndata(pred: np.ndarray, dm: CiteDataModule, split: str = "test") -> ad.AnnData:
    """A split's predictions (cells x proteins) as AnnData, measured values in layers['measured']."""
    part = dm.splits[split]
    out = ad.AnnData(X=np.asarray(pred).astype(np.float32), obs=part.obs.copy(),
                     var=pd.DataFrame(index=pd.Index(dm.protein_names, name="protein")))
    out.layers["measured"] = part.obsm["protein"].to_numpy(dtype=np.float32)
    return out


def write_calibration(model: Any, run_dir: Path) -> None:
    """``run_dir/calibration.npz``: the conformal calibration extra_metrics fitted (also in the saved model's
    manifest, which is what ``crossmodalnet-predict --interval`` reads)."""
    cal = getattr(model, "conformal", None)
    if isinstance(cal, ConformalCalibration):
        cal.save(run_dir / CALIBRATION_FILE)


def warn_below_reference(metrics: dict) -> None:
    line = reference_warning(metrics)
    if line:
        log.warning(line)


def training_summary(trainer: L.Trainer) -> dict[str, float]:
    """Epochs run and the best validation per-cell Pearson (the raw value, not a smoothed one)."""
    out = {"epochs": float(trainer.current_epoch)}
    for cb in trainer.callbacks:
        if isinstance(cb, L.pytorch.callbacks.EarlyStopping) and cb.best_score is not None:
            out["val/best_pearson_cell"] = float(cb.best_score)
    for cb in trainer.callbacks:  # the raw best (early stopping may watch a smoothed value, training/schedule.py)
        if (isinstance(cb, L.pytorch.callbacks.ModelCheckpoint) and cb.monitor == "val/pearson_cell"
                and cb.best_model_score is not None):
            out["val/best_pearson_cell"] = float(cb.best_model_score)
    return out
