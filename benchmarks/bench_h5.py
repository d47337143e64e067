"""Dataset scale: 2,000 short clips saved with save_h5 versus save_numpy.

    python benchmarks/bench_h5.py                 # 2,000 clips: about 5 minutes on 2 CPU cores
    python benchmarks/bench_h5.py --videos 200    # a quick look

A NULL NETWORK replaces S3D here (each stack's features are a cheap function of its pixels):
what is measured is everything around the network, per video: opening the file, setting up
the decoder and the filters, decoding, cutting stacks, writing the outputs, the manifest
line.  The clips are copies of one generated 1 s, 25 fps, 112x112 H.264 clip (so every video
costs the same), listed in a list file, run in this process through ``utils.run.batch_run.run``
as the command line runs them (kylemin preset, stack_size=16, num_workers=1, device=cpu).

For each sink it prints: files created in the output folder, wall time of the run (the
weights loaded beforehand, not counted), milliseconds per video, bytes on disk (allocated
blocks) and bytes of data.  A second table measures, on the features of the sample video
through the real network (seeded random weights: real weights cannot be downloaded here, so
the ratios are indicative only), what HDF5's lossless filters would save, stored as save_h5
stores them (one dataset and one chunk per video, here of 8 stacks).  ``results.json`` in the work folder keeps
the numbers.
"""
import argparse
import contextlib
import io
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO]

import h5py  # noqa: E402
import imageio_ffmpeg  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from models import build_extractor  # noqa: E402
from models.s3d import inference  # noqa: E402
from models.s3d.random_weights import random_s3d  # noqa: E402
from utils.outputs import h5_format  # noqa: E402
from utils.run.batch_run import run  # noqa: E402
from utils.config import ExtractionConfig, OnExtraction  # noqa: E402

SAMPLE = os.path.join(REPO, "sample", "sample.mp4")
VIDEO_ROWS = 8  # stacks per video in the filters' table


def null_network(self, frames: torch.Tensor):
    """(B, 1024) features and (B, 400) logits from the stacks' mean pixels: no network cost."""
    mean = frames.float().mean(dim=(1, 2, 3))
    ramp = torch.arange(1021, dtype=torch.float32) / 1021.0
    return torch.cat([mean, mean.sum(1, keepdim=True) * ramp], 1), torch.zeros(len(frames), 400)


def make_clips(folder: str, count: int) -> str:
    """``count`` copies of one short clip and the list file naming them."""
    os.makedirs(folder, exist_ok=True)
    first = os.path.join(folder, "clip00000.mp4")
    if not os.path.exists(first):
        subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i",
                        "testsrc2=size=112x112:rate=25:duration=1", "-c:v", "libx264",
                        "-pix_fmt", "yuv420p", first], check=True)
    paths = [first]
    for i in range(1, count):
        path = os.path.join(folder, f"clip{i:05d}.mp4")
        if not os.path.exists(path):
            shutil.copyfile(first, path)
        paths.append(path)
    listing = os.path.join(folder, f"list-{count}.txt")
    with open(listing, "w", encoding="utf-8") as f:
        f.write("\n".join(paths) + "\n")
    return listing


def disk_usage(root: str):
    """(files, bytes allocated on disk, bytes of data) under ``root``."""
    files = allocated = size = 0
    for folder, _, names in os.walk(root):
        for name in names:
            st = os.lstat(os.path.join(folder, name))
            files += 1
            allocated += st.st_blocks * 512
            size += st.st_size
    return files, allocated, size


def bench_sinks(work: str, count: int, weights: str):
    listing = make_clips(os.path.join(work, "clips"), count)
    inference.BatchRunner.forward = null_network
    rows = []
    for sink in ("save_numpy", "save_h5"):
        out = os.path.join(work, f"out-{sink}")
        shutil.rmtree(out, ignore_errors=True)
        cfg = ExtractionConfig(file_with_video_paths=listing, output_path=out,
                               on_extraction=OnExtraction(sink), device="cpu",
                               weights_path=weights, stack_size=16, step_size=16,
                               num_workers=1, progress_every_s=0)
        extractor = build_extractor(cfg)
        t0 = time.perf_counter()
        report = run(cfg, extractor)
        wall = time.perf_counter() - t0
        if report.done != count:
            raise SystemExit(f"{sink}: {report.summary()}")
        files, allocated, size = disk_usage(out)
        rows.append({"sink": sink, "videos": count, "files": files, "wall_s": round(wall, 1),
                     "ms_per_video": round(1000 * wall / count, 1),
                     "disk_bytes": allocated, "data_bytes": size})
    return rows


def bench_filters(weights: str):
    """Sizes and times of the sample's real features (random weights) under each filter."""
    from models.s3d import ExtractS3D
    model = random_s3d()
    # stacks 4 frames apart: many different rows from the one sample
    feats = ExtractS3D(model=model, device="cpu", stack_size=16, step_size=4)
    x = np.ascontiguousarray(feats.extract(SAMPLE)["s3d"])
    rows = []
    for label, kw in (("none", {}), ("gzip 4 + shuffle", {"compression": "gzip",
                                                          "compression_opts": 4,
                                                          "shuffle": True}),
                      ("lzf + shuffle", {"compression": "lzf", "shuffle": True})):
        buf = io.BytesIO()
        t0 = time.perf_counter()
        # as save_h5 stores them: one dataset (one chunk) per video, here of VIDEO_ROWS stacks
        blocks = [x[i:i + VIDEO_ROWS] for i in range(0, len(x), VIDEO_ROWS)]
        with h5py.File(buf, "w", libver=h5_format.LIBVER) as f:
            for i, block in enumerate(blocks):
                f.create_dataset(str(i), data=block, chunks=block.shape if kw else None, **kw)
        write = time.perf_counter() - t0
        t0 = time.perf_counter()
        with h5py.File(io.BytesIO(buf.getvalue()), "r") as f:
            np.testing.assert_array_equal(np.concatenate([f[str(i)][()] for i in
                                                          range(len(blocks))]), x)
        read = time.perf_counter() - t0
        rows.append({"filter": label, "bytes": len(buf.getvalue()), "raw_bytes": x.nbytes,
                     "write_ms_per_MB": round(1000 * write / (x.nbytes / 2**20), 2),
                     "read_ms_per_MB": round(1000 * read / (x.nbytes / 2**20), 2)})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=2000)
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "s3d_bench_h5"))
    parser.add_argument("--skip-filters", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    os.makedirs(args.workdir, exist_ok=True)
    weights = os.path.join(args.workdir, "s3d_random.pt")
    if not os.path.exists(weights):
        torch.save(random_s3d().state_dict(), weights)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    sinks = bench_sinks(args.workdir, args.videos, weights)
    print(f"{args.videos} clips (1 s, 112x112), null network, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs")
    print(f"{'sink':<11} {'files':>6} {'wall s':>7} {'ms/video':>9} {'on disk':>10} {'data':>10}")
    for r in sinks:
        print(f"{r['sink']:<11} {r['files']:>6} {r['wall_s']:>7} {r['ms_per_video']:>9} "
              f"{r['disk_bytes']:>10} {r['data_bytes']:>10}")
    filters = [] if args.skip_filters else bench_filters(weights)
    for r in filters:
        print(f"filter {r['filter']:<17} {r['bytes']:>9} of {r['raw_bytes']} bytes "
              f"({r['bytes'] / r['raw_bytes']:.1%}), write {r['write_ms_per_MB']} ms/MB, "
              f"read {r['read_ms_per_MB']} ms/MB")
    with contextlib.suppress(OSError):
        with open(os.path.join(args.workdir, "results.json"), "w", encoding="utf-8") as f:
            json.dump({"sinks": sinks, "filters": filters, "cpus": os.cpu_count()}, f, indent=1)
    numpy_row, h5_row = sinks
    return 0 if h5_row["wall_s"] <= numpy_row["wall_s"] * 1.05 else 1


if __name__ == "__main__":
    sys.exit(main())
