"""Test helpers: seeded random S3D checkpoints and the map to torchvision's S3D keys."""
import re

import torch

from models.s3d.network import S3D


def random_s3d(seed: int = 0) -> S3D:
    """An S3D with seeded weights *and* non-trivial BatchNorm statistics.

    Default initialisation makes S3D's features almost constant (different inputs land
    1e-7 apart), so comparisons on it would pass on wrong code.  Conv weights are scaled to
    keep activations O(1); BatchNorm gets random affine parameters and running statistics.
    """
    gen = torch.Generator().manual_seed(seed)
    model = S3D()
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=gen) * 0.1)
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) * 1.5 + 0.5)
            elif name.endswith(("bn.weight", "bn_s.weight", "bn_t.weight")):
                t.copy_(torch.rand(t.shape, generator=gen) * 1.5 + 0.5)
            elif name.endswith(("bn.bias", "bn_s.bias", "bn_t.bias")):
                t.copy_(torch.randn(t.shape, generator=gen) * 0.2)
            elif t.dim() == 5:
                fan_in = t[0].numel()
                t.copy_(torch.randn(t.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=gen) * 0.1)
    return model.eval()


def to_torchvision_key(key: str) -> str:
    """Map a kylemin/S3D state-dict key to torchvision's ``S3D`` key."""
    key = re.sub(r"^base\.", "features.", key)
    key = re.sub(r"^fc\.0\.", "classifier.1.", key)
    key = re.sub(r"\.branch0\.0\.conv\.", ".branch0.0.", key)  # torchvision: no Sequential
    key = re.sub(r"\.branch0\.0\.bn\.", ".branch0.1.", key)    # around branch0
    key = re.sub(r"\.conv_s\.", ".0.0.", key)
    key = re.sub(r"\.bn_s\.", ".0.1.", key)
    key = re.sub(r"\.conv_t\.", ".1.0.", key)
    key = re.sub(r"\.bn_t\.", ".1.1.", key)
    key = re.sub(r"\.conv\.", ".0.", key)
    key = re.sub(r"\.bn\.", ".1.", key)
    return key
