"""S3D-G text-video, trained on HowTo100M with MIL-NCE: the extractor, the network, its text
side, its weights, and text search over extracted outputs.

    from models.s3d_howto100m import ExtractS3DHowTo100M
    out = ExtractS3DHowTo100M(device="cpu").extract("video.mp4")
    out["s3d_howto100m"], out["video_embedding"]          # (Tv, 1024), (Tv, 512)

    python -m models.s3d_howto100m.search OUTPUT_PATH "cut tomato"
"""
from models.s3d_howto100m.extractor import ExtractS3DHowTo100M
from models.s3d_howto100m.network import EMBEDDING_DIM, FEATURE_DIM, MIN_STACK_SIZE, S3DG
from models.s3d_howto100m.text import SentenceEncoder, TextEncoder, Vocabulary
from models.s3d_howto100m.weights import load_text_encoder

__all__ = ["ExtractS3DHowTo100M", "S3DG", "SentenceEncoder", "TextEncoder", "Vocabulary",
           "load_text_encoder", "FEATURE_DIM", "EMBEDDING_DIM", "MIN_STACK_SIZE"]
