"""Stop training at the first non-finite loss or gradient, naming the epoch, the step and the term.

A NaN that reaches the weights turns every later prediction into NaN, yet Lightning keeps going, early stopping
ends the run "normally" and a checkpoint and metrics.json appear as if it had succeeded. Here:

* :func:`check_finite` is called by each model's training step on its loss terms (NLC, Fader, discriminator,
  GradNorm; MSE/NLC for the MLPs): one ``isfinite`` on a stacked tensor and a single host sync per step;
* :class:`FiniteGuard` (always added by ``train.build_trainer``) checks the gradients each optimiser is about
  to apply, for every model, automatic or manual optimisation alike;
* :func:`check_metrics` fails a run whose core metrics (test/val Pearson, MSE) are NaN/inf and leaves undefined
  auxiliary metrics out with a warning, so a finished run's metrics.json never holds NaN.

Every failure raises :class:`NonFiniteError` (a ``DataError``: ``error: ...``, exit 2) and leaves a
``failed.txt`` with the same line in the run dir; no metrics.json is written.
"""
from __future__ import annotations

import math
import re
import warnings
from pathlib import Path
from typing import Any, Mapping

import lightning as L

from crossmodalnet.training.rundir import FAILED_FILE

from crossmodalnet.models.finite import HINT, NonFiniteError, check_finite, check_gradients, position  # noqa: F401,E501


# The metrics a run is judged by: NaN/inf in one of them fails the run. Any other (auxiliary) metric that is
# undefined on the data (e.g. a reference computed on a tiny validation split) is left out of metrics.json with a
# warning naming it, so metrics.json never holds NaN either way.
CORE_METRICS = re.compile(r"^(test|val)/(best_)?(pearson_cell|pearson_protein|mse)$")


def _not_finite(v: Any) -> bool:
    return isinstance(v, (float, int)) and not isinstance(v, bool) and not math.isfinite(float(v))


def check_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The metrics to write: raise :class:`NonFiniteError` when a core metric (:data:`CORE_METRICS`) is NaN/inf;
    drop other non-finite ones with one warning listing them."""
    bad = sorted(k for k, v in metrics.items() if _not_finite(v))
    core = [k for k in bad if CORE_METRICS.match(k)]
    if core:
        raise NonFiniteError(f"the run finished but its {', '.join(core[:5])} "
                             f"{'is' if len(core) == 1 else 'are'} NaN/inf; metrics.json was not written "
                             f"({HINT.split(';')[0]})")
    if bad:
        warnings.warn(f"{len(bad)} auxiliary metrics are undefined on this data (NaN/inf) and left out of "
                      f"metrics.json: {bad[:8]}", stacklevel=2)
    return {k: v for k, v in metrics.items() if k not in bad}


def mark_failed(run_dir: str | Path | None, err: BaseException) -> None:
    """Leave the one-line reason in ``run_dir/failed.txt`` (a run dir without metrics.json did not finish)."""
    if run_dir is None:
        return
    path = Path(run_dir)
    if path.is_dir():
        (path / FAILED_FILE).write_text(f"error: {err}\n")


class FiniteGuard(L.Callback):
    """Checks each optimiser's gradients before it steps; a :class:`NonFiniteError` leaves ``run_dir/failed.txt``.

    The term a gradient belongs to comes from the model's ``optimizer_terms`` (one name per optimiser, in the
    order of ``configure_optimizers``), e.g. ``("NLC + Fader", "discriminator", "GradNorm")``.
    """

    def __init__(self, run_dir: str | Path | None = None) -> None:
        self.run_dir = run_dir
        self._names: dict[int, str] = {}

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._names = {id(p): n for n, p in pl_module.named_parameters()}

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        raw = getattr(optimizer, "optimizer", optimizer)  # a LightningOptimizer wraps the torch one
        index = next((i for i, o in enumerate(trainer.optimizers) if o is raw), 0)
        terms = getattr(pl_module, "optimizer_terms", None) or ()
        term = terms[index] if index < len(terms) else (
            "training" if len(trainer.optimizers) == 1 else f"optimizer {index}")
        params = (p for group in raw.param_groups for p in group["params"])
        check_gradients(((self._names.get(id(p), "?"), p.grad) for p in params), term, *position(pl_module))

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, NonFiniteError):
            mark_failed(self.run_dir, exception)


def write_metrics(run_dir: str | Path, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Write ``run_dir/metrics.json`` (the mark of a finished run) only when every core metric is finite;
    returns what was written (undefined auxiliary metrics left out, see :func:`check_metrics`)."""
    import json

    path = Path(run_dir)
    try:
        finite = check_metrics(metrics)
    except NonFiniteError as err:
        mark_failed(path, err)
        raise
    out = path / "metrics.json"
    tmp = out.with_suffix(".json.tmp")  # written whole, then renamed: never a half-written metrics.json
    tmp.write_text(json.dumps(finite, indent=2, sort_keys=True))
    tmp.replace(out)
    return finite
