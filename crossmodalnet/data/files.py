"""Input files that users download themselves: one clear message when they are missing."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from crossmodalnet.data.validate import DataError


def require_files(dataset: str, folder: str | Path, files: Sequence[str], where_to_get: str,
                  folder_key: str = "data.data_dir") -> Path:
    """Return ``folder`` as a Path, or raise one :class:`DataError` naming every missing file, where to get
    them and where to put them."""
    folder = Path(str(folder)).expanduser()
    missing = [f for f in files if not (folder / f).exists()]
    if missing:
        raise DataError(
            f"{dataset} data not found: missing {', '.join(missing)} in {folder.resolve()}. "
            f"Needed: {', '.join(files)}. Get them from {where_to_get}. Put them in {folder.resolve()}, or point "
            f"{folder_key}=/path/to/folder at the folder that holds them (see docs/data.md)")
    return folder
