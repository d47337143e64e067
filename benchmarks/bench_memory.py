"""Peak memory of the real command line on inputs whose frames are hostile in shape or size.

    python benchmarks/bench_memory.py            # about 5 minutes on a 2-core CPU (plus about a
                                                 # minute the first time, to make the videos)

Runs ``python main.py`` (default options unless a row says otherwise, ``device=cpu``,
``save_numpy``) in a subprocess on generated H.264 videos and measures the child's peak
resident set size (``wait4``'s ``ru_maxrss`` of that child, from a parent that never loads
torch, cross-checked with ``/proc/<pid>/status`` VmHWM while it runs):

- ``sample/sample.mp4`` (320x240): the baseline;
- 16384x16 (aspect 1024:1: each frame is resized to 229376x224 before the crop);
- 8192x8192 (the largest frame accepted), also two of them decoded at once (num_workers=2);
- 16384x2 and 8200x8200: over the size limit, they must fail at ``decode`` naming it.

The memory figures of docs/speed.md (``FIGURES_MB`` below) must hold for every row: the script prints
a table and exits with status 1 when a row exceeds its figure or a refused input was not
refused.  ``results.json`` in the work folder keeps the numbers.

    python benchmarks/bench_memory.py --breakdown VIDEO [--precision bf16] [-- override ...]

prints instead where one run's memory and start-up time go, on VIDEO (issue 20 used the
incumbent's v_GGSY1Qvo990.mp4 with ``preprocess=video_features extraction_fps=null``, the
defaults): peak RSS of ``python -c "import torch"`` and of the real command line (their
difference is "above import torch"), then, in a child process, RSS after the imports, after
loading and preparing the model, the peak of the first forward, the peak of the whole video
(steady state), and the seconds to the first stack (imports, weights, first forward).  Videos and the seeded
random checkpoint are made once in the work folder (``--workdir``, default
<tmp>/s3d_bench_memory) with the FFmpeg CLI that imageio-ffmpeg ships (a test dependency).
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO]

from measure import vm_hwm  # noqa: E402 -- benchmarks/measure.py

from utils.files import write_bytes  # noqa: E402 -- light: no torch in this process

MAIN = os.path.join(REPO, "main.py")
SAMPLE = os.path.join(REPO, "sample", "sample.mp4")

# docs/speed.md's figures: peak RSS of one run, in MB, whatever the input ("Memory" section):
# the baseline (1.1 GB here, with an ordinary video) plus, per video being decoded, at most
# 0.5 GB (preprocess=kylemin), 1.5 GB (video_features), and 0.65 GB more with keep_tmp_files;
# rounded up with about 10 % of headroom.
FIGURES_MB = {"default": 1700, "video_features": 2900, "keep_tmp_files": 2400,
              "num_workers=2": 2300}

VIDEOS = {  # name -> (size, seconds, source, extra ffmpeg arguments)
    "wide_16384x16": ("16384x16", 3, "testsrc2", []),
    "huge_8192x8192": ("8192x8192", 3, "testsrc2", ["-preset", "ultrafast", "-crf", "30"]),
    "too_wide_16384x2": ("16384x2", 3, "testsrc2", []),
    "too_big_8200x8200": ("8200x8200", 0.2, "color", ["-preset", "ultrafast"]),
}

# (label, config key for FIGURES_MB, videos, extra overrides, expected outcome)
ROWS = [
    ("sample.mp4 (320x240)", "default", ["sample"], [], "done"),
    ("16384x16", "default", ["wide_16384x16"], [], "done"),
    ("16384x16, preprocess=video_features", "video_features", ["wide_16384x16"],
     ["preprocess=video_features"], "done"),
    ("16384x16, keep_tmp_files=true", "keep_tmp_files", ["wide_16384x16"],
     ["keep_tmp_files=true"], "done"),
    ("8192x8192", "default", ["huge_8192x8192"], [], "done"),
    ("8192x8192, preprocess=video_features", "video_features", ["huge_8192x8192"],
     ["preprocess=video_features"], "done"),
    ("8192x8192, keep_tmp_files=true", "keep_tmp_files", ["huge_8192x8192"],
     ["keep_tmp_files=true"], "done"),
    ("two 8192x8192 at once, num_workers=2", "num_workers=2",
     ["huge_8192x8192", "huge_8192x8192_copy"], ["num_workers=2"], "done"),
    ("16384x2 (refused)", "default", ["too_wide_16384x2"], [], "decode"),
    ("8200x8200 (refused)", "default", ["too_big_8200x8200"], [], "decode"),
]


def ffmpeg_exe() -> str:
    import imageio_ffmpeg  # the FFmpeg CLI it ships (a test dependency)

    return imageio_ffmpeg.get_ffmpeg_exe()


def make_videos(workdir: str) -> Dict[str, str]:
    paths = {"sample": SAMPLE}
    for name, (size, seconds, source, extra) in VIDEOS.items():
        path = os.path.join(workdir, name + ".mp4")
        if not os.path.exists(path):
            print(f"generating {path} (once)", flush=True)
            part = path + ".part.mp4"
            subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi",
                            "-i", f"{source}=size={size}:rate=25:duration={seconds}",
                            "-c:v", "libx264", "-pix_fmt", "yuv420p", *extra, part], check=True)
            os.replace(part, path)
        paths[name] = path
    copy = os.path.join(workdir, "huge_8192x8192_copy.mp4")  # a second file, same content
    if not os.path.exists(copy):
        os.link(paths["huge_8192x8192"], copy)
    paths["huge_8192x8192_copy"] = copy
    return paths


def make_weights(workdir: str) -> str:
    """Seeded random weights (speed and memory do not depend on the values), saved by a
    subprocess so that this process stays small (its size would leak into ru_maxrss)."""
    path = os.path.join(workdir, "s3d_random_seed0.pt")
    if not os.path.exists(path):
        code = ("import sys, torch; sys.path.insert(0, sys.argv[1]); "
                "from models.s3d.random_weights import random_s3d; "
                "torch.save(random_s3d(0).state_dict(), sys.argv[2])")
        subprocess.run([sys.executable, "-c", code, REPO, path], check=True)
    return path


def run_cli(videos: List[str], extra: List[str], weights: str, workdir: str) -> Dict:
    """``python main.py`` on ``videos``: exit status, wall time, peak RSS, the failures."""
    out = os.path.join(workdir, "out")
    tmp = os.path.join(workdir, "kept")
    cmd = [sys.executable, MAIN, f"video_paths=[{','.join(videos)}]", "device=cpu",
           f"weights_path={weights}", "on_extraction=save_numpy", f"output_path={out}",
           f"tmp_path={tmp}", "overwrite=true", *extra]
    stderr_path = os.path.join(workdir, "cli_stderr.txt")
    hwm = 0
    with open(stderr_path, "w", encoding="utf-8") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=err)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            hwm = max(hwm, vm_hwm(proc.pid) or 0)
            time.sleep(0.05)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    with open(stderr_path, encoding="utf-8") as f:
        stderr = f.read()
    failed = [ln for ln in stderr.splitlines() if ln.startswith("FAILED ")]
    return {"command": " ".join(cmd), "exit": proc.returncode, "wall_s": wall,
            "peak_rss_bytes": max(usage.ru_maxrss * 1024, hwm), "failed": failed,
            "stderr_tail": stderr[-2000:]}


# The phases, in a child process (this one never loads torch).  VmHWM is reset between them
# (/proc/self/clear_refs), so each peak is that phase's own.
BREAKDOWN_CHILD = r"""
import sys, time
t_start = time.perf_counter()
repo, video, weights, precision = sys.argv[1:5]
overrides = dict(a.split("=", 1) for a in sys.argv[5:])
sys.path.insert(0, repo)
def mem():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) * 1024
    return out
def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
def show(label, m, key):
    print(f"{label}: {(m[key] - torch_rss) / 1e9:.3f} GB above import torch", flush=True)
import torch
torch_rss = mem()["VmRSS"]
t_torch = time.perf_counter()
from models.s3d import ExtractS3D
import utils.run.cli  # what main.py imports
show("after the imports", mem(), "VmRSS")
t_imports = time.perf_counter()
options = dict(device="cpu", weights_path=weights, precision=precision,
               preprocess="video_features", extraction_fps=None)
options.update({k: (None if v == "null" else v) for k, v in overrides.items()})
for key in ("extraction_fps", "num_workers", "stack_size", "step_size"):
    if isinstance(options.get(key), str):
        options[key] = float(options[key]) if key == "extraction_fps" else int(options[key])
extractor = ExtractS3D(**options)
m = mem()
show("model loaded and prepared (RSS)", m, "VmRSS")
show("model loaded and prepared (peak)", m, "VmHWM")
t_model = time.perf_counter()
reset_peak()
with extractor.planned([video]):
    batches, record = extractor._plan.take(video)
    first = next(batches)
    t_frames = time.perf_counter()
    extractor.runner(first.frames)
    t_first = time.perf_counter()
    show("first stack (decode + forward, peak)", mem(), "VmHWM")
    reset_peak()
    for batch in batches:
        extractor.runner(batch.frames)
    batches.close()
show("steady state (the rest of the video, peak)", mem(), "VmHWM")
print(f"time to the first stack: {t_first - t_start:.2f} s (import torch {t_torch - t_start:.2f}, "
      f"other imports {t_imports - t_torch:.2f}, weights and model {t_model - t_imports:.2f}, "
      f"first frames {t_frames - t_model:.2f}, first forward {t_first - t_frames:.2f})")
"""


def peak_rss(cmd: List[str], cwd: str) -> int:
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status):
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr.read().decode()[-2000:]}")
    proc.stderr.close()
    return usage.ru_maxrss * 1024


def breakdown(video: str, precision: str, overrides: List[str], workdir: str) -> int:
    weights = make_weights(workdir)
    video = os.path.abspath(video)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}; {video}, precision={precision}, "
          f"preprocess=video_features extraction_fps=null {' '.join(overrides)}", flush=True)
    torch_only = peak_rss([sys.executable, "-c", "import torch"], workdir)
    cli = [sys.executable, MAIN, f"video_paths=[{video}]", "device=cpu",
           f"weights_path={weights}", "preprocess=video_features", "extraction_fps=null",
           f"precision={precision}", "on_extraction=save_numpy",
           f"output_path={os.path.join(workdir, 'out')}", "overwrite=true", *overrides]
    run = peak_rss(cli, workdir)
    print(f"peak RSS: import torch alone {torch_only / 1e9:.3f} GB, the run {run / 1e9:.3f} GB: "
          f"{(run - torch_only) / 1e9:.3f} GB above import torch", flush=True)
    print(f"  command: {' '.join(cli)}", flush=True)
    print("in one process, phase by phase:", flush=True)
    subprocess.run([sys.executable, "-c", BREAKDOWN_CHILD, REPO, video, weights, precision,
                    *overrides], cwd=workdir, check=True)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(),
                                                          "s3d_bench_memory"))
    parser.add_argument("--breakdown", metavar="VIDEO",
                        help="where one run's memory and start-up time go, on VIDEO")
    parser.add_argument("--precision", default="fp32", help="with --breakdown")
    parser.add_argument("overrides", nargs="*", help="with --breakdown: key=value options")
    args = parser.parse_args(argv)
    os.makedirs(args.workdir, exist_ok=True)
    if args.breakdown:
        return breakdown(args.breakdown, args.precision, args.overrides, args.workdir)
    paths = make_videos(args.workdir)
    weights = make_weights(args.workdir)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}", flush=True)
    rows, ok = [], True
    for label, key, names, extra, expected in ROWS:
        result = run_cli([paths[n] for n in names], extra, weights, args.workdir)
        mb = result["peak_rss_bytes"] / 1e6
        if expected == "done":
            outcome = "done" if result["exit"] == 0 else f"exit {result['exit']}"
        else:
            named = [ln for ln in result["failed"] if f": {expected}: " in ln and "size limit" in ln]
            outcome = f"refused at {expected}" if result["exit"] == 1 and named else \
                f"NOT refused (exit {result['exit']})"
        good = (outcome == "done" or outcome.startswith("refused")) and mb <= FIGURES_MB[key]
        ok &= good
        rows.append({"input": label, "figure": key, "figure_mb": FIGURES_MB[key], "peak_mb": mb,
                     "outcome": outcome, "ok": good, **result})
        print(f"{label}: {outcome}, peak RSS {mb:.0f} MB (figure {FIGURES_MB[key]} MB), "
              f"{result['wall_s']:.1f} s{'' if good else '  <-- OVER / WRONG'}", flush=True)
        if not good:
            print(result["stderr_tail"], flush=True)
    print("\n| input | outcome | peak RSS | README figure |\n| --- | --- | ---: | ---: |")
    for r in rows:
        print(f"| {r['input']} | {r['outcome']} | {r['peak_mb']:.0f} MB | {r['figure_mb']} MB |")
    write_bytes(os.path.join(args.workdir, "results.json"), json.dumps(rows, indent=1).encode())
    print(f"\n{'every row within its figure' if ok else 'SOME ROWS FAILED'}; "
          f"results in {os.path.join(args.workdir, 'results.json')}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
