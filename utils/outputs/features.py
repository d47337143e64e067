"""One reader for every output format: ``load(path)`` -> video name -> {key: array}.

    from utils.outputs.features import load
    features = load("output/s3d")            # a folder of .npy, .pkl or .h5 outputs, or one .h5
    for name in features:                    # output names; listing reads no array
        arrays = features[name]              # {"s3d": (Tv, 1024) float32, "timestamps_ms": ...}

``path`` may be:

- ``<output_path>/<feature_type>``: a folder of ``<name>_<key>.npy`` (or ``.pkl``) files,
  nested folders included (``output_layout=mirror``), or of shard files
  ``<feature_type>-<k>-of-<K>.h5`` (every ``*.h5`` directly in the folder);
- ``<output_path>`` itself, when it holds exactly one network's folder (and no outputs,
  manifest or ``runs/`` of its own);
- one ``.h5`` file.

The names are found without reading arrays: files by their names (the keys of the network,
``utils.config.FEATURE_TYPES``; hidden files and temporaries skipped), HDF5 groups by their
links (``utils.outputs.h5_format.video_names``).  A video's arrays are read when it is accessed:
``.npy`` with ``allow_pickle=False`` (``mmap=True``: memory-mapped), ``.pkl`` through the
restricted unpickler (numpy arrays and numbers only: data never runs code), HDF5 through
``utils.outputs.h5_format.read_video``.  Only complete sets are listed: a name lacking one of its
key's files (a run killed while renaming them) is left out, counted in ``incomplete`` and
warned about once.  A folder holding outputs of several formats is an error unless
``format=`` chooses one; a video found in two ``.h5`` files is an error naming both.  A
journal beside an ``.h5`` (videos finished after its last checkpoint) is warned about: the
same command run again folds them in.  Anything unreadable raises ``OutputError`` (a
``ValueError``) naming the file.

    python -m utils.outputs.features summary PATH [--json] [--format npy|pkl|h5]
    python -m utils.outputs.features pack FOLDER OUT.h5 [--force]      # .npy / .pkl outputs -> one .h5
    python -m utils.outputs.features merge OUT.h5 IN.h5 [IN.h5 ...] [--force]

``pack`` and ``merge`` write the layout of ``utils.outputs.h5_format`` to a temporary beside OUT,
fsync it and rename it over OUT (never an existing OUT without ``--force``).  A video the
layout cannot hold (its group would pass through another video's dataset: mirror ``a.mp4``
and ``a/s3d/y.mp4``; a name that is not UTF-8, from an undecodable byte of a file name) fails
the whole command before anything is written.  Exit status: 0; 1 when ``pack`` left out
incomplete sets; 2 with one ``error:`` line for unusable input.
"""
import argparse
import json
import logging
import os
import stat
import struct
import sys
from collections import Counter
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import h5py
import numpy as np

from utils.outputs import h5_format, serialization
from utils.config import FEATURE_TYPES
from utils.errors import InputError, one_line
from utils.files import atomic_path, target_of
from utils.outputs.h5_store import count_journal, journal_path, read_journal
from utils.records.manifests import NoFeatureFolder, feature_folder, latest_records
from utils.outputs.naming import EXTENSIONS
from utils.records.provenance import RUNS_FOLDER, checked_runs, folder_runs, read_runs
from utils.outputs.resume import outputs_complete

log = logging.getLogger(__name__)

FILE_FORMATS = tuple(EXTENSIONS.values())  # npy, pkl
FORMATS = FILE_FORMATS + ("h5",)
ALL_KEYS = tuple(dict.fromkeys(k for spec in FEATURE_TYPES.values() for k in spec.keys))


class OutputError(ValueError):
    """An output that cannot be read, or a path that holds no usable outputs (names it)."""


# -- names ---------------------------------------------------------------------------------
def split_name(filename: str, keys: Sequence[str] = ALL_KEYS) -> Optional[Tuple[str, str, str]]:
    """``(name, key, ext)`` of an output file name ``<name>_<key>.<npy|pkl>``, else None."""
    stem, dot, ext = filename.rpartition(".")
    if not dot or ext not in FILE_FORMATS:
        return None
    for key in sorted(keys, key=len, reverse=True):
        if stem.endswith("_" + key) and len(stem) > len(key) + 1:
            return stem[:-len(key) - 1], key, ext
    return None


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


# -- the mapping ---------------------------------------------------------------------------
class Features(Mapping[str, Dict[str, np.ndarray]]):
    """Output name -> {key: array}, read on access (see the module's doc).  ``format``: npy,
    pkl or h5; ``feature_type``; ``output_keys``: the network's keys; ``source``: the folder or file
    read; ``incomplete``: names left out for a missing key file.  Close it (or use ``with``)
    to release open HDF5 files."""

    format: str
    source: str
    feature_type: Optional[str]
    incomplete: List[str]

    @property
    def output_keys(self) -> Tuple[str, ...]:
        """The network's keys (every video has them)."""
        spec = FEATURE_TYPES.get(self.feature_type or "")
        return spec.keys if spec else ()

    def read(self, name: str, keys: Optional[Sequence[str]] = None) -> Dict[str, np.ndarray]:
        """The video's arrays (all keys, or ``keys``); ``KeyError`` for an unknown name."""
        raise NotImplementedError

    def __getitem__(self, name: str) -> Dict[str, np.ndarray]:
        return self.read(name)

    def shapes(self, name: str) -> Dict[str, Tuple[Tuple[int, ...], np.dtype]]:
        """``{key: (shape, dtype)}`` without reading the data (a ``.pkl`` is read whole)."""
        raise NotImplementedError

    def video_path(self, name: str) -> Optional[str]:
        """The input the video was extracted from (HDF5 attribute, or the folder's manifests)."""
        raise NotImplementedError

    def run(self, name: str) -> Optional[str]:
        """The id of the run that made the video's outputs, when known."""
        raise NotImplementedError

    def runs(self) -> Dict[str, Dict[str, Any]]:
        """The provenance records of the runs (``runs/<id>.json``, or the HDF5 root's)."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "Features":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Features {self.format} {self.source!r}: {len(self)} videos>"


def _ordered(found, keys: Sequence[str]) -> List[str]:
    """The keys of ``found``: the network's first, in its order, then any other."""
    return [k for k in keys if k in found] + sorted(k for k in found if k not in keys)


def _read_file(path: str, mmap: bool) -> np.ndarray:
    try:
        value = serialization.load_output(path, mmap=mmap)
        return value if isinstance(value, np.ndarray) else np.asarray(value)  # memmap kept
    except Exception as e:  # noqa: BLE001 - a garbled pickle can raise almost anything
        raise OutputError(f"{path}: cannot be read ({one_line(e)})") from None


class FileFeatures(Features):
    """A folder of ``<name>_<key>.<ext>`` files."""

    def __init__(self, root: str, fmt: str, files: Dict[str, Dict[str, str]],
                 feature_type: Optional[str], mmap: bool = False):
        self.source, self.format, self.feature_type, self.mmap = root, fmt, feature_type, mmap
        keys = set(self.output_keys)
        self._all = files
        self._files = {n: f for n, f in files.items() if keys <= set(f)}
        self.incomplete = sorted(n for n in files if n not in self._files)
        self._manifest: Optional[Dict[str, Tuple[str, Optional[str]]]] = None

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)

    def __contains__(self, name: object) -> bool:
        return name in self._files

    def files(self, name: str, incomplete: bool = False) -> Dict[str, str]:
        """``{key: path}`` of the video (``incomplete``: also of a name left out)."""
        if incomplete and name not in self._files:
            return dict(self._all[name])
        return dict(self._files[name])

    def read(self, name, keys=None):
        files = self._files[name]
        return {key: _read_file(files[key], self.mmap) for key in (keys or _ordered(files, self.output_keys))}

    def shapes(self, name):
        if self.format != "npy":
            return {k: (v.shape, v.dtype) for k, v in self.read(name).items()}
        found = {}
        for key, path in self._files[name].items():
            try:
                with open(path, "rb") as f:
                    version = np.lib.format.read_magic(f)
                    header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                              else np.lib.format.read_array_header_2_0)(f)
            except Exception as e:  # noqa: BLE001
                raise OutputError(f"{path}: cannot be read ({one_line(e)})") from None
            shape, _, dtype = header
            found[key] = (tuple(shape), np.dtype(dtype))
        return found

    def _records(self) -> Dict[str, Tuple[str, Optional[str]]]:
        if self._manifest is None:
            self._manifest = {}
            for record in latest_records(self.source).values():
                if not record.made or record.outputs is None:
                    continue
                for location in record.outputs.values():
                    found = locate(self.source, location)
                    if found and found[0] == self.format:
                        self._manifest[found[1]] = (record.path, record.run)
                        break
        return self._manifest

    def video_path(self, name):
        return self._records().get(name, (None, None))[0]

    def run(self, name):
        return self._records().get(name, (None, None))[1]

    def runs(self):
        return folder_runs(self.source)  # as JSON objects: the API's form


class H5Features(Features):
    """One or more ``.h5`` files of ``utils.outputs.h5_format``'s layout (shards of one run)."""

    format = "h5"

    def __init__(self, paths: Sequence[str], source: str):
        self.source, self.paths, self.incomplete = source, list(paths), []
        self._open: List[h5py.File] = []
        self._where: Dict[str, int] = {}
        types = set()
        try:
            for i, path in enumerate(self.paths):
                f = self._file(i)
                try:
                    feature_type = _text_attr(f, "feature_type")
                    if feature_type is not None and not isinstance(feature_type, str):
                        raise ValueError(f"feature_type attribute {feature_type!r} is not text")
                    types.add(feature_type)
                    _warn_journal(path, f)
                    for name in h5_format.video_names(f, ALL_KEYS):
                        first = self._where.setdefault(name, i)
                        if first != i:
                            raise OutputError(f"video {name!r} is in two files: "
                                              f"{self.paths[first]} and {path}; keep one of them "
                                              "(files of runs with different num_shards?)")
                except OutputError:
                    raise
                except Exception as e:  # noqa: BLE001 - a damaged file raises OSError, KeyError...
                    raise OutputError(f"{path}: damaged, or not a features file of this tool "
                                      f"({one_line(e)})") from None
        except BaseException:
            self.close()
            raise
        if len(types) > 1:
            self.close()
            raise OutputError(f"{source}: files of different networks ({', '.join(sorted(map(str, types)))})")
        self.feature_type = types.pop() if types else None

    def _file(self, i: int) -> h5py.File:
        while len(self._open) <= i:
            self._open.append(None)  # type: ignore[arg-type]
        if self._open[i] is None:
            path = self.paths[i]
            try:
                f = h5py.File(path, "r")
            except OSError as e:
                raise OutputError(f"{path}: not a readable HDF5 file ({one_line(e)})") from None
            try:
                h5_format.check_file(f, path)
            except Exception as e:  # noqa: BLE001 - a damaged or odd format attribute
                f.close()
                text = one_line(e)
                raise OutputError(text if path in text else f"{path} is not a features file of "
                                  f"this tool ({text})") from None
            self._open[i] = f
        return self._open[i]

    def __iter__(self):
        return iter(self._where)

    def __len__(self):
        return len(self._where)

    def __contains__(self, name):
        return name in self._where

    def file_of(self, name: str) -> str:
        return self.paths[self._where[name]]

    def _group(self, name: str):
        i = self._where[name]
        # a link name that is not UTF-8 was listed with surrogateescape: looked up by its bytes
        group = h5_format.video_group(self._file(i), name.encode("utf-8", "surrogateescape"))
        if group is None:
            raise OutputError(f"{self.paths[i]}: video {name!r} is no longer there")
        return group

    def read(self, name, keys=None):
        group = self._group(name)
        try:
            arrays = h5_format.read_video(group, tuple(keys) if keys else None)
        except Exception as e:  # noqa: BLE001 - a damaged file raises OSError, KeyError...
            raise OutputError(f"{self.file_of(name)}: video {name!r} cannot be read "
                              f"({one_line(e)})") from None
        return {key: np.asarray(arrays[key]) for key in (keys or _ordered(arrays, self.output_keys))}

    def shapes(self, name):
        group = self._group(name)
        try:
            return {key: (group[key].shape, group[key].dtype) for key in group
                    if isinstance(group.get(key, getclass=True), type)
                    and issubclass(group.get(key, getclass=True), h5py.Dataset)}
        except Exception as e:  # noqa: BLE001
            raise OutputError(f"{self.file_of(name)}: video {name!r} cannot be read "
                              f"({one_line(e)})") from None

    def _attr(self, name: str, attr: str) -> Optional[str]:
        group = self._group(name)
        try:
            value = group.attrs.get(attr)
        except Exception as e:  # noqa: BLE001
            raise OutputError(f"{self.file_of(name)}: video {name!r} cannot be read "
                              f"({one_line(e)})") from None
        # bytes: a file name that is not UTF-8, kept as its bytes (h5_format.write_video)
        return os.fsdecode(bytes(value)) if isinstance(value, bytes) else value

    def video_path(self, name):
        return self._attr(name, h5_format.VIDEO_ATTR)

    def run(self, name):
        return self._attr(name, h5_format.RUN_ATTR)

    def runs(self):
        found: Dict[str, Dict[str, Any]] = {}
        for i in range(len(self.paths)):
            try:
                checked = checked_runs(h5_format.runs(self._file(i)), self.paths[i])
                found.update((run_id, r.to_json()) for run_id, r in checked.items())
            except OutputError:
                raise
            except Exception as e:  # noqa: BLE001 - a damaged record: OSError, JSON errors...
                raise OutputError(f"{self.paths[i]}: its run records cannot be read "
                                  f"({one_line(e)})") from None
        return found

    def close(self):
        for f in self._open:
            if f is not None:
                f.close()
        self._open = []


def _text_attr(f, attr: str) -> Optional[str]:
    value = f.attrs.get(attr)
    # bytes: a file name that is not UTF-8, kept as its bytes (h5_format.write_video)
    return os.fsdecode(bytes(value)) if isinstance(value, bytes) else value


def _warn_journal(path: str, f) -> None:
    """Warn about videos waiting in the journal beside ``path`` (not in the file yet).  Only
    the journal's first record (its header: the generation it extends) is read; the videos
    are counted from the record frames (``count_journal``): a journal of tens of GB costs a
    few reads, not a pass over its data."""
    journal = journal_path(path)
    if not os.path.lexists(journal):
        return
    try:
        records = read_journal(journal)
        try:
            first = next(records, None)
        finally:
            records.close()
        if first is None or first[0].get("generation") != int(f.attrs.get("generation", 0)):
            return  # empty, or already folded into the file (a rerun removes it)
        waiting = count_journal(journal)
    except FileNotFoundError:
        return  # folded (and removed) by a checkpoint meanwhile
    except (OSError, ValueError, KeyError, TypeError, AttributeError, struct.error) as e:
        log.warning("%s: journal beside %s not read (%s)", journal, path, one_line(e))
        return
    log.warning("%s: %d video%s finished after the last checkpoint of %s wait%s there and are "
                "not read; the same extraction command run again folds them into the file",
                journal, waiting, "" if waiting == 1 else "s", path, "s" if waiting == 1 else "")


# -- finding outputs -----------------------------------------------------------------------
def _regular(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _hidden(name: str) -> bool:
    return name.startswith(".") or bool(target_of(name))


def _is_output(name: str) -> bool:
    return name.endswith(".h5") or split_name(name) is not None


def _scan(folder: str) -> Tuple[List[str], Dict[str, List[Tuple[str, str]]]]:
    """The ``.h5`` files directly in ``folder`` and, by extension, every candidate output file
    under it as ``(relative folder, file name)``; hidden files, temporaries, links to
    anything but a regular file and ``runs/`` are skipped."""
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
                if rel == "" and entry.name.endswith(".h5"):
                    h5_files.append(entry.path)
                else:
                    split = split_name(entry.name)
                    if split:
                        files[split[2]].append((rel, entry.name))
        stack.extend(reversed(subfolders))
    return h5_files, files


def _feature_type_of(folder: str, found: Sequence[str]) -> Optional[str]:
    """The network of a folder of files: its name, else its run records, else the keys."""
    base = os.path.basename(os.path.normpath(folder))
    if base in FEATURE_TYPES:
        return base
    types = {r.features.get("feature_type") for r in read_runs(folder).values()}
    types &= set(FEATURE_TYPES)
    if len(types) == 1:
        return types.pop()
    keys = set(found)
    matching = [t for t, spec in FEATURE_TYPES.items() if keys & {k for k, _ in spec.features}]
    return matching[0] if len(matching) == 1 else None


def load(path: str, format: Optional[str] = None, mmap: bool = False,
         feature_type: Optional[str] = None) -> Features:
    """The outputs under ``path`` (see the module's doc), listed, not read.

    ``format``: npy, pkl or h5, to choose among outputs of several formats in one folder;
    ``mmap``: memory-map ``.npy`` files instead of reading them; ``feature_type``: the network
    whose keys name the files (default: the folder's name, its run records, else the keys
    found).  Raises ``OutputError`` (a ``ValueError``) naming what cannot be used."""
    if format is not None and format not in FORMATS:
        raise OutputError(f"format: {format!r}; expected one of {', '.join(FORMATS)}")
    if not os.path.exists(path):
        raise OutputError(f"{path}: no such file or folder")
    if not os.path.isdir(path):
        if not _regular(path):
            raise OutputError(f"{path}: not a regular file or a folder")
        if format not in (None, "h5"):
            raise OutputError(f"{path}: a file; only an .h5 file is read alone (format={format})")
        return H5Features([path], path)
    try:
        folder = feature_folder(path, _is_output)
    except NoFeatureFolder:
        folder = path  # nothing marks it: its outputs, nested ones too, are looked for below
    except InputError as e:  # several
        raise OutputError(str(e)) from None
    h5_files, files = _scan(folder)
    present = [fmt for fmt in FORMATS if (h5_files if fmt == "h5" else files[fmt])]
    if format is None:
        if not present:
            raise OutputError(f"{folder}: no outputs (<name>_<key>.npy or .pkl files, or .h5 "
                              "files)")
        if len(present) > 1:
            counts = ", ".join(f"{len(h5_files if f == 'h5' else files[f])} .{f}" for f in present)
            raise OutputError(f"{folder} holds outputs of {len(present)} formats ({counts} "
                              f"files); choose one (format=, --format {'|'.join(present)})")
        format = present[0]
    if format == "h5":
        if not h5_files:
            raise OutputError(f"{folder}: no .h5 files")
        return H5Features(h5_files, folder)
    found = files[format]
    if not found:
        raise OutputError(f"{folder}: no <name>_<key>.{format} files")
    spec_type = feature_type or _feature_type_of(
        folder, [split_name(n)[1] for _, n in found])  # type: ignore[index]
    if spec_type not in FEATURE_TYPES:
        raise OutputError(f"{folder}: cannot tell which network made the files (name the "
                          f"folder after it, or pass feature_type=one of {', '.join(FEATURE_TYPES)})")
    keys = FEATURE_TYPES[spec_type].keys
    by_name: Dict[str, Dict[str, str]] = {}
    for rel, filename in found:
        split = split_name(filename, keys)
        if split is None:
            continue
        name = f"{rel.replace(os.sep, '/')}/{split[0]}" if rel else split[0]
        by_name.setdefault(name, {})[split[1]] = os.path.join(folder, rel, filename)
    features = FileFeatures(folder, format, by_name, spec_type, mmap=mmap)
    if features.incomplete:
        first = features.incomplete[0]
        lacking = sorted(set(keys) - set(by_name[first]))
        log.warning("%s: %d video%s lack%s key files and %s not listed (first: %s, without %s); "
                    "the extraction run again redoes them", folder, len(features.incomplete),
                    "" if len(features.incomplete) == 1 else "s",
                    "s" if len(features.incomplete) == 1 else "",
                    "is" if len(features.incomplete) == 1 else "are", first, ", ".join(lacking))
    return features


# -- summary -------------------------------------------------------------------------------
def _shown(shape: Tuple[int, ...], tv: Optional[int]) -> str:
    dims = ["Tv" if i == 0 and d == tv else str(d) for i, d in enumerate(shape)]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def summarize(features: Features) -> Dict[str, Any]:
    """Videos, stacks (Tv summed), and each key's shapes and dtypes (with how many videos
    have each), from shapes alone (HDF5 and ``.npy``: no data read)."""
    stacks = 0
    variants: Dict[str, Counter] = {}
    for name in features:
        shapes = features.shapes(name)
        stamps = shapes.get("timestamps_ms")
        tv = stamps[0][0] if stamps and len(stamps[0]) == 2 else None
        stacks += tv or 0
        for key, (shape, dtype) in shapes.items():
            variants.setdefault(key, Counter())[(_shown(tuple(shape), tv), str(dtype))] += 1
    order = list(features.output_keys) + sorted(set(variants) - set(features.output_keys))
    return {
        "source": features.source, "format": features.format,
        "files": list(getattr(features, "paths", [])) or None,
        "feature_type": features.feature_type, "videos": len(features), "stacks": stacks,
        "keys": {key: [{"shape": shape, "dtype": dtype, "videos": n}
                       for (shape, dtype), n in variants[key].most_common()]
                 for key in order if key in variants},
        "incomplete": len(features.incomplete),
    }


def format_summary(s: Dict[str, Any]) -> str:
    files = f" ({len(s['files'])} file{'' if len(s['files']) == 1 else 's'})" if s["files"] else ""
    lines = [f"{s['source']}: {s['format']}{files}, feature_type {s['feature_type']}",
             f"videos: {s['videos']}",
             f"stacks: {s['stacks']} (Tv summed over the videos)",
             "keys:"]
    for key, found in s["keys"].items():
        shown = "; ".join(f"{v['shape']} {v['dtype']}"
                          + (f" ({v['videos']} videos)" if len(found) > 1 else "") for v in found)
        lines.append(f"  {key}: {shown}")
    if s["incomplete"]:
        lines.append(f"incomplete: {s['incomplete']} video(s) lacking key files, not counted")
    return "\n".join(lines)


# -- pack and merge ------------------------------------------------------------------------
def _check_out(out: str, force: bool) -> None:
    if os.path.isdir(out):
        raise OutputError(f"{out} is a folder; expected the path of the .h5 file to write")
    if os.path.lexists(out) and not force:
        raise OutputError(f"{out} exists; --force replaces it")
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise OutputError(f"{folder}: no such folder (for {out})")


def write_h5(out: str, fill) -> None:
    """Write ``out`` whole or not at all: ``fill(f)`` fills a new file under a temporary name
    beside ``out``, which is fsynced and renamed over ``out``; on any error (or Ctrl-C) the
    temporary is removed and ``out`` is left as it was."""
    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w-", libver=h5_format.LIBVER) as f:
            fill(f)


def shown(text: str) -> str:
    """``text`` printable as UTF-8: an undecodable byte of a file name (a surrogate in the
    ``str``) is shown as ``\\xe9``."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _clash_message(source: str, clash: Tuple[str, str], keys: Sequence[str]) -> str:
    video, other = clash
    key = other[len(video) + 1:].split("/")[0]
    return (f"{shown(source)}: videos '{shown(video)}' and '{shown(other)}' cannot both be "
            f"stored in one .h5 file: '{shown(video)}/{key}' is the {key} dataset of the "
            f"first, where the second's group would go; rename one of them (nothing was "
            f"written)")


def _write_video(f, name: str, arrays, video_path: str, run: Optional[str], where: str) -> None:
    """``h5_format.write_video``, its refusals (a name the layout or HDF5 cannot hold) as an
    ``OutputError`` naming the video and where it comes from."""
    try:
        h5_format.write_video(f, name, arrays, video_path, run)
    except UnicodeEncodeError:
        raise OutputError(f"{shown(where)}: video '{shown(name)}' cannot be stored: its name "
                          "is not UTF-8 text, and HDF5 stores names as UTF-8 (nothing was "
                          "written)") from None
    except ValueError as e:
        raise OutputError(f"{shown(where)}: {shown(one_line(e))} (nothing was "
                          "written)") from None  # it names the video


def pack(folder: str, out: str, force: bool = False, format: Optional[str] = None
         ) -> Tuple[int, int]:
    """A folder of ``.npy`` (or ``.pkl``) outputs -> one ``.h5`` file of ``utils.outputs.h5_format``'s
    layout (``video_path`` and ``run`` from the folder's manifests when they name the video,
    the run records from ``runs/``).  An incomplete set (``utils.outputs.resume.outputs_complete``)
    is left out with a warning.  Returns (videos packed, sets left out)."""
    if format == "h5":
        raise OutputError("pack reads .npy or .pkl outputs; .h5 files are combined by merge")
    features = load(folder, format=format)
    if features.format == "h5":
        features.close()
        raise OutputError(f"{features.source} holds .h5 files; combine them with merge")
    assert isinstance(features, FileFeatures)
    _check_out(out, force)
    spec = FEATURE_TYPES[features.feature_type or ""]
    for name in features:
        if not _utf8(name):
            raise OutputError(f"{shown(features.files(name)[spec.keys[0]])}: the video's name "
                              "is not UTF-8 text (an undecodable byte in the file name), and "
                              "HDF5 stores names as UTF-8; rename its files, then pack again "
                              "(nothing was written)")
    clash = h5_format.name_clash(list(features), spec.keys)
    if clash is not None:
        raise OutputError(_clash_message(features.source, clash, spec.keys))
    counts = [0, 0]

    def fill(f):
        h5_format.init_file(f, spec.name)
        h5_format.add_runs(f, features.runs())
        for name in sorted(list(features) + features.incomplete):
            files = features.files(name, incomplete=True)
            if outputs_complete(files, spec.features) is None:
                log.warning("%s: incomplete or unreadable output set (%s), not packed",
                            name, ", ".join(sorted(files.values())))
                counts[1] += 1
                continue
            _write_video(f, name, features.read(name), features.video_path(name) or "",
                         features.run(name), shown(files[spec.keys[0]]))
            counts[0] += 1

    write_h5(out, fill)
    return counts[0], counts[1]


def merge(out: str, inputs: Sequence[str], force: bool = False) -> int:
    """Shard files -> one ``.h5`` (a video in two inputs is an ``OutputError`` naming both;
    the run records of all are kept).  Returns the number of videos."""
    for i, path in enumerate(inputs):
        if not _regular(path):
            raise OutputError(f"{path}: no such file (or not a regular file)")
        for other in inputs[:i]:
            if os.path.samefile(path, other):
                raise OutputError(f"{path} is given twice ({other})")
    _check_out(out, force)
    with H5Features(list(inputs), ", ".join(inputs)) as features:
        for name in features:
            if not _utf8(name):
                raise OutputError(f"{shown(features.file_of(name))}: video '{shown(name)}' "
                                  "has a name that is not UTF-8 text; it cannot be stored by "
                                  "this tool (nothing was written)")
        keys = FEATURE_TYPES[features.feature_type].keys \
            if features.feature_type in FEATURE_TYPES else ALL_KEYS
        clash = h5_format.name_clash(sorted(features), keys)
        if clash is not None:
            raise OutputError(_clash_message(
                f"{features.file_of(clash[0])}, {features.file_of(clash[1])}", clash, keys))

        def fill(f):
            h5_format.init_file(f, features.feature_type or "")
            h5_format.add_runs(f, features.runs())
            for name in sorted(features):
                _write_video(f, name, features.read(name), features.video_path(name) or "",
                             features.run(name), features.file_of(name))

        write_h5(out, fill)
        return len(features)


# -- command line --------------------------------------------------------------------------
def _message(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return f"{e.filename}: {e.strerror}" if e.filename else e.strerror
    return one_line(e)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m utils.outputs.features",
        description="Summarize, pack or merge extracted features (.npy, .pkl or .h5 outputs).")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("summary", help="videos, stacks, keys with shapes and dtypes")
    p.add_argument("path", help="<output_path>/<feature_type>, <output_path>, or one .h5 file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--format", choices=FORMATS, help="the format to read in a mixed folder")
    p = sub.add_parser("pack", help="a folder of .npy / .pkl outputs -> one .h5 file")
    p.add_argument("folder")
    p.add_argument("out", metavar="OUT.h5")
    p.add_argument("--format", choices=FILE_FORMATS, help="the format to read in a mixed folder")
    p.add_argument("--force", action="store_true", help="replace OUT.h5 if it exists")
    p = sub.add_parser("merge", help="shard .h5 files -> one .h5 file")
    p.add_argument("out", metavar="OUT.h5")
    p.add_argument("inputs", metavar="IN.h5", nargs="+")
    p.add_argument("--force", action="store_true", help="replace OUT.h5 if it exists")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="WARNING: %(message)s", stream=sys.stderr)

    try:
        if args.command == "summary":
            with load(args.path, format=args.format) as features:
                s = summarize(features)
            print(json.dumps(s, indent=1) if args.json else shown(format_summary(s)))
            return 0
        if args.command == "pack":
            packed, left = pack(args.folder, args.out, args.force, args.format)
            print(f"{shown(args.out)}: {packed} video{'' if packed == 1 else 's'} packed"
                  + (f"; {left} incomplete set{'' if left == 1 else 's'} left out" if left else ""))
            return 1 if left else 0
        count = merge(args.out, args.inputs, args.force)
        print(f"{shown(args.out)}: {count} video{'' if count == 1 else 's'} from {len(args.inputs)} "
              f"file{'' if len(args.inputs) == 1 else 's'}")
        return 0
    except (OutputError, OSError) as e:
        print(f"error: {shown(_message(e))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
