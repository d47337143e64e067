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
refused.  ``results.json`` in the work folder keeps the numbers.  Videos and the seeded
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
from typing import Dict, List, Optional

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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(),
                                                          "s3d_bench_memory"))
    args = parser.parse_args(argv)
    os.makedirs(args.workdir, exist_ok=True)
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
