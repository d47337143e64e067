"""An HDF5 shard file's disk space (issue 19, items 3 and 9): a full disk during a fold is
one warning, never a crash (the journal kept, the temporary removed, the rerun identical),
and a file folded once per video stays near the size of one fold of them all."""
import os
import shutil
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from batch_helpers import REPO, cli_args, run_cli
from videos import synth

from utils.outputs import h5_format, h5_live
from utils.outputs.h5_journal import journal_path
from utils.outputs.h5_store import H5Store

KEYS = ("s3d", "timestamps_ms", "fps")
H5 = "s3d-0-of-1.h5"


def _arrays(i, rows=3):
    r = np.random.default_rng(i)
    return {"s3d": np.maximum(r.standard_normal((rows, 1024)), 0).astype(np.float32),
            "timestamps_ms": np.arange(rows * 2, dtype=np.float64).reshape(rows, 2),
            "fps": np.float64(25)}


def _store(root, run):
    return H5Store(str(root), "s3d", 0, 1, KEYS, (("s3d", 1024),), run,
                   {"run": run, "features": {"step_size": 16}})


def _read(path):
    with h5py.File(path, "r") as f:
        return {name: {k: v[()] for k, v in h5_format.video_datasets(f[name]).items()}
                for name in h5_format.video_names(f, KEYS)}


def test_two_hundred_one_video_checkpoints_stay_near_one_fold(tmp_path):
    one, many = tmp_path / "one", tmp_path / "many"
    store = _store(one, "r0")
    for i in range(200):
        store.write(f"v{i}", _arrays(i), f"/v/v{i}.mp4")
    store.close()
    for i in range(200):  # a run per video, each folded at its end
        store = _store(many, f"r{i}")
        store.write(f"v{i}", _arrays(i), f"/v/v{i}.mp4")
        store.close()
    size_one = os.path.getsize(one / H5)
    size_many = os.path.getsize(many / H5)
    assert size_many <= 1.2 * size_one, (size_many, size_one)
    got, want = _read(many / H5), _read(one / H5)
    assert sorted(got) == sorted(want) == sorted(f"v{i}" for i in range(200))
    for name in want:
        for key in KEYS:
            np.testing.assert_array_equal(got[name][key], want[name][key])
    with h5py.File(many / H5, "r") as f:  # every run's record kept
        assert len(h5_format.runs(f)) == 200 and f.attrs["generation"] == 200


def test_a_rewrite_leaves_planted_objects_and_links_behind(tmp_path):
    store = _store(tmp_path, "r0")
    store.write("a/v0", _arrays(0), "/v/a/v0.mp4")
    store.close()
    path = str(tmp_path / H5)
    with h5py.File(path, "r+") as f:  # planted: a link, a stray dataset, no live estimate
        f["planted"] = h5py.ExternalLink("/etc/passwd", "/x")
        f["junk"] = np.zeros(1000)
        del f.attrs[h5_live.LIVE_ATTR]
    store = _store(tmp_path, "r1")
    store.write("v1", _arrays(1), "/v/v1.mp4")
    store.close()
    with h5py.File(path, "r") as f:
        assert sorted(f) == ["a", "v1"]
        assert f["a/v0"].attrs["video_path"] == "/v/a/v0.mp4"
        assert f["v1"].attrs["run"] == "r1"
        assert h5_live.live_bytes(f) is not None
        np.testing.assert_array_equal(f["a/v0/s3d"][()], _arrays(0)["s3d"])
        assert f["a/v0/s3d"].compression == "gzip"  # copied as stored


# -- a full disk ------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (skipped where this process may not mount one)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if not shutil.which("mount") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _grow(mount, size):
    subprocess.run(["mount", "-o", f"remount,size={size}", str(mount)], check=True)


_FOLD = textwrap.dedent("""
    import logging, os, sys
    import numpy as np
    sys.path[:0] = [{repo!r}, {tests!r}]
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    import utils.outputs.h5_store as h5_store
    from test_h5_space import _arrays, _store
    if {skip_check}:  # the free-space check misses it (another writer): the reservation holds
        h5_store.check_free_space = lambda *a: None
    store = _store({root!r}, "r1")
    store.write("v1", _arrays(1, rows=60), "/v/v1.mp4")
    try:
        store.close()
    except OSError as e:
        print("fold failed:", e.strerror or e)
""")


@pytest.mark.parametrize("skip_check", [False, True], ids=["checked", "reserved"])
def test_a_full_disk_during_a_fold_is_one_error_and_the_rerun_is_identical(small_disk,
                                                                          skip_check):
    root = small_disk / "out"
    store = _store(root, "r0")
    store.write("v0", _arrays(0, rows=60), "/v/v0.mp4")
    store.close()
    path, journal = str(root / H5), journal_path(str(root / H5))
    before = open(path, "rb").read()
    filler = small_disk / "filler"
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    # room for the journal and the file's copy, not for the videos added to the copy
    filler.write_bytes(b"\0" * (free - 2 * len(before) - 100_000))
    script = _FOLD.format(repo=REPO, tests=os.path.dirname(__file__), skip_check=skip_check,
                          root=str(root))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])  # 139: h5py's crash
    assert "fold failed:" in proc.stdout, proc.stdout
    assert open(path, "rb").read() == before  # the file as it was
    assert os.path.exists(journal)  # the finished video kept
    assert sorted(os.listdir(root)) == sorted([H5, os.path.basename(journal)])  # no temporary
    filler.unlink()
    _grow(small_disk, "4m")
    _store(root, "r2").close()  # the next start folds the kept journal
    got = _read(path)
    assert sorted(got) == ["v0", "v1"] and not os.path.exists(journal)
    for name, i in (("v0", 0), ("v1", 1)):
        for key, value in _arrays(i, rows=60).items():
            np.testing.assert_array_equal(got[name][key], value)


def test_a_full_disk_at_the_end_of_a_cli_run_keeps_the_video_and_prints_the_summary(
        random_checkpoint, small_disk, tmp_path):
    clip = synth(str(tmp_path / "clip.mp4"), seconds=0.6, size="32x24")
    out = str(small_disk / "out")
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (1536 * 1024))  # 0.5 MiB left: the journal fits, a fold not
    args = cli_args(random_checkpoint, out, video_paths=[clip], on_extraction="save_h5")
    first = run_cli(args, cwd=str(tmp_path), timeout=180)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "cannot bring the file up to date" in first.stderr
    assert [ln for ln in first.stderr.splitlines() if "done 1" in ln]  # the summary
    h5 = os.path.join(out, "s3d", H5)
    assert os.path.exists(journal_path(h5)) and not os.path.exists(h5)
    assert not [n for n in os.listdir(os.path.dirname(h5)) if n.endswith(".tmp")]
    filler.unlink()
    again = run_cli(args, cwd=str(tmp_path), timeout=180)
    assert again.returncode == 0, again.stderr[-2000:]
    assert [ln for ln in again.stderr.splitlines() if "done 0, skipped 1" in ln], again.stderr
    with h5py.File(h5, "r") as f:
        assert f["clip/s3d"].shape[1] == 1024 and f["clip"].attrs["video_path"] == clip


@pytest.mark.parametrize("command", ["merge", "pack"])
def test_a_full_disk_during_merge_or_pack_is_one_error_line(small_disk, tmp_path, command):
    """Inputs outside the small disk, the new file on it: one ``error:`` line, exit 2, no
    temporary, no crash (h5py on a full disk ends the process)."""
    shards = []
    for shard in range(2):
        root = tmp_path / f"shard{shard}"
        store = H5Store(str(root), "s3d", shard, 2, KEYS, (("s3d", 1024),), "r0",
                        {"run": "r0", "features": {}})
        store.write(f"v{shard}", _arrays(shard, rows=60), f"/v/v{shard}.mp4")
        store.close()
        shards.append(str(root / f"s3d-{shard}-of-2.h5"))
    folder = tmp_path / "npy" / "s3d"
    folder.mkdir(parents=True)
    for i in range(2):
        for key, value in _arrays(i, rows=60).items():
            np.save(folder / f"v{i}_{key}.npy", value)
    need = sum(os.path.getsize(p) for p in shards)
    st = os.statvfs(small_disk)
    (small_disk / "filler").write_bytes(b"\0" * (st.f_bavail * st.f_frsize - need // 4))
    out = str(small_disk / "all.h5")
    args = ["merge", out, *shards] if command == "merge" else ["pack", str(folder), out]
    proc = subprocess.run([sys.executable, "-m", "utils.outputs.features", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    [line] = proc.stderr.splitlines()
    assert line.startswith("error: ") and out in line and "free space" in line, line
    assert sorted(os.listdir(small_disk)) == ["filler"]


def test_a_repack_killed_leaves_no_temporary_after_the_next_start(tmp_path):
    """kill -9 inside the rewrite: its temporary is named for the shard file, so the next
    run's start removes it (one named for the fold's copy was never removed)."""
    root = tmp_path / "out"
    store = _store(root, "r0")
    store.write("v0", _arrays(0), "/v/v0.mp4")
    store.close()
    with h5py.File(root / H5, "r+") as f:
        del f.attrs[h5_live.LIVE_ATTR]  # a file of an earlier version: the next fold repacks
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path[:0] = [{REPO!r}, {os.path.dirname(__file__)!r}]
        from utils.outputs import h5_live
        from test_h5_space import _arrays, _store
        def killed(*a, **k):
            os.kill(os.getpid(), signal.SIGKILL)
        h5_live.copy_live = killed
        store = _store({str(root)!r}, "r1")
        store.write("v1", _arrays(1), "/v/v1.mp4")
        store.close()
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert [n for n in os.listdir(root) if n.endswith(".tmp")]  # the kill left some
    _store(root, "r2").close()  # the next start: removes them, folds the journal
    assert sorted(os.listdir(root)) == [H5]
    assert sorted(_read(str(root / H5))) == ["v0", "v1"]


def test_no_room_for_the_rewrite_keeps_the_fold(small_disk):
    """Room for the fold, not for the optional rewrite after it: the fold stands (one
    warning), the video is in the file and the journal gone (it used to refuse every run)."""
    root = small_disk / "out"
    store = _store(root, "r0")
    store.write("v0", _arrays(0, rows=60), "/v/v0.mp4")
    store.close()
    with h5py.File(root / H5, "r+") as f:
        del f.attrs[h5_live.LIVE_ATTR]  # forces the rewrite
    store = _store(root, "r1")
    store.write("v1", _arrays(1, rows=60), "/v/v1.mp4")
    store.close()
    assert sorted(_read(str(root / H5))) == ["v0", "v1"]
    assert sorted(os.listdir(root)) == [H5]


def test_a_file_system_reporting_no_sizes_is_not_taken_as_full(tmp_path):
    """ramfs (and some FUSE file systems) report 0 blocks: its free space is unknown, never
    0 (a fold there was refused on every run); the reservation alone decides."""
    from utils.files import check_free_space
    mount = tmp_path / "ram"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "ramfs", "ramfs", str(mount)], capture_output=True,
                          check=False)
    if made.returncode != 0:
        pytest.skip("cannot mount a ramfs here")
    try:
        assert os.statvfs(mount).f_blocks == 0
        check_free_space(str(mount), 10**6, "a fold")
        store = _store(mount / "out", "r0")
        store.write("v0", _arrays(0), "/v/v0.mp4")
        store.close()
        assert sorted(os.listdir(mount / "out")) == [H5]
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_videos_written_again_keep_the_live_estimate_true(tmp_path):
    """overwrite=true runs write the same videos again: the estimate counts each video once
    (the replaced one is taken off), so the dead space they leave is still rewritten away."""
    one, again = tmp_path / "one", tmp_path / "again"
    for root, rounds in ((one, 1), (again, 15)):
        for r in range(rounds):
            store = _store(root, "r0")
            for i in range(20):
                store.write(f"v{i}", _arrays(100 * r + i), f"/v/v{i}.mp4")
            store.close()
    with h5py.File(again / H5, "r") as f:
        live = h5_live.live_bytes(f)
    size_one, size_again = os.path.getsize(one / H5), os.path.getsize(again / H5)
    assert live <= 1.2 * size_one, (live, size_one)
    assert size_again <= 1.2 * size_one, (size_again, size_one)
    assert sorted(_read(str(again / H5))) == sorted(f"v{i}" for i in range(20))
