"""Seeded random MIL-NCE S3D-G weights in the port's key format, for the tests, the golden
script and the benchmark (no real weights can be fetched there).  Features and embeddings
from such weights are meaningless: they serve to compare implementations.
"""
from collections import OrderedDict
from typing import Dict

import torch

from models.s3d_howto100m.network import S3DG
from models.s3d_howto100m.text import SentenceEncoder
from models.s3d_howto100m.weights import TEXT_PREFIX


def random_state(seed: int = 0) -> Dict[str, torch.Tensor]:
    """A whole ``s3d_howto100m.pth``-like state dict: video keys, then ``text_module.*``.

    As for S3D (models/s3d/random_weights.py), BatchNorm gets random affine parameters and
    running statistics, and weights are scaled to keep activations O(1), so that different
    inputs give clearly different outputs and a wrong layer shows.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        shapes = OrderedDict((k, (v.shape, v.dtype)) for k, v in S3DG().state_dict().items())
        shapes.update((TEXT_PREFIX + k, (v.shape, v.dtype))
                      for k, v in SentenceEncoder().state_dict().items())
    state = OrderedDict()
    for name, (shape, dtype) in shapes.items():
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(0, dtype=dtype)
        elif name.endswith("running_mean"):
            state[name] = torch.randn(shape, generator=gen) * 0.1
        elif name.endswith("running_var"):
            state[name] = torch.rand(shape, generator=gen) * 1.5 + 0.5
        elif ".bn" in name and name.endswith(".weight"):
            state[name] = torch.rand(shape, generator=gen) * 1.5 + 0.5
        elif ".bn" in name and name.endswith(".bias"):
            state[name] = torch.randn(shape, generator=gen) * 0.2
        elif name.endswith("word_embd.weight"):
            state[name] = torch.randn(shape, generator=gen)
        elif name.endswith(".weight"):  # convolutions and linear maps: fan-in scaling
            fan_in = shape[1:].numel()
            gain = 2.0 if len(shape) == 5 else 1.0
            state[name] = torch.randn(shape, generator=gen) * (gain / fan_in) ** 0.5
        else:  # linear biases
            state[name] = torch.randn(shape, generator=gen) * 0.1
    return state


def video_state(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return OrderedDict((k, v) for k, v in state.items() if not k.startswith(TEXT_PREFIX))


def text_state(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return OrderedDict((k[len(TEXT_PREFIX):], v) for k, v in state.items()
                       if k.startswith(TEXT_PREFIX))


def random_s3dg(seed: int = 0) -> S3DG:
    """The video network with ``random_state(seed)``'s weights, in eval mode."""
    model = S3DG()
    model.load_state_dict(video_state(random_state(seed)))
    return model.eval()
