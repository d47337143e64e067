"""``on_extraction=save_h5``: one HDF5 file per shard, equal to save_numpy value for value,
resumable like it, and whole after ``kill -9`` at any point (issue 12, points 2 and 3)."""
import errno
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from batch_helpers import (ExtractorDouble, cli_args, load_set, make_cfg, output_files_under,
                           read_jsonl)
from utils.outputs import h5_format, h5_journal, h5_store
from utils.run.batch_run import run
from utils.errors import InputError
from videos import synth

HARNESS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "h5_kill_harness.py")
H5 = "s3d-0-of-1.h5"


def h5_videos(path: str):
    """``{output name: {key: array}}`` of a features file, read with h5py alone."""
    with h5py.File(path, "r") as f:
        out = {}

        def visit(name, obj):
            if isinstance(obj, h5py.Group) and "video_path" in obj.attrs:
                out[name] = {key: obj[key][()] for key in obj if isinstance(obj[key], h5py.Dataset)}
        f.visititems(visit)
        return out


def assert_equal_sets(got, want):
    assert sorted(got) == sorted(want)
    for name in want:
        assert sorted(got[name]) == sorted(want[name]), name
        for key, value in want[name].items():
            assert got[name][key].dtype == np.asarray(value).dtype, (name, key)
            np.testing.assert_array_equal(got[name][key], value, err_msg=f"{name} {key}")


class _Cached(ExtractorDouble):
    """The real extractor, each video extracted once for every sink and layout of a test."""

    cache = {}

    def __init__(self, inner):
        self.inner, self.device, self.labels = inner, inner.device, inner.labels

    def identity(self):
        return self.inner.identity()

    def extract(self, path, with_logits=False):
        if path not in self.cache:
            self.cache[path] = self.inner.extract(path)
        return {k: np.copy(v) for k, v in self.cache[path].items()}


@pytest.fixture(scope="module")
def nested_videos(tmp_path_factory):
    """Three short clips, two in nested folders (mirror layout gives nested groups)."""
    top = tmp_path_factory.mktemp("nested")
    os.makedirs(top / "sub" / "deeper")
    return [synth(str(top / rel), seconds=secs, size="64x48")
            for rel, secs in (("a.mp4", 1.2), ("sub/b.mkv", 0.8), ("sub/deeper/c.mp4", 1.6))]


@pytest.mark.parametrize("layout", ["flat", "mirror"])
def test_save_h5_holds_what_save_numpy_writes(nested_videos, extractor, tmp_path, layout):
    """The real network's outputs, written by both sinks: equal value for value, dtype for
    dtype, under the same names (nested groups with mirror)."""
    cached = _Cached(extractor)
    root_in = os.path.dirname(nested_videos[0])
    kw = dict(output_layout=layout, input_root=root_in if layout == "mirror" else None)
    npy_out, h5_out = str(tmp_path / "npy"), str(tmp_path / "h5")
    assert run(make_cfg(nested_videos, npy_out, **kw), cached).done == 3
    report = run(make_cfg(nested_videos, h5_out, on_extraction="save_h5", **kw), cached)
    assert report.done == 3 and report.num_failed == 0
    names = (["a", "b", "c"] if layout == "flat" else ["a", "sub/b", "sub/deeper/c"])
    want = {name: load_set(os.path.join(npy_out, "s3d"), name) for name in names}
    assert all(want[n]["s3d"].shape[0] >= 1 for n in names)
    got = h5_videos(os.path.join(h5_out, "s3d", H5))
    assert_equal_sets(got, want)
    # only the file and the bookkeeping: no journal, no temporary
    assert output_files_under(os.path.join(h5_out, "s3d")) == sorted(
        ["failed.jsonl", "manifest-0-of-1.jsonl", H5])
    with h5py.File(os.path.join(h5_out, "s3d", H5), "r") as f:
        assert f.attrs["format"] == h5_format.FORMAT and f.attrs["feature_type"] == "s3d"
        [run_id] = h5_format.runs(f)
        record = h5_format.runs(f)[run_id]
        assert record["run"] == run_id and record["features"]["stack_size"] == 13
        assert record["features"]["weights"] == extractor.identity()["weights"]
        assert "torch" in record["versions"]
        for name, path in zip(names, nested_videos):
            assert f[name].attrs["video_path"] == path and f[name].attrs["run"] == run_id
    manifest = read_jsonl(os.path.join(h5_out, "s3d", "manifest-0-of-1.jsonl"))
    assert [r["status"] for r in manifest] == ["done"] * 3
    assert manifest[0]["outputs"]["s3d"] == f"{H5}/{names[0]}/s3d"  # relative: portable


def _arrays(value: float, rows: int = 2):
    return {"s3d": np.full((rows, 1024), value, np.float32),
            "timestamps_ms": np.arange(rows * 2, dtype=np.float64).reshape(rows, 2) + value,
            "fps": np.float64(25)}


class _Table(ExtractorDouble):
    """Arrays from a table by file name; a name missing from it fails at decode."""

    device, labels = "cpu", []

    def __init__(self, table):
        self.table, self.calls = table, []

    def extract(self, path, with_logits=False):
        from utils.errors import ExtractionError
        self.calls.append(os.path.basename(path))
        stem = os.path.splitext(os.path.basename(path))[0]
        if stem not in self.table:
            raise ExtractionError("decode", "no frames")
        return _arrays(self.table[stem])


def _paths(tmp_path, names):
    for n in names:
        (tmp_path / f"{n}.mp4").write_bytes(b"")
    return [str(tmp_path / f"{n}.mp4") for n in names]


def test_rerun_skips_overwrite_replaces_and_failures_are_listed(tmp_path):
    paths = _paths(tmp_path, ["p", "q", "bad"])
    out = str(tmp_path / "out")
    root = os.path.join(out, "s3d")
    cfg = make_cfg(paths, out, on_extraction="save_h5")
    first = run(cfg, _Table({"p": 1.0, "q": 2.0}))
    assert (first.done, first.num_failed) == (2, 1)
    assert [r["path"] for r in read_jsonl(os.path.join(root, "failed.jsonl"))] == [paths[2]]
    assert sorted(h5_videos(os.path.join(root, H5))) == ["p", "q"]

    again = _Table({"p": 1.0, "q": 2.0, "bad": 3.0})
    second = run(cfg, again)
    assert (second.done, second.skipped, second.num_failed) == (1, 2, 0)
    assert again.calls == ["bad.mp4"]
    assert read_jsonl(os.path.join(root, "failed.jsonl")) == []

    third = run(make_cfg(paths, out, on_extraction="save_h5", overwrite=True),
                _Table({"p": 5.0, "q": 2.0, "bad": 3.0}))
    assert third.done == 3
    got = h5_videos(os.path.join(root, H5))
    assert_equal_sets(got, {"p": _arrays(5.0), "q": _arrays(2.0), "bad": _arrays(3.0)})
    with h5py.File(os.path.join(root, H5), "r") as f:
        assert f.attrs["generation"] == 3 and len(h5_format.runs(f)) == 3
    latest = {r["path"]: r["status"] for r in read_jsonl(os.path.join(root, "manifest-0-of-1.jsonl"))}
    assert latest == dict.fromkeys(paths, "done")


def test_journal_torn_stale_and_disk_full(tmp_path, monkeypatch):
    """The journal's rules, unit by unit: a torn last record is ignored; a journal already
    folded (its generation behind the file's) is dropped, not applied twice; a failed append
    (disk full) leaves the journal as it was, so later records still count."""
    root = str(tmp_path / "s3d")

    def store():
        return h5_store.H5Store(root, "s3d", 0, 1, ("s3d", "timestamps_ms", "fps"),
                                (("s3d", 1024),), "run-1", {"id": "run-1"})

    s = store()
    s.write("a", _arrays(1.0), "/v/a.mp4")
    real_write = os.write
    calls = {"n": 0}

    def full_disk(fd, data):
        calls["n"] += 1
        if calls["n"] == 1:
            real_write(fd, data[:100])  # part of the record reaches the disk
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(h5_store.os, "write", full_disk)
    with pytest.raises(OSError):
        s.write("b", _arrays(2.0), "/v/b.mp4")
    monkeypatch.setattr(h5_store.os, "write", real_write)
    s.write("c", _arrays(3.0), "/v/c.mp4")
    journal = h5_journal.journal_path(s.path)
    with open(journal, "ab") as f:  # a record cut short by a kill
        f.write(b"S3DJ" + (10**6).to_bytes(8, "little") + b"x" * 50)
    records = [video["name"] for video, _ in list(h5_journal.read_journal(journal))[1:]]
    assert records == ["a", "c"]
    s._fd = None  # as if killed: the journal stays
    saved = open(journal, "rb").read()
    s2 = store()  # folds it
    assert sorted(h5_videos(s2.path)) == ["a", "c"] and not os.path.exists(journal)
    s2.close()
    with open(journal, "wb") as f:  # the same journal again: already folded (generation 0 < 1)
        f.write(saved)
    s3 = store()
    s3.close()
    assert sorted(h5_videos(s3.path)) == ["a", "c"] and not os.path.exists(journal)
    with h5py.File(s3.path, "r") as f:
        assert f.attrs["generation"] == 1


def test_a_link_named_like_the_file_is_refused(tmp_path):
    paths = _paths(tmp_path, ["p"])
    out = tmp_path / "out"
    (out / "s3d").mkdir(parents=True)
    outside = tmp_path / "elsewhere.h5"
    outside.write_bytes(b"precious")
    os.symlink(outside, out / "s3d" / H5)
    with pytest.raises(InputError, match="not a regular file"):
        run(make_cfg(paths, str(out), on_extraction="save_h5"), _Table({"p": 1.0}))
    assert outside.read_bytes() == b"precious"


def _harness(point, args, cwd):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, HARNESS, point, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.slow
def test_kill_at_every_stage_then_rerun_gives_the_uninterrupted_file(random_checkpoint,
                                                                     tmp_path):
    """A real process killed (SIGKILL) in turn: after a video's journal record, inside the
    checkpoint's copy, after the rename, in the middle of a record, after copying at the end.
    Each rerun of the same command starts from what the kill left; the last one ends with
    the file an uninterrupted run writes: same videos, same values, none twice, no leftovers."""
    videos = [synth(str(tmp_path / f"v{i}.mp4"), seconds=0.6 + 0.2 * i, size="32x24")
              for i in range(4)]
    want_out, out = str(tmp_path / "want"), str(tmp_path / "out")
    kw = dict(video_paths=videos, on_extraction="save_h5")
    done = _harness("none", cli_args(random_checkpoint, want_out, **kw), str(tmp_path))
    assert done.returncode == 0, done.stderr
    want = h5_videos(os.path.join(want_out, "s3d", H5))
    assert sorted(want) == ["v0", "v1", "v2", "v3"]
    root = os.path.join(out, "s3d")
    args = cli_args(random_checkpoint, out, **kw)
    steps = [
        # (kill point, videos in the file after it, journal left)
        ("journal:2", [], True),          # two videos journaled, no file yet
        ("fold-writing:1", [], True),     # the start's checkpoint dies halfway through its copy
        ("renamed", ["v0", "v1"], True),  # its file is in place, its journal not yet removed
        ("journal-torn:1", ["v0", "v1"], True),  # v2's record half written
        ("fold-copied", ["v0", "v1"], True),     # v2, v3 journaled; the end's copy dies
    ]
    for point, in_file, journal_left in steps:
        killed = _harness(point, args, str(tmp_path))
        assert killed.returncode == -9, (point, killed.stderr[-2000:])
        path = os.path.join(root, H5)
        assert sorted(h5_videos(path) if os.path.exists(path) else {}) == in_file, point
        assert os.path.exists(h5_journal.journal_path(path)) == journal_left, point
    final = _harness("none", args, str(tmp_path))
    assert final.returncode == 0, final.stderr
    assert "2 videos added" in final.stderr and "4 videos already have complete outputs" in final.stderr
    assert_equal_sets(h5_videos(os.path.join(root, H5)), want)
    assert output_files_under(root) == sorted(["failed.jsonl", "manifest-0-of-1.jsonl", H5])
    latest = {}
    for r in read_jsonl(os.path.join(root, "manifest-0-of-1.jsonl")):
        latest[r["path"]] = r["status"]
    assert latest == dict.fromkeys(videos, "skipped")


@pytest.fixture
def read_only_mount(tmp_path):
    """A tmpfs at ``tmp_path/ro`` and a function that remounts it read-only (skipped where
    this process may not mount: as root, chmod would not stop writes)."""
    where = tmp_path / "ro"
    where.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(where)],
                      capture_output=True, check=False).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)")
    try:
        yield where, lambda: subprocess.run(["mount", "-o", "remount,ro", str(where)],
                                            check=True, capture_output=True)
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


@pytest.mark.parametrize("sink", ["save_numpy", "save_h5"])
def test_a_read_only_folder_holding_every_video_reports_them_skipped(read_only_mount,
                                                                     random_checkpoint, tmp_path,
                                                                     sink):
    """Issue 14: a read-only output folder that holds every video of the shard: each is
    reported skipped (exit 0, nothing written); one video not there: exit 2 naming it."""
    where, make_read_only = read_only_mount
    videos = [synth(str(tmp_path / f"v{i}.mp4"), seconds=0.6, size="32x24") for i in range(2)]
    out = str(where / "out")
    made = _harness("none", cli_args(random_checkpoint, out, video_paths=videos,
                                     on_extraction=sink), str(tmp_path))
    assert made.returncode == 0, made.stderr
    make_read_only()
    before = output_files_under(os.path.join(out, "s3d"))
    rerun = run_cli_quiet(cli_args(random_checkpoint, out, video_paths=videos,
                                   on_extraction=sink), str(tmp_path))
    assert rerun.returncode == 0, rerun.stderr
    assert "is read-only; every video of this shard is done there" in rerun.stderr
    assert "done 0, skipped 2 (already present), failed 0" in rerun.stderr
    new = synth(str(tmp_path / "new.mp4"), seconds=0.6, size="32x24")
    more = run_cli_quiet(cli_args(random_checkpoint, out, video_paths=videos + [new],
                                  on_extraction=sink), str(tmp_path))
    assert more.returncode == 2
    [line] = [ln for ln in more.stderr.splitlines() if ln.startswith("error:")]
    assert "is read-only and 1 video of this shard is not done" in line and new in line
    assert output_files_under(os.path.join(out, "s3d")) == before
    with pytest.raises(InputError, match="cannot create the lock"):  # overwrite: not skipped
        run(make_cfg(videos, out, on_extraction=sink, overwrite=True), _Table({}))


def run_cli_quiet(args, cwd):
    from batch_helpers import run_cli
    return run_cli(args, cwd=cwd)


def test_resharding_a_folder_redoes_nothing(tmp_path):
    """Videos in the file of a run with another num_shards count as done (they stay there):
    re-sharding never extracts a video twice nor stores it in two files."""
    paths = _paths(tmp_path, ["p", "q", "r"])
    out = str(tmp_path / "out")
    root = os.path.join(out, "s3d")
    run(make_cfg(paths[:2], out, on_extraction="save_h5"), _Table({"p": 1.0, "q": 2.0}))
    table = _Table({"p": 1.0, "q": 2.0, "r": 3.0})
    for shard in (0, 1):
        report = run(make_cfg(paths, out, on_extraction="save_h5", shard=shard, num_shards=2),
                     table)
        assert report.num_failed == 0
    assert table.calls == ["r.mp4"]
    assert sorted(h5_videos(os.path.join(root, H5))) == ["p", "q"]
    assert sorted(h5_videos(os.path.join(root, "s3d-0-of-2.h5"))) == ["r"]
    skipped = read_jsonl(os.path.join(root, "manifest-1-of-2.jsonl"))
    assert [(r["status"], r["outputs"]["s3d"]) for r in skipped] == [
        ("skipped", H5 + "/q/s3d")]


def test_a_video_under_another_videos_dataset_is_refused_before_any_work(tmp_path):
    """Mirror layout: /in/x.mp4 and /in/x/s3d/y.mp4 would need x/s3d to be both x's dataset
    and a folder of groups (writing one would drop the other's data): exit 2, nothing done."""
    (tmp_path / "in" / "x" / "s3d").mkdir(parents=True)
    paths = [str(tmp_path / "in" / "x.mp4"), str(tmp_path / "in" / "x" / "s3d" / "y.mp4")]
    for p in paths:
        open(p, "wb").close()
    table = _Table({"x": 1.0, "y": 2.0})
    out = str(tmp_path / "out")
    cfg = make_cfg(paths, out, on_extraction="save_h5", output_layout="mirror",
                   input_root=str(tmp_path / "in"))
    with pytest.raises(InputError, match="the group of 'x/s3d/y' would pass through a dataset "
                                         "of 'x'"):
        run(cfg, table)
    assert table.calls == [] and not os.path.exists(out)
    assert h5_format.name_clash(["x", "x/s3d_howto100m/y", "x/sub/s3d"], ("s3d", "fps")) is None


def _clashing_inputs(tmp_path):
    """in/x.mp4 and in/x/s3d/y.mp4, an output folder, mirror save_h5 options."""
    (tmp_path / "in" / "x" / "s3d").mkdir(parents=True)
    x, y = str(tmp_path / "in" / "x.mp4"), str(tmp_path / "in" / "x" / "s3d" / "y.mp4")
    for p in (x, y):
        open(p, "wb").close()
    kw = dict(on_extraction="save_h5", output_layout="mirror", input_root=str(tmp_path / "in"))
    return x, y, str(tmp_path / "out"), kw


def test_a_video_under_a_dataset_already_in_the_file_fails_alone(tmp_path):
    """The same clash across runs: the video already in the file keeps its data, the new one
    fails at write (before it is extracted) and the file still folds."""
    x, y, out, kw = _clashing_inputs(tmp_path)
    run(make_cfg([x], out, **kw), _Table({"x": 1.0}))
    table = _Table({"x": 1.0, "y": 2.0})
    report = run(make_cfg([y], out, **kw), table)
    assert table.calls == [] and report.failed == {"write": 1}
    assert_equal_sets(h5_videos(os.path.join(out, "s3d", H5)), {"x": _arrays(1.0)})


def test_a_video_over_a_folder_of_videos_named_like_a_key_fails_alone(tmp_path):
    """The other way round: x/s3d/y.mp4 is in the file, then x.mp4 comes: x would store its
    s3d where y's folder is; it fails at write, y keeps its data, nothing half-written."""
    x, y, out, kw = _clashing_inputs(tmp_path)
    run(make_cfg([y], out, **kw), _Table({"y": 2.0}))
    report = run(make_cfg([x], out, **kw), _Table({"x": 1.0}))
    assert report.failed == {"write": 1}
    assert_equal_sets(h5_videos(os.path.join(out, "s3d", H5)), {"x/s3d/y": _arrays(2.0)})
    with h5py.File(os.path.join(out, "s3d", H5), "r") as f:
        assert dict(f["x"].attrs) == {} and list(f["x"]) == ["s3d"]  # nothing of x written
    with h5py.File(str(tmp_path / "direct.h5"), "w") as f:  # the writer refuses it by itself
        h5_format.write_video(f, "x/s3d/y", _arrays(2.0), y, None)
        with pytest.raises(ValueError, match="holds the groups of other videos"):
            h5_format.write_video(f, "x", _arrays(1.0), x, None)
        with pytest.raises(ValueError, match="is a dataset of another video"):
            h5_format.write_video(f, "x/s3d/y/s3d/z", _arrays(1.0), x, None)
        assert dict(f["x"].attrs) == {}


def test_a_name_that_is_not_utf8_fails_alone_and_its_bytes_are_kept_in_paths(tmp_path):
    """HDF5 names are UTF-8: a file name that is not fails at write before extraction, the
    other videos are stored; a video in a folder whose name is not UTF-8 keeps its path's
    bytes in video_path (flat layout)."""
    odd = os.fsdecode(b"caf\xe9")
    folder = tmp_path / os.fsdecode(b"d\xe9j\xe0")
    folder.mkdir()
    paths = [str(tmp_path / f"{odd}.mp4"), str(tmp_path / "ok.mp4"), str(folder / "in.mp4")]
    for p in paths:
        open(p, "wb").close()
    table = _Table({odd: 9.0, "ok": 1.0, "in": 2.0})
    out = str(tmp_path / "out")
    report = run(make_cfg(paths, out, on_extraction="save_h5"), table)
    assert report.failed == {"write": 1} and report.done == 2
    assert sorted(table.calls) == ["in.mp4", "ok.mp4"]
    path = os.path.join(out, "s3d", H5)
    assert_equal_sets(h5_videos(path), {"ok": _arrays(1.0), "in": _arrays(2.0)})
    with h5py.File(path, "r") as f:
        assert f["in"].attrs["video_path"] == os.fsencode(paths[2])
    [failed] = read_jsonl(os.path.join(out, "s3d", "failed.jsonl"))
    assert failed["stage"] == "write" and "not valid UTF-8" in failed["message"]


def test_a_grown_list_moves_videos_between_shards_without_extracting_them_again(tmp_path):
    """Same num_shards, one video added to a sorted folder: the later videos change shards;
    they are found in the other shard's file, not extracted again nor stored twice."""
    out = str(tmp_path / "out")
    first = _paths(tmp_path, ["a", "c", "d", "e"])
    table = _Table(dict(a=1.0, b=2.0, c=3.0, d=4.0, e=5.0))
    for shard in (0, 1):
        run(make_cfg(first, out, on_extraction="save_h5", shard=shard, num_shards=2), table)
    grown = _paths(tmp_path, ["a", "b", "c", "d", "e"])
    for shard in (0, 1):
        run(make_cfg(grown, out, on_extraction="save_h5", shard=shard, num_shards=2), table)
    assert sorted(table.calls) == ["a.mp4", "b.mp4", "c.mp4", "d.mp4", "e.mp4"]
    root = os.path.join(out, "s3d")
    names = [sorted(h5_videos(os.path.join(root, f"s3d-{k}-of-2.h5"))) for k in (0, 1)]
    assert sorted(names[0] + names[1]) == ["a", "b", "c", "d", "e"]


def test_a_killed_runs_journal_is_folded_by_a_run_with_another_num_shards(tmp_path):
    """A num_shards=1 run killed with a video journaled: a num_shards=2 run folds that journal
    into its file first (no run with another num_shards is alive: the lock), so the video is
    not extracted again nor stored twice."""
    out = str(tmp_path / "out")
    root = os.path.join(out, "s3d")
    paths = _paths(tmp_path, ["a", "b"])
    killed = h5_store.H5Store(root, "s3d", 0, 1, ("s3d", "timestamps_ms", "fps"),
                              (("s3d", 1024),), "run-1", {"id": "run-1"})
    killed.write("a", _arrays(1.0), paths[0])
    killed._fd = None  # as if killed: the journal stays, nothing is folded
    table = _Table({"a": 1.0, "b": 2.0})
    for shard in (0, 1):
        run(make_cfg(paths, out, on_extraction="save_h5", shard=shard, num_shards=2), table)
    assert table.calls == ["b.mp4"]
    assert sorted(h5_videos(os.path.join(root, H5))) == ["a"]
    assert not os.path.exists(h5_journal.journal_path(os.path.join(root, H5)))


def test_a_checkpoint_that_fails_mid_run_costs_nothing(tmp_path, monkeypatch):
    """Disk full while a mid-run checkpoint copies the file: logged, the journal kept and
    appended to; every video is done and in the file at the end."""
    monkeypatch.setattr(h5_store, "MIN_CHECKPOINT_BYTES", 0)  # a checkpoint after each video
    real_copy = h5_store.shutil.copyfile
    calls = {"n": 0}

    def copy_once_full(src, dst, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device", dst)
        return real_copy(src, dst, **kw)

    monkeypatch.setattr(h5_store.shutil, "copyfile", copy_once_full)
    paths = _paths(tmp_path, ["a", "b", "c", "d"])
    out = str(tmp_path / "out")
    report = run(make_cfg(paths, out, on_extraction="save_h5"),
                 _Table(dict(a=1.0, b=2.0, c=3.0, d=4.0)))
    assert report.done == 4 and report.num_failed == 0 and calls["n"] >= 3
    assert_equal_sets(h5_videos(os.path.join(out, "s3d", H5)),
                      {n: _arrays(v) for n, v in dict(a=1.0, b=2.0, c=3.0, d=4.0).items()})


def test_the_loader_gives_back_a_path_that_is_not_utf8(tmp_path):
    from utils.outputs.features import load
    folder = tmp_path / os.fsdecode(b"d\xe9j\xe0")
    folder.mkdir()
    path = str(folder / "in.mp4")
    open(path, "wb").close()
    out = str(tmp_path / "out")
    run(make_cfg([path], out, on_extraction="save_h5"), _Table({"in": 2.0}))
    with load(os.path.join(out, "s3d")) as features:
        assert features.video_path("in") == path
