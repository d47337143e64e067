"""Regenerate tests/golden/sample_golden.npz: our pipeline on sample/sample.mp4, seed-0 weights.

Run from the repository root after a deliberate change of the numbers:

    python tests/golden/make_golden.py

Golden outputs come from our own pipeline; tests/test_outputs.py checks them against
independent oracles (the FFmpeg CLI's frames, each preset's scaling written out, torchvision's
S3D), so a regenerated file that moved for a wrong reason fails there.
"""
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(os.path.dirname(HERE)), os.path.dirname(HERE)]

from models.s3d import ExtractS3D  # noqa: E402
from models.s3d.random_weights import random_s3d

SAMPLE = os.path.join(os.path.dirname(os.path.dirname(HERE)), "sample", "sample.mp4")
GOLDEN = os.path.join(HERE, "sample_golden.npz")


def main() -> None:
    model = random_s3d(0)
    out = {}
    for preset in ("kylemin", "video_features"):
        result = ExtractS3D(model=model, device="cpu", preprocess=preset).extract(SAMPLE, with_logits=True)
        out[f"{preset}_s3d"] = result["s3d"]
        out[f"{preset}_logits"] = result["logits"]
        out[f"{preset}_timestamps_ms"] = result["timestamps_ms"]
        out[f"{preset}_fps"] = result["fps"]
    np.savez_compressed(GOLDEN, **out)
    print(f"wrote {GOLDEN}: " + ", ".join(f"{k} {v.shape}" for k, v in out.items()))


if __name__ == "__main__":
    main()
