"""The journal beside a shard's ``.h5`` (``.<name>.h5.journal``): the videos a run finished
since the file's last checkpoint, one record each, appended and fsynced
(``utils.outputs.h5_store`` writes and folds it; ``utils.outputs.features`` counts it).

A record is a frame (magic, payload length), the payload (a JSON header's length, the
header, the arrays' raw bytes) and the payload's SHA-256.  The first record is the journal's
header (the file generation it extends, the run and its record); a record cut short by a
kill, or one whose length goes past the end of the file, ends the journal.  So does a record
whose checksum holds but whose content is not what this tool writes (the checksum proves no
more than that the bytes are those written, by anyone; the output folder is untrusted):
``decode`` checks the header and the arrays' dtypes, shapes and bytes, ``check_head`` and
``check_video`` each kind's fields.
"""
import hashlib
import json
import logging
import os
import struct
from typing import Any, Callable, Dict, Iterator, List, Sequence, Tuple

import numpy as np

from utils.files import loads_json, open_regular
from utils.outputs.h5_format import name_error

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


# the dtypes a record's arrays may have: plain numbers, either byte order (never objects,
# strings or structures: ``np.dtype`` is never given a string from the file otherwise)
_DTYPES = frozenset(np.dtype(t).newbyteorder(order).str for order in "<>"
                    for t in ("f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8",
                              "b1"))
_MAX_DIMS = 32
_INT64 = 2**63 - 1


def _shown(value: Any) -> str:
    """A value as an error names it: a number or a short string as itself, else by its type
    (never ``repr`` of a container: it may be nested as deep as JSON allows)."""
    if isinstance(value, (int, float, str, type(None))):
        text = repr(value)
        if len(text) <= 40:
            return text
    return type(value).__name__


def _check(header: Dict[str, Any], fields: Dict[str, Tuple[Callable[[Any], bool], str]],
           kind: str) -> None:
    for name, (test, expected) in fields.items():
        if name not in header:
            raise ValueError(f"{kind} without {name}")
        if not test(header[name]):
            raise ValueError(f"{kind} whose {name} is {_shown(header[name])}, expected {expected}")


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _INT64


def _text(value: Any) -> bool:
    return isinstance(value, str)


_HEAD = {"generation": (_count, "an integer >= 0"), "feature_type": (_text, "a string"),
         "run": (_text, "a string"), "record": (lambda v: isinstance(v, dict), "an object")}
_VIDEO = {"name": (lambda v: not name_error(v), "a relative path of non-empty parts, none "
                                                 "'.' or '..'"),
          "video_path": (_text, "a string"),
          "run": (lambda v: v is None or isinstance(v, str), "a string or null")}


def check_head(header: Dict[str, Any]) -> None:
    """``ValueError`` unless ``header`` (decoded) is a journal's first record: the file
    generation it extends, the feature type, the run and its record."""
    _check(header, _HEAD, "a journal header")


def check_video(header: Dict[str, Any]) -> None:
    """``ValueError`` unless ``header`` (decoded) is a video's record: its output name, its
    input and the run that made it (null: unknown)."""
    _check(header, _VIDEO, "a video record")


def _array_specs(specs: Any, size: int) -> List[Tuple[str, np.dtype, Tuple[int, ...]]]:
    """The ``arrays`` of a record's header, checked: ``[key, dtype, shape]`` each, whose bytes
    fill the ``size`` bytes after the header exactly."""
    if not isinstance(specs, list):
        raise ValueError(f"arrays is {_shown(specs)}, expected a list")
    checked, total, keys = [], 0, set()
    for spec in specs:
        if not (isinstance(spec, list) and len(spec) == 3):
            raise ValueError(f"an array is {_shown(spec)}, expected [key, dtype, shape]")
        key, dtype, shape = spec
        if name_error(key, key=True) or key in keys:
            raise ValueError(f"an array's key is {_shown(key)}, expected a new name without '/'")
        if not (isinstance(dtype, str) and dtype in _DTYPES):
            raise ValueError(f"array {key!r} has dtype {_shown(dtype)}, expected a plain "
                             "numeric one")
        if not (isinstance(shape, list) and len(shape) <= _MAX_DIMS
                and all(_count(n) for n in shape)):
            raise ValueError(f"array {key!r} has shape {_shown(shape)}, expected a list of "
                             f"at most {_MAX_DIMS} integers >= 0")
        dtype = np.dtype(dtype)
        count = 1
        for n in shape:
            count *= n
        total += count * dtype.itemsize  # Python integers: never overflows
        if total > size:
            break
        keys.add(key)
        checked.append((key, dtype, tuple(shape)))
    if total != size:
        raise ValueError(f"its arrays take {total} bytes, and {size} follow its header")
    return checked


def decode(payload: bytes) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
    """A record's header (a JSON object, without its ``arrays``) and arrays.  ``ValueError``
    for a payload that is not one (a checksum proves no more than that the bytes are those
    written, by anyone): the kind's fields are checked by ``check_head`` and ``check_video``."""
    if len(payload) < _HEADER.size:
        raise ValueError(f"{len(payload)} bytes, shorter than a record's header")
    (size,) = _HEADER.unpack_from(payload)
    at = _HEADER.size + size
    if at > len(payload):
        raise ValueError(f"its header claims {size} bytes, more than the record holds")
    try:
        header = loads_json(payload[_HEADER.size:at].decode("utf-8"))
    except ValueError as e:  # not UTF-8, not JSON, nested too deep
        raise ValueError(f"its header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise ValueError(f"its header is {_shown(header)}, expected a JSON object")
    if "arrays" not in header:
        raise ValueError("its header has no arrays")
    arrays = {}
    for key, dtype, shape in _array_specs(header.pop("arrays"), len(payload) - at):
        count = int(np.prod(shape, dtype=np.int64))
        arrays[key] = np.frombuffer(payload, dtype, count, at).reshape(shape).copy()
        at += count * dtype.itemsize
    return header, arrays


def read_journal(path: str) -> Iterator[Tuple[Dict[str, Any], Dict[str, np.ndarray]]]:
    """The journal's records in order, up to the first incomplete or damaged one (a write cut
    short by a kill, or a record ``decode``, ``check_head`` (the first) or ``check_video``
    refuse: logged and ignored, with the rest of the journal)."""
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
            try:
                header, arrays = decode(payload)
                (check_head if at == 0 else check_video)(header)
            except ValueError as e:
                log.warning("%s: the record at offset %d is not one this tool writes (%s); it "
                            "and the rest of the journal are ignored, the videos they held are "
                            "extracted again", path, at, e)
                return
            yield header, arrays


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
