"""The output folder is untrusted input (issue 19): what a rerun and the loader read back from
it may be damaged or planted.  No HDF5 link is followed, work is bounded by a file's size, one
bad record costs one warning, one video's unexpected error is that video's failure."""
import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

from batch_helpers import REPO, STACK, cli_args, features_cli, our_h5, read_jsonl, run_cli
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


def test_a_hard_link_dag_is_walked_once(tmp_path):
    """Two hard links per level, 40 levels: 2^40 paths to one video; each group is walked
    once, so the video is listed once (a second hard link to a video group is a second name
    of it: tests/test_features_loader.py)."""
    path = str(tmp_path / H5)
    with our_h5(path) as f:
        level = f.create_group("l0")
        f["l0b"] = level
        for i in range(1, 41):
            nxt = level.create_group(f"a{i}")
            level[f"b{i}"] = nxt
            level = nxt
        level = level.create_group("v")
        level.attrs["video_path"] = "/v/deep.mp4"
        level.create_dataset("s3d", data=np.ones((2, 1024), np.float32))
        level.create_dataset("timestamps_ms", data=np.arange(4.0).reshape(2, 2))
        level.create_dataset("fps", data=np.float64(25))
    code = ("import time, sys; from utils.outputs.features import load, summarize; "
            "t = time.perf_counter(); s = summarize(load(sys.argv[1])); "
            "print(s['videos'], s['stacks'], time.perf_counter() - t)")
    proc = subprocess.run([sys.executable, "-c", code, path], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    videos, stacks, seconds = proc.stdout.split()
    assert (videos, stacks) == ("1", "2")
    assert float(seconds) < 1.0


def test_an_unallocated_2gb_dataset_in_a_small_file_is_never_read(tmp_path):
    rows = 2**19  # (2^19, 1024) float32: 2 GiB, none of it stored
    path = str(tmp_path / H5)
    with our_h5(path) as f:
        g = f.create_group("clip")
        g.attrs["video_path"] = "/v/clip.mp4"
        g.create_dataset("s3d", shape=(rows, 1024), dtype="f4", chunks=(4096, 1024),
                         compression="gzip")
        g.create_dataset("timestamps_ms", shape=(rows, 2), dtype="f8")
        g.create_dataset("fps", data=np.float64(25))
    assert os.path.getsize(path) < 64 * 1024
    code = ("import sys; from utils.outputs.features import load, OutputError\n"
            "try:\n    load(sys.argv[1])['clip']\nexcept OutputError as e:\n    print(e)\n")
    def cap():
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (2**30, 2**30))
    proc = subprocess.run([sys.executable, "-c", code, path], cwd=REPO, capture_output=True,
                          text=True, timeout=60, preexec_fn=cap)
    assert proc.returncode == 0, proc.stderr
    assert path in proc.stdout and "claims 2147483648 bytes" in proc.stdout


def test_an_npy_header_claiming_a_trillion_rows_is_one_warning_in_summary(tmp_path):
    root = tmp_path / "out" / "s3d"
    root.mkdir(parents=True)
    for stem, rows in (("good", 3), ("planted", 3)):
        np.save(root / f"{stem}_s3d.npy", np.ones((rows, 1024), np.float32))
        np.save(root / f"{stem}_timestamps_ms.npy", np.arange(rows * 2.0).reshape(rows, 2))
        np.save(root / f"{stem}_fps.npy", np.float64(25))
    planted = root / "planted_timestamps_ms.npy"
    data = planted.read_bytes()  # the same header length, a shape of 10^12 rows
    header_len = int.from_bytes(data[8:10], "little") + 10
    text = data[10:header_len].replace(b"(3, 2), }", b"(1000000000000, 2), }")
    text = text.rstrip(b" \n")[: header_len - 11].ljust(header_len - 11) + b"\n"
    planted.write_bytes(data[:10] + text + data[header_len:])
    proc = features_cli("summary", str(root))
    assert proc.returncode == 0, proc.stderr
    assert "stacks: 3 " in proc.stdout and "videos: 1" in proc.stdout
    assert "damaged: 1" in proc.stdout
    [warning] = [ln for ln in proc.stderr.splitlines() if "WARNING" in ln]
    assert str(planted) in warning and "1000000000000" in warning


def test_a_journal_frame_longer_than_the_file_is_one_warning(random_checkpoint, clip, made,
                                                              tmp_path):
    from utils.outputs import h5_journal
    out, h5, want = _first_run(made, tmp_path)
    with h5py.File(h5, "r") as f:
        generation = int(f.attrs["generation"])
    journal = h5_journal.journal_path(h5)
    header = h5_journal.encode({"generation": generation, "feature_type": "s3d", "run": "x",
                               "record": {}})
    with open(journal, "wb") as f:  # a frame whose length says 2^40 bytes
        f.write(header + b"S3DJ" + (2**40).to_bytes(8, "little") + b"x" * 64)
    again = _run(random_checkpoint, out, [clip], tmp_path)
    assert again.returncode == 0, again.stderr
    assert "Traceback" not in again.stderr
    assert "done 0, skipped 1" in _done_line(again)
    [warning] = [ln for ln in again.stderr.splitlines() if journal in ln]
    assert f"offset {len(header)}" in warning and str(2**40) in warning
    assert not os.path.exists(journal)
    got = _features(out)
    for key, value in want.items():
        np.testing.assert_array_equal(got[key], value)


def _remove_chain(top: str) -> None:
    """Remove ``top/d/d/...`` without recursing (shutil.rmtree and pytest's clean-up of old
    temporary folders recurse once a level): the chain is moved up one level at a time."""
    inner, spare = os.path.join(top, "d"), os.path.join(top, "d.next")
    while os.path.isdir(inner) and not os.path.islink(inner):
        for entry in os.listdir(inner):
            if entry != "d":
                path = os.path.join(inner, entry)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.unlink(path)
        if os.path.isdir(os.path.join(inner, "d")):
            os.rename(os.path.join(inner, "d"), spare)
        os.rmdir(inner)
        if os.path.isdir(spare):
            os.rename(spare, inner)


def test_a_path_1000_folders_deep_is_that_videos_failure_only(random_checkpoint, clip,
                                                              tmp_path):
    try:
        _deep_path_run(random_checkpoint, clip, tmp_path)
    finally:
        _remove_chain(str(tmp_path / "in"))
        _remove_chain(str(tmp_path / "out" / "s3d"))


def _deep_path_run(random_checkpoint, clip, tmp_path):
    """Mirror layout: its output folder is 1,000 levels deep (os.makedirs recurses once a
    level: RecursionError); the other video is done and the run ends with its summary."""
    top = tmp_path / "in"
    top.mkdir()
    fd = os.open(top, os.O_RDONLY)
    try:
        for _ in range(1000):  # os.makedirs itself would recurse too deep
            os.mkdir("d", dir_fd=fd)
            fd, old = os.open("d", os.O_RDONLY, dir_fd=fd), fd
            os.close(old)
    finally:
        os.close(fd)
    deep = str(top) + "/d" * 1000 + "/clip.mp4"
    shutil.copyfile(clip, deep)
    near = str(top / "near.mp4")
    shutil.copyfile(clip, near)
    out = str(tmp_path / "out")
    proc = _run(random_checkpoint, out, [near, deep], tmp_path, on_extraction="save_numpy",
                output_layout="mirror", input_root=str(top))
    assert proc.returncode == 1, proc.stderr
    assert "done 1, skipped 0 (already present), failed 1" in _done_line(proc)
    [failed] = read_jsonl(os.path.join(out, "s3d", "failed.jsonl"))
    assert failed["path"] == deep and "RecursionError" in failed["message"]
    assert os.path.exists(os.path.join(out, "s3d", "near_s3d.npy"))


def test_a_folder_input_covering_output_path_and_tmp_path_leaves_them_out(random_checkpoint,
                                                                         clip, tmp_path):
    top = tmp_path / "in"
    for sub in ("out", "tmp"):
        (top / sub).mkdir(parents=True)
        shutil.copyfile(clip, top / sub / f"planted_{sub}.mp4")
    shutil.copyfile(clip, top / "a.mp4")
    proc = _run(random_checkpoint, str(top / "out"), [str(top)], tmp_path,
                on_extraction="save_numpy", tmp_path=str(top / "tmp"))
    assert proc.returncode == 0, proc.stderr
    assert "done 1, skipped 0 (already present), failed 0" in _done_line(proc)
    manifest = read_jsonl(os.path.join(top, "out", "s3d", "manifest-0-of-1.jsonl"))
    assert [r["path"] for r in manifest] == [str(top / "a.mp4")]
    assert any("2 of its 3 video files are under output_path or tmp_path" in ln
               for ln in proc.stderr.splitlines())


def test_a_shard_file_copied_alone_keeps_its_run_in_the_rerun_check(random_checkpoint, clip,
                                                                      made, tmp_path):
    """No manifest, no runs/: the file's own run:<id> record still refuses other options."""
    alone = tmp_path / "alone" / "s3d"
    alone.mkdir(parents=True)
    shutil.copy(os.path.join(made, "s3d", H5), alone / H5)
    before = (alone / H5).read_bytes()
    other = _run(random_checkpoint, str(alone.parent), [clip], tmp_path, step_size=2 * STACK)
    assert other.returncode == 2, other.stderr
    [line] = [ln for ln in other.stderr.splitlines() if ln.startswith("error:")]
    assert str(alone / H5) in line and "video 'clip'" in line
    assert f"step_size {STACK} there vs {2 * STACK} now" in line and "overwrite=true" in line
    assert (alone / H5).read_bytes() == before
    same = _run(random_checkpoint, str(alone.parent), [clip], tmp_path)
    assert same.returncode == 0 and "done 0, skipped 1" in _done_line(same), same.stderr


@pytest.mark.parametrize("sink", ["save_h5", "save_numpy"])
def test_an_output_name_holding_another_inputs_features_fails_naming_both(
        random_checkpoint, clip, made, tmp_path, sink):
    """Flat layout: clips/clip.mp4 is done; other/clip.mp4, another video, must not be
    reported skipped on clips/clip.mp4's features."""
    if sink == "save_h5":
        out, h5, want = _first_run(made, tmp_path)
    else:
        out = str(tmp_path / "out")
        first = _run(random_checkpoint, out, [clip], tmp_path, on_extraction=sink)
        assert first.returncode == 0, first.stderr
        want = {k: np.load(os.path.join(out, "s3d", f"clip_{k}.npy"))
                for k in ("s3d", "timestamps_ms", "fps")}
    other = tmp_path / "other" / "clip.mp4"
    other.parent.mkdir()
    synth(str(other), seconds=0.6, size="32x24", source="smptebars")
    again = _run(random_checkpoint, out, [str(other)], tmp_path, on_extraction=sink)
    assert again.returncode == 1, again.stderr
    assert "done 0, skipped 0" in _done_line(again) and "failed 1" in _done_line(again)
    [line] = [ln for ln in again.stderr.splitlines() if ln.startswith("FAILED")]
    assert str(other) in line and clip in line and "output_layout=mirror" in line
    got = _features(out) if sink == "save_h5" else {
        k: np.load(os.path.join(out, "s3d", f"clip_{k}.npy")) for k in want}
    for key, value in want.items():  # clips/clip.mp4's features kept
        np.testing.assert_array_equal(got[key], value)
    mine = _run(random_checkpoint, out, [clip], tmp_path, on_extraction=sink)
    assert mine.returncode == 0 and "done 0, skipped 1" in _done_line(mine), mine.stderr
    # overwrite=true releases the name (redone with the other video: its path recorded)
    replaced = _run(random_checkpoint, out, [str(other)], tmp_path, on_extraction=sink,
                    overwrite=True)
    assert replaced.returncode == 0 and "done 1" in _done_line(replaced), replaced.stderr
    if sink == "save_h5":
        with h5py.File(os.path.join(out, "s3d", H5), "r") as f:
            assert f["clip"].attrs["video_path"] == str(other)


def test_a_video_too_deep_for_the_h5_layout_fails_alone_and_the_file_stays_readable(
        random_checkpoint, clip, tmp_path):
    """save_h5, mirror layout: a name 250 folders deep would make every reader call the file
    damaged (walks stop at 200 levels): that video fails at write, the other is stored."""
    top = tmp_path / "in"
    deep_folder = top.joinpath(*["d"] * 250)
    deep_folder.mkdir(parents=True)
    deep, near = str(deep_folder / "clip.mp4"), str(top / "near.mp4")
    shutil.copyfile(clip, deep)
    shutil.copyfile(clip, near)
    out = str(tmp_path / "out")
    proc = _run(random_checkpoint, out, [near, deep], tmp_path, output_layout="mirror",
                input_root=str(top))
    assert proc.returncode == 1, proc.stderr
    assert "done 1, skipped 0 (already present), failed 1" in _done_line(proc)
    [failed] = read_jsonl(os.path.join(out, "s3d", "failed.jsonl"))
    assert failed["path"] == deep and "250 folders deep" in failed["message"]
    summary = features_cli("summary", os.path.join(out, "s3d"))
    assert summary.returncode == 0 and "videos: 1" in summary.stdout, summary.stderr


def test_the_same_video_through_a_link_is_not_another_input(random_checkpoint, clip, made,
                                                             tmp_path):
    """The name check compares files, not spellings: clips/clip.mp4 reached through a
    linked folder is the video already done (skipped, never failed)."""
    out, h5, want = _first_run(made, tmp_path)
    alias = tmp_path / "alias"
    alias.symlink_to(os.path.dirname(clip))
    again = _run(random_checkpoint, out, [str(alias / "clip.mp4")], tmp_path)
    assert again.returncode == 0 and "done 0, skipped 1" in _done_line(again), again.stderr


def test_json_nested_too_deep_in_every_record_is_warnings_and_the_rerun_goes_on(
        random_checkpoint, clip, made, tmp_path):
    """A manifest line, a run record and an .h5 run:<id> attribute each '[' * 200000: one
    warning each, never a RecursionError traceback; the done video is skipped."""
    out, h5, want = _first_run(made, tmp_path)
    nested = "[" * 200_000 + "]" * 200_000
    root = os.path.join(out, "s3d")
    with open(os.path.join(root, "manifest-0-of-1.jsonl"), "a", encoding="utf-8") as f:
        f.write(nested + "\n")  # and a line naming the run whose record is nested
        f.write(json.dumps({"path": "/v/other.mp4", "status": "done", "outputs": {}, "Tv": 1,
                            "seconds": 1.0, "run": "20261206T000000Z-000000"}) + "\n")
    with open(os.path.join(root, "runs", "20261206T000000Z-000000.json"), "w") as f:
        f.write(nested)
    with h5py.File(h5, "r+") as f:
        f.attrs["run:20261206T000000Z-000000"] = nested
    again = _run(random_checkpoint, out, [clip], tmp_path)
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr[-3000:]
    assert "done 0, skipped 1" in _done_line(again)
    summary = subprocess.run([sys.executable, "-m", "utils.manifests", out], cwd=REPO,
                             capture_output=True, text=True, timeout=60)
    assert summary.returncode == 0 and "Traceback" not in summary.stderr, summary.stderr
