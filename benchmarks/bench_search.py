"""Text search at dataset scale: the scan of every file versus the index, side by side.

    python benchmarks/bench_search.py                      # 20,000 videos x 30 stacks
    python benchmarks/bench_search.py --videos 200000      # 6M stacks (about 14 GB of disk)
    python benchmarks/bench_search.py --videos 2000        # a quick look

It makes its own synthetic folder (``--work``, default a temporary folder; ``--keep`` keeps
it): N videos of 30 stacks written by the tool's own writers
(``models.s3d_howto100m.synthetic_outputs``: ``save_numpy`` files and the manifest, seeded
random embeddings; the 1024-d ``s3d_howto100m`` features, which the search never reads, are
stored 1 wide to spare the disk; fsync skipped while writing them), a checkpoint of seeded
random weights (``random_weights.random_state``: the real model's shapes, so the text model
loads as the real one would) and a word list of 66,249 made-up words.  Then it times, as a
user runs them (one process each, Python start, imports and text model load included, the
files warm in the page cache):

- ``index``: building the index (``python -m models.s3d_howto100m.search index``), then
  bringing it up to date when nothing changed;
- one query, and 20 queries in one call (``--queries``), with the index and with
  ``--no_index`` (every video's files read, as the search did before the index);

and checks that both give the same hits.  ``results.json`` in the work folder keeps the
numbers.  Scores of random embeddings mean nothing; the work is what a real folder costs.
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO]

import numpy as np  # noqa: E402
import torch  # noqa: E402

import models  # noqa: E402,F401 -- registers the networks
from models.s3d_howto100m.random_weights import random_state  # noqa: E402
from models.s3d_howto100m.synthetic_outputs import video_arrays, without_fsync, write_folder  # noqa: E402

STACKS = 30
WORDS = 66249  # the real word list's length
BATCH = 2000  # videos a write_folder call (one manifest append each)
QUERY_WORDS = ["cut", "tomato", "onion", "knife", "pan", "fry", "egg", "water", "boil", "pour",
               "bowl", "mix", "flour", "slice", "bread", "butter", "salt", "pepper", "stir", "oil"]


def make_folder(work: str, videos: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    out = os.path.join(work, "out")
    with without_fsync():
        for first in range(0, videos, BATCH):
            batch = [(f"/videos/{i // 1000:04d}/video{i:07d}.mp4",
                      video_arrays(rng, STACKS, feature_width=1))
                     for i in range(first, min(videos, first + BATCH))]
            write_folder(out, batch, run_id="bench")
            print(f"  wrote {first + len(batch)} videos", file=sys.stderr, flush=True)
    return out


def make_model(work: str):
    weights = os.path.join(work, "s3d_howto100m.pth")
    torch.save(random_state(0), weights)
    words = os.path.join(work, "s3d_dict.npy")
    np.save(words, np.array(QUERY_WORDS + [f"w{i}" for i in range(WORDS - len(QUERY_WORDS))]))
    queries = os.path.join(work, "queries.txt")
    rng = np.random.default_rng(1)
    with open(queries, "w", encoding="utf-8") as f:
        for _ in range(20):
            f.write(" ".join(rng.choice(QUERY_WORDS, size=3, replace=False)) + "\n")
    return ["--weights_path", weights, "--dict_path", words], queries


def timed(args, work: str):
    """Wall seconds of ``python -m models.s3d_howto100m.search ARGS``, and its stdout."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "models.s3d_howto100m.search", *args], cwd=REPO,
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"search {' '.join(args)} failed:\n{proc.stderr}")
    with open(os.path.join(work, "stderr.log"), "a", encoding="utf-8") as log:
        log.write(f"$ search {' '.join(args)}\n{proc.stderr}\n")
    return wall, proc.stdout


def disk_bytes(path: str) -> int:
    total = 0
    for folder, _, names in os.walk(path):
        for name in names:
            total += os.lstat(os.path.join(folder, name)).st_blocks * 512
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=20000)
    parser.add_argument("--work", help="the work folder (default: a new temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--skip_scan", action="store_true",
                        help="time the index only (the scan takes minutes at 10^5 videos)")
    args = parser.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="bench_search_")
    os.makedirs(work, exist_ok=True)
    results = {"videos": args.videos, "stacks": args.videos * STACKS, "cpus": os.cpu_count(),
               "machine": platform.platform(), "load_before": os.getloadavg()}
    try:
        t = time.perf_counter()
        out = make_folder(work, args.videos)
        results["make_s"] = round(time.perf_counter() - t, 1)
        model, queries = make_model(work)
        folder = os.path.join(out, "s3d_howto100m")
        results["outputs_bytes"] = disk_bytes(folder)

        rows = []
        wall, _ = timed(["index", out], work)
        results["index_build_s"] = wall
        rows.append(("index: build", wall))
        wall, _ = timed(["index", out], work)
        results["index_update_s"] = wall
        rows.append(("index: bring up to date (nothing changed)", wall))
        results["index_bytes"] = sum(os.path.getsize(os.path.join(folder, n))
                                     for n in ("search-index.npy", "search-index.json"))
        found = {}
        for mode, extra in (("index", []), ("scan", ["--no_index"])):
            if mode == "scan" and args.skip_scan:
                continue
            wall, one = timed([out, "cut tomato", "--json", *model, *extra], work)
            results[f"{mode}_1_query_s"] = wall
            rows.append((f"{mode}: 1 query", wall))
            wall, many = timed([out, "--queries", queries, "--json", *model, *extra], work)
            results[f"{mode}_20_queries_s"] = wall
            rows.append((f"{mode}: 20 queries in one call", wall))
            found[mode] = (one, many)
        if "scan" in found:
            results["same_hits"] = found["scan"] == found["index"]
            if not results["same_hits"]:
                print("error: the index and the scan disagree", file=sys.stderr)
        results["load_after"] = os.getloadavg()
        print(f"{args.videos} videos x {STACKS} stacks = {args.videos * STACKS} stacks; outputs "
              f"{results['outputs_bytes'] / 2**30:.2f} GiB, index {results['index_bytes'] / 2**30:.2f} "
              f"GiB; {os.cpu_count()} CPUs, load average {results['load_before'][0]:.1f} before, "
              f"{results['load_after'][0]:.1f} after")
        print(f"{'what (one process each, wall)':45s} {'seconds':>8s}")
        for name, wall in rows:
            print(f"{name:45s} {wall:8.2f}")
        if "same_hits" in results:
            print(f"same hits, index and scan: {results['same_hits']}")
        with open(os.path.join(work, "results.json"), "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    finally:
        if not args.keep and not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if results.get("same_hits", True) else 1


if __name__ == "__main__":
    sys.exit(main())
