"""A finished run is never overwritten silently.

A run dir holding ``metrics.json`` holds a finished run (``train()`` writes it last). Training into it again is
refused with one line unless the config says ``overwrite=true``, or the run resumes from a checkpoint
(``ckpt_path=...``). A dir without metrics.json (a killed or failed run) may be trained into again.
:func:`check_output` is the same rule for single output files (predict, saliency).

The check runs twice: from a Hydra callback before Hydra writes ``.hydra/`` into the dir (so a refused re-run
does not even replace the old run's Hydra config), and at the top of ``train()`` for the Python API.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from crossmodalnet.errors import DataError

log = logging.getLogger("crossmodalnet")

FINISHED_FILE = "metrics.json"
FAILED_FILE = "failed.txt"
# what a finished run wrote that must not survive next to a new run's files when it is replaced
_REPLACED = ("metrics.json", "predictions.h5ad", FAILED_FILE)


def finished(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a finished run."""
    return (Path(run_dir) / FINISHED_FILE).is_file()


def prepare_run_dir(run_dir: str | Path, overwrite: bool = False, resume: bool = False) -> Path:
    """Create ``run_dir`` for a new run; refuse (:class:`DataError`) to replace a finished run silently.

    ``overwrite=True`` replaces it: the old metrics.json, predictions and checkpoints are deleted first, so a new
    run that fails cannot leave the old run's metrics beside its own files. ``resume=True`` (a ``ckpt_path``)
    continues a run in its own dir and deletes nothing. A stale ``failed.txt`` is always removed.
    """
    path = Path(run_dir)
    if finished(path) and not resume:
        if not overwrite:
            raise DataError(f"run dir {path} already holds a finished run ({FINISHED_FILE}); choose a new dir "
                            f"(hydra.run.dir=... or paths.output_dir=...), or set overwrite=true to replace it")
        log.warning("overwrite=true: replacing the finished run in %s", path)
        for name in _REPLACED:
            (path / name).unlink(missing_ok=True)
        for ckpt in (path / "checkpoints").glob("*.ckpt"):
            ckpt.unlink()
    path.mkdir(parents=True, exist_ok=True)
    (path / FAILED_FILE).unlink(missing_ok=True)
    return path


def prepare_from_config(cfg: Any) -> Path:
    """:func:`prepare_run_dir` for a train config (``paths.output_dir``, ``overwrite``, ``ckpt_path``)."""
    return prepare_run_dir(cfg.paths.output_dir, overwrite=bool(cfg.get("overwrite", False)),
                           resume=bool(cfg.get("ckpt_path")))


def check_output(path: str | Path, overwrite: bool, option: str = "--overwrite") -> Path:
    """Refuse (:class:`DataError`) to replace an existing output file or a non-empty output folder."""
    out = Path(path).expanduser()
    exists = out.is_file() or (out.is_dir() and any(out.iterdir()))
    if exists and not overwrite:
        kind = "folder" if out.is_dir() else "file"
        raise DataError(f"output {kind} {out} already exists; choose another path or pass {option} to replace it")
    return out


try:  # the Hydra callback (Hydra is a dependency, but keep this module importable without it)
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover
    _HydraCallback = object


class RunDirGuard(_HydraCallback):
    """Hydra callback (configs/hydra/default.yaml): refuse a finished run dir before Hydra writes into it."""

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        from omegaconf import OmegaConf

        try:
            run_dir = OmegaConf.select(config, "hydra.run.dir")
        except Exception:  # an interpolation Hydra resolves only later: train() checks again
            return
        if not run_dir or not finished(run_dir):
            return
        if bool(config.get("overwrite", False)) or bool(config.get("ckpt_path")):
            return  # train() replaces it (overwrite) or resumes in it
        try:
            prepare_run_dir(run_dir)
        except DataError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
