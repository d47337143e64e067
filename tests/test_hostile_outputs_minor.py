"""The output folder is untrusted input (issue 19, the minor points): a planted or garbled
.pkl, a damaged key file, an .h5 another process holds open, an attribute of the wrong type.
One warning (or one error line) naming the file that is wrong and why, never a traceback;
the other videos are read.  Through ``python -m utils.outputs.features`` in a subprocess
(cheap: no network), or the functions themselves."""
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from batch_helpers import features_cli, our_h5

H5 = "s3d-0-of-1.h5"


def _warnings(proc):
    return [ln for ln in proc.stderr.splitlines() if ln.startswith("WARNING")]


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
    with our_h5(one) as f:
        _video(f, "odd", video_path=value)
    with our_h5(two) as f:
        _video(f, "good", video_path="/v/good.mp4")
    proc = features_cli("merge", out, one, two)
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
    with our_h5(path) as f:
        _video(f, "clip", video_path=np.arange(2)).attrs["run"] = np.zeros((2, 2))
    with load(path) as features:
        assert features.video_path("clip") is None and features.run("clip") is None
    assert caplog.text.count("is not text") == 2 and path in caplog.text


# -- 3: an .h5 another process holds open ----------------------------------------------------

@pytest.fixture
def held(tmp_path):
    """A features file another process holds open for writing (HDF5's file lock taken)."""
    if os.environ.get("HDF5_USE_FILE_LOCKING", "").upper() == "FALSE":
        pytest.skip("HDF5 file locking is turned off in this environment")
    path = str(tmp_path / H5)
    with our_h5(path) as f:
        _video(f, "clip")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, h5py; f = h5py.File(sys.argv[1], 'a'); "
         "print('open', flush=True); sys.stdin.read()", path],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        yield path
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def _says_wait(text, path):
    assert f"{path} is open in another process" in text and "wait for that process" in text
    assert "start the shard's file anew" not in text and "Traceback" not in text


def test_a_locked_shard_file_is_waited_for_never_moved_away(held, caplog):
    from utils.errors import InputError
    from utils.outputs.h5_store import H5Store
    with pytest.raises(InputError) as e:
        H5Store._open_reader(held, own=True)
    _says_wait(str(e.value), held)
    assert "\n" not in str(e.value)
    assert H5Store._open_reader(held, own=False) is None  # another shard's: one warning
    _says_wait(caplog.text, held)


def test_summary_and_merge_of_a_locked_file_say_another_process_has_it(held, tmp_path):
    for proc in (features_cli("summary", held),
                 features_cli("merge", str(tmp_path / "m.h5"), held)):
        assert proc.returncode == 2, proc.stderr
        [line] = proc.stderr.splitlines()
        assert line.startswith("error: ")
        _says_wait(line, held)
    assert not os.path.exists(tmp_path / "m.h5")


# -- 1 and 2: a planted or garbled .pkl, a damaged or missing key file -----------------------

KEYS = ("s3d", "timestamps_ms", "fps")


class _System:
    """Pickles as a call of os.system (what a planted .pkl would run)."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _set(root, stem, ext="pkl", rows=3):
    arrays = {"s3d": np.full((rows, 1024), len(stem), np.float32),
              "timestamps_ms": np.arange(rows * 2.0).reshape(rows, 2), "fps": np.float64(25)}
    files = {key: os.path.join(root, f"{stem}_{key}.{ext}") for key in KEYS}
    for key, path in files.items():
        if ext == "npy":
            np.save(path, arrays[key])
        else:
            with open(path, "wb") as f:
                pickle.dump(arrays[key], f)
    return files


@pytest.fixture
def planted(tmp_path):
    """A save_pickle folder: 'good' and 'other' whole; 'planted' (its s3d .pkl runs a command
    when unpickled), 'garbage' (its fps .pkl is not a pickle), 'huge' (its fps a number no
    numpy integer holds: an object array)."""
    root = tmp_path / "out" / "s3d"
    root.mkdir(parents=True)
    marker = tmp_path / "MARKER"
    files = {stem: _set(str(root), stem) for stem in ("good", "other", "planted", "garbage",
                                                       "huge")}
    with open(files["planted"]["s3d"], "wb") as f:
        pickle.dump(_System(f"touch {marker}"), f, protocol=2)
    with open(files["garbage"]["fps"], "wb") as f:
        f.write(b"\x80\x04garbage")
    with open(files["huge"]["fps"], "wb") as f:
        pickle.dump(10 ** 100, f)
    return str(root), files, marker


def test_summary_of_a_folder_with_a_planted_pkl_warns_once_per_file(planted):
    root, files, marker = planted
    proc = features_cli("summary", root)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and not marker.exists()
    # huge: an fps no number holds is not a complete set either (read checks every set)
    assert "damaged: 3 video(s)" in proc.stdout and "videos: 2" in proc.stdout
    warnings = _warnings(proc)
    [huge_line] = [ln for ln in warnings if files["huge"]["fps"] in ln]
    assert "not one number" in huge_line
    planted_line, garbage_line = sorted([ln for ln in warnings if ln != huge_line],
                                        key=lambda ln: "garbage" in ln)
    assert files["planted"]["s3d"] in planted_line and "refused to load" in planted_line
    assert "os.system" in planted_line or "posix.system" in planted_line
    assert files["garbage"]["fps"] in garbage_line and "cannot be read" in garbage_line


def test_pack_of_a_folder_with_a_planted_pkl_leaves_it_out_naming_the_file(planted, tmp_path):
    root, files, marker = planted
    out = str(tmp_path / "p.h5")
    proc = features_cli("pack", root, out)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and not marker.exists()
    assert "2 videos packed; 3 incomplete sets left out" in proc.stdout
    warnings = sorted(_warnings(proc))
    assert len(warnings) == 3, warnings
    for line, (stem, key, why) in zip(warnings, [("garbage", "fps", "cannot be read"),
                                                 ("huge", "fps", "not one number"),
                                                 ("planted", "s3d", "refused to load")]):
        assert line.startswith(f"WARNING: {files[stem][key]}: {why}"), line
        assert f"video '{stem}' not packed" in line
    from utils.outputs.features import load
    with load(out) as packed:
        assert sorted(packed) == ["good", "other"]


def test_a_rerun_warns_about_the_planted_file_not_the_first_of_the_set(tmp_path, caplog):
    from utils.outputs.resume import outputs_complete
    from utils.networks import network
    marker = tmp_path / "MARKER"
    files = _set(str(tmp_path), "clip")
    with open(files["timestamps_ms"], "wb") as f:
        pickle.dump(_System(f"touch {marker}"), f, protocol=2)
    assert outputs_complete(files, network("s3d").features) is None
    assert not marker.exists()
    [record] = caplog.records
    assert record.getMessage().startswith(f"{files['timestamps_ms']}: refused to load")


def test_pack_names_the_damaged_or_missing_file_of_a_set(tmp_path):
    root = tmp_path / "s3d"
    root.mkdir()
    _set(str(root), "good", "npy")
    cut = _set(str(root), "cut", "npy")
    with open(cut["s3d"], "r+b") as f:
        f.truncate(200)  # its header whole, its data cut
    short = _set(str(root), "short", "npy")
    np.save(short["s3d"], np.ones((2, 1024), np.float32))  # 2 rows, 3 timestamps
    lacking = _set(str(root), "lacking", "npy")
    os.remove(lacking["fps"])
    proc = features_cli("pack", str(root), str(tmp_path / "p.h5"))
    assert proc.returncode == 1, proc.stderr
    assert "1 video packed; 3 incomplete sets left out" in proc.stdout
    found = {ln.split(": ", 2)[1]: ln for ln in _warnings(proc) if "not packed" in ln}
    assert set(found) == {cut["s3d"], short["s3d"], lacking["fps"]}, found
    assert "cannot be read" in found[cut["s3d"]]
    assert "not (3, width) float32 (found (2, 1024) float32" in found[short["s3d"]]
    assert f"{lacking['fps']}: missing; video 'lacking' not packed" in found[lacking["fps"]]
    for line in found.values():  # one file named: the one at fault
        assert line.count(str(root)) == 1, line


@pytest.mark.parametrize("end", [np.nan, np.inf, -40.0])
def test_timestamps_ending_in_a_value_the_manifest_cannot_hold_are_not_complete(end):
    """A skipped video's seconds go into its manifest record, which refuses NaN, inf and
    negatives when read back: such timestamps make the set incomplete (redone), naming why."""
    from utils.outputs.resume import check_arrays
    stamps = np.array([[0.0, 520.0], [520.0, end]])
    verdict = check_arrays({"timestamps_ms": stamps, "fps": np.float64(25),
                            "s3d": np.zeros((2, 1024), np.float32)}, (("s3d", 1024),))
    assert verdict.done is None and verdict.key == "timestamps_ms"
    assert "not a finite number >= 0" in verdict.why
