"""Interpretation of a trained CrossmodalNet: saliency (gene rankings per protein), the learned time embedding,
GSEA on a ranking, ground-truth recovery on the simulator, and figures."""
from crossmodalnet.interpret.saliency import SaliencyResult, saliency
from crossmodalnet.interpret.time_embedding import interpolated_embedding, time_embedding_pca

__all__ = ["SaliencyResult", "saliency", "time_embedding_pca", "interpolated_embedding"]
