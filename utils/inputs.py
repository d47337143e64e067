"""Gather the input paths and take this process's shard of them."""
import json
import logging
import os
from typing import Any, Dict, List, Optional, Sequence, TypeVar

from hydra.utils import to_absolute_path

from utils.errors import InputError

log = logging.getLogger(__name__)
T = TypeVar("T")


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


def read_list_file(file_with_video_paths: str) -> List[str]:
    """The paths of a list file: one a line, blank lines ignored, JSON-lines records accepted."""
    list_file = absolute_path(file_with_video_paths)
    try:
        with open(list_file, encoding="utf-8") as f:
            return [_list_entry(line.strip()) for line in f if line.strip()]
    except OSError as e:
        raise InputError(f"file_with_video_paths: cannot read {file_with_video_paths} "
                         f"({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise InputError(f"file_with_video_paths: {file_with_video_paths} is not UTF-8 text; "
                         "expected one path a line") from None


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
