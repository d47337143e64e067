"""S3D feature extraction: the network, its weights and the extractor."""
from models.s3d.network import FEATURE_DIM, MIN_STACK_SIZE, S3D

__all__ = ["S3D", "FEATURE_DIM", "MIN_STACK_SIZE"]
