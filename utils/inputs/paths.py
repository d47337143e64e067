"""Gather the input paths and take this process's shard of them.

An entry (of ``video_paths`` or a line of ``file_with_video_paths``) is a video file, a folder
(its video files, by ``VIDEO_EXTENSIONS``) or a glob pattern; see ``expand_entry``.
"""
import glob
import itertools
import logging
import os
import re
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, TypeVar

from hydra.utils import to_absolute_path

from utils.errors import InputError
from utils.files import loads_json, target_of
from utils.inputs.folders import FolderError, files_under, pattern_matches
from utils.console import printable_path

log = logging.getLogger(__name__)
T = TypeVar("T")

# A list file is read whole before the run starts: these bound what it can cost.
MAX_LIST_LINE_BYTES = 64 * 2**10    # a path (4096 bytes at most on Linux) or a JSON record
MAX_LIST_FILE_BYTES = 512 * 2**20   # about 5 million paths of 100 bytes

# What a video file is when a folder is expanded (compared lower-cased): the containers FFmpeg
# reads that hold video.  Not raw elementary streams (.h264, .hevc: no timestamps), not audio
# (.ogg, .m4a).  A file named explicitly, or matched by a pattern, is taken whatever its name.
VIDEO_EXTENSIONS = (
    ".mp4", ".m4v", ".mov", ".qt", ".3gp", ".3g2", ".f4v",  # ISO BMFF / QuickTime
    ".mkv", ".webm",                                        # Matroska
    ".avi", ".divx",                                        # AVI
    ".mpg", ".mpeg", ".mpe", ".m1v", ".m2v", ".vob",        # MPEG program / elementary
    ".ts", ".mts", ".m2ts",                                 # MPEG transport
    ".flv", ".wmv", ".asf", ".ogv", ".mxf", ".dv", ".y4m", ".nut", ".rm", ".rmvb",
)
_VIDEO_EXTENSIONS = frozenset(VIDEO_EXTENSIONS)


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
            record = loads_json(line)
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


def list_file_entries(file_with_video_paths: str) -> Iterator[Tuple[int, str]]:
    """``(line number, entry)`` of a list file: one path a line, blank lines ignored,
    JSON-lines records accepted.

    Only the line ending (LF or CR LF) is removed: spaces, leading or trailing, are part of
    the path.  A line over ``MAX_LIST_LINE_BYTES`` or a file over ``MAX_LIST_FILE_BYTES``
    (``/dev/zero``, a video given by mistake) is an ``InputError``, raised having read no
    more than about the limit.
    """
    name = file_with_video_paths
    try:
        with open(absolute_path(file_with_video_paths), "rb") as f:
            for number, line in _list_lines(f, name):
                try:
                    text = line.decode("utf-8")
                except UnicodeDecodeError:
                    raise InputError(f"file_with_video_paths: {name} is not UTF-8 text (line "
                                     f"{number}); expected one path a line") from None
                if text.strip():
                    yield number, _list_entry(text)
    except OSError as e:
        raise InputError(f"file_with_video_paths: cannot read {name} "
                         f"({e.strerror or e})") from None


class _NoVideo(Exception):
    """An entry that names a folder or pattern gives no video file (the message says why)."""


def is_video_name(path: str) -> bool:
    """Whether a file name ends in one of ``VIDEO_EXTENSIONS``, in any case."""
    return os.path.splitext(path)[1].lower() in _VIDEO_EXTENSIONS


def expand_entry(entry: str) -> Tuple[List[str], bool]:
    """The absolute, normalised paths an input entry stands for, and whether it was expanded.

    - a video file name (``VIDEO_EXTENSIONS``) without glob characters: itself, not even
      looked up (a list of a million files costs no file-system call here); so is any entry
      that exists but is not a folder (a file whatever its name, ``a[1].mp4`` too), and any
      entry that does not exist and is no pattern (it fails later, at ``open``, as today);
    - a folder: its video files at any depth, by extension (see ``utils.inputs.folders``);
    - a glob pattern (``*``, ``?``, ``[...]``; ``**`` for any depth): the files it matches,
      whatever their extension, and the video files under the folders it matches.

    An expansion is sorted by path (code-point order: the same on every shard) and holds
    each file once.  Hidden names and this tool's temporaries are skipped.  Raises
    ``_NoVideo`` if a folder or pattern gives nothing, ``FolderError`` for an unreadable folder.
    """
    raw = os.path.expanduser(entry)
    path = os.path.normpath(raw if os.path.isabs(raw) else absolute_path(raw))
    # of what the user wrote, not of the working directory
    magic = glob.has_magic(raw) and glob.has_magic(os.path.normpath(raw))
    if not magic and not raw.endswith(os.sep) and is_video_name(path):
        return [path], False
    if os.path.isdir(path):
        visited: set = set()
        found = sorted(files_under(path, _VIDEO_EXTENSIONS, visited))
        if not found:
            raise _NoVideo(f"{printable_path(path)} matches no video file ({_extensions_note()})")
        return found, True
    if not magic or os.path.lexists(path):
        return [path], False
    return _expand_pattern(raw), True


def _extensions_note() -> str:
    return f"extensions: {' '.join(VIDEO_EXTENSIONS)}, any case; hidden names skipped"


def _expand_pattern(raw: str) -> List[str]:
    """The files a pattern (with at least one glob character once normalised) gives (see
    ``expand_entry``), sorted."""
    norm = os.path.normpath(raw)
    parts = norm.split(os.sep)
    literal = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    # the leading literal folders, and the working directory, are never matched as patterns
    start = os.sep.join(parts[:literal]) or (os.sep if os.path.isabs(norm) else os.curdir)
    base = os.path.normpath(absolute_path(start))
    shown = printable_path(os.path.join(base, *parts[literal:]))
    if not os.path.isdir(base):
        raise _NoVideo(f"{shown} matches no file or folder")
    files: set = set()
    folders: set = set()
    for match, is_folder in pattern_matches(base, parts[literal:]):
        if is_folder:
            folders.add(match)
        elif not target_of(match):
            files.add(match)
    if not files and not folders:
        raise _NoVideo(f"{shown} matches no file or folder")
    visited: set = set()
    for folder in sorted(folders):  # a folder's own folders after it: walked once
        if folder not in visited:
            files.update(files_under(folder, _VIDEO_EXTENSIONS, visited))
    if not files:
        raise _NoVideo(f"{shown} matches no video file ({_extensions_note()})")
    return sorted(files)


def _entries(video_paths: Any,
             file_with_video_paths: Optional[str]) -> Iterator[Tuple[Optional[int], str]]:
    """``(line number or None, entry)``: ``video_paths`` (one path or a list), then the list
    file's lines."""
    if video_paths not in (None, ""):
        if isinstance(video_paths, str):
            yield None, video_paths
        elif isinstance(video_paths, Sequence):
            yield from ((None, str(p)) for p in video_paths)
        else:
            raise InputError(f"video_paths: expected a path or a list of paths, got {video_paths!r}")
    if file_with_video_paths:
        yield from list_file_entries(file_with_video_paths)


def excluded_folders(output_path: Any, tmp_path: Any) -> Tuple[str, ...]:
    """The folders a run takes no input from (``collect_paths``' ``exclude``): its
    ``output_path`` and its ``tmp_path`` (where resampled videos are kept); values read from
    a run record that are not text are left out."""
    return tuple(p for p in (output_path, tmp_path) if isinstance(p, str) and p)


def collect_paths(video_paths: Any, file_with_video_paths: Optional[str],
                  exclude: Sequence[Optional[str]] = ()) -> List[str]:
    """Inputs in the order given: ``video_paths`` (one path or a list), then the list file's
    lines; a folder or pattern stands for its sorted expansion there (``expand_entry``),
    without the files under the folders of ``exclude`` (``excluded_folders``: a run never
    ingests its own outputs or kept videos), with a warning naming how many were left out.

    The list file may also be JSON lines with a ``"path"`` in each record (``failed.jsonl``).
    A path listed twice is kept once (its first place), with a warning: one a path named
    twice, one an expansion that repeats earlier paths (with their number).  A folder or
    pattern that gives no video, or an unreadable folder, is an ``InputError`` naming it.
    """
    unique: Dict[str, None] = {}
    excluded = [os.path.realpath(to_absolute_path(x)) for x in exclude if x]
    for number, entry in _entries(video_paths, file_with_video_paths):
        try:
            paths, expanded = expand_entry(entry)
        except (_NoVideo, FolderError, OSError) as e:
            where = ("video_paths" if number is None
                     else f"file_with_video_paths: line {number} of {file_with_video_paths}")
            if isinstance(e, FolderError):
                raise InputError(f"{where}: {printable_path(entry)}: {e}") from None
            if isinstance(e, OSError):
                raise InputError(f"{where}: {printable_path(entry)}: {e.strerror or e}") from None
            raise InputError(f"{where}: {e}") from None
        if not expanded:
            if paths[0] in unique:
                log.warning("%s is listed more than once; extracting it once", paths[0])
            unique[paths[0]] = None
            continue
        kept = [p for p in paths if not _under(p, excluded)]
        if len(kept) < len(paths):
            log.warning("%s: %d of its %d video files are under output_path or tmp_path and "
                        "are not inputs", printable_path(entry), len(paths) - len(kept),
                        len(paths))
        paths = kept
        before = len(unique)
        unique.update(dict.fromkeys(paths))
        repeated = len(paths) - (len(unique) - before)
        if repeated:
            log.warning("%s: %d of its %d video files are already listed; extracting each once",
                        printable_path(entry), repeated, len(paths))
    return list(unique)


def _under(path: str, folders: Sequence[str]) -> bool:
    """Is ``path`` (its real location) in one of ``folders`` (real paths)?"""
    if not folders:
        return False
    real = os.path.realpath(path)
    return any(real == f or real.startswith(f.rstrip(os.sep) + os.sep) for f in folders)


def shard_of(index: int, num_shards: int) -> int:
    """The shard that takes the ``index``-th input of the whole list (the one sharding rule)."""
    return index % num_shards


def shard_paths(paths: List[T], shard: int, num_shards: int) -> List[T]:
    """This process's share: the inputs whose ``shard_of`` is ``shard`` (disjoint, complete,
    stable), in list order."""
    return [p for i, p in enumerate(paths) if shard_of(i, num_shards) == shard]


_SHARD_SUFFIX = re.compile(r"-([0-9]+)-of-([0-9]+)")


def shard_suffix(shard: int, num_shards: int) -> str:
    """``-<k>-of-<K>``: how the name of every file of one shard says which (its manifest,
    failure list, lock file and HDF5 file)."""
    return f"-{shard}-of-{num_shards}"


def parse_shard_name(name: str, prefix: str, ext: str) -> Optional[Tuple[int, int]]:
    """``(k, K)`` when ``name`` is exactly ``prefix + shard_suffix(k, K) + ext`` for a shard
    (0 <= k < K); None for any other name (the reverse of ``shard_suffix``)."""
    if not (name.startswith(prefix) and name.endswith(ext)):
        return None
    found = _SHARD_SUFFIX.fullmatch(name, len(prefix), len(name) - len(ext))
    if found is None:
        return None
    shard, num_shards = int(found[1]), int(found[2])
    if shard >= num_shards or shard_suffix(shard, num_shards) != found[0]:
        return None  # leading zeros: not a name this tool writes
    return shard, num_shards
