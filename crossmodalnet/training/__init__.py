"""Floor 5: one run. ``train(cfg)`` orchestrates data -> model -> fit -> test -> after-training steps; beside it
the pieces a run needs: input and finiteness checks, resume, the run dir and its lock, data-parallel callbacks,
schedules, stage timing, loggers, and the paper-table runner."""
