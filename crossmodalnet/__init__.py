"""CrossmodalNet: time-aware prediction of cell-surface proteins (CITE-seq ADT) from scRNA-seq."""

__version__ = "0.2.0"
