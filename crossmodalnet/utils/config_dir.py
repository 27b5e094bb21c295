"""Where the Hydra configs are, installed or not.

The configs live at the repository root (``configs/``, where users look for them). A wheel carries the same files
as the package ``crossmodalnet.configs`` (pyproject maps ``configs/`` onto it), so a non-editable install finds
them next to the code; a source checkout or an editable install finds the root folder.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

MARKER = "train.yaml"


def _candidates() -> list[Path]:
    package_root = Path(__file__).resolve().parent.parent
    found = [package_root / "configs", package_root.parent / "configs"]
    spec = importlib.util.find_spec("crossmodalnet.configs")
    if spec is not None and spec.submodule_search_locations:
        found += [Path(p) for p in spec.submodule_search_locations]
    return found


def config_dir() -> Path:
    """The folder holding ``train.yaml`` and the config groups."""
    for folder in _candidates():
        if (folder / MARKER).is_file():
            return folder
    tried = ", ".join(str(p) for p in _candidates())
    raise FileNotFoundError(f"crossmodalnet's configs not found (looked for {MARKER} in {tried}); "
                            "reinstall the package")


CONFIG_DIR = str(config_dir())
