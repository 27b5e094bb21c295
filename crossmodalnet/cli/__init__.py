"""Floor 7: the console scripts (crossmodalnet-train, -predict, -saliency). Each parses and checks its arguments
before importing torch, so ``--help`` and a wrong path answer at once."""
