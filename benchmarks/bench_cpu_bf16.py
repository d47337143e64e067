"""precision=bf16 against fp32 on the CPU: the network, whole command-line runs, accuracy.

    python benchmarks/bench_cpu_bf16.py VIDEO [VIDEO ...] [--rounds 5]

e.g. with the incumbent's two sample videos (v-iashin/video_features, sample/):

    python benchmarks/bench_cpu_bf16.py /tmp/samples/v_GGSY1Qvo990.mp4 /tmp/samples/v_ZNVhz7ctTq0.mp4

(a) the network: one 64x224x224 stack through ``ExtractS3D.forward`` at fp32 and at bf16,
    alternating, ``--rounds`` times; medians, their ratio, and the relative L2 of bf16's
    features against fp32's;
(b) the command line (``python main.py`` with default options, ``device=cpu``, in a
    subprocess) on all the videos at once, fp32 and bf16 alternating, ``--cli-rounds`` times;
    median wall times and their ratio;
(c) accuracy on the videos: relative L2 of every stack's features, and how often the top-5
    Kinetics-400 classes (what ``show_pred`` prints) agree, as a set and in order.

Alternating keeps a busy machine fair to both.  Weights: seeded random ones
(``models/s3d/random_weights.py``): real ones cannot be fetched here; speed does not depend on
the values, and the accuracy figures are for those weights.
"""
import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from models.s3d import ExtractS3D  # noqa: E402
from models.s3d.random_weights import random_s3d  # noqa: E402
from utils.device import cpu_has_native_bf16  # noqa: E402

MAIN = os.path.join(REPO, "main.py")


def rel_l2(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def network(model, rounds: int):
    fp32 = ExtractS3D(model=model, device="cpu", num_workers=0)
    bf16 = ExtractS3D(model=model, device="cpu", num_workers=0, precision="bf16")
    gen = torch.Generator().manual_seed(0)
    times = {"fp32": [], "bf16": []}
    errors = []
    for r in range(rounds + 1):  # round 0 warms up
        frames = torch.randint(0, 256, (1, 64, 224, 224, 3), dtype=torch.uint8, generator=gen)
        out = {}
        for name, ex in (("fp32", fp32), ("bf16", bf16)) if r % 2 else (("bf16", bf16), ("fp32", fp32)):
            t0 = time.perf_counter()
            out[name] = ex.forward(frames)[0]
            if r:
                times[name].append(time.perf_counter() - t0)
        errors.append(rel_l2(out["bf16"], out["fp32"]))
        if r:
            print(f"  round {r}: fp32 {times['fp32'][-1]:.2f} s, bf16 {times['bf16'][-1]:.2f} s",
                  flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"(a) network, one 64-frame stack: fp32 {med['fp32']:.2f} s, bf16 {med['bf16']:.2f} s "
          f"(medians of {rounds}): {med['fp32'] / med['bf16']:.2f}x; features' relative L2 "
          f"{max(errors):.1e} at most")


def cli(videos, weights: str, rounds: int, workdir: str):
    times = {"fp32": [], "bf16": []}
    for r in range(rounds):
        for precision in ("fp32", "bf16") if r % 2 == 0 else ("bf16", "fp32"):
            cmd = [sys.executable, MAIN, f"video_paths=[{','.join(videos)}]", "device=cpu",
                   f"weights_path={weights}", f"precision={precision}"]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, cwd=workdir, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
            seconds = time.perf_counter() - t0
            if proc.returncode:
                sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
            times[precision].append(seconds)
            print(f"  {precision}: {seconds:.1f} s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"(b) command line, default options, {len(videos)} videos: fp32 {med['fp32']:.1f} s, "
          f"bf16 {med['bf16']:.1f} s (medians of {rounds}): {med['fp32'] / med['bf16']:.2f}x")
    print(f"    command: python main.py video_paths=[{','.join(videos)}] device=cpu "
          f"weights_path=<seeded random> precision=fp32|bf16")


def accuracy(model, videos):
    fp32 = ExtractS3D(model=model, device="cpu", num_workers=0)
    bf16 = ExtractS3D(model=model, device="cpu", num_workers=0, precision="bf16")
    errs, same_set, same_order, stacks = [], 0, 0, 0
    for video in videos:
        a, b = fp32.extract(video, with_logits=True), bf16.extract(video, with_logits=True)
        for fa, fb, la, lb in zip(a["s3d"], b["s3d"], a["logits"], b["logits"]):
            errs.append(rel_l2(fb, fa))
            ta, tb = np.argsort(-la)[:5], np.argsort(-lb)[:5]
            same_set += set(ta) == set(tb)
            same_order += bool((ta == tb).all())
            stacks += 1
    print(f"(c) accuracy on {stacks} stacks: features' relative L2 median {np.median(errs):.1e}, "
          f"max {max(errs):.1e}; top-5 the same set {same_set}/{stacks}, same order "
          f"{same_order}/{stacks}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("videos", nargs="+")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cli-rounds", type=int, default=3)
    parser.add_argument("--skip-cli", action="store_true")
    args = parser.parse_args(argv)
    if not cpu_has_native_bf16():
        print("this CPU has no native bfloat16: precision=bf16 falls back to fp32 here")
        return 1
    try:
        load = f", load average at start {os.getloadavg()[0]:.2f}"
    except OSError:
        load = ""
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    print(f"machine: {cpu}, {os.cpu_count()} CPUs, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), Python {platform.python_version()}{load}")
    model = random_s3d(0)
    videos = [os.path.abspath(v) for v in args.videos]
    network(model, args.rounds)
    accuracy(model, videos)
    if not args.skip_cli:
        with tempfile.TemporaryDirectory() as workdir:
            weights = os.path.join(workdir, "s3d_random_seed0.pt")
            torch.save(model.state_dict(), weights)
            cli(videos, weights, args.cli_rounds, workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
