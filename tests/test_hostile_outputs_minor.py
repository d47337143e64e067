"""The output folder is untrusted input (issue 19, the minor points): a planted or garbled
.pkl, a damaged key file, an .h5 another process holds open, an attribute of the wrong type.
One warning (or one error line) naming the file that is wrong and why, never a traceback;
the other videos are read.  Through ``python -m utils.outputs.features`` in a subprocess
(cheap: no network), or the functions themselves."""
import os
import pickle
import subprocess
import sys

import h5py
import numpy as np
import pytest

from batch_helpers import REPO

H5 = "s3d-0-of-1.h5"


def _features_cli(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "utils.outputs.features", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def _warnings(proc):
    return [ln for ln in proc.stderr.splitlines() if ln.startswith("WARNING")]


def _ours(path):
    f = h5py.File(path, "w", libver=("v110", "latest"))
    f.attrs["format"] = "s3d-video-features/h5/1"
    f.attrs["feature_type"] = "s3d"
    f.attrs["generation"] = 1
    return f


def _video(f, name, video_path="/v/clip.mp4", rows=2):
    g = f.create_group(name)
    g.attrs["video_path"] = video_path
    g.create_dataset("s3d", data=np.full((rows, 1024), len(name), np.float32))
    g.create_dataset("timestamps_ms", data=np.arange(rows * 2.0).reshape(rows, 2))
    g.create_dataset("fps", data=np.float64(25))
    return g


# -- 4: an attribute that is not text -----------------------------------------------------

@pytest.mark.parametrize("value", [np.arange(3), np.int64(7), np.float32(1.5)])
def test_merge_of_a_video_path_attribute_that_is_not_text_is_one_warning(tmp_path, value):
    one, two, out = (str(tmp_path / n) for n in ("s3d-0-of-2.h5", "s3d-1-of-2.h5", "m.h5"))
    with _ours(one) as f:
        _video(f, "odd", video_path=value)
    with _ours(two) as f:
        _video(f, "good", video_path="/v/good.mp4")
    proc = _features_cli("merge", out, one, two)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "2 videos from 2 files" in proc.stdout
    [warning] = _warnings(proc)
    assert one in warning and "'odd'" in warning and "video_path attribute is not text" in warning
    assert "merge stores it without it" in warning
    from utils.outputs.features import load
    with load(out) as merged:
        assert sorted(merged) == ["good", "odd"]
        assert merged.video_path("good") == "/v/good.mp4" and merged.video_path("odd") == ""
        np.testing.assert_array_equal(merged["odd"]["s3d"], np.full((2, 1024), 3, np.float32))


def test_the_loader_reads_a_run_attribute_that_is_not_text_as_absent(tmp_path, caplog):
    from utils.outputs.features import load
    path = str(tmp_path / H5)
    with _ours(path) as f:
        _video(f, "clip", video_path=np.arange(2)).attrs["run"] = np.zeros((2, 2))
    with load(path) as features:
        assert features.video_path("clip") is None and features.run("clip") is None
    assert caplog.text.count("is not text") == 2 and path in caplog.text
