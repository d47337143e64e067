"""The networks, one package each, registered here: importing a network's package registers its
spec (``models/<name>/spec.py``: defaults, limits, outputs, preset, weights, labels) with
``utils.networks``; nothing here imports torch.  Adding a network: its folder, and one line
below.
"""
import models.s3d  # noqa: F401 -- feature_type=s3d
import models.s3d_howto100m  # noqa: F401 -- feature_type=s3d_howto100m

from utils.networks import network


def build_extractor(cfg):
    """The extractor for a run's config (``utils.config.ExtractionConfig``)."""
    return network(cfg.feature_type).build(cfg)
