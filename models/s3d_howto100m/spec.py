"""S3D-G from HowTo100M (MIL-NCE) as the rest of the tool sees it: defaults (its training
input), limits, outputs, pixel preset, its two files; registered as
``feature_type=s3d_howto100m``, with its own preset ``howto100m``.

Pure data: importing it imports no torch (the extractor is built on demand).
"""
from utils.networks import NetworkSpec, Preset, WeightsFile, register, register_preset

FEATURE_TYPE = "s3d_howto100m"
FEATURE_DIM = 1024
EMBEDDING_DIM = 512
EMBEDDING_KEY = "video_embedding"

_BASE_URL = "https://www.rocq.inria.fr/cluster-willow/amiech/howto100m/"
# the port publishes no checksums: each file's SHA-256 is recorded when it is loaded
WEIGHTS = WeightsFile("weights_path", _BASE_URL + "s3d_howto100m.pth", "s3d_howto100m.pth")
WORD_LIST = WeightsFile("dict_path", _BASE_URL + "s3d_dict.npy", "s3d_dict.npy",
                        what="word list")

# the model's input: kylemin's geometry (FFmpeg's bilinear scale, centre crop), pixels in
# [0, 1] ("normalized to [0, 1]", antoine77340/S3D_HowTo100M)
PRESET = register_preset(Preset("howto100m", resize="ffmpeg", value_range=(0, 1),
                                help="kylemin's resize, [0, 1]"))


def build(cfg):
    """The extractor for a run's config (``utils.config.ExtractionConfig``)."""
    from models.s3d_howto100m.extractor import ExtractS3DHowTo100M

    return ExtractS3DHowTo100M.from_config(cfg)


SPEC = register(NetworkSpec(
    FEATURE_TYPE, "S3D-G text-video, HowTo100M MIL-NCE (antoine77340/S3D_HowTo100M weights): "
    "32-frame stacks at 10 fps, as trained",
    stack_size=32, step_size=32, extraction_fps=10.0, preprocess=PRESET.name,
    # space-to-depth halves T, so stacks are even; 2 frames (T/2 = 1) still pass every pool
    # (tests/test_s3d_howto100m_port.py checks it)
    min_stack_size=2, even_stack_reason="space-to-depth stem takes frames in pairs",
    features=((FEATURE_TYPE, FEATURE_DIM), (EMBEDDING_KEY, EMBEDDING_DIM)), build=build,
    weights=(WEIGHTS, WORD_LIST),
    no_labels_hint="search its outputs by text: python -m models.s3d_howto100m.search"))
