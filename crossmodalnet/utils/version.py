"""The package version: one place, read by pyproject.toml (dynamic version) and written into every saved model."""
__version__ = "0.3.0"
