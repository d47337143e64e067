"""The loader: ``load(path)`` -> ``Features``, a mapping of output name -> {key: array} that
lists without reading arrays and reads a video's arrays when it is accessed (``.npy`` and
``.pkl`` files: ``FileFeatures``; ``.h5`` shard files: ``H5Features``).  See the package's doc."""
import logging
import os
import struct
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import h5py
import numpy as np

from utils.errors import one_line
from utils.networks import networks
from utils.outputs import h5_format, serialization
from utils.outputs.features.names import (FORMATS, OutputError, feature_folder,
                                          feature_type_of, in_network_order, infer_keys,
                                          locate, network_keys, regular_file,
                                          registered_keys, scan, stray_sets, video_sets, STAMPS)
from utils.outputs.h5_journal import count_journal, journal_path, read_journal
from utils.outputs.resume import check_arrays
from utils.outputs.safe_pickle import read_npy_header
from utils.records.manifests import latest_records
from utils.records.provenance import checked_runs, folder_runs

log = logging.getLogger(__name__)


class Features(Mapping[str, Dict[str, np.ndarray]]):
    """Output name -> {key: array}, read on access (see the module's doc).  ``format``: npy,
    pkl or h5; ``feature_type``; ``output_keys``: the network's keys (``output_features``: its
    per-stack keys and widths, a width None when the network is not registered here);
    ``source``: the folder or file
    read; ``incomplete``: names left out for a missing key file (or dataset); ``strays``:
    sets of files with another network's keys, left out (name -> one such key).  Close it
    (or use ``with``) to release open HDF5 files."""

    format: str
    source: str
    feature_type: Optional[str]
    incomplete: List[str]
    strays: Dict[str, str]
    _keys: Tuple[str, ...] = ()  # found in the outputs, for a network not registered here

    @property
    def output_keys(self) -> Tuple[str, ...]:
        """The network's keys (every video has them)."""
        spec = networks().get(self.feature_type or "")
        return spec.keys if spec else self._keys

    @property
    def output_features(self) -> Tuple[Tuple[str, Optional[int]], ...]:
        """The network's per-stack keys and widths (None: unknown here)."""
        spec = networks().get(self.feature_type or "")
        if spec:
            return spec.features
        return tuple((k, None) for k in self.output_keys if k not in ("timestamps_ms", "fps"))

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
                 feature_type: Optional[str], mmap: bool = False, keys: Sequence[str] = (),
                 strays: Optional[Dict[str, str]] = None):
        self.source, self.format, self.feature_type, self.mmap = root, fmt, feature_type, mmap
        self.strays = dict(strays or {})
        self._keys = tuple(keys)
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
        """As ``Features.read``; a video whose files are not a complete set (dtypes and shapes:
        ``utils.outputs.resume.check_arrays``) is an ``OutputError`` naming the file at fault.
        ``.npy`` files are checked through memory maps (headers and one row of timestamps)
        before the keys asked for are read; ``.pkl`` files are read whole once."""
        files = self._files[name]
        mapped = self.format == "npy"
        arrays = {key: _read_file(path, mapped or self.mmap) for key, path in files.items()}
        verdict = check_arrays(arrays, self.output_features)
        if verdict.done is None:
            raise OutputError(f"{files.get(verdict.key, next(iter(files.values())))}: "
                              f"{verdict.why} (video {name!r} is not a complete set)")
        wanted = keys or _ordered(files, self.output_keys)
        if mapped and not self.mmap:
            return {key: _read_file(files[key], False) for key in wanted}
        return {key: arrays[key] for key in wanted}

    def shapes(self, name):
        if self.format != "npy":
            return {k: (v.shape, v.dtype) for k, v in self.read(name).items()}
        found = {}
        for key, path in self._files[name].items():
            try:
                with open(path, "rb") as f:
                    shape, _, dtype = read_npy_header(f)
                    data, size = f.tell(), os.fstat(f.fileno()).st_size
            except Exception as e:  # noqa: BLE001
                raise OutputError(f"{path}: cannot be read ({one_line(e)})") from None
            # the header is checked against the file's size: it could claim any shape
            need = int(np.prod([int(d) for d in shape], dtype=object)) * dtype.itemsize
            if not dtype.hasobject and data + need > size:
                raise OutputError(f"{path}: damaged (its header claims shape {shape}, {need} "
                                  f"bytes of data, but the file holds {size - data})")
            found[key] = (shape, dtype)
        return found

    def _records(self) -> Dict[str, Tuple[str, Optional[str]]]:
        if self._manifest is None:
            self._manifest = {}
            for record in latest_records(self.source).values():
                if not record.made or record.outputs is None:
                    continue
                for location in record.outputs.values():
                    found = locate(self.source, location, self.output_keys)
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

    def __init__(self, paths: Sequence[str], source: str, warn: bool = True):
        self.source, self.paths, self.incomplete = source, list(paths), []
        self.strays = {}  # an .h5 holds its network's videos only
        self._open: List[h5py.File] = []
        self._where: Dict[str, int] = {}
        self._lacking: Dict[str, Tuple[int, List[str]]] = {}  # incomplete -> file, keys lacked
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
                    spec = networks().get(feature_type or "")
                    lacking: Dict[str, List[str]] = {}
                    for name in h5_format.video_names(f, registered_keys(), require=(
                            spec.keys if spec else (STAMPS, "fps")), lacking=lacking):
                        first = self._where.setdefault(name, i)
                        if first != i:
                            raise OutputError(f"video {name!r} is in two files: "
                                              f"{self.paths[first]} and {path}; keep one of them "
                                              "(files of runs with different num_shards?)")
                    for name, keys in lacking.items():
                        self._lacking.setdefault(name, (i, keys))
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
        self.incomplete = sorted(n for n in self._lacking if n not in self._where)
        if self.incomplete and warn:  # (merge warns of each instead)
            first = self.incomplete[0]
            i, keys = self._lacking[first]
            log.warning("%s: %d video group%s lack%s key datasets and %s not listed (first: "
                        "'%s' in %s, without %s)", source, len(self.incomplete),
                        "" if len(self.incomplete) == 1 else "s",
                        "s" if len(self.incomplete) == 1 else "",
                        "is" if len(self.incomplete) == 1 else "are", first, self.paths[i],
                        ", ".join(keys))

    def lacking(self, name: str) -> Tuple[str, List[str]]:
        """The file of an ``incomplete`` video and the keys it lacks."""
        i, keys = self._lacking[name]
        return self.paths[i], list(keys)

    def _file(self, i: int) -> h5py.File:
        while len(self._open) <= i:
            self._open.append(None)  # type: ignore[arg-type]
        if self._open[i] is None:
            path = self.paths[i]
            try:
                f = h5py.File(path, "r")
            except OSError as e:
                raise OutputError(h5_format.locked_message(path, e) or
                                  f"{path}: not a readable HDF5 file ({one_line(e)})") from None
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

    @property
    def output_keys(self) -> Tuple[str, ...]:
        """The network's keys: its spec's, else the first video's datasets."""
        spec = networks().get(self.feature_type or "")
        if spec:
            return spec.keys
        if not self._keys and self._where:
            first = next(iter(self._where))
            self._keys = in_network_order(self._datasets(first))
        return self._keys

    def _group(self, name: str):
        i = self._where[name]
        # a link name that is not UTF-8 was listed with surrogateescape: looked up by its bytes
        try:
            group = h5_format.video_group(self._file(i), name.encode("utf-8", "surrogateescape"))
        except h5_format.LinkError as e:
            raise OutputError(f"{self.paths[i]}: damaged ({one_line(e)})") from None
        if group is None:
            raise OutputError(f"{self.paths[i]}: video {name!r} is no longer there")
        return group

    def _datasets(self, name: str) -> Dict[str, Any]:
        group = self._group(name)
        try:
            return h5_format.video_datasets(group)
        except Exception as e:  # noqa: BLE001 - a damaged file raises OSError, KeyError...
            raise OutputError(f"{self.file_of(name)}: video {name!r} cannot be read "
                              f"({one_line(e)})") from None

    def _checked(self, name: str) -> Dict[str, Any]:
        """The video's datasets, unread, once they make a complete set
        (``utils.outputs.resume.check_arrays``: dtypes and shapes; one row of timestamps
        read) stored with built-in filters; ``OutputError`` naming the file, the video and
        the dataset at fault otherwise."""
        datasets = self._datasets(name)
        try:
            for key, dset in datasets.items():
                h5_format.check_filters(dset, key)
            verdict = check_arrays(datasets, self.output_features)
        except Exception as e:  # noqa: BLE001 - a damaged file raises OSError, KeyError...
            raise OutputError(f"{self.file_of(name)}: video {name!r} cannot be read "
                              f"({one_line(e)})") from None
        if verdict.done is None:
            raise OutputError(f"{self.file_of(name)}: video {name!r} is not a complete output "
                              f"set ({verdict.key}: {verdict.why})")
        return datasets

    def read(self, name, keys=None):
        self._checked(name)
        group = self._group(name)
        try:
            arrays = h5_format.read_video(group, tuple(keys) if keys else None)
        except Exception as e:  # noqa: BLE001 - a damaged file raises OSError, KeyError...
            raise OutputError(f"{self.file_of(name)}: video {name!r} cannot be read "
                              f"({one_line(e)})") from None
        return {key: np.asarray(arrays[key]) for key in (keys or _ordered(arrays, self.output_keys))}

    def shapes(self, name):
        """As ``Features.shapes``; a video that is not a complete set is an ``OutputError``."""
        return {key: (dset.shape, dset.dtype) for key, dset in self._checked(name).items()}

    def _attr(self, name: str, attr: str) -> Optional[str]:
        group = self._group(name)
        try:
            value = group.attrs.get(attr)
        except Exception as e:  # noqa: BLE001
            raise OutputError(f"{self.file_of(name)}: video {name!r} cannot be read "
                              f"({one_line(e)})") from None
        # bytes: a file name that is not UTF-8, kept as its bytes (h5_format.write_video)
        if isinstance(value, bytes):
            return os.fsdecode(bytes(value))
        if value is None or isinstance(value, str):
            return value
        # an array, a number...: never passed on (a caller would take it for a path or an id)
        log.warning("%s: video %r: its %s attribute is not text (%s); the video is read "
                    "without it (merge stores it without it)",
                    self.file_of(name), name, attr, _kind(value))
        return None

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


def _kind(value: Any) -> str:
    """What an attribute holds, in a few words (``int64 array of shape (3,)``)."""
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    return type(value).__name__


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
        if first is None or first[0].get("generation") != h5_format.file_generation(f, path):
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
        if not regular_file(path):
            raise OutputError(f"{path}: not a regular file or a folder")
        if format not in (None, "h5"):
            raise OutputError(f"{path}: a file; only an .h5 file is read alone (format={format})")
        return H5Features([path], path)
    folder = feature_folder(path)
    h5_files, files = scan(folder)
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
    stems = [n.rpartition(".")[0] for _, n in found]
    inferred = infer_keys(stems)
    spec_type = feature_type or feature_type_of(folder, inferred)
    spec = networks().get(spec_type or "")
    if spec is not None:
        keys = spec.keys
    elif not spec_type:
        raise OutputError(f"{folder}: cannot tell which network made the files (name the "
                          "folder after it, or pass feature_type=its name)")
    else:
        keys = network_keys(video_sets(folder, found, inferred), spec_type, inferred)
    by_name = video_sets(folder, found, keys)
    strays = stray_sets(folder, found, keys, inferred, by_name)
    if strays:
        first = next(iter(strays))
        log.warning("%s: %d set%s of files with keys that are not %s's %s not listed (first: "
                    "%s, with key %s): not outputs of this network", folder, len(strays),
                    "" if len(strays) == 1 else "s", spec_type,
                    "is" if len(strays) == 1 else "are", first, strays[first])
    features = FileFeatures(folder, format, by_name, spec_type, mmap=mmap, keys=keys,
                            strays=strays)
    if features.incomplete:
        first = features.incomplete[0]
        lacking = sorted(set(keys) - set(by_name[first]))
        log.warning("%s: %d video%s lack%s key files and %s not listed (first: %s, without %s); "
                    "the extraction run again redoes them", folder, len(features.incomplete),
                    "" if len(features.incomplete) == 1 else "s",
                    "s" if len(features.incomplete) == 1 else "",
                    "is" if len(features.incomplete) == 1 else "are", first, ", ".join(lacking))
    return features
