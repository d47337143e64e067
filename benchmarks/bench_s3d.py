"""Benchmark of the S3D extractor: network speed, end-to-end CLI runs, and pipeline idle time.

    python benchmarks/bench_s3d.py            # full run (about 10 min on a 2-core CPU; the first run also
                                              # generates the videos, about 10 min more)
    python benchmarks/bench_s3d.py --quick    # a few minutes: checks the script, rough numbers

One process, one run, three parts:

(a) network stacks/s on 64x224x224 stacks: the plain eager NCDHW fp32 forward (baseline) vs
    channels_last_3d with 2-D convs vs our defaults (BatchNorm folded + channels_last_3d +
    inference_mode) vs ``compile=true``, each with its largest relative feature error against the baseline;
(b) end-to-end wall time and peak RSS of the real command line (``python main.py``, in a
    subprocess) on generated 1080p videos of 30 s and 5 min;
(c) the share of wall time the network sat idle waiting for frames (the CLI's "pipeline:" line);
(d) the other network, ``s3d_howto100m`` (S3D-G, 32-frame stacks), next to ``s3d`` with default
    options: stacks/s and seconds of video per second, the two timed round-robin.

It prints a Markdown table with ratios and the issue's targets, and writes ``results.json`` in
the work folder.  Weights are seeded random ones with non-trivial BatchNorm statistics (speed
does not depend on the values; the error column needs weights that do not flatten features).
Videos are generated once with the FFmpeg CLI that imageio-ffmpeg ships (a test dependency)
and cached in the work folder (``--workdir``, default: <tmp>/s3d_bench).
"""
import argparse
import contextlib
import copy
import json
import logging
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO]

from measure import vm_hwm  # noqa: E402 -- benchmarks/measure.py

import numpy as np  # noqa: E402
import torch  # noqa: E402

from models.s3d import ExtractS3D  # noqa: E402
from utils.video.pipeline import VideoRecord, video_batches  # noqa: E402
from utils.video.preprocess import KyleminFrames  # noqa: E402

log = logging.getLogger("bench")

STACK = 64
PIPELINE_LINE = re.compile(r"pipeline: (\d+) stacks in ([\d.]+) s, network busy ([\d.]+) s, "
                           r"waiting for frames ([\d.]+) s")
TARGETS = {"defaults": 1.6, "compile": 2.4}


# -- helpers ----------------------------------------------------------------------------------
def random_weights():
    from models.s3d.random_weights import random_s3d  # seeded, non-trivial BatchNorm

    return random_s3d(0)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest per-row relative L2 difference."""
    a, b = a.double(), b.double()
    return float(((a - b).norm(dim=1) / b.norm(dim=1)).max())


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    text = (f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), Python {platform.python_version()}")
    if torch.cuda.is_available():
        text += f", GPU: {torch.cuda.get_device_name(0)}"
    try:
        load = os.getloadavg()
        text += f", load average at start {load[0]:.2f}"
    except OSError:
        pass
    return text


# -- the machine's ceiling ----------------------------------------------------------------------
def network_gflop(model, frames: int = STACK) -> float:
    """GFLOP of one stack (``frames`` x 224 x 224) through the network (torch's FLOP counter,
    2 per MAC)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:  # on the meta device: counts, computes nothing
        copy.deepcopy(model).to("meta").eval()(torch.zeros(1, 3, frames, 224, 224, device="meta"))
    return counter.get_total_flops() / 1e9


def matmul_gflops(device: str, n: int = 4096, repeats: int = 5) -> float:
    """Best fp32 GFLOP/s of an n x n matmul: what the BLAS reaches on this machine's cores."""
    dev = torch.device(device)
    a = torch.randn(n, n, device=dev)
    b = torch.randn(n, n, device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    flags = (torch.backends.cuda.matmul.allow_tf32, False)
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        a @ b
        sync()
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            sync()
            best = min(best, time.perf_counter() - t0)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = flags[0]
    return 2 * n ** 3 / best / 1e9


def ceiling(args, model) -> Dict:
    """The network's FLOPs and the fastest a stack can go here if every FLOP ran at matmul speed."""
    gflop = network_gflop(model)
    rate = matmul_gflops(args.device)
    log.info("network: %.1f GFLOP per stack; fp32 matmul: %.0f GFLOP/s -> floor %.2f s per stack",
             gflop, rate, gflop / rate)
    return {"gflop_per_stack": gflop, "matmul_gflops": rate, "floor_s_per_stack": gflop / rate}


# -- (a) the network ---------------------------------------------------------------------------
def network_part(args, model) -> List[Dict]:
    """Seconds per stack of every variant, measured round-robin over the same stacks.

    Each round gives every variant the same ``M`` stacks (``M``: the largest batch size timed),
    in batches of its own size, so a change of machine load during the run hits all variants
    alike; a variant's time is the median over rounds.
    """
    device = torch.device(args.device)
    variants = []  # (key, name, batch size, run(frames) -> features)
    base_model = model.to(device).eval()

    def eager(frames):
        # true fp32 on CUDA too (cuDNN would use TF32 by default), cuDNN otherwise as it comes
        flags = (torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=False,
                                            allow_tf32=False)
                 if device.type == "cuda" else contextlib.nullcontext())
        with torch.inference_mode(), flags:
            x = KyleminFrames.to_input(frames.to(device)).permute(0, 4, 1, 2, 3).contiguous()
            return base_model(x)[0].float().cpu()

    variants.append(("baseline", "eager NCDHW fp32 (baseline)", 1, eager))
    cl_only = ExtractS3D(model=model, device=args.device, fold_bn=False, batch_size=1, num_workers=0)
    variants.append(("channels_last", "channels_last_3d + 2-D convs (BatchNorm not folded)", 1,
                     lambda f: cl_only.forward(f)[0]))
    default = ExtractS3D(model=model, device=args.device, num_workers=0)
    b = default.batch_size
    variants.append(("defaults", f"defaults (BN folded, channels_last_3d, 2-D convs, "
                     f"batch_size={b})", b, lambda f: default.forward(f)[0]))
    for extra in args.batch_sizes:
        if extra != b:
            other = ExtractS3D(model=model, device=args.device, num_workers=0, batch_size=extra)
            variants.append((f"batch_size={extra}", f"defaults with batch_size={extra}", extra,
                             lambda f, o=other: o.forward(f)[0]))
    if device.type == "cuda":
        for precision in ("fp16", "bf16"):
            half = ExtractS3D(model=model, device=args.device, num_workers=0, precision=precision)
            variants.append((precision, f"defaults, precision={precision}", b,
                             lambda f, h=half: h.forward(f)[0]))
    if not args.skip_compile:
        compiled = ExtractS3D(model=model, device=args.device, num_workers=0, compile=True)
        variants.append(("compile", f"compile=true (inductor, freezing, batch_size={b})",
                         compiled.batch_size, lambda f: compiled.forward(f)[0]))

    per_round = max(size for _, _, size, _ in variants)
    rounds = max(1, -(-args.stacks // per_round))
    gen = torch.Generator().manual_seed(0)
    stacks = torch.randint(0, 256, (per_round * (rounds + 1), STACK, 224, 224, 3),
                           dtype=torch.uint8, generator=gen)
    rows = {key: {"key": key, "name": name, "times": [], "features": []}
            for key, name, _, _ in variants}

    def run_round(r: int, timed: bool) -> None:
        chunk = stacks[r * per_round:(r + 1) * per_round]
        for key, _, size, run in variants:
            t0 = time.perf_counter()
            feats = [run(chunk[i:i + size]) for i in range(0, per_round, size)]
            seconds = time.perf_counter() - t0
            if timed:
                rows[key]["times"].append(seconds / per_round)
                rows[key]["features"].append(torch.cat(feats))
            else:
                rows[key]["warmup_s"] = seconds
                log.info("%-50s warm-up %.1f s", rows[key]["name"], seconds)

    run_round(0, timed=False)  # compiles, allocates, tunes
    for r in range(1, rounds + 1):
        run_round(r, timed=True)
        log.info("round %d/%d: %s", r, rounds,
                 ", ".join(f"{key} {row['times'][-1]:.2f}" for key, row in rows.items()))
    base = rows["baseline"]
    base_feats = torch.cat(base["features"])
    out = []
    for row in rows.values():
        row["s_per_stack"] = float(np.median(row["times"]))
        row["stacks"] = per_round * rounds
        row["stacks_per_s"] = 1.0 / row["s_per_stack"]
        row["speedup"] = base["s_per_stack"] / row["s_per_stack"]
        row["rel_err"] = rel_err(torch.cat(row["features"]), base_feats)
        out.append(row)
    for row in out:
        row.pop("features")
    return out


# -- (d) the other network ----------------------------------------------------------------------
def networks_part(args, model) -> List[Dict]:
    """``s3d`` and ``s3d_howto100m`` with default options (their own stack sizes and rates),
    one stack each per round, alternately, median over ``args.stacks`` rounds."""
    from models.s3d_howto100m import ExtractS3DHowTo100M
    from models.s3d_howto100m.random_weights import random_s3dg
    from utils.networks import networks

    howto = random_s3dg(0)
    nets = [("s3d", model, ExtractS3D(model=model, device=args.device, num_workers=0,
                                      batch_size=1)),
            ("s3d_howto100m", howto, ExtractS3DHowTo100M(model=howto, device=args.device,
                                                         num_workers=0, batch_size=1))]
    gen = torch.Generator().manual_seed(1)
    rows = []
    for name, net, extractor in nets:
        spec = networks()[name]
        rows.append({"network": name, "frames": spec.stack_size, "fps": spec.extraction_fps,
                     "gflop_per_stack": network_gflop(net, spec.stack_size), "times": [],
                     "run": extractor.forward,
                     "stacks": torch.randint(0, 256, (args.stacks + 1, spec.stack_size, 224, 224, 3),
                                             dtype=torch.uint8, generator=gen)})
    for r in range(args.stacks + 1):  # round 0 warms up
        for row in rows:
            t0 = time.perf_counter()
            row["run"](row["stacks"][r:r + 1])
            if r:
                row["times"].append(time.perf_counter() - t0)
    for row in rows:
        del row["run"], row["stacks"]
        row["s_per_stack"] = float(np.median(row["times"]))
        row["stacks_per_s"] = 1.0 / row["s_per_stack"]
        row["video_s_per_s"] = row["frames"] / row["fps"] * row["stacks_per_s"]
        log.info("%s: %.3f s per %d-frame stack", row["network"], row["s_per_stack"], row["frames"])
    return rows


# -- (b), (c) the command line -----------------------------------------------------------------
def make_video(path: str, seconds: float, size: str, rate: int) -> str:
    """A synthetic 1080p H.264 clip: moving test pattern plus grain, about 5 Mbit/s."""
    if os.path.exists(path):
        return path
    import imageio_ffmpeg  # the FFmpeg CLI it ships (a test dependency)

    log.info("generating %s (%g s, %s, %d fps): once, then cached", path, seconds, size, rate)
    t0 = time.perf_counter()
    part = path + ".part.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y",
                    "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}",
                    "-vf", "noise=alls=6:allf=t", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                    "-preset", "veryfast", "-b:v", "5M", "-maxrate", "6M", "-bufsize", "10M",
                    "-g", str(rate * 2), part], check=True)
    os.replace(part, path)
    log.info("generated in %.0f s", time.perf_counter() - t0)
    return path


def peak_rss_of_running(proc: subprocess.Popen) -> int:
    """Wait for ``proc``; return its own peak RSS in bytes.

    Polls ``/proc/<pid>/status`` (VmHWM, a high-water mark) every 50 ms.  Not
    ``getrusage(RUSAGE_CHILDREN)``/``wait4``: on Linux a child's ``ru_maxrss`` also counts the
    memory of the image it was forked from, i.e. this benchmark process with its models.
    """
    peak = None
    try:
        while proc.poll() is None:
            hwm = vm_hwm(proc.pid)
            if hwm is not None:
                peak = hwm if peak is None else max(peak, hwm)
            time.sleep(0.05)
    finally:
        if proc.poll() is None:  # interrupted: do not leave the CLI running
            proc.kill()
            proc.wait()
    if peak is None:
        raise RuntimeError("cannot read the peak RSS of the CLI (needs Linux /proc)")
    return peak


def run_cli(args, video: str, weights: str, workdir: str, extra: Optional[List[str]] = None) -> Dict:
    """``python main.py ...`` on one video; wall time, peak RSS of the child, its pipeline line."""
    out = os.path.join(workdir, "out")
    cmd = [sys.executable, os.path.join(REPO, "main.py"), "feature_type=s3d",
           f"video_paths=[{video}]", f"device={args.device}", f"weights_path={weights}",
           "on_extraction=save_numpy", f"output_path={out}", "overwrite=true", *(extra or [])]
    log.info("running: %s", " ".join(cmd))
    stderr_path = os.path.join(workdir, "cli_stderr.txt")
    with open(stderr_path, "w", encoding="utf-8") as err, open(os.devnull, "w") as null:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=workdir, stdout=null, stderr=err)
        maxrss = peak_rss_of_running(proc)
        wall = time.perf_counter() - t0
    with open(stderr_path, encoding="utf-8") as f:
        stderr = f.read()
    if proc.returncode != 0:
        raise RuntimeError(f"the CLI failed (exit {proc.returncode}):\n{stderr[-3000:]}")
    match = PIPELINE_LINE.search(stderr)
    if not match:
        raise RuntimeError(f"no 'pipeline:' line in the CLI's output:\n{stderr[-3000:]}")
    stacks, pipe_wall, busy, wait = (int(match.group(1)), *map(float, match.groups()[1:]))
    log.info("  %.1f s wall, %.0f MB peak RSS; %s", wall, maxrss / 1e6, match.group(0))
    return {"wall_s": wall, "peak_rss_bytes": maxrss, "stacks": stacks, "pipeline_wall_s": pipe_wall,
            "network_busy_s": busy, "wait_s": wait, "idle_share": wait / pipe_wall if pipe_wall else 0.0}


def decode_only(args, video: str, model) -> Dict:
    """Wall and CPU seconds per 64-frame stack of decoding + preprocessing alone (no network)."""
    import resource

    extractor = ExtractS3D(model=model, device=args.device, num_workers=0)
    before = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    n = sum(len(batch.start_ms) for batch in video_batches(video, extractor.settings,
                                                           VideoRecord(video)))
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    log.info("decode + preprocess only: %d stacks in %.1f s wall, %.1f s CPU", n, seconds, cpu)
    return {"stacks": n, "seconds": seconds, "s_per_stack": seconds / n, "cpu_s": cpu,
            "cpu_s_per_stack": cpu / n}


def cli_part(args, model, net_rows: List[Dict]) -> Dict:
    workdir = args.workdir
    os.makedirs(workdir, exist_ok=True)
    weights = os.path.join(workdir, "s3d_random_seed0.pt")
    if not os.path.exists(weights):
        torch.save(model.state_dict(), weights)
    short_s, long_s = args.video_seconds
    videos = {label: make_video(os.path.join(workdir, f"bench_1080p_{int(s)}s_{args.fps}fps.mp4"),
                                s, "1920x1080", args.fps)
              for label, s in (("short", short_s), ("long", long_s))}
    result = {"videos": videos, "decode_only": decode_only(args, videos["short"], model)}
    net_s = next(r for r in net_rows if r.get("key") == "defaults")["s_per_stack"]
    runs = [("short", videos["short"], []), ("long", videos["long"], [])]
    if not args.quick:
        runs.append(("short_inline", videos["short"], ["num_workers=0"]))
    for label, video, extra in runs:
        run = run_cli(args, video, weights, workdir, extra)
        run["network_only_s"] = run["stacks"] * net_s
        run["e2e_ratio"] = run["pipeline_wall_s"] / run["network_only_s"]
        run["cli_ratio"] = run["wall_s"] / run["network_only_s"]
        result[label] = run
    return result


# -- the report --------------------------------------------------------------------------------
def report(args, info: str, net_rows: List[Dict], cli: Optional[Dict], ceil: Dict,
           networks: Optional[List[Dict]] = None) -> str:
    base_s = next(r for r in net_rows if r.get("key") == "baseline")["s_per_stack"]
    floor_x = base_s / ceil["floor_s_per_stack"]
    lines = [f"Machine: {info}", f"Command: python benchmarks/bench_s3d.py {' '.join(sys.argv[1:])}",
             "", "(a) Network, 64x224x224 stacks, fp32 unless said; median over rounds", "",
             "| variant | s/stack | stacks/s | vs baseline | max rel. error vs baseline | "
             "share of matmul speed |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in net_rows:
        extra = f" (first batch {r['warmup_s']:.0f} s)" if r.get("key") == "compile" else ""
        lines.append(f"| {r['name']}{extra} | {r['s_per_stack']:.3f} | {r['stacks_per_s']:.3f} | "
                     f"{r['speedup']:.2f}x | {r['rel_err']:.1e} | "
                     f"{100 * ceil['floor_s_per_stack'] / r['s_per_stack']:.0f} % |")
    lines += ["", f"Ceiling: {ceil['gflop_per_stack']:.1f} GFLOP per stack; a {4096}x{4096} fp32 "
              f"matmul runs at {ceil['matmul_gflops']:.0f} GFLOP/s here, so a stack whose every "
              f"FLOP ran at matmul speed would take {ceil['floor_s_per_stack']:.2f} s, "
              f"{floor_x:.2f}x the baseline: no variant can beat that by much on this machine."]
    if networks:
        lines += ["", "(d) The two networks, default options (their own stacks and rates), "
                  "batch_size=1, timed alternately; median over rounds", "",
                  "| network | stack | GFLOP/stack | s/stack | stacks/s | seconds of video per s |",
                  "| --- | --- | ---: | ---: | ---: | ---: |"]
        for r in networks:
            lines.append(f"| {r['network']} | {r['frames']} frames at {r['fps']:g} fps "
                         f"({r['frames'] / r['fps']:g} s) | {r['gflop_per_stack']:.1f} | "
                         f"{r['s_per_stack']:.3f} | {r['stacks_per_s']:.3f} | "
                         f"{r['video_s_per_s']:.2f} |")
    checks = []
    for key, need in TARGETS.items():
        row = next((r for r in net_rows if r.get("key") == key), None)
        if row is not None:
            reach = "" if need <= floor_x else f" (above the {floor_x:.2f}x ceiling here)"
            checks.append((f"network {key}: >= {need}x baseline{reach}, error < 1e-5",
                           row["speedup"] >= need and row["rel_err"] < 1e-5,
                           f"{row['speedup']:.2f}x, {row['rel_err']:.1e}"))
    if cli:
        lines += ["", "(b) End to end: `python main.py` on generated 1080p H.264 "
                  f"({args.fps} fps, extraction_fps=25), default options", "",
                  "| video | stacks | CLI wall s | extraction wall s | network-only s | "
                  "extraction / network-only | CLI / network-only | network busy / network-only | "
                  "peak RSS MB | (c) network idle waiting for frames |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for label in ("short", "long", "short_inline"):
            if label not in cli:
                continue
            r = cli[label]
            seconds = args.video_seconds[0 if label.startswith("short") else 1]
            name = f"{seconds:g} s" + (" (num_workers=0)" if label == "short_inline" else "")
            lines.append(f"| {name} | {r['stacks']} | {r['wall_s']:.1f} | {r['pipeline_wall_s']:.1f} | "
                         f"{r['network_only_s']:.1f} | {r['e2e_ratio']:.2f}x | {r['cli_ratio']:.2f}x | "
                         f"{r['network_busy_s'] / r['network_only_s']:.2f}x | "
                         f"{r['peak_rss_bytes'] / 1e6:.0f} | {100 * r['idle_share']:.1f} % |")
        d = cli["decode_only"]
        lines += ["", f"Decoding + preprocessing alone (the short video, no network): "
                  f"{d['s_per_stack']:.3f} s wall and {d['cpu_s_per_stack']:.3f} s CPU per "
                  f"64-frame stack ({d['stacks']} stacks).",
                  "Extraction wall: from the start of the run's extraction to its last feature "
                  "(the CLI's `pipeline:` line); CLI wall adds start-up (imports, weights). "
                  "Network busy / network-only > 1 means the network ran slower than alone, "
                  "sharing the cores with decoding."]
        short, long_ = cli["short"], cli["long"]
        checks.append(("end to end (long video) within 1.15x of network-only",
                       long_["e2e_ratio"] <= 1.15, f"{long_['e2e_ratio']:.2f}x"))
        growth = long_["peak_rss_bytes"] / short["peak_rss_bytes"] - 1
        checks.append(("peak RSS long within 10 % of short", growth <= 0.10, f"{100 * growth:+.1f} %"))
        checks.append(("peak RSS long < 1.5 GB", long_["peak_rss_bytes"] < 1.5e9,
                       f"{long_['peak_rss_bytes'] / 1e9:.2f} GB"))
    lines += ["", "| target | met | measured |", "| --- | --- | --- |"]
    lines += [f"| {name} | {'yes' if ok else 'NO'} | {value} |" for name, ok, value in checks]
    if args.quick:
        lines += ["", "(--quick: few stacks and short videos; rough numbers, not for the README)"]
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="2 stacks a variant, 1080p videos of 10 s and 20 s: checks the script in minutes")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--stacks", type=int, default=None, help="timed stacks per network variant "
                   "(default 8; --quick 2)")
    p.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",") if x], default=None,
                   help="extra batch sizes to time with the default network (default: 2 on CPU, "
                        "16,32 on CUDA; none with --quick)")
    p.add_argument("--video-seconds", type=float, nargs=2, default=None, metavar=("SHORT", "LONG"),
                   help="lengths of the two generated videos (default 30 300; --quick 10 20)")
    p.add_argument("--fps", type=int, default=30, help="frame rate of the generated videos (30)")
    p.add_argument("--skip-compile", action="store_true", help="leave out compile=true")
    p.add_argument("--skip-howto100m", action="store_true",
                   help="leave out part (d), s3d_howto100m next to s3d")
    p.add_argument("--skip-cli", action="store_true", help="leave out parts (b) and (c)")
    p.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "s3d_bench"),
                   help="videos, weights, outputs and results.json (videos are cached here)")
    args = p.parse_args(argv)
    if args.stacks is None:
        args.stacks = 2 if args.quick else 8
    if args.batch_sizes is None:
        args.batch_sizes = [] if args.quick else ([16, 32] if args.device.startswith("cuda") else [2])
    if args.video_seconds is None:
        args.video_seconds = [10.0, 20.0] if args.quick else [30.0, 300.0]
    if args.stacks < 1:
        p.error("--stacks must be at least 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    info = machine()
    log.info("%s", info)
    model = random_weights()
    t0 = time.perf_counter()
    ceil = ceiling(args, model)
    net_rows = network_part(args, model)
    networks = None if args.skip_howto100m else networks_part(args, model)
    cli = None if args.skip_cli else cli_part(args, model, net_rows)
    table = report(args, info, net_rows, cli, ceil, networks)
    os.makedirs(args.workdir, exist_ok=True)
    with open(os.path.join(args.workdir, "results.json"), "w", encoding="utf-8") as f:
        json.dump({"machine": info, "args": vars(args), "ceiling": ceil, "network": net_rows,
                   "cli": cli, "networks": networks,
                   "total_s": time.perf_counter() - t0}, f, indent=2)
    print(table)
    log.info("benchmark took %.0f s; results in %s", time.perf_counter() - t0,
             os.path.join(args.workdir, "results.json"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
