"""The S3D HowTo100M (MIL-NCE) feature extractor: the Python API that the command line uses.

    from models.s3d_howto100m import ExtractS3DHowTo100M
    extractor = ExtractS3DHowTo100M(weights_path="s3d_howto100m.pth", dict_path="s3d_dict.npy",
                                    device="cpu")
    out = extractor.extract("video.mp4")
    out["s3d_howto100m"]    # (Tv, 1024) float32: mixed_5c, averaged over time and space
    out["video_embedding"]  # (Tv, 512) float32: in the joint text-video space
    out["timestamps_ms"]    # (Tv, 2) float64, [start, end) of every stack
    out["fps"]              # the frame rate the stacks were cut at (10 by default)

The options are ``utils.config.ExtractorOptions`` with ``feature_type="s3d_howto100m"``
(the default here), whose defaults are the model's training input: 32-frame stacks at 10 fps,
``preprocess=howto100m`` (FFmpeg's bilinear scale to a short side of 224, centre 224x224 crop,
pixels in [0, 1]).  Decoding, batching, BatchNorm folding and the rest are ``ExtractS3D``'s.

Provenance: ``weights`` (``source`` / ``sha256`` and ``dict_source`` / ``dict_sha256``) names
the checkpoint and the word list (the URL of a default download, or the local path).
The word list is not needed to extract, but it is resolved and checked against the
checkpoint here, so that the outputs' text search (``models.s3d_howto100m.search``) has the
pair the run was made with.
"""
from typing import Dict, Optional

import numpy as np
import torch

from models.s3d.extractor import ExtractS3D
from models.s3d_howto100m.network import S3DG
from models.s3d_howto100m.spec import EMBEDDING_KEY, FEATURE_TYPE, SPEC
from models.s3d_howto100m.weights import load_checkpoint, resolve_dict, resolve_weights, vocabulary_of
from utils.config import ExtractorOptions


class ExtractS3DHowTo100M(ExtractS3D):
    """Turns videos into ``{"s3d_howto100m", "video_embedding", "timestamps_ms", "fps"}``.

    Keyword options: those of ``utils.config.ExtractorOptions``.  ``model``: an already
    loaded ``S3DG`` to use (not modified); ``weights_path`` and ``dict_path`` are then not
    read, and the provenance attributes are None.
    """

    spec = SPEC

    def __init__(self, options: Optional[ExtractorOptions] = None, *, model: Optional[S3DG] = None,
                 **kwargs):
        self.dict_path = None
        super().__init__(options, model=model, **kwargs)

    def load_model(self, options: ExtractorOptions) -> torch.nn.Module:
        weights = resolve_weights(options.weights_path)
        words = resolve_dict(options.dict_path)
        vocabulary_of(words.path)  # a word list this checkpoint's word table can hold
        model = S3DG()
        load_checkpoint(weights.path, video=model)  # both sides checked, the video one loaded
        self.weights_path, self.dict_path = weights.path, words.path
        self.weights = {"source": weights.source, "sha256": weights.sha256,
                        "dict_source": words.source, "dict_sha256": words.sha256}
        return model.eval()

    def network_outputs(self, features: torch.Tensor, second: torch.Tensor,
                        with_logits: bool) -> Dict[str, np.ndarray]:
        return {FEATURE_TYPE: features.numpy().astype(np.float32, copy=False),
                EMBEDDING_KEY: second.numpy().astype(np.float32, copy=False)}

    def extract(self, path: str, with_logits: bool = False) -> Dict[str, np.ndarray]:
        """Features of one video: ``s3d_howto100m`` (Tv, 1024), ``video_embedding`` (Tv, 512),
        ``timestamps_ms`` (Tv, 2), ``fps``."""
        if with_logits:
            raise ValueError("with_logits: s3d_howto100m has no classes (it embeds video and "
                             "text; search its outputs with python -m models.s3d_howto100m.search)")
        return super().extract(path)
