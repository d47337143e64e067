"""S3D (Kinetics-400) feature extraction: the extractor (the Python API), the network, its weights.

    from models.s3d import ExtractS3D
    features = ExtractS3D(device="cpu").extract("video.mp4")["s3d"]   # (Tv, 1024)

Importing the package registers ``feature_type=s3d`` (``spec.py``, pure data); the names below
that need torch are imported when first used, so that ``python main.py --help`` and a bad
option's message stay quick.
"""
import importlib

from models.s3d.spec import SPEC

_LAZY = {"ExtractS3D": "models.s3d.extractor", "VideoResult": "models.s3d.extractor",
         "S3D": "models.s3d.network", "FEATURE_DIM": "models.s3d.network",
         "MIN_STACK_SIZE": "models.s3d.network"}
__all__ = ["SPEC", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
