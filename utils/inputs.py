"""Gather the input paths and take this process's shard of them."""
import itertools
import json
import logging
import os
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, TypeVar

from hydra.utils import to_absolute_path

from utils.errors import InputError

log = logging.getLogger(__name__)
T = TypeVar("T")

# A list file is read whole before the run starts: these bound what it can cost.
MAX_LIST_LINE_BYTES = 64 * 2**10    # a path (4096 bytes at most on Linux) or a JSON record
MAX_LIST_FILE_BYTES = 512 * 2**20   # about 5 million paths of 100 bytes


def absolute_path(path: str) -> str:
    """Relative paths are relative to where the user ran the command, also under Hydra."""
    return to_absolute_path(path)


def _list_entry(line: str) -> str:
    """One line of a list file: a path, or a JSON object with a ``"path"`` (JSON lines).

    So ``failed.jsonl`` and the manifest of a run can be given back as
    ``file_with_video_paths`` as they are, to retry the failures.
    """
    if line.startswith("{"):
        try:
            record = json.loads(line)
        except ValueError:
            return line
        if isinstance(record, dict) and isinstance(record.get("path"), str):
            return record["path"]
    return line


def _list_lines(f, name: str) -> Iterator[Tuple[int, bytes]]:
    """``(number, line)`` of a binary list file, without line endings, within the limits."""
    size = os.fstat(f.fileno()).st_size  # 0 for pipes and devices: counted as read below
    if size > MAX_LIST_FILE_BYTES:
        raise InputError(f"file_with_video_paths: {name} is larger than "
                         f"{MAX_LIST_FILE_BYTES // 2**20} MiB ({size} bytes); expected a list of "
                         "paths, one a line (split a longer list into several)")
    total = 0
    number = 0
    rest = b""  # the line still unfinished at the end of the last block
    while True:
        block = f.read(2**20)
        total += len(block)
        if total > MAX_LIST_FILE_BYTES:
            raise InputError(f"file_with_video_paths: {name} is larger than "
                             f"{MAX_LIST_FILE_BYTES // 2**20} MiB; expected a list of paths, "
                             "one a line (split a longer list into several)")
        data = rest + block
        if data.isspace():  # only blank lines (a flood of newlines): counted, not split
            number += data.count(b"\n")
            rest = b""
            continue
        lines = data.split(b"\n")
        rest = lines.pop()
        if not block and rest:  # the last line needs no line ending
            lines.append(rest)
        # empty lines are skipped at C speed
        for at, line in itertools.compress(enumerate(lines, number + 1), lines):
            line = line[:-1] if line.endswith(b"\r") else line
            if len(line) > MAX_LIST_LINE_BYTES:
                raise _line_too_long(name, at)
            yield at, line
        number += len(lines)
        if not block:
            return
        if len(rest) > MAX_LIST_LINE_BYTES + 1:  # + the CR of a CR LF
            raise _line_too_long(name, number + 1)


def _line_too_long(name: str, number: int) -> InputError:
    return InputError(f"file_with_video_paths: line {number} of {name} is longer than "
                      f"{MAX_LIST_LINE_BYTES} bytes; expected one path a line")


def read_list_file(file_with_video_paths: str) -> List[str]:
    """The paths of a list file: one a line, blank lines ignored, JSON-lines records accepted.

    Only the line ending (LF or CR LF) is removed: spaces, leading or trailing, are part of
    the path.  A line over ``MAX_LIST_LINE_BYTES`` or a file over ``MAX_LIST_FILE_BYTES``
    (``/dev/zero``, a video given by mistake) is an ``InputError``, raised having read no
    more than about the limit.
    """
    name = file_with_video_paths
    entries: List[str] = []
    try:
        with open(absolute_path(file_with_video_paths), "rb") as f:
            for number, line in _list_lines(f, name):
                try:
                    text = line.decode("utf-8")
                except UnicodeDecodeError:
                    raise InputError(f"file_with_video_paths: {name} is not UTF-8 text (line "
                                     f"{number}); expected one path a line") from None
                if text.strip():
                    entries.append(_list_entry(text))
    except OSError as e:
        raise InputError(f"file_with_video_paths: cannot read {name} "
                         f"({e.strerror or e})") from None
    return entries


def collect_paths(video_paths: Any, file_with_video_paths: Optional[str]) -> List[str]:
    """Inputs in the order given: ``video_paths`` (one path or a list), then the list file's lines.

    The list file may also be JSON lines with a ``"path"`` in each record (``failed.jsonl``).
    A path listed twice is kept once (its first place), with a warning.
    """
    paths: List[str] = []
    if video_paths not in (None, ""):
        if isinstance(video_paths, str):
            paths.append(video_paths)
        elif isinstance(video_paths, Sequence):
            paths.extend(str(p) for p in video_paths)
        else:
            raise InputError(f"video_paths: expected a path or a list of paths, got {video_paths!r}")
    if file_with_video_paths:
        paths.extend(read_list_file(file_with_video_paths))
    unique: Dict[str, None] = {}
    for p in paths:
        p = os.path.normpath(absolute_path(os.path.expanduser(p)))
        if p in unique:
            log.warning("%s is listed more than once; extracting it once", p)
        unique[p] = None
    return list(unique)


def shard_of(index: int, num_shards: int) -> int:
    """The shard that takes the ``index``-th input of the whole list (the one sharding rule)."""
    return index % num_shards


def shard_paths(paths: List[T], shard: int, num_shards: int) -> List[T]:
    """This process's share: the inputs whose ``shard_of`` is ``shard`` (disjoint, complete,
    stable), in list order."""
    return [p for i, p in enumerate(paths) if shard_of(i, num_shards) == shard]
