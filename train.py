"""python train.py experiment=hspc  ->  crossmodalnet.cli.train.main (Hydra composes configs/)."""
from crossmodalnet.cli.train import main

if __name__ == "__main__":
    main()
