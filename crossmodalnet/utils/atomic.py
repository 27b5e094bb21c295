"""Files appear whole or not at all: every file the package writes goes to a temporary name in the same folder and
is renamed into place only when complete. A failure (disk full, permission, a killed process) leaves the earlier
file, or nothing, and raises one line naming the path and the cause."""
from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import IO, Callable, Iterator

from crossmodalnet.errors import DataError


class WriteError(DataError):
    """A file could not be written; nothing half-written was left at its path."""


def describe(err: OSError) -> str:
    """A short cause: 'no space left on device', 'permission denied', ..."""
    if err.errno is not None and err.errno in errno.errorcode:
        return os.strerror(err.errno).lower()
    return str(err)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` for writers that take a file name (``write_h5ad``, ``savefig``); renamed
    to ``path`` when the block ends without an error, removed otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise WriteError(f"could not write {path}: {describe(err)}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | Path, write: Callable[[IO], object], binary: bool = False) -> Path:
    """Call ``write(handle)`` on a temporary file beside ``path``, then rename it to ``path``."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb" if binary else "w") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
    return Path(path)


def atomic_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text))
