"""Floor 0: small helpers every floor may use (quiet third-party output, lazy imports, progress lines, safe file
writes). Nothing here imports another part of the package."""
