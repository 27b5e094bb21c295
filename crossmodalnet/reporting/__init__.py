"""Floor 0 (leaf): metrics, tables and figures as functions of arrays and frames. No model code: callers compute
predictions and pass numbers in."""
