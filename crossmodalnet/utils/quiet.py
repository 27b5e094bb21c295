"""Output a user can act on, in one place: one quiet default level for every command, ``-v``/``--verbose`` for
more.

At the default level the console shows the package's own lines (``crossmodalnet`` at INFO: what was read, what
was written, the scores) and warnings as one ``warning: ...`` line each, without the file and line of the code
that raised them. Third-party chatter that a user cannot act on is silenced there:

- anndata's per-element ``Element '/obs/x' was written without encoding metadata`` when reading a file written by
  anndata < 0.7 (e.g. the BMMC starter): 25 lines per read, the data are read correctly;
- Lightning's start-up lines (``GPU available: ...``, ``TPU available``, the litlogger advertisement ``Tip: ...``),
  its ``_pytree`` deprecation (Lightning's own code, fixed upstream), the ``log_every_n_steps`` note on small data
  (the package logs once per epoch) and the ``num_workers`` hint;
- numexpr's ``NumExpr defaulting to 2 threads``;
- umap's ``Tensorflow not installed; ParametricUMAP will be unavailable`` (scanpy imports umap).

``verbose=True`` shows all of it again (Lightning at INFO, every warning with its origin).
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from typing import Iterator

OLD_FORMAT_MESSAGE = r"Element '.*' was written without encoding metadata"
# (message regex, why it is noise) for warnings.filterwarnings at the default level
NOISE: tuple[tuple[str, str], ...] = (
    (r".*isinstance\(treespec, LeafSpec\)", "Lightning's _pytree deprecation: its own code, not the user's"),
    (r".*smaller than the logging interval", "log_every_n_steps on small data: metrics are logged per epoch"),
    (r".*does not have many workers", "num_workers: batches are sliced from memory, workers do not help"),
    (r".*Tensorflow not installed; ParametricUMAP", "umap's optional TensorFlow model, never used here"),
    (r".*sync_dist=True", "every rank scores the whole validation/test split, so values need no sync"),
    (r".*LeafSpec.*is deprecated", "Lightning's _pytree deprecation, other wording"),
)
# loggers whose INFO lines are start-up chatter (GPU/TPU available, the litlogger tip)
CHATTY_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning", "pytorch_lightning", "numexpr",
                  "numexpr.utils")


def silence_noise() -> None:
    """Ignore anndata's per-element old-format warnings (only those; every other warning still shows)."""
    warnings.filterwarnings("ignore", message=OLD_FORMAT_MESSAGE)


def _one_line(message, category, filename, lineno, line=None) -> str:
    text = " ".join(str(message).split())
    return f"warning: {text}\n"


def set_verbosity(verbose: bool = False) -> None:
    """The console's level for every command: quiet by default (see the module docstring), everything with
    ``verbose``. Call after ``logging.basicConfig`` / ``warnings.simplefilter``, which would reset the filters."""
    silence_noise()
    level = logging.INFO if verbose else logging.WARNING
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(level)
    logging.getLogger("crossmodalnet").setLevel(logging.DEBUG if verbose else logging.INFO)
    if verbose:
        warnings.formatwarning = _ORIGINAL_FORMAT
        return
    for pattern, _ in NOISE:
        warnings.filterwarnings("ignore", message=pattern)
    warnings.formatwarning = _one_line


_ORIGINAL_FORMAT = warnings.formatwarning


@contextlib.contextmanager
def quiet_third_party(verbose: bool = False) -> Iterator[None]:
    """The default level's filters for the duration of a block (``crossmodalnet.fit`` in a notebook), restoring
    the session's warning filters and logger levels afterwards."""
    if verbose:
        yield
        return
    levels = {name: logging.getLogger(name).level for name in CHATTY_LOGGERS}
    with warnings.catch_warnings():
        for pattern, _ in NOISE:
            warnings.filterwarnings("ignore", message=pattern)
        for name in CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        try:
            yield
        finally:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)
