"""How outputs are named and found on disk: ``<name>_<key>.<npy|pkl>`` files (nested folders
included), the shard files ``<feature_type>-<k>-of-<K>.h5``, a manifest's output locations,
and which network made a folder.

Network-agnostic: a network's keys come from its registered spec (``utils.networks``) when the
caller registered it (the command line, search, the API), else from the files themselves
(every network writes ``<name>_timestamps_ms`` and ``<name>_fps``: what precedes a video's
name in its other files is a key), so ``python -m utils.features`` reads any network's
folder."""
import os
import stat
from collections import Counter
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from utils.errors import InputError
from utils.files import target_of
from utils.networks import networks
from utils.outputs import h5_format
from utils.outputs.naming import EXTENSIONS
from utils.records.manifests import NoFeatureFolder, feature_folder as _feature_folder
from utils.records.provenance import read_runs
from utils.records.schema import RUNS_FOLDER

FILE_FORMATS = tuple(EXTENSIONS.values())  # npy, pkl
FORMATS = FILE_FORMATS + ("h5",)
STAMPS = "timestamps_ms"  # a key of every network, as is "fps"


class OutputError(ValueError):
    """An output that cannot be read, or a path that holds no usable outputs (names it)."""


def registered_keys() -> Tuple[str, ...]:
    """Every registered network's keys (what is registered now)."""
    return tuple(dict.fromkeys(k for spec in networks().values() for k in spec.keys))


def infer_keys(stems: Iterable[str]) -> Tuple[str, ...]:
    """The keys of a folder's file stems (``<name>_<key>``, without the extension): each
    ``<name>_timestamps_ms`` names a video; what follows a video's name and ``_`` in another
    stem is a key (the longest such name wins)."""
    stems = list(stems)
    names = {s[:-len(STAMPS) - 1] for s in stems
             if s.endswith("_" + STAMPS) and len(s) > len(STAMPS) + 1}
    keys = {STAMPS, "fps"}
    for stem in stems:
        at = len(stem)
        while True:  # cut at each "_" from the right: the longest name first
            at = stem.rfind("_", 0, at)
            if at <= 0:
                break
            if stem[:at] in names:
                keys.add(stem[at + 1:])
                break
    return in_network_order(keys)


def in_network_order(keys: Iterable[str]) -> Tuple[str, ...]:
    """Keys as a network writes them: its per-stack features (here sorted), then
    ``timestamps_ms`` and ``fps``."""
    keys = set(keys)
    last = [k for k in (STAMPS, "fps") if k in keys]
    return tuple(sorted(keys - set(last))) + tuple(last)


def split_name(filename: str, keys: Optional[Sequence[str]] = None
               ) -> Optional[Tuple[str, str, str]]:
    """``(name, key, ext)`` of an output file name ``<name>_<key>.<npy|pkl>`` for one of
    ``keys`` (default: the registered networks'), else None."""
    if keys is None:
        keys = registered_keys()
    stem, dot, ext = filename.rpartition(".")
    if not dot or ext not in FILE_FORMATS:
        return None
    for key in sorted(keys, key=len, reverse=True):
        if stem.endswith("_" + key) and len(stem) > len(key) + 1:
            return stem[:-len(key) - 1], key, ext
    return None


def is_h5_output(filename: str) -> bool:
    """Is this the name of a network's shard file (``h5_format.h5_shard``), whichever network?"""
    network = filename.rpartition("-of-")[0].rpartition("-")[0]  # what precedes the suffix
    return bool(network) and h5_format.h5_shard(filename, network) is not None


def is_output(filename: str) -> bool:
    """Does a folder holding this file hold outputs (a shard file, or an ``.npy``/``.pkl``
    of a video's timestamps, which every network writes)?"""
    return is_h5_output(filename) or split_name(filename, (STAMPS,)) is not None


def climbs(location: str) -> bool:
    """Does a relative output location climb (``..``)?  A manifest never writes one: such a
    location may leave the folder, or name it by a name it loses when moved, so it is refused."""
    return not os.path.isabs(location) and os.pardir in location.split(os.sep)


def locate(root: str, location: str, keys: Optional[Sequence[str]] = None
           ) -> Optional[Tuple[str, str]]:
    """``(format, output name)`` of a manifest's output location, or None when it is not an
    output under ``root``.  A relative location (``<name>_<key>.npy``, ``<file>.h5/<name>/<key>``,
    as manifests record them) is relative to ``root``, taken as written (no link followed, no
    ``..``: ``climbs``); an absolute one (records of earlier versions) must lie under ``root``,
    as written or with links resolved.  ``keys``: the network's (default: the registered
    networks')."""
    if keys is None:
        keys = registered_keys()
    if climbs(location):
        return None
    path = os.path.join(root, location)
    pairs = [(path, root)]
    if os.path.isabs(location):
        pairs.append((os.path.realpath(path), os.path.realpath(root)))
    for a, b in pairs:
        rel = os.path.relpath(a, b)
        if rel != os.pardir and not rel.startswith(os.pardir + os.sep):
            break
    else:
        return None
    parts = rel.split(os.sep)
    if len(parts) >= 3 and parts[0].endswith(".h5") and parts[-1] in keys:
        return "h5", "/".join(parts[1:-1])
    split = split_name(parts[-1], keys)
    if split is None:
        return None
    return split[2], "/".join(parts[:-1] + [split[0]])


def regular_file(path: str) -> bool:
    """Is ``path`` a regular file (a link to one included)?"""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _hidden(name: str) -> bool:
    return name.startswith(".") or bool(target_of(name))


def feature_folder(path: str) -> str:
    """The feature folder ``path`` names (``utils.records.manifests.feature_folder``: by what
    it holds); a path that holds nothing marking one is taken as it is (its outputs, nested
    mirror-layout ones too, are looked for by ``scan``)."""
    try:
        return _feature_folder(path, is_output)
    except NoFeatureFolder:
        return path
    except InputError as e:  # several network folders
        raise OutputError(str(e)) from None


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
                    ext = entry.name.rpartition(".")[2]
                    if ext in files and "_" in entry.name:  # split by the folder's keys later
                        files[ext].append((rel, entry.name))
        stack.extend(reversed(subfolders))
    return h5_files, files


def feature_type_of(folder: str, found: Sequence[str]) -> Optional[str]:
    """The network of a folder of files: its run records, else its name when a network of that
    name is registered, else the registered network whose keys are ``found``, else the
    folder's name."""
    types = {r.features.get("feature_type") for r in read_runs(folder).values()}
    types = {t for t in types if isinstance(t, str)}
    if len(types) == 1:
        return types.pop()
    base = os.path.basename(os.path.normpath(folder))
    if base in networks():
        return base
    keys = set(found)
    matching = [t for t, spec in networks().items() if keys & {k for k, _ in spec.features}]
    return matching[0] if len(matching) == 1 else base or None


def video_sets(folder: str, found: Sequence[Tuple[str, str]], keys: Sequence[str]
               ) -> Dict[str, Dict[str, str]]:
    """Output name -> {key: path} of the files ``found`` (``scan``'s) named by one of ``keys``."""
    sets: Dict[str, Dict[str, str]] = {}
    for rel, filename in found:
        split = split_name(filename, keys)
        if split is not None:
            name = f"{rel.replace(os.sep, '/')}/{split[0]}" if rel else split[0]
            sets.setdefault(name, {})[split[1]] = os.path.join(folder, rel, filename)
    return sets


def network_keys(sets: Dict[str, Dict[str, str]], feature_type: str,
                 inferred: Sequence[str]) -> Tuple[str, ...]:
    """The keys of a network not registered here, from its folder's sets (split by every key
    found): the key set most videos have, among those with a file of the folder's network's
    name as key when there are such (``<name>_<feature_type>``: a stray set of another
    network's files never decides); a tie goes to the larger set; ``inferred`` when no video
    has ``timestamps_ms`` and ``fps``."""
    candidates = [frozenset(s) for s in sets.values() if {STAMPS, "fps"} <= set(s)]
    named = [c for c in candidates if feature_type in c]
    votes = Counter(named or candidates)
    if not votes:
        return tuple(inferred)
    best = max(votes.items(), key=lambda kv: (kv[1], len(kv[0]), sorted(kv[0])))[0]
    return in_network_order(best)


def stray_sets(folder: str, found: Sequence[Tuple[str, str]], keys: Sequence[str],
               inferred: Sequence[str], sets: Dict[str, Dict[str, str]]) -> Dict[str, str]:
    """Names of sets of files with keys other than the network's (``keys``; another network's
    files planted or left in the folder): name -> one such key.  They are taken out of
    ``sets`` when they lack one of the network's keys (a video with an extra file stays)."""
    others = [k for k in inferred if k not in keys]
    strays: Dict[str, str] = {}
    for name, files in video_sets(folder, found, others).items():
        if not set(keys) <= set(sets.get(name, ())):
            strays[name] = next(iter(files))
            sets.pop(name, None)
    return strays
