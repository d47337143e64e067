"""JSON lines: how manifests and failure lists are written and read (JSON only: data never
runs code)."""
import json
import logging
from typing import Any, Dict, Iterable, Iterator, Tuple

from utils.files import is_utf8, loads_json, open_regular
from utils.records.schema import ManifestRecord, RecordError

log = logging.getLogger(__name__)


def dumps(record: Dict) -> str:
    """One record as one line (no newline); file names that are not UTF-8 are \\u-escaped."""
    line = json.dumps(record, ensure_ascii=False)
    return line if is_utf8(line) else json.dumps(record)


def encode(records: Iterable[Dict]) -> bytes:
    return "".join(dumps(r) + "\n" for r in records).encode("utf-8")


def read_lines(path: str) -> Iterator[Tuple[str, Any]]:
    """``(where, value)`` of each JSON line of the file, ``where`` its ``file:line``; a damaged
    line (a process killed mid-write) is skipped with a warning.  A missing file reads as
    empty."""
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
                yield f"{path}:{number}", loads_json(line)
            except ValueError:  # nested too deep for the parser too
                log.warning("%s:%d: not a JSON line, skipped", path, number)


def read_records(path: str) -> Iterator[ManifestRecord]:
    """The manifest's records, in order; a line that is not one is skipped with a warning
    naming its ``file:line`` and what is wrong."""
    for where, value in read_lines(path):
        try:
            yield ManifestRecord.from_json(value, where)
        except RecordError as e:
            log.warning("%s, skipped", e)
