"""Floor 6: the Ray Tune random search (Table S1): search space, sweep driver, results, per-trial callback."""
