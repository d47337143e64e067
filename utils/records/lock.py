"""One run per (output folder, shard) at a time, and one way of sharding a folder at a time:
advisory locks the kernel releases when the process dies (``kill -9`` included), so a stale
lock never blocks a rerun.

Three kinds of ``flock`` lock files live in ``<root>/runs/``:

- ``.lock-<k>-of-<K>``: shard k of K, held exclusively by the run doing it (its content: the
  holder's PID and host, for the message of the run refused);
- ``.lock-of-<K>``: held shared by every run with ``num_shards=K``. Runs with another K
  split the videos another way (their shards overlap: each could redo, or take for
  leftovers the in-flight temporaries of, the other's videos), so a run is admitted only
  while no ``.lock-of-<J>`` with J != K is held by anyone;
- ``.lock``: admission, held exclusively for the few system calls that take (or probe) the
  other two, so that two runs starting together never both pass, or both fail, the check.

``flock`` (not POSIX ``fcntl``/``lockf`` byte ranges) because its locks belong to the open
file: two runs in one process (threads, or a launcher running jobs in turn) exclude each
other too, and closing one of them leaves the other's locks held.  A lock file another user
made is locked through a read-only descriptor (its holder's PID is then not written); a file
system without ``flock`` (Lustre without ``-o flock``) is an ``InputError`` naming the file.
"""
import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import socket
import stat
import time
from typing import Iterator, List, Optional, Tuple

from utils.errors import InputError
from utils.files import loads_json
from utils.inputs.paths import parse_shard_name, shard_suffix
from utils.records.schema import RUNS_FOLDER  # the locks live beside the run records

log = logging.getLogger(__name__)

WAIT_STEP_S = 1.0  # with lock_wait_s, how often the lock is tried again
ADMISSION_WAIT_S = 30.0  # admission is held for microseconds; only a stopped process holds it longer
_GROUP = re.compile(r"^\.lock-of-([1-9][0-9]*)$")


def lock_path(root: str, shard: int, num_shards: int) -> str:
    return os.path.join(root, RUNS_FOLDER, ".lock" + shard_suffix(shard, num_shards))


def group_lock_path(root: str, num_shards: int) -> str:
    return os.path.join(root, RUNS_FOLDER, f".lock-of-{num_shards}")


def admission_lock_path(root: str) -> str:
    return os.path.join(root, RUNS_FOLDER, ".lock")


def _open(path: str) -> int:
    """The lock file, opened for writing (created if need be); read-only when it exists but
    this user may not write it (made by another user sharing the folder: 0644 under the usual
    umask).  ``flock`` works on a read-only file; only the holder's PID is not written.  A
    lock that is not a regular file (a FIFO, a device planted there) is an ``InputError``."""
    fd = _open_any(path)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InputError(f"output_path: the lock {path} is not a regular file (a FIFO or a "
                         "device); remove it")
    return fd


def _open_any(path: str) -> int:
    flags = os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return os.open(path, os.O_RDWR | flags, 0o666)
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM):
            try:
                return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError:
                pass  # not there (a folder this user cannot write), or unreadable too
        raise InputError(f"output_path: cannot create the lock {path} ({e.strerror or e})") from None


def _writable(fd: int) -> bool:
    return fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE != os.O_RDONLY


# flock itself unavailable: Lustre mounted without -o flock (ENOSYS), some FUSE and network
# file systems (EOPNOTSUPP/ENOTSUP), an NFS server without a lock manager (ENOLCK)
_NO_LOCKS = {errno.ENOSYS, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP),
             errno.ENOLCK}


def _try(fd: int, how: int, path: str) -> bool:
    """Take the ``flock`` ``how`` on ``fd`` (the lock file ``path``) if nobody's lock is in
    the way; a file system without locks is an ``InputError`` naming ``path``."""
    try:
        fcntl.flock(fd, how | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as e:  # EWOULDBLOCK is EAGAIN on Linux; other systems may say EACCES
        if e.errno in (errno.EAGAIN, errno.EACCES):
            return False
        if e.errno in _NO_LOCKS:
            raise InputError(
                f"output_path: file locks are not supported on the file system of {path} "
                f"({e.strerror or e}; Lustre: mount with -o flock); two runs on one folder "
                "could not be kept apart: use an output_path on a file system with locks") from None
        if e.errno == errno.EBADF and not _writable(fd):  # NFS: flock as fcntl write locks
            raise InputError(
                f"output_path: cannot lock {path}: it belongs to another user and this file "
                "system locks only files open for writing; make the lock files writable "
                f"for both (chmod g+w {os.path.dirname(path)}/.lock*, umask 002)") from None
        raise


@contextlib.contextmanager
def _admission(root: str) -> Iterator[None]:
    path = admission_lock_path(root)
    fd = _open(path)
    try:
        deadline = time.monotonic() + ADMISSION_WAIT_S
        while not _try(fd, fcntl.LOCK_EX, path):
            if time.monotonic() > deadline:
                raise InputError(f"output_path: the lock {path} has been held for over "
                                 f"{ADMISSION_WAIT_S:g} s by a run starting on {root} (a stopped "
                                 "process?); stop it, or retry")
            time.sleep(0.01)
        yield
    finally:
        os.close(fd)


class LockBusy(InputError):
    """Another live run holds the lock (the message names it)."""


@contextlib.contextmanager
def shard_lock(root: str, shard: int, num_shards: int, wait_s: float = 0.0) -> Iterator[None]:
    """Hold the locks of shard ``shard`` of ``num_shards`` on ``root`` for the block; a live
    run of the same shard, or of any shard with another ``num_shards``, is a ``LockBusy``
    (an ``InputError``: exit 2) naming its PID, host, shard and num_shards, once ``wait_s``
    seconds have passed without it ending (a requeued cluster job whose old self is still
    dying)."""
    deadline = time.monotonic() + wait_s
    waiting = False
    while True:
        try:
            held = _take(root, shard, num_shards)
            break
        except LockBusy as e:
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            if not waiting:
                log.warning("%s; waiting up to %g s for it (lock_wait_s)", e, wait_s)
                waiting = True
            time.sleep(min(WAIT_STEP_S, left))
    try:
        yield
    finally:
        for fd in held:
            os.close(fd)  # releases its lock


def _take(root: str, shard: int, num_shards: int) -> List[int]:
    """The open, locked files of the shard (``LockBusy`` when a live run is in the way)."""
    folder = os.path.join(root, RUNS_FOLDER)
    if os.path.islink(folder):  # the locks and run records would land where it leads
        raise InputError(f"output_path: {folder} is a link (to {os.path.realpath(folder)}); "
                         "nothing is written through it: remove it")
    held: List[int] = []
    taken = False
    try:
        with _admission(root):
            path = lock_path(root, shard, num_shards)
            fd = _open(path)
            held.append(fd)
            if not _try(fd, fcntl.LOCK_EX, path):
                raise LockBusy(f"output_path: {root} is in use by another run ({_holder(fd)}) "
                                 f"for shard {shard} of {num_shards}; wait for it to end or "
                                 "stop it")
            group_path = group_lock_path(root, num_shards)
            group = _open(group_path)
            held.append(group)
            other = _other_sharding(root, num_shards)
            if other is not None or not _try(group, fcntl.LOCK_SH, group_path):
                who, k, j = other or ("pid unknown", "?", "?")
                raise LockBusy(
                    f"output_path: {root} is in use by another run ({who}) for shard {k} of {j}, "
                    f"which splits the videos another way than num_shards={num_shards} (shard "
                    f"{shard}); wait for it to end or stop it, or use num_shards={j}")
            if _writable(fd):  # else another user's file: it still names a former holder
                os.ftruncate(fd, 0)
                os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
        taken = True
        return held
    finally:
        if not taken:
            for fd in held:
                os.close(fd)


def _other_sharding(root: str, num_shards: int) -> Optional[Tuple[str, object, object]]:
    """A live run of ``root`` with another num_shards: ``(holder, its shard, its num_shards)``,
    or None.  Called under admission, so no run takes or leaves a lock meanwhile, and the
    probes (a lock taken and dropped at once) never make another run's attempt fail."""
    folder = os.path.join(root, RUNS_FOLDER)
    names = sorted(os.listdir(folder))
    for name in names:
        m = _GROUP.match(name)
        if not m or int(m[1]) == num_shards or not _held(os.path.join(folder, name), fcntl.LOCK_EX):
            continue
        other = int(m[1])
        for shard_name in names:
            s = parse_shard_name(shard_name, ".lock", "")
            if s and s[1] == other:
                who = _held(os.path.join(folder, shard_name), fcntl.LOCK_SH)
                if who:
                    return who, s[0], other
        return "pid unknown", "?", other
    return None


def _held(path: str, how: int) -> str:
    """'' when the lock ``how`` on ``path`` can be taken now (it is dropped at once), else who
    holds it (as written in the file)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return ""  # gone, or not a file a run would lock
    try:
        return "" if _try(fd, how, path) else _holder(fd)
    finally:
        os.close(fd)


def _holder(fd: int) -> str:
    """Who holds the lock, as written in its file; "pid unknown" when not written, or when
    the PID written is of this host and no longer runs (a holder that could not write the
    file, another user's: the PID is a former holder's)."""
    try:
        holder = loads_json(os.pread(fd, 4096, 0) or b"{}")
        pid, host = holder.get("pid", "?"), holder.get("host", "?")
    except (OSError, ValueError, AttributeError):
        return "pid unknown"
    if isinstance(pid, int) and pid > 0 and host == socket.gethostname():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return "pid unknown"
        except OSError:
            pass  # alive (another user's)
    return f"pid {pid} on {host}"
