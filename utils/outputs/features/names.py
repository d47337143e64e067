"""How outputs are named and found on disk: ``<name>_<key>.<npy|pkl>`` files (nested folders
included), the shard files ``<feature_type>-<k>-of-<K>.h5``, a manifest's output locations,
and which folder of an ``output_path`` holds them."""
import os
import stat
from typing import Dict, List, Optional, Sequence, Tuple

from utils.config import FEATURE_TYPES
from utils.files import target_of
from utils.outputs import h5_format
from utils.outputs.naming import EXTENSIONS
from utils.records.provenance import RUNS_FOLDER, folder_runs
from utils.records.run_report import manifest_shard

FILE_FORMATS = tuple(EXTENSIONS.values())  # npy, pkl
FORMATS = FILE_FORMATS + ("h5",)
ALL_KEYS = tuple(dict.fromkeys(k for spec in FEATURE_TYPES.values() for k in spec.keys))


class OutputError(ValueError):
    """An output that cannot be read, or a path that holds no usable outputs (names it)."""


def split_name(filename: str, keys: Sequence[str] = ALL_KEYS) -> Optional[Tuple[str, str, str]]:
    """``(name, key, ext)`` of an output file name ``<name>_<key>.<npy|pkl>``, else None."""
    stem, dot, ext = filename.rpartition(".")
    if not dot or ext not in FILE_FORMATS:
        return None
    for key in sorted(keys, key=len, reverse=True):
        if stem.endswith("_" + key) and len(stem) > len(key) + 1:
            return stem[:-len(key) - 1], key, ext
    return None


def is_h5_output(filename: str) -> bool:
    """Is this the name of a network's shard file (``h5_format.h5_shard``)?"""
    return any(h5_format.h5_shard(filename, t) for t in FEATURE_TYPES)


def locate(root: str, location: str) -> Optional[Tuple[str, str]]:
    """``(format, output name)`` of a manifest's output location (``<root>/<name>_<key>.npy``,
    ``<root>/<file>.h5/<name>/<key>``; relative ones are relative to ``root``), or None when
    it is not an output under ``root``."""
    path = os.path.join(root, location)
    for a, b in ((path, root), (os.path.realpath(path), os.path.realpath(root))):
        rel = os.path.relpath(a, b)
        if rel != os.pardir and not rel.startswith(os.pardir + os.sep):
            break
    else:
        return None
    parts = rel.split(os.sep)
    if len(parts) >= 3 and parts[0].endswith(".h5") and parts[-1] in ALL_KEYS:
        return "h5", "/".join(parts[1:-1])
    split = split_name(parts[-1])
    if split is None:
        return None
    return split[2], "/".join(parts[:-1] + [split[0]])


def as_utf8(text: str) -> str:
    """``text`` printable as UTF-8: an undecodable byte of a file name (a surrogate in the
    ``str``) is shown as ``\\xe9``."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def regular_file(path: str) -> bool:
    """Is ``path`` a regular file (a link to one included)?"""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _hidden(name: str) -> bool:
    return name.startswith(".") or bool(target_of(name))


def _own_outputs(folder: str) -> bool:
    """Does the folder hold outputs, a manifest or run records of its own?"""
    for entry in os.scandir(folder):
        name = entry.name
        if _hidden(name):
            continue
        if name == RUNS_FOLDER or manifest_shard(name) or is_h5_output(name) \
                or split_name(name):
            return True
    return False


def feature_folder(path: str) -> str:
    """``path``, or its one network folder when ``path`` is an ``output_path`` (no outputs,
    manifest or ``runs/`` of its own, and a subfolder named after one network)."""
    subs = [t for t in FEATURE_TYPES if os.path.isdir(os.path.join(path, t))]
    if not subs or _own_outputs(path):
        return path
    if len(subs) > 1:
        raise OutputError(f"{path} holds the outputs of {len(subs)} networks "
                          f"({', '.join(subs)}); load one of {', '.join(os.path.join(path, s) for s in subs)}")
    return os.path.join(path, subs[0])


def scan(folder: str) -> Tuple[List[str], Dict[str, List[Tuple[str, str]]]]:
    """The shard files directly in ``folder`` (``is_h5_output``) and, by extension, every
    candidate output file under it as ``(relative folder, file name)``; hidden files,
    temporaries, links to anything but a regular file and ``runs/`` are skipped."""
    h5_files: List[str] = []
    files: Dict[str, List[Tuple[str, str]]] = {ext: [] for ext in FILE_FORMATS}
    stack = [""]
    while stack:
        rel = stack.pop()
        try:
            entries = sorted(os.scandir(os.path.join(folder, rel)), key=lambda e: e.name)
        except OSError as e:
            raise OutputError(f"{os.path.join(folder, rel)}: cannot be listed "
                              f"({e.strerror or e})") from None
        subfolders = []
        for entry in entries:
            if _hidden(entry.name):
                continue
            if entry.is_dir(follow_symlinks=False):
                if not (rel == "" and entry.name == RUNS_FOLDER):
                    subfolders.append(os.path.join(rel, entry.name))
            elif entry.is_file():  # follows a link: a FIFO or a device is never listed
                if rel == "" and is_h5_output(entry.name):
                    h5_files.append(entry.path)
                else:
                    split = split_name(entry.name)
                    if split:
                        files[split[2]].append((rel, entry.name))
        stack.extend(reversed(subfolders))
    return h5_files, files


def feature_type_of(folder: str, found: Sequence[str]) -> Optional[str]:
    """The network of a folder of files: its name, else its run records, else the keys
    ``found``."""
    base = os.path.basename(os.path.normpath(folder))
    if base in FEATURE_TYPES:
        return base
    types = {r.get("features", {}).get("feature_type") for r in folder_runs(folder).values()}
    types &= set(FEATURE_TYPES)
    if len(types) == 1:
        return types.pop()
    keys = set(found)
    matching = [t for t, spec in FEATURE_TYPES.items() if keys & {k for k, _ in spec.features}]
    return matching[0] if len(matching) == 1 else None
