"""S3D-G, the video side of the MIL-NCE HowTo100M text-video model, in the port's key layout.

The state-dict keys (``conv1.conv1.weight``, ``conv_2c.bn2.running_var``, ``gating.fc.bias``,
``mixed_4d.conv_b1_b.conv2.weight``, ``mixed_5c.gating_b3.fc.weight``, ``fc.weight`` ...) are
those of ``s3d_howto100m.pth`` from antoine77340/S3D_HowTo100M (Apache-2.0), whose text-side
keys (``text_module.*``) belong to ``models.s3d_howto100m.text``.

What sets it apart from the Kinetics S3D of ``models/s3d``:

* the space-to-depth stem: each 2x2x2 block of pixels becomes 8 x 3 = 24 channels, then a
  (2, 4, 4) convolution with TensorFlow's "SAME" padding (stride 1: one frame after, one row /
  column before and two after), so T, H and W must be even;
* self-gating (S3D-G): each branch's channels are scaled by a sigmoid of a linear map of
  their own spatio-temporal means, after ``conv_2c`` and after every Inception branch;
* max-pools with TensorFlow's "SAME" padding as the port reproduces it, whatever the input
  size: ``max(k - s, 0)`` zeros per dimension, the smaller half before, then a pool with
  ``ceil_mode`` (zeros act as ``-inf`` would: every pooled activation is >= 0, a ReLU's
  output or one scaled by a sigmoid); the Inception branches' max-pools are PyTorch's
  (kernel 3, stride 1, padding 1);
* BatchNorm with PyTorch's default eps, 1e-5 (the port's);
* the head: ``mixed_5c`` averaged over time and space (1024 numbers, the features), and a
  linear map of it into the joint text-video space (512 numbers, ``video_embedding``).

Blocks are ``nn.Sequential`` of Conv3d -> BatchNorm3d -> ReLU, so
``models.s3d.inference.inference_model`` folds and re-lays them out as it does for S3D.

References: Xie et al., "Rethinking Spatiotemporal Feature Learning", ECCV 2018 (S3D-G);
Miech et al., "End-to-End Learning of Visual Representations from Uncurated Instructional
Videos", CVPR 2020 (MIL-NCE).
"""
from collections import OrderedDict
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from models.s3d_howto100m.spec import EMBEDDING_DIM, FEATURE_DIM, SPEC

BN_EPS = 1e-5
MIN_STACK_SIZE = SPEC.min_stack_size    # tests/test_s3d_howto100m_port.py checks it passes every pool


class Unit(nn.Sequential):
    """Conv3d (no bias) -> BatchNorm3d -> ReLU; ``separable``: a (1, k, k) spatial then a
    (k, 1, 1) temporal pair, keys ``conv1/bn1`` then ``conv2/bn2`` (the port's ``STConv3D``)."""

    def __init__(self, in_planes: int, out_planes: int, kernel: Sequence[int], padding: int = 0,
                 separable: bool = False):
        k, p = tuple(kernel), padding
        if separable:
            layers = [
                ("conv1", nn.Conv3d(in_planes, out_planes, (1, k[1], k[2]), 1, (0, p, p), bias=False)),
                ("bn1", nn.BatchNorm3d(out_planes, eps=BN_EPS)),
                ("relu1", nn.ReLU(inplace=True)),
                ("conv2", nn.Conv3d(out_planes, out_planes, (k[0], 1, 1), 1, (p, 0, 0), bias=False)),
                ("bn2", nn.BatchNorm3d(out_planes, eps=BN_EPS)),
                ("relu2", nn.ReLU(inplace=True)),
            ]
        else:
            layers = [
                ("conv1", nn.Conv3d(in_planes, out_planes, k, 1, p, bias=False)),
                ("bn1", nn.BatchNorm3d(out_planes, eps=BN_EPS)),
                ("relu1", nn.ReLU(inplace=True)),
            ]
        super().__init__(OrderedDict(layers))


class SelfGating(nn.Module):
    """``x * sigmoid(fc(mean of x over T, H, W))``, one gate per channel."""

    def __init__(self, channels: int):
        super().__init__()
        self.fc = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.fc(x.mean(dim=(2, 3, 4))))
        return x * gate[:, :, None, None, None]


def same_padding(kernel: Sequence[int], stride: Sequence[int]) -> Tuple[int, ...]:
    """``F.pad`` amounts (W before, W after, H ..., T ...) of the port's TF "SAME" max-pool."""
    pads = []
    for k, s in zip(reversed(kernel), reversed(stride)):
        total = max(k - s, 0)
        pads += [total // 2, total - total // 2]
    return tuple(pads)


class SamePool(nn.Module):
    """Max-pool with the port's TensorFlow "SAME" padding (see the module's docstring)."""

    def __init__(self, kernel: Tuple[int, int, int], stride: Tuple[int, int, int]):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.pad = same_padding(kernel, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pad):
            x = F.pad(x, self.pad)
        return F.max_pool3d(x, self.kernel, self.stride, ceil_mode=True)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, stride={self.stride}, pad={self.pad}"


class Inception(nn.Module):
    """Four branches (1x1x1; 1x1x1 -> separable 3x3x3; the same; 3x3x3 max-pool -> 1x1x1),
    each self-gated, concatenated."""

    def __init__(self, in_planes: int, b0: int, b1: Tuple[int, int], b2: Tuple[int, int], b3: int):
        super().__init__()
        self.conv_b0 = Unit(in_planes, b0, (1, 1, 1))
        self.conv_b1_a = Unit(in_planes, b1[0], (1, 1, 1))
        self.conv_b1_b = Unit(b1[0], b1[1], (3, 3, 3), padding=1, separable=True)
        self.conv_b2_a = Unit(in_planes, b2[0], (1, 1, 1))
        self.conv_b2_b = Unit(b2[0], b2[1], (3, 3, 3), padding=1, separable=True)
        self.conv_b3_b = Unit(in_planes, b3, (1, 1, 1))
        self.gating_b0 = SelfGating(b0)
        self.gating_b1 = SelfGating(b1[1])
        self.gating_b2 = SelfGating(b2[1])
        self.gating_b3 = SelfGating(b3)
        self.out_planes = b0 + b1[1] + b2[1] + b3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.gating_b0(self.conv_b0(x)),
            self.gating_b1(self.conv_b1_b(self.conv_b1_a(x))),
            self.gating_b2(self.conv_b2_b(self.conv_b2_a(x))),
            self.gating_b3(self.conv_b3_b(F.max_pool3d(x, 3, 1, 1))),
        ], 1)


def space_to_depth(x: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, 8C, T/2, H/2, W/2): channel ``((dt * 2 + dh) * 2 + dw) * C + c``
    holds pixel (2t + dt, 2h + dh, 2w + dw) of channel c.  The result is channels_last_3d
    in memory (what the convolutions after it are fastest on)."""
    b, c, t, h, w = x.shape
    if t % 2 or h % 2 or w % 2:
        raise ValueError(f"space-to-depth needs an even number of frames, rows and columns; "
                         f"got T={t}, H={h}, W={w}")
    y = x.permute(0, 2, 3, 4, 1).reshape(b, t // 2, 2, h // 2, 2, w // 2, 2, c)
    y = y.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(b, t // 2, h // 2, w // 2, 8 * c)
    return y.permute(0, 4, 1, 2, 3)


# TF "SAME" for the stem's (2, 4, 4) convolution at stride 1: (W before, after, H ..., T ...)
STEM_PAD = (1, 2, 1, 2, 0, 1)


class S3DG(nn.Module):
    """S3D-G with the MIL-NCE head.

    ``forward(x)`` takes ``(B, 3, T, H, W)`` pixels in [0, 1] (T, H, W even) and returns
    ``(features, embedding)``: ``features`` (B, 1024) is ``mixed_5c`` averaged over time and
    space, ``embedding`` (B, 512) its image in the joint text-video space.
    """

    # kept float32 when the rest runs in bfloat16 (models.s3d.inference.CpuBfloat16)
    FP32_MODULES = ("fc",)

    def __init__(self):
        super().__init__()
        self.conv1 = Unit(24, 64, (2, 4, 4))
        self.maxpool_2a = SamePool((1, 3, 3), (1, 2, 2))
        self.conv_2b = Unit(64, 64, (1, 1, 1))
        self.conv_2c = Unit(64, 192, (3, 3, 3), padding=1, separable=True)
        self.gating = SelfGating(192)
        self.maxpool_3a = SamePool((1, 3, 3), (1, 2, 2))
        self.mixed_3b = Inception(192, 64, (96, 128), (16, 32), 32)
        self.mixed_3c = Inception(256, 128, (128, 192), (32, 96), 64)
        self.maxpool_4a = SamePool((3, 3, 3), (2, 2, 2))
        self.mixed_4b = Inception(480, 192, (96, 208), (16, 48), 64)
        self.mixed_4c = Inception(512, 160, (112, 224), (24, 64), 64)
        self.mixed_4d = Inception(512, 128, (128, 256), (24, 64), 64)
        self.mixed_4e = Inception(512, 112, (144, 288), (32, 64), 64)
        self.mixed_4f = Inception(528, 256, (160, 320), (32, 128), 128)
        self.maxpool_5a = SamePool((2, 2, 2), (2, 2, 2))
        self.mixed_5b = Inception(832, 256, (160, 320), (32, 128), 128)
        self.mixed_5c = Inception(832, 384, (192, 384), (48, 128), 128)
        self.fc = nn.Linear(FEATURE_DIM, EMBEDDING_DIM)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        y = self.conv1(F.pad(space_to_depth(x), STEM_PAD))
        y = self.maxpool_2a(y)
        y = self.gating(self.conv_2c(self.conv_2b(y)))
        y = self.maxpool_3a(y)
        y = self.mixed_3c(self.mixed_3b(y))
        y = self.maxpool_4a(y)
        for block in (self.mixed_4b, self.mixed_4c, self.mixed_4d, self.mixed_4e, self.mixed_4f):
            y = block(y)
        y = self.maxpool_5a(y)
        y = self.mixed_5c(self.mixed_5b(y))
        features = y.float().mean(dim=(2, 3, 4))  # in float32 when the rest runs in bfloat16
        return features, self.fc(features)
