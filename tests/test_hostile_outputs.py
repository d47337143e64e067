"""The output folder is untrusted input (issue 19): what a rerun and the loader read back from
it may be damaged or planted.  No HDF5 link is followed, work is bounded by a file's size, one
bad record costs one warning, one video's unexpected error is that video's failure."""
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

from batch_helpers import REPO, STACK, cli_args, read_jsonl, run_cli
from videos import synth

H5 = "s3d-0-of-1.h5"
TIMEOUT = 120  # a run that would hang on a FIFO fails the test instead of the suite


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    return synth(str(folder / "clip.mp4"), seconds=0.6, size="32x24")


def _run(checkpoint, out, videos, cwd, **kw):
    kw.setdefault("on_extraction", "save_h5")
    return run_cli(cli_args(checkpoint, out, video_paths=videos, **kw), cwd=str(cwd),
                   timeout=TIMEOUT)


def _features(out):
    with h5py.File(os.path.join(out, "s3d", H5), "r") as f:
        return {k: f["clip"][k][()] for k in ("s3d", "timestamps_ms", "fps")}


@pytest.fixture(scope="module")
def made(random_checkpoint, clip, tmp_path_factory):
    """One save_h5 run of the clip, copied by each test (the CLI runs once)."""
    folder = tmp_path_factory.mktemp("made")
    out = str(folder / "out")
    first = _run(random_checkpoint, out, [clip], folder)
    assert first.returncode == 0, first.stderr
    return out


def _first_run(made, tmp_path):
    out = str(tmp_path / "out")
    shutil.copytree(made, out)
    return out, os.path.join(out, "s3d", H5), _features(out)


def _foreign(tmp_path, want):
    """A file outside output_path holding a complete-looking video 'clip' of other values."""
    path = str(tmp_path / "foreign.h5")
    with h5py.File(path, "w") as f:
        g = f.create_group("clip")
        g.attrs["video_path"] = "/elsewhere/clip.mp4"
        for key, value in want.items():
            g.create_dataset(key, data=value + 7 if key == "s3d" else value)
    return path


def _done_line(proc):
    return [ln for ln in proc.stderr.splitlines() if "done " in ln and "skipped" in ln][-1]


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_video_group_linked_to_a_foreign_file_is_redone_in_a_real_group(
        random_checkpoint, clip, made, tmp_path, overwrite):
    out, h5, want = _first_run(made, tmp_path)
    foreign = _foreign(tmp_path, want)
    with h5py.File(h5, "r+") as f:
        del f["clip"]
        f["clip"] = h5py.ExternalLink(foreign, "/clip")
    before = open(foreign, "rb").read()
    again = _run(random_checkpoint, out, [clip], tmp_path, overwrite=overwrite)
    assert again.returncode == 0, again.stderr
    assert "done 1, skipped 0" in _done_line(again)
    assert open(foreign, "rb").read() == before  # never opened for writing
    with h5py.File(h5, "r") as f:
        assert isinstance(f.get("clip", getlink=True), h5py.HardLink)
        assert f["clip"].attrs["video_path"] == clip
    got = _features(out)
    for key, value in want.items():
        np.testing.assert_array_equal(got[key], value)
    if not overwrite:  # the resume check names the file and the link
        assert any(h5 in ln and "external link" in ln for ln in again.stderr.splitlines())


def _plant_fifo_dataset(h5, tmp_path, kind):
    """``timestamps_ms`` of 'clip' replaced by an external link to a FIFO's file, or by a
    virtual dataset whose source is a FIFO: following either blocks for ever."""
    fifo = str(tmp_path / f"planted-{kind}.h5")
    os.mkfifo(fifo)
    with h5py.File(h5, "r+") as f:
        group = f["clip"]
        shape = group["timestamps_ms"].shape
        del group["timestamps_ms"]
        if kind == "external":
            group["timestamps_ms"] = h5py.ExternalLink(fifo, "/data")
        else:
            layout = h5py.VirtualLayout(shape=shape, dtype="f8")
            layout[:] = h5py.VirtualSource(fifo, "data", shape=shape)
            group.create_virtual_dataset("timestamps_ms", layout)


@pytest.mark.parametrize("kind", ["external", "virtual"])
def test_a_dataset_that_is_a_link_or_virtual_never_hangs_and_is_redone(
        random_checkpoint, clip, made, tmp_path, kind):
    out, h5, want = _first_run(made, tmp_path)
    _plant_fifo_dataset(h5, tmp_path, kind)
    summary = subprocess.run([sys.executable, "-m", "utils.features", "summary", h5],
                             cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT)
    assert summary.returncode != 0
    assert h5 in summary.stderr and "Traceback" not in summary.stderr
    again = _run(random_checkpoint, out, [clip], tmp_path)
    assert again.returncode == 0, again.stderr
    assert "done 1, skipped 0" in _done_line(again)
    word = "external link" if kind == "external" else "virtual dataset"
    assert any(h5 in ln and word in ln for ln in again.stderr.splitlines())
    with h5py.File(h5, "r") as f:
        dset = f["clip"]["timestamps_ms"]
        assert not dset.is_virtual and dset.external is None
    got = _features(out)
    for key, value in want.items():
        np.testing.assert_array_equal(got[key], value)
