"""Behaviour over training, not the formula: on the default simulator run, GradNorm keeps both tasks alive and the
adversary keeps the time out of z as far as the data allow.

A test that re-implements the specification cannot catch a specification error (v0.2's Fader weight fell to the
floor and its discriminator read the time from z at ~95% while every formula test passed), so this one trains the
default model through `python train.py` and checks what it learned. Thresholds come from the default's runs on
seeds 0, 1, 2 (v0.3 defaults from the equal-budget sweep, docs/equal_budget.md), with margin:
- smallest GradNorm weights during training: NLC 0.97-1.00, reconstruction 0.79-0.91 (v0.2: Fader 1e-4, the floor);
- the model's discriminator on the test latents: accuracy 0.41-0.60 with cross-entropy 0.93-0.99 (chance 0.34 and
  1.10), while a probe on the genes reads the day at 0.97. The discriminator trains on one step in 10, so the
  generator keeps it less confused than the previous default's (0.09-0.30, CE 1.7-3.5); v0.2 (Fader weight at the
  floor): accuracy ~0.95, CE 0.18; the paper's formula: 0.82-0.89;
- test per-cell Pearson 0.91-0.95.
A fresh probe fitted on z after training still reads the day at 0.90-0.91 (metrics.json `test/time_probe_accuracy`;
0.90-0.93 with the previous default): the adversary hides the time from its discriminator at best; it does not
erase it from z (docs/formulation.md, docs/interpretation.md "basal state").
"""
from __future__ import annotations

import pytest

from conftest import run_train


@pytest.mark.slow
def test_default_run_keeps_both_tasks_and_hides_the_time_from_the_discriminator(tmp_path):
    _, m = run_train(tmp_path, "seed=0", "torch_threads=1", "+plots=false")
    # GradNorm: neither task switched off at any point of training (floor 1e-4)
    assert m["train/min_w_nlc"] > 0.3 and m["train/min_w_recon"] > 0.1, m
    assert abs(m["train/final_w_nlc"] + m["train/final_w_recon"] - 2.0) < 1e-4
    # the adversary: the discriminator reads far less time from z than the genes carry (a probe on the input reads
    # the day at ~0.97)
    assert m["test/time_dis_accuracy"] <= m["test/time_chance_accuracy"] + 0.35, m
    assert m["test/time_dis_accuracy"] < m["test/time_probe_input_accuracy"] - 0.3, m
    assert m["test/time_dis_ce"] > m["test/time_chance_ce"] - 0.3, m   # v0.2: 0.18; chance (log 3) 1.10
    # ... without giving up accuracy
    assert m["test/pearson_cell"] > 0.88
    assert m["test/pearson_cell"] > m["test/baseline_train_mean/pearson_cell"] + 0.1
    for key in ("val/time_dis_accuracy", "test/time_chance_accuracy", "test/time_probe_accuracy"):
        assert 0.0 <= m[key] <= 1.0


def test_time_probe_keeps_a_rare_time_point_its_subset_would_miss(monkeypatch):
    """The probe fits on a seeded subset of training cells, but never on one that lost a time point."""
    import numpy as np

    from crossmodalnet.interpret import latent_time

    monkeypatch.setattr(latent_time, "PROBE_MAX_TRAIN_CELLS", 10)
    y = np.zeros(1000, dtype=int)
    y[500:] = 1
    y[7] = 2  # one cell of a third time point
    x = np.random.default_rng(0).normal(size=(1000, 4)) + y[:, None]
    probe = latent_time._fit_probe(x, y, seed=0)
    assert list(probe.classes_) == [0, 1, 2]
