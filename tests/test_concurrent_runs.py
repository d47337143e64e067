"""Issue 14, points 3 and 4, through the real command line: one run per (output folder,
shard) at a time, and never two ways of sharding one folder at once; nothing read or written
through links or special files in the output folder."""
import errno
import fcntl
import json
import os
import re
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from batch_helpers import KEYS, REPO, cli_args, read_jsonl, run_cli, wait_for_state
from utils.records import lock
from utils.errors import InputError
from utils.records.lock import shard_lock
from videos import synth


# A process that holds the locks of a run (shard argv[2] of argv[3] on argv[1]) until killed.
_HOLD = ("import sys, time\n"
         "from utils.records.lock import shard_lock\n"
         "with shard_lock(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])):\n"
         "    print('held', flush=True)\n"
         "    time.sleep(600)\n")


def test_runs_that_would_share_videos_are_refused_until_the_holder_dies(random_checkpoint,
                                                                       tmp_path):
    """Shard 0 of 2 is held: shard 0 of 3 (whose videos overlap it) exits 2 naming the
    holder; shard 1 of 2 runs beside it; once the holder is killed with SIGKILL (the kernel
    releases its locks, none is left stale) shard 0 of 3 runs."""
    videos = [synth(str(tmp_path / f"v{i}.mp4"), seconds=0.6, size="64x48") for i in range(2)]
    out = tmp_path / "out"
    args = cli_args(random_checkpoint, str(out), video_paths=videos)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(out / "s3d"), "0", "2"],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        refused = run_cli(args + ["shard=0", "num_shards=3"], cwd=str(tmp_path))
        assert refused.returncode == 2, refused.stderr
        [line] = [ln for ln in refused.stderr.splitlines() if ln.startswith("error:")]
        assert line == (f"error: output_path: {out / 's3d'} is in use by another run (pid "
                        f"{holder.pid} on {socket.gethostname()}) for shard 0 of 2, which splits "
                        "the videos another way than num_shards=3 (shard 0); wait for it to end "
                        "or stop it, or use num_shards=2")
        assert not (out / "s3d" / "manifest-0-of-3.jsonl").exists()
        beside = run_cli(args + ["shard=1", "num_shards=2"], cwd=str(tmp_path))
        assert beside.returncode == 0, beside.stderr
    finally:
        holder.kill()
        holder.wait(timeout=60)
    again = run_cli(args + ["shard=0", "num_shards=3"], cwd=str(tmp_path))
    assert again.returncode == 0, again.stderr
    assert [r["status"] for r in read_jsonl(out / "s3d" / "manifest-0-of-3.jsonl")] == ["done"]


def test_which_runs_exclude_each_other(tmp_path, monkeypatch):
    """In one process too (``flock`` locks belong to the open file, not to the process):
    the same shard, or any shard of another num_shards, is refused while shard 0 of 2 is
    held; shard 1 of 2 is not; a refused attempt leaves the holder's locks held; leaving the
    block releases them.  A ``runs`` folder that is a link is refused.  A run stopped inside the admission lock makes others give up."""
    root = str(tmp_path / "s3d")
    me = f"in use by another run (pid {os.getpid()} on {socket.gethostname()}) for shard 0 of 2"
    with shard_lock(root, 0, 2):
        with shard_lock(root, 1, 2):
            pass
        for shard, num_shards in ((0, 2), (0, 3), (0, 1), (2, 3), (0, 3)):
            with pytest.raises(InputError) as info:
                with shard_lock(root, shard, num_shards):
                    pass
            assert me in str(info.value), (shard, num_shards, str(info.value))
    with shard_lock(root, 0, 3):
        pass
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    linked = str(tmp_path / "linked")
    os.makedirs(linked)
    os.symlink(elsewhere, os.path.join(linked, "runs"))  # locks and run records sent out
    with pytest.raises(InputError, match="runs is a link .*; nothing is written through it"):
        with shard_lock(linked, 0, 1):
            pass
    assert os.listdir(elsewhere) == []
    monkeypatch.setattr(lock, "ADMISSION_WAIT_S", 0.05)
    with open(lock.admission_lock_path(root), "rb") as stopped:
        fcntl.flock(stopped, fcntl.LOCK_EX)
        with pytest.raises(InputError, match="has been held for over 0.05 s by a run starting"):
            with shard_lock(root, 0, 1):
                pass


def test_lock_wait_s_waits_for_the_holder_to_end(tmp_path, monkeypatch, caplog):
    """With lock_wait_s a run refused by a live holder tries again until it ends (one
    warning naming it); past the wait it is refused as without it."""
    import threading
    root = str(tmp_path / "s3d")
    monkeypatch.setattr(lock, "WAIT_STEP_S", 0.01)
    held, release, got = threading.Event(), threading.Event(), []

    def holder():
        with shard_lock(root, 0, 2):
            held.set()
            release.wait(30)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(30)
    with pytest.raises(lock.LockBusy, match="in use by another run"):
        with shard_lock(root, 0, 3, wait_s=0.05):
            pass

    def waiter():
        with shard_lock(root, 0, 3, wait_s=60):
            got.append(True)

    second = threading.Thread(target=waiter)
    second.start()
    assert wait_for_state(lambda: "waiting up to 60 s for it (lock_wait_s)" in caplog.text)
    assert got == []  # still waiting while the holder runs
    release.set()
    thread.join(30)
    second.join(30)
    assert got == [True]


@pytest.mark.parametrize("code", [errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK])
def test_file_system_without_locks_is_one_input_error(tmp_path, monkeypatch, code):
    """Lustre without -o flock (ENOSYS), and the like: one InputError naming the lock file
    and the cause, not an OSError traceback (and not a LockBusy waited on)."""
    root = str(tmp_path / "s3d")

    def flock(fd, how):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(lock.fcntl, "flock", flock)
    with pytest.raises(InputError) as info:
        with shard_lock(root, 0, 1, wait_s=60):
            pass
    assert not isinstance(info.value, lock.LockBusy)
    text = str(info.value)
    assert text.startswith(f"output_path: file locks are not supported on the file system of "
                           f"{lock.admission_lock_path(root)} ({os.strerror(code)}; Lustre: "
                           "mount with -o flock)"), text


def test_lock_files_of_another_user_are_opened_read_only(tmp_path, monkeypatch):
    """Lock files made by another user sharing the folder (0644) cannot be opened for
    writing: they are locked read-only (flock needs no write access), and still exclude
    other takers; the holder's PID is not written (the file's former holder, gone, is not
    named)."""
    root = str(tmp_path / "s3d")
    with shard_lock(root, 0, 2):  # the other user's run made the files
        pass
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    shard_file = lock.lock_path(root, 0, 2)
    with open(shard_file, "w") as f:
        json.dump({"pid": int(gone.stdout), "host": socket.gethostname()}, f)
    real_open, refused = os.open, []

    def as_another_user(path, flags, *args, **kwargs):
        if str(path).startswith(root) and flags & os.O_ACCMODE == os.O_RDWR \
                and os.path.exists(path):
            refused.append(path)
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(lock.os, "open", as_another_user)
    with shard_lock(root, 0, 2):
        assert shard_file in refused
        for shard, num_shards in ((0, 2), (0, 3)):
            with pytest.raises(lock.LockBusy, match="in use by another run \\(pid unknown\\)"):
                with shard_lock(root, shard, num_shards):
                    pass
        with shard_lock(root, 1, 2):  # a new lock file: created writable
            pass
    with open(shard_file) as f:
        assert json.load(f)["pid"] == int(gone.stdout)  # not written through a read-only fd
    with shard_lock(root, 0, 3):  # released
        pass

    def nfs_flock(fd, how):  # NFS: an exclusive flock needs a file open for writing
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY and how & fcntl.LOCK_EX:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        return real_flock(fd, how)

    real_flock = fcntl.flock
    monkeypatch.setattr(lock.fcntl, "flock", nfs_flock)
    with pytest.raises(InputError, match=f"cannot lock {re.escape(lock.admission_lock_path(root))}"
                       ": it belongs to another user .*\\(chmod g\\+w"):
        with shard_lock(root, 0, 2):
            pass
    monkeypatch.setattr(lock.fcntl, "flock", real_flock)
    fresh = str(tmp_path / "unwritable")
    os.makedirs(os.path.join(fresh, "runs"))
    monkeypatch.setattr(lock.os, "open", lambda path, flags, *a, **k: (_ for _ in ()).throw(
        PermissionError(errno.EACCES, "Permission denied", path)) if flags & os.O_ACCMODE
        == os.O_RDWR else real_open(path, flags, *a, **k))
    with pytest.raises(InputError, match="cannot create the lock .*\\.lock \\(Permission denied\\)"):
        with shard_lock(fresh, 0, 1):
            pass


def test_links_and_special_files_in_the_output_folder_are_never_followed(random_checkpoint,
                                                                         tmp_path):
    clips = tmp_path / "clips"
    (clips / "sub").mkdir(parents=True)
    a = synth(str(clips / "a.mp4"), seconds=0.8, size="64x48")
    b = shutil.copy(a, clips / "sub" / "b.mp4")
    out = tmp_path / "out"
    root = out / "s3d"
    root.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = elsewhere / "precious.txt"
    victim.write_text("keep me\n")
    listed = elsewhere / "listed.jsonl"  # a manifest line that, read, would skip video a
    listed.write_text(json.dumps({"path": a, "status": "done"}) + "\n")
    os.symlink(listed, root / "manifest-0-of-1.jsonl")  # would be read and overwritten
    os.mkfifo(root / "manifest-0-of-2.jsonl")           # reading it would hang the run
    os.symlink(elsewhere / "gone", root / "manifest-1-of-2.jsonl")  # crashed the run
    os.symlink(victim, root / "failed.jsonl")           # would be truncated and overwritten
    (root / "runs").mkdir()
    os.mkfifo(root / "runs" / "fifo.json")              # reading run records would hang
    os.mkfifo(root / "a_s3d.npy")                       # would hang the completeness check
    np.save(root / "a_timestamps_ms.npy", np.zeros((1, 2)))  # (the rest of the set is there)
    np.save(root / "a_fps.npy", np.float64(25))
    os.symlink(elsewhere, root / "sub")                 # mirror layout: outputs sent outside
    proc = run_cli(cli_args(random_checkpoint, str(out), video_paths=[a, str(b)],
                            output_layout="mirror", input_root=str(clips)),
                   cwd=str(tmp_path), timeout=180)
    assert proc.returncode == 1, proc.stderr
    assert victim.read_text() == "keep me\n"
    assert listed.read_text() == json.dumps({"path": a, "status": "done"}) + "\n"
    assert sorted(os.listdir(elsewhere)) == ["listed.jsonl", "precious.txt"]
    assert f"{root / 'manifest-0-of-1.jsonl'}: not read (Too many levels of symbolic links)" \
        in proc.stderr
    [failed] = [ln for ln in proc.stderr.splitlines() if ln.startswith("FAILED ")]
    assert failed.startswith(f"FAILED {b}: write: {root / 'sub'} leads out of output_path")
    for name in ("manifest-0-of-1.jsonl", "failed.jsonl", *(f"a_{k}.npy" for k in KEYS)):
        assert os.path.isfile(root / name) and not os.path.islink(root / name), name
    statuses = {r["path"]: r["status"] for r in read_jsonl(root / "manifest-0-of-1.jsonl")}
    assert statuses == {a: "done", str(b): "failed"}
