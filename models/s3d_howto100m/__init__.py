"""S3D-G text-video, trained on HowTo100M with MIL-NCE: the extractor, the network, its text
side, its weights, and text search over extracted outputs.

    from models.s3d_howto100m import ExtractS3DHowTo100M
    out = ExtractS3DHowTo100M(device="cpu").extract("video.mp4")
    out["s3d_howto100m"], out["video_embedding"]          # (Tv, 1024), (Tv, 512)

    python -m models.s3d_howto100m.search OUTPUT_PATH "cut tomato"

Importing the package registers ``feature_type=s3d_howto100m`` and the ``howto100m`` preset
(``spec.py``, pure data); the names below that need torch are imported when first used.
"""
import importlib

from models.s3d_howto100m.spec import EMBEDDING_DIM, FEATURE_DIM, SPEC

_LAZY = {"ExtractS3DHowTo100M": "models.s3d_howto100m.extractor",
         "S3DG": "models.s3d_howto100m.network", "MIN_STACK_SIZE": "models.s3d_howto100m.network",
         "SentenceEncoder": "models.s3d_howto100m.text", "TextEncoder": "models.s3d_howto100m.text",
         "Vocabulary": "models.s3d_howto100m.text",
         "load_text_encoder": "models.s3d_howto100m.weights"}
__all__ = ["SPEC", "FEATURE_DIM", "EMBEDDING_DIM", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
