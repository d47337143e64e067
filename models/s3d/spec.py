"""S3D on Kinetics-400 as the rest of the tool sees it: its defaults, limits, outputs, pixel
preset, weights and labels (``utils.networks.NetworkSpec``), registered as ``feature_type=s3d``.

Pure data: importing it imports no torch (the extractor is built on demand).
"""
import os

from utils.networks import Labels, NetworkSpec, WeightsFile, register

FEATURE_DIM = 1024

WEIGHTS = WeightsFile(
    option="weights_path",
    url=("https://github.com/v-iashin/video_features/raw/"
         "a2f61b7a4cf0ca6a2d91dcc2182f57e7cfd12664/models/s3d/checkpoint/"
         "S3D_kinetics400_torchified.pt"),
    filename="S3D_kinetics400_torchified.pt",
    git_blob_sha1="65b27cbb412937b3dd705f4216cb822d679535df")


def build(cfg):
    """The extractor for a run's config (``utils.config.ExtractionConfig``)."""
    from models.s3d.extractor import ExtractS3D

    return ExtractS3D.from_config(cfg)


SPEC = register(NetworkSpec(
    "s3d", "S3D, Kinetics-400 (kylemin/S3D weights): 64-frame stacks at 25 fps",
    stack_size=64, step_size=64, extraction_fps=25.0, preprocess="kylemin",
    # with 12 frames the last max-pool leaves one time step and the head's (2, H', W')
    # average pool has nothing to pool (tests/test_network.py checks both)
    min_stack_size=13, features=(("s3d", FEATURE_DIM),), build=build, weights=(WEIGHTS,),
    labels=Labels("Kinetics-400",
                  os.path.join(os.path.dirname(__file__), "kinetics400_labels.txt"))))
