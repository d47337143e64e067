"""Regenerate ``sample/sample.mp4``: a 10 s, 320x240, 29.97 fps synthetic clip (H.264).

The clip is ours (drawn here from numpy, no third-party footage): a drifting colour
gradient, a bouncing disc, a sliding bar and a textured square, so that every stack of
frames differs from the next.  Run from the repository root:

    python sample/make_sample.py [--out sample/sample.mp4]
"""
import argparse
from fractions import Fraction

import av
import numpy as np

WIDTH, HEIGHT = 320, 240
RATE = Fraction(30000, 1001)
SECONDS = 10


def draw(i: int, rng_texture: np.ndarray) -> np.ndarray:
    t = i / float(RATE)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    img = np.empty((HEIGHT, WIDTH, 3), np.float32)
    img[..., 0] = 128 + 100 * np.sin(x / 40 + t * 1.3)
    img[..., 1] = 128 + 100 * np.sin(y / 30 - t * 0.7)
    img[..., 2] = 128 + 100 * np.sin((x + y) / 55 + t * 2.1)
    cx = 160 + 120 * np.sin(t * 1.7)
    cy = 120 + 90 * np.cos(t * 1.1)
    disc = (x - cx) ** 2 + (y - cy) ** 2 < (25 + 10 * np.sin(t * 3)) ** 2
    img[disc] = (250, 240, 30)
    bar_x = int((t * 70) % (WIDTH + 40)) - 40
    img[:, max(bar_x, 0):max(bar_x + 30, 0)] *= 0.3
    sx, sy = int(20 + 8 * t) % (WIDTH - 64), 150
    img[sy:sy + 64, sx:sx + 64] = rng_texture
    return np.clip(img, 0, 255).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="sample/sample.mp4")
    args = parser.parse_args()
    texture = np.random.default_rng(0).integers(0, 256, (64, 64, 3)).astype(np.float32)
    with av.open(args.out, "w") as container:
        stream = container.add_stream("libx264", rate=RATE)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"crf": "20", "preset": "medium", "threads": "1"}
        for i in range(int(SECONDS * RATE)):
            frame = av.VideoFrame.from_ndarray(draw(i, texture), format="rgb24")
            frame.pts = i
            frame.time_base = 1 / RATE
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


if __name__ == "__main__":
    main()
