"""A finished run is never overwritten silently.

A run dir holding ``metrics.json`` holds a finished run (``train()`` writes it last). Training into it again is
refused with one line unless the config says ``overwrite=true``, or the run resumes from a checkpoint
(``ckpt_path=...``). A dir without metrics.json (a killed or failed run) may be trained into again.
:func:`check_output` is the same rule for single output files (predict, saliency).

The check runs twice: from a Hydra callback before Hydra writes ``.hydra/`` into the dir (so a refused re-run
does not even replace the old run's Hydra config), and at the top of ``train()`` for the Python API.

A run dir in use is locked (:func:`lock_run_dir`): ``run.lock`` holds the running process's pid, host, start time
and command under an exclusive ``flock`` that the operating system drops when the process ends, however it ends.
A second run into the dir refuses in one line naming that process; a lock left by a killed run (its flock gone)
is reported and taken over, so resuming a killed run works.
"""
from __future__ import annotations

import datetime
import fcntl
import json
import logging
import os
import socket
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
    """:func:`lock_run_dir`, then :func:`prepare_run_dir` for a train config (``paths.output_dir``, ``overwrite``,
    ``ckpt_path``)."""
    lock_run_dir(cfg.paths.output_dir)
    return prepare_run_dir(cfg.paths.output_dir, overwrite=bool(cfg.get("overwrite", False)),
                           resume=bool(cfg.get("ckpt_path")))


# -- the run-dir lock -------------------------------------------------------------------------------------------------
LOCK_FILE = "run.lock"
_held: dict[Path, int] = {}  # run dirs this process has locked -> the open, flocked descriptor


class RunDirInUse(DataError):
    """Another live process is training into this run dir."""


def _secondary_rank() -> bool:
    """A data-parallel rank other than the first: it shares rank 0's run dir (and rank 0 holds the lock)."""
    return any(int(os.environ.get(k, "0") or 0) > 0 for k in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK"))


def _describe(holder: dict) -> str:
    cmd = holder.get("command") or ""
    return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, started {holder.get('started', '?')}"
            + (f" ({cmd[:120]})" if cmd else ""))


def _read_holder(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 65536).decode("utf-8", "replace").strip()
    try:
        holder = json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        holder = {}
    return holder if isinstance(holder, dict) else {}


def lock_run_dir(run_dir: str | Path) -> Path | None:
    """Lock ``run_dir`` for this process (re-entrant); :class:`RunDirInUse` when another live run holds it.

    Returns the lock file (None for a secondary data-parallel rank, which trains under rank 0's lock). A lock
    whose process is gone is reported in one warning and taken over.
    """
    if _secondary_rank():
        return None
    path = Path(run_dir).expanduser().resolve()
    if path in _held:
        return path / LOCK_FILE
    path.mkdir(parents=True, exist_ok=True)
    lock = path / LOCK_FILE
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = _read_holder(fd)
        os.close(fd)
        raise RunDirInUse(f"run dir {path} is in use by another run: {_describe(holder)}; wait for it to finish, "
                          f"or choose another dir (hydra.run.dir=... or paths.output_dir=...)") from None
    holder = _read_holder(fd)  # we hold the flock: whoever wrote this file has ended
    if holder and holder.get("pid") != os.getpid():
        log.warning("run dir %s: taking over the lock of a run that ended without finishing (%s)", path,
                    _describe(holder))
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
          "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else ""}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(me) + "\n").encode())
    os.fsync(fd)
    _held[path] = fd
    return lock


def unlock_run_dir(run_dir: str | Path) -> None:
    """Release this process's lock on ``run_dir`` (no-op when it holds none): the file goes, then the flock."""
    path = Path(run_dir).expanduser().resolve()
    fd = _held.pop(path, None)
    if fd is None:
        return
    try:
        (path / LOCK_FILE).unlink(missing_ok=True)
    finally:
        os.close(fd)


# data.source keys naming a file (or a folder) a run reads
_INPUT_KEYS = ("path", "rna_path", "protein_path", "protein_table")


def check_inputs(cfg: Any) -> None:
    """Every input path a train config names exists: one :class:`DataError` line naming the key otherwise.
    Needs only the config (no data, no torch), so ``python train.py`` checks it before anything heavy."""
    from omegaconf import OmegaConf

    for key in _INPUT_KEYS:
        value = OmegaConf.select(cfg, f"data.source.{key}", default=None)
        if value and not Path(str(value)).expanduser().exists():
            raise DataError(f"data.source.{key}: file not found: {value}")
    data_dir = OmegaConf.select(cfg, "data.data_dir", default=None)
    if data_dir and not Path(str(data_dir)).expanduser().is_dir():
        name = OmegaConf.select(cfg, "data.name", default=None) or "the data set"
        raise DataError(f"data.data_dir: folder not found: {data_dir} (where {name}'s files should be; "
                        "docs/data.md says how to get them, or set data.data_dir=...)")
    ckpt = OmegaConf.select(cfg, "ckpt_path", default=None)
    if ckpt and not Path(str(ckpt)).expanduser().is_file():
        raise DataError(f"ckpt_path: checkpoint not found: {ckpt}")


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
        if not run_dir:
            return
        try:
            check_inputs(config)  # a wrong path: one line, and nothing written into the run dir
            lock_run_dir(run_dir)  # another live run in it: refused before Hydra writes .hydra/ into its dir
            if finished(run_dir) and not (bool(config.get("overwrite", False)) or bool(config.get("ckpt_path"))):
                prepare_run_dir(run_dir)  # refuses: train() replaces it (overwrite) or resumes in it (ckpt_path)
        except DataError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    def on_run_end(self, config: Any, **kwargs: Any) -> None:
        from omegaconf import OmegaConf

        try:
            run_dir = OmegaConf.select(config, "hydra.run.dir")
        except Exception:
            return
        if run_dir:
            unlock_run_dir(run_dir)
