"""The S3D network in the layout of kylemin/S3D.

Blocks are ``nn.Sequential`` subclasses with named children, so the state-dict keys
(``base.<i>.conv_s.weight``, ``base.5.branch1.1.bn_t.running_mean``, ``fc.0.bias`` ...)
are exactly those of kylemin's Kinetics-400 checkpoint and of the incumbent's
``S3D_kinetics400_torchified.pt``.

Reference: Xie et al., "Rethinking Spatiotemporal Feature Learning: Speed-Accuracy
Trade-offs in Video Classification", ECCV 2018.
"""
from collections import OrderedDict
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from models.s3d.spec import FEATURE_DIM, SPEC

BN_EPS = 1e-3
BN_MOMENTUM = 1e-3
NUM_CLASSES = 400
# Fewest frames a stack may have (option validation needs it too, so it lives with the
# options): with 12 the last max-pool leaves one time step and the head's (2, H', W') average
# pool has nothing to pool (tests/test_network.py checks both).
MIN_STACK_SIZE = SPEC.min_stack_size


class BasicConv3d(nn.Sequential):
    """Conv3d (no bias) -> BatchNorm3d -> ReLU."""

    def __init__(self, in_planes: int, out_planes: int, kernel_size, stride=1, padding=0):
        super().__init__(OrderedDict([
            ("conv", nn.Conv3d(in_planes, out_planes, kernel_size, stride, padding, bias=False)),
            ("bn", nn.BatchNorm3d(out_planes, eps=BN_EPS, momentum=BN_MOMENTUM)),
            ("relu", nn.ReLU(inplace=True)),
        ]))


class SepConv3d(nn.Sequential):
    """Separable 3D conv: a (1, k, k) spatial conv then a (k, 1, 1) temporal conv."""

    def __init__(self, in_planes: int, out_planes: int, kernel_size: int, stride: int = 1,
                 padding: int = 0):
        k, s, p = kernel_size, stride, padding
        super().__init__(OrderedDict([
            ("conv_s", nn.Conv3d(in_planes, out_planes, (1, k, k), (1, s, s), (0, p, p), bias=False)),
            ("bn_s", nn.BatchNorm3d(out_planes, eps=BN_EPS, momentum=BN_MOMENTUM)),
            ("relu_s", nn.ReLU(inplace=True)),
            ("conv_t", nn.Conv3d(out_planes, out_planes, (k, 1, 1), (s, 1, 1), (p, 0, 0), bias=False)),
            ("bn_t", nn.BatchNorm3d(out_planes, eps=BN_EPS, momentum=BN_MOMENTUM)),
            ("relu_t", nn.ReLU(inplace=True)),
        ]))


class Mixed(nn.Module):
    """Inception block with separable convs; its four branches are concatenated."""

    def __init__(self, in_planes: int, b0: int, b1: Tuple[int, int], b2: Tuple[int, int], b3: int):
        super().__init__()
        self.branch0 = nn.Sequential(BasicConv3d(in_planes, b0, 1))
        self.branch1 = nn.Sequential(BasicConv3d(in_planes, b1[0], 1),
                                     SepConv3d(b1[0], b1[1], 3, 1, 1))
        self.branch2 = nn.Sequential(BasicConv3d(in_planes, b2[0], 1),
                                     SepConv3d(b2[0], b2[1], 3, 1, 1))
        self.branch3 = nn.Sequential(nn.MaxPool3d(3, 1, 1), BasicConv3d(in_planes, b3, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], 1)


class S3D(nn.Module):
    """S3D with a Kinetics-400 head.

    ``forward(x)`` takes ``(B, 3, T, H, W)`` float input and returns ``(features, logits)``:
    ``features`` (B, 1024) are the head's input, average-pooled with kernel (2, H', W') and
    stride 1 and then averaged over time; ``logits`` (B, 400) come from the same pass.
    """

    # kept float32 when the rest runs in bfloat16 (models.s3d.inference.CpuBfloat16)
    FP32_MODULES = ("fc",)

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.base = nn.Sequential(
            SepConv3d(3, 64, 7, 2, 3),                                        # 0
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),                    # 1
            BasicConv3d(64, 64, 1),                                           # 2
            SepConv3d(64, 192, 3, 1, 1),                                      # 3
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),                    # 4
            Mixed(192, 64, (96, 128), (16, 32), 32),                          # 5  Mixed_3b
            Mixed(256, 128, (128, 192), (32, 96), 64),                        # 6  Mixed_3c
            nn.MaxPool3d((3, 3, 3), (2, 2, 2), (1, 1, 1)),                    # 7
            Mixed(480, 192, (96, 208), (16, 48), 64),                         # 8  Mixed_4b
            Mixed(512, 160, (112, 224), (24, 64), 64),                        # 9  Mixed_4c
            Mixed(512, 128, (128, 256), (24, 64), 64),                        # 10 Mixed_4d
            Mixed(512, 112, (144, 288), (32, 64), 64),                        # 11 Mixed_4e
            Mixed(528, 256, (160, 320), (32, 128), 128),                      # 12 Mixed_4f
            nn.MaxPool3d((2, 2, 2), (2, 2, 2), (0, 0, 0)),                    # 13
            Mixed(832, 256, (160, 320), (32, 128), 128),                      # 14 Mixed_5b
            Mixed(832, 384, (192, 384), (48, 128), 128),                      # 15 Mixed_5c
        )
        self.fc = nn.Sequential(nn.Conv3d(FEATURE_DIM, num_classes, 1, 1, bias=True))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        y = self.base(x).float()  # pooled in float32 when the base runs in bfloat16
        y = F.avg_pool3d(y, (2, y.size(3), y.size(4)), stride=1)       # (B, 1024, T'-1, 1, 1)
        features = y.mean(dim=(2, 3, 4))
        logits = self.fc(y).mean(dim=(2, 3, 4))
        return features, logits
