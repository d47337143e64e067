"""The one way this tool writes a file: whole or not at all.

Every file (features, the downloaded weights, a kept resampled video, manifests) is written
under a temporary name in its target folder (``.<name>.<random>.tmp``), flushed, fsynced and
renamed over the final name, so a reader (or a rerun after ``kill -9``) sees the old file, no
file, or the whole new one.  ``find_temporaries`` finds what killed runs left behind.

A file name has at most ``NAME_MAX`` (255) bytes.  ``fit_name`` shortens a longer name to a
prefix and a hash of the whole name; temporaries of final names too long to carry whole use
that form (``temporary_key``), so any legal final name can be written, and its leftovers
still found.
"""
import contextlib
import errno
import hashlib
import json
import logging
import os
import secrets
import stat
from typing import Any, Dict, Iterator, List, Sequence, Union

log = logging.getLogger(__name__)

TMP_SUFFIX = ".tmp"
NAME_MAX = 255  # bytes in one file name (Linux, macOS, Windows filesystems)
_TOKEN_HEX = 8
_TMP_EXTRA = len(".") + len(".") + _TOKEN_HEX + len(TMP_SUFFIX)  # .<name>.<token>.tmp
_HASH_HEX = 8


def fit_name(name: str, limit: int = NAME_MAX) -> str:
    """``name`` if it has at most ``limit`` bytes; otherwise its longest prefix (whole
    characters) that leaves room for ``~`` and 8 hex digits of the whole name's SHA-256."""
    raw = os.fsencode(name)
    if len(raw) <= limit:
        return name
    cut = max(0, limit - 1 - _HASH_HEX)
    while 0 < cut < len(raw) and raw[cut] & 0xC0 == 0x80:  # not inside a UTF-8 character
        cut -= 1
    return os.fsdecode(raw[:cut]) + "~" + hashlib.sha256(raw).hexdigest()[:_HASH_HEX]


def is_utf8(name: str) -> bool:
    """Can ``name`` be written as UTF-8 text (an HDF5 name or attribute, a JSON line)?  Not
    when it holds an undecodable byte of a file name (``os.fsdecode`` makes it a lone
    surrogate)."""
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def temporary_key(path: str) -> str:
    """What ``target_of`` gives for the temporaries of ``path``: ``path`` itself, or, for a
    name too long to fit in a temporary's name, ``path`` with its name ``fit_name``-shortened."""
    folder, name = os.path.split(path)
    return os.path.join(folder, fit_name(name, NAME_MAX - _TMP_EXTRA))


def temporary_name(path: str) -> str:
    """A fresh temporary name beside ``path``: ``.<name>.<8 hex digits>.tmp`` (at most
    ``NAME_MAX`` bytes for any legal name: a long name is shortened, see ``temporary_key``)."""
    folder, name = os.path.split(temporary_key(path))
    return os.path.join(folder, f".{name}.{secrets.token_hex(_TOKEN_HEX // 2)}{TMP_SUFFIX}")


def target_of(temporary: str) -> str:
    """The final path a temporary made by ``temporary_name`` stands for ('' if it is none);
    for a long final name, its ``temporary_key``."""
    folder, name = os.path.split(temporary)
    if not (name.startswith(".") and name.endswith(TMP_SUFFIX)):
        return ""
    target, dot, token = name[1:-len(TMP_SUFFIX)].rpartition(".")
    if not (dot and target and token):
        return ""
    return os.path.join(folder, target)


class AtomicFile:
    """A file being written under a temporary name beside ``path``.

    ``file`` is open for binary writing (created with mode 0666 less the umask, as ``open()``
    would); ``commit()`` flushes, fsyncs and renames it to ``path``; ``discard()`` removes it.
    """

    def __init__(self, path: str):
        self.path = path
        folder = os.path.dirname(path) or "."
        os.makedirs(folder, exist_ok=True)
        while True:
            self.tmp = temporary_name(path)
            try:
                fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
                break
            except FileExistsError:
                continue
        self.file = os.fdopen(fd, "wb")

    def finish(self) -> None:
        """Flush, fsync and close the temporary (still under its temporary name)."""
        if not self.file.closed:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()

    def commit(self) -> None:
        self.finish()
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        """Remove the temporary (a no-op once committed).  Never raises for the data thrown
        away: closing flushes it, which fails on a full disk."""
        if not self.file.closed:
            try:
                self.file.close()
            except OSError:
                log.debug("closing the abandoned %s failed", self.tmp, exc_info=True)
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.tmp)


@contextlib.contextmanager
def atomic_write(path: str) -> Iterator[AtomicFile]:
    """``with atomic_write(p) as out: out.file.write(...)``: ``p`` appears whole when the block
    ends normally; on an exception (raise one to abandon the file) nothing is written."""
    out = AtomicFile(path)
    try:
        yield out
        out.commit()
    finally:
        out.discard()


@contextlib.contextmanager
def atomic_write_all(paths: Sequence[str]) -> Iterator[Dict[str, AtomicFile]]:
    """Several files that appear together: ``{path: AtomicFile}`` for the block to fill.

    When the block ends normally, every temporary is fsynced, the old files of the set are
    removed, then all are renamed into place; so a process killed at any moment leaves under
    the final names the whole old set, an incomplete set, or the whole new set, never a
    complete-looking mix of two.
    """
    files: Dict[str, AtomicFile] = {}
    try:
        for path in paths:
            files[path] = AtomicFile(path)
        yield files
        for out in files.values():
            out.finish()
        for path in files:
            if os.path.lexists(path):
                os.remove(path)
        for out in files.values():
            out.commit()
    finally:
        for out in files.values():
            out.discard()


def open_regular(path: str, flags: int = os.O_RDONLY) -> int:
    """A file descriptor of ``path`` (``os.open`` flags), opened without following a link
    (``OSError`` ELOOP) and only if it is a regular file: a FIFO or a device would hang or
    never end (``OSError`` "not a regular file")."""
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK, 0o666)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", path)
    os.set_blocking(fd, True)
    return fd


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """For a library that opens the file itself (h5py): ``with atomic_path(p) as tmp:``
    write the file at ``tmp`` (a fresh temporary name beside ``p``); when the block ends
    normally it is fsynced and renamed over ``p``; on an exception it is removed."""
    tmp = temporary_name(path)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def check_free_space(folder: str, need: int, what: str) -> None:
    """``OSError`` (ENOSPC) naming ``what`` when the file system of ``folder`` has fewer than
    ``need`` bytes free for this process: checked before a large write that a library makes
    itself (h5py), whose failure path on a full disk is not safe."""
    st = os.statvfs(folder)
    if st.f_blocks == 0:  # a file system that reports no sizes (ramfs, some FUSE): unknown
        return
    free = st.f_bavail * st.f_frsize
    if free < need:
        raise OSError(errno.ENOSPC, f"{what} needs {need} bytes and {folder} has {free} free")


def reserve_space(path: str, extra: int) -> None:
    """Allocate ``extra`` bytes at the end of the file at ``path`` (``OSError`` ENOSPC when
    the disk cannot hold them), so that a library that later writes there (h5py, which
    truncates the file to its own end when it closes it) never meets a full disk."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, os.fstat(fd).st_size, max(1, extra))
    except OSError as e:
        if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise  # a file system that cannot reserve: the free-space check stands alone
    finally:
        os.close(fd)


def loads_json(data: Union[str, bytes]) -> Any:
    """``json.loads`` of data read back from a file anyone may have written: ``ValueError``
    for anything that is not JSON text, nesting too deep for the parser included (a
    ``RecursionError`` otherwise: ``'[' * 10**5``)."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply to be read") from None


def write_bytes(path: str, data: bytes) -> None:
    """``path`` now holds ``data``, written atomically."""
    with atomic_write(path) as out:
        out.file.write(data)


def find_temporaries(root: str) -> Dict[str, List[str]]:
    """Temporaries left under ``root`` by killed runs, by the final path they were for
    (its ``temporary_key``).

    Scans the tree once (cheap even for 10^5 outputs); ``remove_temporaries`` then deletes
    those of the outputs this process owns, never another shard's files in flight.
    """
    found: Dict[str, List[str]] = {}
    if not os.path.isdir(root):
        return found
    for folder, _, names in os.walk(root):
        for name in names:
            tmp = os.path.join(folder, name)
            final = target_of(tmp)
            if final:
                found.setdefault(final, []).append(tmp)
    return found


def remove_temporaries(finals: Sequence[str], temporaries: Dict[str, List[str]]) -> None:
    """Delete the leftover temporaries of these final paths (see ``find_temporaries``)."""
    for path in finals:
        for tmp in temporaries.pop(temporary_key(path), ()):
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
