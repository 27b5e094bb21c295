"""Which obs column names the cell types, so figures can colour cells by it."""
from __future__ import annotations

CELL_TYPE_KEYS = ("cell_type", "celltype", "cell_type_l2", "cell_type_l1", "celltype.l2", "celltype.l1",
                  "cell_types", "annotation", "lineage", "leiden", "louvain")


def cell_type_column(obs, key: str | None = None) -> str | None:
    """The obs column to colour cells by: ``key`` when given, else the first of :data:`CELL_TYPE_KEYS` present
    with 2 to 200 distinct values."""
    if key is not None:
        return key if key in obs.columns else None
    for k in CELL_TYPE_KEYS:
        if k in obs.columns and 2 <= obs[k].nunique() <= 200:
            return k
    return None
