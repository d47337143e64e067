"""S3D (Kinetics-400) feature extraction: the extractor (the Python API), the network, its weights.

    from models.s3d import ExtractS3D
    features = ExtractS3D(device="cpu").extract("video.mp4")["s3d"]   # (Tv, 1024)
"""
from models.s3d.extractor import ExtractS3D, VideoResult
from models.s3d.network import FEATURE_DIM, MIN_STACK_SIZE, S3D

__all__ = ["ExtractS3D", "VideoResult", "S3D", "FEATURE_DIM", "MIN_STACK_SIZE"]
