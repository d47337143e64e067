"""Shared fixtures: the sample clip, seeded random S3D weights, and a checkpoint file of them."""
import logging
import os

import pytest
import torch

import models  # noqa: F401 -- registers the networks (utils.networks), as main.py does
from models.s3d.random_weights import random_s3d

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(REPO, "sample", "sample.mp4")


@pytest.fixture(scope="session")
def repo_root() -> str:
    return REPO


@pytest.fixture(scope="session")
def sample_video() -> str:
    return SAMPLE


@pytest.fixture(scope="session")
def random_model():
    """S3D with seeded weights and non-trivial BatchNorm statistics (seed 0). Do not modify."""
    return random_s3d(0)


@pytest.fixture(scope="module")
def extractor(random_model):
    """One extractor at the network's minimum stack size (13) for a module's in-process runs."""
    from batch_helpers import make_extractor

    return make_extractor(random_model)


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory, random_model) -> str:
    """The seed-0 weights saved as the incumbent's format (plain state dict, ``base.*`` keys)."""
    path = tmp_path_factory.mktemp("weights") / "s3d_random_seed0.pt"
    torch.save(random_model.state_dict(), path)
    return str(path)


@pytest.fixture(autouse=True)
def restore_logging():
    """The command lines set up the root logger (a stderr handler, ``setup_logging``); a
    test calling one in-process gets it put back afterwards (every test: autouse)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
