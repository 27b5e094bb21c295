"""Baselines of the paper's Tables 1, 2 and S2 behind one fit/predict interface (see :mod:`.base`).

The MLP baselines are LightningModules (:mod:`crossmodalnet.models.mlp`) and train through the same
Lightning path as CrossmodalNet.
"""
from crossmodalnet.baselines.base import Baseline, BaselineUnavailable
from crossmodalnet.baselines.lightgbm import LightGBMBaseline
from crossmodalnet.baselines.linear import LinearBaseline, RidgeBaseline, SVDRidgeBaseline
from crossmodalnet.baselines.scipenn import ScipennBaseline, scipenn_available

__all__ = ["Baseline", "BaselineUnavailable", "LightGBMBaseline", "LinearBaseline", "RidgeBaseline",
           "SVDRidgeBaseline", "ScipennBaseline", "scipenn_available"]
