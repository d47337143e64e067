"""Seeded random S3D weights, for the tests and the benchmark (no real weights can be fetched
there).  Features from such weights are meaningless: they serve to compare implementations.
"""
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
