"""The output folder is untrusted input (issue 19): what the loader (``utils.outputs.features``)
lists and reads back.  Only complete output sets (``utils.outputs.resume.check_arrays``) are
listed or returned; ``merge`` leaves out a wrong or unreadable video with one warning (exit 1)
instead of failing for all; a filter that is not built in never loads an HDF5 plugin; a
stray set of another network's files hides no video.  Each test here failed before its fix.
Planted with h5py / numpy; the command line in a subprocess (no network run)."""
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from batch_helpers import features_cli, our_h5
from conftest import REPO
from models.s3d_howto100m.synthetic_outputs import video_arrays, write_folder
from utils.outputs import h5_format
from utils.outputs.features import OutputError, load, summarize

H5 = "s3d-0-of-1.h5"


def _video(f, name, rows=3):
    """A complete s3d video, written as the tool writes it (gzip + shuffle features)."""
    stamps = np.arange(rows * 2.0).reshape(rows, 2) * 100
    arrays = {"s3d": np.full((rows, 1024), 0.5, np.float32), "timestamps_ms": stamps,
              "fps": np.float64(25)}
    h5_format.write_video(f, name, arrays, f"/v/{name}.mp4", None)


def _warnings(proc):
    return [ln for ln in proc.stderr.splitlines() if ln.startswith("WARNING")]


def _names(path):
    with h5py.File(path, "r") as f:
        return sorted(h5_format.video_names(f, ()))


# -- B6: a video group lacking a key, or of a wrong dtype or shape --------------------------

def test_a_group_lacking_keys_is_not_listed_summed_or_merged(tmp_path):
    """Before: 'partial' (a video_path attribute and fps only) was listed, read as {'fps'},
    counted by summary and copied by merge."""
    path, out = str(tmp_path / H5), str(tmp_path / "m.h5")
    with our_h5(path) as f:
        _video(f, "good")
        g = f.create_group("partial")
        g.attrs["video_path"] = "/v/partial.mp4"
        g["fps"] = np.float64(25)
    with load(path) as features:
        assert list(features) == ["good"] and features.incomplete == ["partial"]
        s = summarize(features)
    assert (s["videos"], s["incomplete"], s["damaged"]) == (1, 1, 0)
    proc = features_cli("merge", out, path)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    warned = [ln for ln in _warnings(proc) if "'partial'" in ln]
    assert len(warned) == 1 and path in warned[0] and "timestamps_ms" in warned[0]
    assert _names(out) == ["good"]


def _plant_wrong(f, kind):
    g = f.create_group("wrong")
    g.attrs["video_path"] = "/v/wrong.mp4"
    g["fps"] = np.float64(25)
    g["timestamps_ms"] = np.zeros((3, 2))
    if kind == "strings":  # of shape (5,) while Tv is 3
        g["s3d"] = np.array([b"abc"] * 5)
    elif kind == "rows":  # float32, but 2 rows while Tv is 3
        g["s3d"] = np.zeros((2, 1024), np.float32)
    elif kind == "ref":
        g.create_dataset("s3d", data=np.array([[f.ref] * 4] * 3), dtype=h5py.ref_dtype)
    elif kind == "vlen":
        g.create_dataset("s3d", data=np.array([["x"] * 4] * 3, dtype=object),
                         dtype=h5py.string_dtype())
    elif kind == "compound":
        g["s3d"] = np.zeros((3, 4), dtype=[("a", "f4"), ("b", "i8")])


@pytest.mark.parametrize("kind", ["strings", "rows", "ref", "vlen", "compound"])
def test_a_dataset_of_a_wrong_dtype_or_shape_is_refused_when_read(tmp_path, kind):
    """Before: the loader returned the strings / references / records as they were, and
    summary counted the video."""
    path = str(tmp_path / H5)
    with our_h5(path) as f:
        _video(f, "good")
        _plant_wrong(f, kind)
    with load(path) as features:
        assert sorted(features) == ["good", "wrong"]  # listing opens no dataset
        assert features["good"]["s3d"].shape == (3, 1024)
        with pytest.raises(OutputError) as e:
            features["wrong"]
        assert path in str(e.value) and "'wrong'" in str(e.value) and "s3d" in str(e.value)
        s = summarize(features)
    assert (s["videos"], s["damaged"]) == (1, 1)
    assert s["keys"]["s3d"] == [{"shape": "(Tv, 1024)", "dtype": "float32", "videos": 1}]


# -- B7: bit rot in a compressed chunk, a filter that is not built in ----------------------

def _rot(path, name):
    """Zero the deflate stream of the video's s3d chunk."""
    with h5py.File(path, "r") as f:
        info = f[name]["s3d"].id.get_chunk_info(0)
    data = bytearray(open(path, "rb").read())
    data[info.byte_offset:info.byte_offset + info.size] = bytes(info.size)
    open(path, "wb").write(bytes(data))


def _plant_unknown_filter(path, name, code=32099):
    """The video's s3d stored with lzf, whose filter id (32000) is then patched to ``code``:
    a mandatory filter no HDF5 has built in."""
    with h5py.File(path, "r+") as f:
        g = f[name]
        del g["s3d"]
        g.create_dataset("s3d", data=np.zeros((3, 1024), np.float32), chunks=(3, 1024),
                         compression="lzf")
    data = bytearray(open(path, "rb").read())
    at = data.find(b"lzf\x00")
    at = data.rfind((32000).to_bytes(2, "little"), at - 12, at)
    assert at > 0, "the filter id was not found"
    data[at:at + 2] = code.to_bytes(2, "little")
    open(path, "wb").write(bytes(data))


def test_merge_leaves_out_rotten_wrong_and_unknown_filter_videos(tmp_path):
    """Before: merge failed whole (exit 2) for one video with bit rot or an unknown filter,
    and copied the wrong one."""
    path, out = str(tmp_path / H5), str(tmp_path / "m.h5")
    with our_h5(path) as f:
        for name in ("good", "rotten", "filtered"):
            _video(f, name)
        _plant_wrong(f, "strings")
    _rot(path, "rotten")
    _plant_unknown_filter(path, "filtered")
    proc = features_cli("merge", out, path)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "3 incomplete or unreadable videos left out" \
        in proc.stdout
    for name, why in (("rotten", "cannot be read"), ("filtered", "filter 32099"),
                      ("wrong", "not a complete output set")):
        warned = [ln for ln in _warnings(proc) if f"'{name}'" in ln]
        assert len(warned) == 1 and path in warned[0] and why in warned[0], proc.stderr
    assert _names(out) == ["good"]
    with load(out) as merged:
        np.testing.assert_array_equal(merged["good"]["s3d"], np.full((3, 1024), 0.5, np.float32))


def test_summary_counts_a_video_of_an_unknown_filter_damaged(tmp_path):
    path = str(tmp_path / H5)
    with our_h5(path) as f:
        _video(f, "good")
        _video(f, "filtered")
    _plant_unknown_filter(path, "filtered")
    with load(path) as features:
        s = summarize(features)
        with pytest.raises(OutputError, match="filter 32099"):
            features["filtered"]
    assert (s["videos"], s["damaged"]) == (1, 1)


def test_an_unknown_filter_never_loads_a_plugin(tmp_path):
    """HDF5 meeting a filter it lacks looks for a plugin library in HDF5_PLUGIN_PATH (and
    /usr/local/hdf5/lib/plugin) and loads it: a file could run code.  Before: reading the
    dataset tried to dlopen the planted 'plugin'."""
    path = str(tmp_path / H5)
    with our_h5(path) as f:
        _video(f, "clip")
    _plant_unknown_filter(path, "clip")
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "libplanted.so").write_bytes(b"not a library")
    code = ("import h5py, utils.outputs.features\n"
            "from h5py import h5pl\n"
            "print('paths', h5pl.size())\n"
            f"f = h5py.File({path!r}, 'r')\n"
            "try:\n    f['clip/s3d'][()]\nexcept OSError as e:\n    print('read', e)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=60,
                          env={**os.environ, "HDF5_PLUGIN_PATH": str(plugins)})
    assert proc.returncode == 0, proc.stderr
    assert "paths 0" in proc.stdout
    assert "read " in proc.stdout and str(plugins) not in proc.stdout + proc.stderr
    assert "dlopen" not in proc.stdout + proc.stderr


def test_the_layouts_filters_still_read_and_write(tmp_path):
    """Plugins off: gzip and shuffle are built in (the tool's own files still round-trip)."""
    path = str(tmp_path / H5)
    with our_h5(path) as f:
        _video(f, "clip")
        plist = f["clip/s3d"].id.get_create_plist()
        assert {plist.get_filter(i)[0] for i in range(plist.get_nfilters())} == {
            h5py.h5z.FILTER_DEFLATE, h5py.h5z.FILTER_SHUFFLE}
    assert h5py.h5pl.size() == 0
    with load(path) as features:
        assert features["clip"]["s3d"].shape == (3, 1024)


# -- B5: a stray set of another network's files -------------------------------------------

def test_a_stray_set_of_another_networks_files_hides_no_video(tmp_path):
    """An ``s3d_howto100m`` folder with ``zz_s3d.npy``, ``zz_timestamps_ms.npy`` and
    ``zz_fps.npy`` (a complete s3d set).  Before: the command line (no network registered)
    took s3d for a key of every video: 'videos: 0, 4 lack key files ... redoes them', and pack
    packed nothing; the API (networks registered) called 'zz' incomplete.  Now 'zz' is one
    stray set, the real videos are listed, and a really incomplete set stays incomplete."""
    rng = np.random.default_rng(1)
    folder = write_folder(str(tmp_path / "out"),
                          [(f"/v/{i}.mp4", video_arrays(rng, 2)) for i in range(3)])
    np.save(os.path.join(folder, "zz_s3d.npy"), np.zeros((1, 1024), np.float32))
    np.save(os.path.join(folder, "zz_timestamps_ms.npy"), np.zeros((1, 2)))
    np.save(os.path.join(folder, "zz_fps.npy"), np.float64(25))
    np.save(os.path.join(folder, "half_timestamps_ms.npy"), np.zeros((1, 2)))
    np.save(os.path.join(folder, "half_fps.npy"), np.float64(25))
    summary = features_cli("summary", folder, "--json")  # no network registered there
    assert summary.returncode == 0, summary.stderr
    assert '"videos": 3' in summary.stdout and '"incomplete": 1' in summary.stdout
    assert '"strays": 1' in summary.stdout
    warned = [ln for ln in _warnings(summary) if "zz" in ln]
    assert len(warned) == 1 and "not s3d_howto100m's" in warned[0]
    with load(folder) as features:  # the API: s3d_howto100m registered
        assert sorted(features) == ["0", "1", "2"] and features.incomplete == ["half"]
        assert features.strays == {"zz": "s3d"}
    packed = features_cli("pack", folder, str(tmp_path / "p.h5"))
    assert "3 videos packed; 1 incomplete set left out" in packed.stdout, packed.stderr
    assert _names(str(tmp_path / "p.h5")) == ["0", "1", "2"]


@pytest.mark.parametrize("fmt", ["npy", "pkl"])
def test_a_file_set_of_wrong_shapes_is_refused_when_read_naming_the_file(tmp_path, fmt):
    """All key files present (so listed), but 2 feature rows for 3 timestamps: reading it is
    an OutputError naming the feature file, as for an .h5 video; a good set still reads."""
    import pickle
    root = tmp_path / "s3d"
    root.mkdir()
    for name, rows in (("good", 3), ("short", 2)):
        arrays = {"s3d": np.full((rows, 1024), 0.5, np.float32),
                  "timestamps_ms": np.arange(6.0).reshape(3, 2) * 100, "fps": np.float64(25)}
        for key, value in arrays.items():
            path = root / f"{name}_{key}.{fmt}"
            if fmt == "npy":
                np.save(path, value)
            else:
                path.write_bytes(pickle.dumps(value))
    with load(str(root)) as features:
        assert sorted(features) == ["good", "short"]
        assert features["good"]["s3d"].shape == (3, 1024)
        assert features.read("good", ("timestamps_ms",))["timestamps_ms"].shape == (3, 2)
        with pytest.raises(OutputError) as info:
            features["short"]
    assert str(root / f"short_s3d.{fmt}") in str(info.value)
    assert "not (3, 1024) float32" in str(info.value)
