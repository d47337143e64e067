"""A lighter process: a run never imports torchvision (about 190 MB and a second), and start-up
reads each weights file once (both hashes and the tensors from the same bytes).

Nothing here is timed or measured in bytes of memory: benchmarks/bench_memory.py does that.
"""
import os
import subprocess
import sys

import pytest
import torch

import models.s3d.weights as weights
from batch_helpers import MAIN, cli_args
from models.s3d import ExtractS3D
from models.s3d.network import S3D
from utils.records.provenance import file_sha256

# Runs main.py as the command line does, then lists the torchvision modules it imported.
CHILD = """
import atexit, os, runpy, sys
report, main = sys.argv[1], sys.argv[2]
sys.path[0] = os.path.dirname(main)  # as `python main.py` has it
def write_report():
    with open(report, "w", encoding="utf-8") as f:
        f.write("\\n".join(["ran"] + sorted(m for m in sys.modules
                                            if m.split(".")[0] == "torchvision")))
atexit.register(write_report)
sys.argv = sys.argv[2:]
runpy.run_path(main, run_name="__main__")
"""


def test_a_saving_run_never_imports_torchvision(tmp_path, random_checkpoint, sample_video):
    """A saving run writes a run record with torchvision's version: read from its metadata."""
    report, out = tmp_path / "modules.txt", tmp_path / "out"
    args = cli_args(random_checkpoint, str(out), stack_size=13, video_paths=[sample_video],
                    extraction_fps=4)
    proc = subprocess.run([sys.executable, "-c", CHILD, str(report), MAIN, *args],
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "s3d" / "sample_s3d.npy").is_file()
    records = list((out / "s3d" / "runs").glob("*.json"))
    assert len(records) == 1 and '"torchvision": "' in records[0].read_text()
    assert report.read_text().splitlines() == ["ran"]


def bytes_read() -> int:
    """Bytes this process has read through read() system calls so far (Linux)."""
    with open("/proc/self/io", encoding="ascii") as f:
        for line in f:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    raise RuntimeError("no rchar in /proc/self/io")


needs_proc_io = pytest.mark.skipif(not os.path.exists("/proc/self/io"),
                                   reason="counts reads with Linux's /proc/self/io")


@needs_proc_io
def test_a_weights_path_is_read_once(random_checkpoint):
    size = os.path.getsize(random_checkpoint)
    before = bytes_read()
    extractor = ExtractS3D(weights_path=random_checkpoint, device="cpu", num_workers=0)
    read = bytes_read() - before
    # once is `size` (plus the labels file); the old start-up read it twice (torch.load, SHA-256)
    assert size <= read < 1.5 * size, (read, size)
    assert extractor.weights["sha256"] == file_sha256(random_checkpoint)


@needs_proc_io
def test_the_default_weights_are_read_once(tmp_path, monkeypatch, random_checkpoint):
    """The cached default file: checked (git blob SHA-1), hashed (SHA-256) and loaded from one
    read (it used to be three)."""
    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    cached = hub / "checkpoints" / weights.DEFAULT_FILENAME
    cached.write_bytes(open(random_checkpoint, "rb").read())
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    monkeypatch.setattr(weights, "DEFAULT_SHA1", weights.git_blob_sha1(random_checkpoint))
    monkeypatch.setattr(weights, "DEFAULT_URL", "http://127.0.0.1:9/never-fetched.pt")
    model = S3D()
    before = bytes_read()
    checkpoint = weights.load_checkpoint(model, None)
    read = bytes_read() - before
    size = os.path.getsize(cached)
    assert size <= read < 1.5 * size, (read, size)
    assert checkpoint.path == str(cached)
    assert checkpoint.sha256 == file_sha256(random_checkpoint)
    assert checkpoint.git_sha1 == weights.git_blob_sha1(random_checkpoint)
    reference = torch.load(random_checkpoint, weights_only=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in reference.items())
