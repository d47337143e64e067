"""``main.py`` with a cheap deterministic network, killed (SIGKILL, by itself) at a named
point of the HDF5 sink: the kill-and-rerun tests of ``on_extraction=save_h5``.

    python tests/h5_kill_harness.py POINT [main.py overrides...]

POINT: ``none``; ``journal:N`` (the N-th video's journal record just fsynced);
``journal-torn:N`` (half of the N-th video's record written); ``fold-copied`` (the file copied
to the checkpoint's temporary); ``fold-writing:N`` (N videos added to that copy);
``renamed`` (the copy renamed over the file, the journal not yet removed).
"""
import os
import runpy
import shutil
import signal
import sys

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from models.s3d import inference  # noqa: E402
from utils.outputs import h5_format, h5_store  # noqa: E402


def null_network(self, frames: torch.Tensor):
    """Features that depend on every stack's pixels, at no cost: (B, 1024), (B, 400)."""
    mean = frames.float().mean(dim=(1, 2, 3))  # (B, 3)
    ramp = torch.arange(1021, dtype=torch.float32) / 1021.0
    features = torch.cat([mean, mean.sum(1, keepdim=True) * ramp], 1)
    return features, torch.zeros(frames.shape[0], 400)


def die() -> None:
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def install(point: str) -> None:
    name, _, count = point.partition(":")
    count = int(count or 0)
    videos = {"n": 0}
    real_append = h5_store.H5Store._append

    def append(self, data):
        if self._journal_bytes == 0:  # the journal's header record
            return real_append(self, data)
        videos["n"] += 1
        if name == "journal-torn" and videos["n"] == count:
            os.write(self._fd, data[:len(data) // 2])
            os.fsync(self._fd)
            die()
        real_append(self, data)
        if name == "journal" and videos["n"] == count:
            die()

    h5_store.H5Store._append = append
    if name == "fold-copied":
        real_copy = shutil.copyfile

        def copyfile(src, dst, **kw):
            real_copy(src, dst, **kw)
            die()
        h5_store.shutil.copyfile = copyfile
    if name == "fold-writing":
        real_write = h5_format.write_video
        written = {"n": 0}

        def write_video(*args, **kw):
            real_write(*args, **kw)
            written["n"] += 1
            if written["n"] == count:
                args[0].flush()
                die()
        h5_format.write_video = write_video
    if name == "renamed":
        real_replace = os.replace

        def replace(src, dst, *args, **kw):
            real_replace(src, dst, *args, **kw)
            if str(dst).endswith(".h5"):
                die()
        os.replace = replace


if __name__ == "__main__":
    point = sys.argv[1]
    inference.BatchRunner.forward = null_network
    if point != "none":
        install(point)
    sys.argv = [os.path.join(REPO, "main.py")] + sys.argv[2:]
    runpy.run_path(sys.argv[0], run_name="__main__")
