"""PlateauSchedule: a smoothed validation metric for early stopping and reduce-on-plateau learning rates, run
through a real Lightning Trainer."""
from __future__ import annotations

import lightning as L
import pytest
from lightning.pytorch.callbacks import EarlyStopping

from crossmodalnet.data.datamodule import CiteDataModule
from crossmodalnet.data.simulate import simulate_cite
from crossmodalnet.models.mlp import MLP
from crossmodalnet.training.schedule import PlateauSchedule


def _fit(schedule: PlateauSchedule, epochs: int, early: EarlyStopping | None = None):
    L.seed_everything(0, verbose=False)
    dm = CiteDataModule(simulate_cite(n_cells=200, n_genes=60, n_proteins=6, seed=2), batch_size=64)
    dm.setup("fit")
    model = MLP(n_genes=dm.n_inputs, n_proteins=dm.n_proteins, latent_dim=16, lr=1e-3)
    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu",
                        callbacks=[schedule] + ([early] if early else []))
    trainer.fit(model, datamodule=dm)
    return trainer


def test_learning_rate_drops_when_the_smoothed_metric_stalls():
    # no change counts as an improvement (threshold): one drop per lr_patience epochs after the first
    schedule = PlateauSchedule(monitor="val/mse", mode="max", smoothing=0.0, lr_patience=1, factor=0.5,
                               threshold=1e9)
    trainer = _fit(schedule, epochs=4)
    assert schedule.reductions == 3
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-3 * 0.5 ** 3)
    assert "val/mse_smooth" in trainer.callback_metrics


def test_early_stopping_reads_the_smoothed_value_and_state_round_trips():
    schedule = PlateauSchedule(monitor="val/mse", mode="min", smoothing=0.5, lr_patience=None)
    trainer = _fit(schedule, epochs=3, early=EarlyStopping(monitor="val/mse_smooth", mode="min", patience=50))
    values = trainer.callback_metrics
    assert float(values["val/mse_smooth"]) == pytest.approx(schedule.average)
    assert schedule.average != pytest.approx(float(values["val/mse"]))   # an average, not the last value
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-3)   # lr_patience=None: never drops
    restored = PlateauSchedule()
    restored.load_state_dict(schedule.state_dict())
    assert (restored.average, restored.best, restored.wait) == (schedule.average, schedule.best, schedule.wait)


def test_bad_settings_are_errors():
    for kwargs in ({"mode": "up"}, {"smoothing": 1.0}, {"factor": 0.0}, {"lr_patience": 0}):
        with pytest.raises(ValueError):
            PlateauSchedule(**kwargs)
