"""The networks, one package each; ``build_extractor`` picks the one a config names."""
from typing import Dict


def extractor_classes() -> Dict[str, type]:
    """``feature_type`` -> its extractor class (imported on demand: torch is heavy)."""
    from models.s3d import ExtractS3D
    from models.s3d_howto100m import ExtractS3DHowTo100M

    return {"s3d": ExtractS3D, "s3d_howto100m": ExtractS3DHowTo100M}


def build_extractor(cfg):
    """The extractor for a run's config (``utils.config.ExtractionConfig``)."""
    return extractor_classes()[cfg.feature_type].from_config(cfg)
