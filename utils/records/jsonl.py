"""JSON lines: how manifests and failure lists are written and read (JSON only: data never
runs code)."""
import json
import logging
from typing import Dict, Iterable, Iterator

from utils.files import is_utf8, open_regular

log = logging.getLogger(__name__)


def dumps(record: Dict) -> str:
    """One record as one line (no newline); file names that are not UTF-8 are \\u-escaped."""
    line = json.dumps(record, ensure_ascii=False)
    return line if is_utf8(line) else json.dumps(record)


def encode(records: Iterable[Dict]) -> bytes:
    return "".join(dumps(r) + "\n" for r in records).encode("utf-8")


def read_records(path: str, required=("path", "status")) -> Iterator[dict]:
    """The file's JSON objects that have the ``required`` keys; a damaged line (a process
    killed mid-write) is skipped with a warning.  A missing file reads as empty."""
    try:
        fd = open_regular(path)
    except FileNotFoundError:
        return
    except OSError as e:  # a link (ELOOP), a FIFO or a device, unreadable...: never read
        log.warning("%s: not read (%s); it is replaced by a regular file", path,
                    e.strerror or e)
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
