"""python train.py experiment=hspc  ->  crossmodalnet.train.main (Hydra composes configs/)."""
from crossmodalnet.train import main

if __name__ == "__main__":
    main()
