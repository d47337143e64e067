"""One run per (output folder, shard) at a time: an advisory lock the kernel releases when the
process dies (``kill -9`` included), so a stale lock never blocks a rerun."""
import contextlib
import fcntl
import json
import os
import socket
from typing import Iterator

from utils.errors import InputError

LOCK_FOLDER = "runs"  # beside the run records (not among the outputs)


def lock_path(root: str, shard: int, num_shards: int) -> str:
    return os.path.join(root, LOCK_FOLDER, f".lock-{shard}-of-{num_shards}")


@contextlib.contextmanager
def shard_lock(root: str, shard: int, num_shards: int) -> Iterator[None]:
    """Hold the lock of this shard of ``root`` for the block; another live holder is an
    ``InputError`` (exit 2) naming its PID and host."""
    path = lock_path(root, shard, num_shards)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o666)
    except OSError as e:
        raise InputError(f"output_path: cannot create the lock {path} ({e.strerror or e})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"output_path: {root} is in use by another run ({_holder(fd)}) for "
                             f"shard {shard} of {num_shards}; wait for it to end or stop it") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
        yield
    finally:
        os.close(fd)  # releases the lock


def _holder(fd: int) -> str:
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
    except (OSError, ValueError, AttributeError):
        return "pid unknown"
