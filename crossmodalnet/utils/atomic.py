"""Files appear whole or not at all: every file the package writes goes to a temporary name in the same folder and
is renamed into place only when complete. A failure (disk full, permission, a killed process) leaves the earlier
file, or nothing, and raises one line naming the path and the cause."""
from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from pathlib import Path
from typing import IO, Callable, Iterator

from crossmodalnet.errors import DataError


class WriteError(DataError):
    """A file could not be written; nothing half-written was left at its path."""


def describe(err: OSError) -> str:
    """A short cause: 'no space left on device', 'permission denied', ... (h5py puts the errno only into its
    long multi-line text, sometimes: it is looked for there too); always one line."""
    code = err.errno
    if code is None:
        found = re.search(r"errno = (\d+)|\[Errno (\d+)\]", str(err))
        code = int(found.group(1) or found.group(2)) if found else None
    if code is not None and code in errno.errorcode:
        return os.strerror(code).lower()
    return " ".join(str(err).split())[:300]


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` for writers that take a file name (``write_h5ad``, ``savefig``); renamed
    to ``path`` when the block ends without an error, removed otherwise."""
    path = Path(path)
    try:  # a folder that cannot be created or written to: the same one line
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=path.parent)
    except OSError as err:
        raise WriteError(f"could not write {path}: {describe(err)}") from None
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 would make every output private to its writer
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


def write_csv(frame, path: str | Path, index: bool = False) -> Path:
    """``frame.to_csv`` (a pandas DataFrame), written whole and renamed into place."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=index)
    return Path(path)
