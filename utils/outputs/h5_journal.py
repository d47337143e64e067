"""The journal beside a shard's ``.h5`` (``.<name>.h5.journal``): the videos a run finished
since the file's last checkpoint, one record each, appended and fsynced
(``utils.outputs.h5_store`` writes and folds it; ``utils.outputs.features`` counts it).

A record is a frame (magic, payload length), the payload (a JSON header's length, the
header, the arrays' raw bytes) and the payload's SHA-256.  The first record is the journal's
header (the file generation it extends, the run and its record); a record cut short by a
kill, or one whose length goes past the end of the file, ends the journal.
"""
import hashlib
import json
import logging
import os
import struct
from typing import Any, Dict, Iterator, Sequence, Tuple

import numpy as np

from utils.files import open_regular

log = logging.getLogger(__name__)

_MAGIC = b"S3DJ"
_FRAME = struct.Struct("<4sQ")  # magic, payload length; then the payload, then its SHA-256
_DIGEST = 32
_JOURNAL = ".journal"  # .<file>.h5.journal
_HEADER = struct.Struct("<I")  # JSON length, then the JSON, then the arrays' bytes


def journal_path(h5_path: str) -> str:
    folder, name = os.path.split(h5_path)
    return os.path.join(folder, f".{name}{_JOURNAL}")


def journal_of(name: str) -> str:
    """The ``.h5`` file name a journal's file name is for ('' when it is not a journal's)."""
    if name.startswith(".") and name.endswith(_JOURNAL):
        return name[1:-len(_JOURNAL)]
    return ""


def encode(header: Dict[str, Any], arrays: Sequence[Tuple[str, np.ndarray]] = ()) -> bytes:
    header = dict(header, arrays=[[key, a.dtype.str, list(a.shape)] for key, a in arrays])
    text = json.dumps(header, sort_keys=True).encode("utf-8")
    payload = b"".join([_HEADER.pack(len(text)), text]
                       + [np.ascontiguousarray(a).tobytes() for _, a in arrays])
    return _FRAME.pack(_MAGIC, len(payload)) + payload + hashlib.sha256(payload).digest()


def decode(payload: bytes) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
    (size,) = _HEADER.unpack_from(payload)
    header = json.loads(payload[_HEADER.size:_HEADER.size + size])
    arrays, at = {}, _HEADER.size + size
    for key, dtype, shape in header.pop("arrays"):
        dtype = np.dtype(dtype)
        if dtype.hasobject:
            raise ValueError("object arrays are never read from a journal")
        count = int(np.prod(shape, dtype=np.int64))
        arrays[key] = np.frombuffer(payload, dtype, count, at).reshape(shape).copy()
        at += count * dtype.itemsize
    return header, arrays


def read_journal(path: str) -> Iterator[Tuple[Dict[str, Any], Dict[str, np.ndarray]]]:
    """The journal's records in order, up to the first incomplete or damaged one (a write cut
    short by a kill: logged and ignored)."""
    fd = open_regular(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as f:
        end = os.fstat(fd).st_size
        while True:
            at = f.tell()
            frame = f.read(_FRAME.size)
            if not frame:
                return
            ok = len(frame) == _FRAME.size
            if ok:
                magic, size = _FRAME.unpack(frame)
                if magic == _MAGIC and size > end - at - _FRAME.size - _DIGEST:
                    # never read: a length beyond the file is damage (or a cut write)
                    log.warning("%s: the record at offset %d claims %d bytes, more than the "
                                "file holds (%d bytes); it and the rest of the journal are "
                                "ignored, the videos they held are extracted again", path, at,
                                size, end)
                    return
                payload = f.read(size) if magic == _MAGIC else b""
                digest = f.read(_DIGEST)
                ok = (magic == _MAGIC and len(payload) == size
                      and hashlib.sha256(payload).digest() == digest)
            if not ok:
                log.warning("%s ends with an incomplete record (a write cut short); the video "
                            "it held is extracted again", path)
                return
            yield decode(payload)


def count_journal(path: str) -> int:
    """How many videos a journal holds, from its record frames alone (no payload is read or
    checked: a cheap count for a reader's warning; a damaged last record is counted)."""
    fd = open_regular(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as f:
        end = os.fstat(f.fileno()).st_size
        at = records = 0
        while at + _FRAME.size <= end:
            magic, size = _FRAME.unpack(os.pread(f.fileno(), _FRAME.size, at))
            if magic != _MAGIC:
                break
            at += _FRAME.size + size + _DIGEST
            records += 1
    return max(0, records - 1)  # the first record is the journal's header
