"""JSON lines: how manifests and failure lists are written and read (JSON only: data never
runs code)."""
import json
import logging
import os
import stat
from typing import Dict, Iterable, Iterator

log = logging.getLogger(__name__)


def dumps(record: Dict) -> str:
    """One record as one line (no newline); file names that are not UTF-8 are \\u-escaped."""
    line = json.dumps(record, ensure_ascii=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(record)
    return line


def encode(records: Iterable[Dict]) -> bytes:
    return "".join(dumps(r) + "\n" for r in records).encode("utf-8")


def read_records(path: str, required=("path", "status")) -> Iterator[dict]:
    """The file's JSON objects that have the ``required`` keys; a damaged line (a process
    killed mid-write) is skipped with a warning.  A missing file reads as empty."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return
    except OSError as e:  # a symbolic link (ELOOP), unreadable...: never followed
        log.warning("%s: not read (%s); it is replaced by a regular file", path,
                    e.strerror or e)
        return
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO or a device would hang or flood
        os.close(fd)
        log.warning("%s: not a regular file, not read; it is replaced by a regular file", path)
        return
    with open(fd, encoding="utf-8", errors="surrogateescape") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s:%d: not a JSON line, skipped", path, number)
                continue
            if isinstance(record, dict) and all(k in record for k in required):
                yield record
            else:
                log.warning("%s:%d: not a manifest record, skipped", path, number)
