"""The HDF5 output layout (``on_extraction=save_h5``): one file per shard, a group per video.

``<output_path>/<feature_type>/<feature_type>-<shard>-of-<num_shards>.h5``::

    /                      attrs: format, feature_type, generation,
                                  run:<run id> = that run's provenance record (JSON text)
    /<output name>/        one group per video, named like its .npy files (without
                           ``_<key>.npy``; output_layout=mirror gives nested groups)
                           attrs: video_path (the input), run (the run id that made it)
        <key>              one dataset per key, as extracted: features float32 (Tv, width),
                           timestamps_ms float64 (Tv, 2), fps float64 scalar

Feature datasets (float32, Tv x width) are stored with the shuffle filter and deflate (gzip
level 4), one chunk per video: chosen by measurement (``benchmarks/bench_h5.py``: on S3D
features of seeded random weights, about half the bytes, with writing a few ms per MB
slower and reading faster; deflate is in every HDF5 build, unlike lzf).  Timestamps and fps
are stored as they are.  A group is a video when it has a ``video_path``
attribute; a video's group may also hold the groups of videos in a folder of the same name
(mirror layout).  Files are written by ``utils.outputs.h5_store`` (a run's shard file, never
modified in place) and by ``python -m utils.outputs.features pack`` / ``merge`` (a new file);
they are read by ``utils.outputs.features``.
"""
import json
import logging
import os
from typing import Any, Container, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import h5py
import numpy as np
from h5py import h5a, h5g, h5l, h5o, h5pl, h5z

from utils.console import printable_path
from utils.errors import one_line
from utils.files import check_free_space, is_utf8, loads_json, reserve_space
from utils.inputs.paths import parse_shard_name, shard_suffix

log = logging.getLogger(__name__)

FORMAT = "s3d-video-features/h5/1"
VIDEO_ATTR = "video_path"
RUN_ATTR = "run"
RUN_PREFIX = "run:"
# features: shuffle + deflate (every HDF5 build reads it), a chunk per video up to 4096 stacks
FEATURE_FILTER = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
CHUNK_ROWS = 4096
# HDF5 >= 1.10 formats: dense attribute storage (any number of run records on the root
# group) and a single-chunk index for a feature dataset (no B-tree per video)
LIBVER = ("v110", "latest")
# groups nested deeper than this (mirror layout folders) make a file damaged
MAX_DEPTH = 200
# deflate never expands data more than about 1032 times: a dataset that claims more bytes
# than that many times what it has stored is not read (unallocated chunks read as fill)
MAX_EXPANSION = 1100
# a run record's share of a file's live size besides its text (``h5_live``)
RUN_BYTES = 64


def disable_plugins() -> None:
    """Never load an HDF5 filter plugin: a file naming a filter that is not built in (a
    planted id) would make HDF5 load a shared library from its plugin folders
    (HDF5_PLUGIN_PATH, /usr/local/hdf5/lib/plugin) and run it.  h5py exposes no switch for
    that, so the search path is emptied (for the process; idempotent).  The layout's filters
    (deflate, shuffle) are built in; a dataset of another filter is refused (``check_filters``)."""
    while h5pl.size():
        h5pl.remove(0)


disable_plugins()  # at import: every reader and writer of the layout imports this module


def check_filters(dset, where: str) -> None:
    """``ValueError`` for a dataset stored with a filter this HDF5 does not have built in."""
    plist = dset.id.get_create_plist()
    for i in range(plist.get_nfilters()):
        code, _, _, name = plist.get_filter(i)
        if not h5z.filter_avail(code):
            named = f" ({_text(name)})" if name else ""
            raise ValueError(f"'{where}' is stored with filter {code}{named}, which is not "
                             "built into HDF5 here (plugins are never loaded)")


class LinkError(ValueError):
    """An object of a features file that is not a hard link to a real group or dataset: a
    soft or external link, a virtual dataset, a dataset in external files (never followed:
    it could name any file, a FIFO, or a file outside the output folder)."""


def _link_kind(links, raw: bytes, kind: int) -> str:
    try:
        value = links.get_val(raw)
    except (KeyError, ValueError, OSError):
        value = None
    if kind == h5l.TYPE_EXTERNAL:
        where = f" (to {_text(value[0])}:{_text(value[1])})" if value else ""
        return f"an external link{where}"
    if kind == h5l.TYPE_SOFT:
        return f"a soft link (to {_text(value)})" if value else "a soft link"
    return "a link of an unknown kind"


def _text(name) -> str:
    return name.decode("utf-8", "surrogateescape") if isinstance(name, bytes) else name


def check_dataset(dset, where: str) -> None:
    """``LinkError`` for a dataset whose data lives elsewhere (virtual, external storage)."""
    if dset.is_virtual:
        raise LinkError(f"'{where}' is a virtual dataset (its data is in other files)")
    if dset.external:
        raise LinkError(f"'{where}' is stored in external files")


def check_size(dset, file_size: int, where: str) -> None:
    """``ValueError`` for a dataset whose size the file's bytes cannot account for (checked
    before it is read: a 2 GB unallocated dataset in a 64 KB file is never read)."""
    nbytes = int(dset.size or 0) * dset.dtype.itemsize
    if nbytes == 0:
        return
    stored = dset.id.get_storage_size()
    if stored == 0 or stored > file_size or nbytes > MAX_EXPANSION * stored:
        raise ValueError(f"'{where}' claims {nbytes} bytes of data but stores {stored} (in a "
                         f"file of {file_size} bytes)")


def hard_get(parent, name):
    """The object at ``name`` under ``parent`` ('/'-separated, text or bytes), reached
    through hard links only; None when it is not there (or a part is a dataset).
    ``LinkError`` when a part is a soft or external link, or the object a virtual dataset or
    one with external storage: nothing is opened through a link."""
    sep = b"/" if isinstance(name, bytes) else "/"
    parts = [p for p in name.split(sep) if p]
    obj = parent
    for i, part in enumerate(parts):
        if not isinstance(obj, h5py.Group):
            return None
        # the link itself, by its bytes (a name that is not UTF-8 too), never its target
        raw = part if isinstance(part, bytes) else part.encode("utf-8", "surrogateescape")
        links = obj.id.links
        if not links.exists(raw):
            return None
        kind = links.get_info(raw).type
        if kind != h5l.TYPE_HARD:
            raise LinkError(f"'{_text(sep.join(parts[:i + 1]))}' is "
                            f"{_link_kind(links, raw, kind)}")
        obj = obj[part]
    if isinstance(obj, h5py.Dataset):
        check_dataset(obj, _text(name))
    return obj


def video_datasets(group, keys: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """The video group's datasets (``keys``: those, a missing one a ``KeyError``; None: every
    dataset in it), unread; ``LinkError`` for a member that is a link, a virtual dataset or
    one in external files."""
    found: Dict[str, Any] = {}
    for name in (keys if keys is not None else list(group)):
        obj = hard_get(group, name)
        if isinstance(obj, h5py.Dataset):
            found[name] = obj
        elif keys is not None:
            raise KeyError(f"'{name}' is not a dataset of the video")
    return found


def h5_name(feature_type: str, shard: int, num_shards: int) -> str:
    """The shard's file name: ``s3d-0-of-1.h5`` unsharded."""
    return f"{feature_type}{shard_suffix(shard, num_shards)}.h5"


def h5_shard(name: str, feature_type: str) -> Optional[Tuple[int, int]]:
    """``(shard, num_shards)`` of a shard file's name (``h5_name``), else None: the one rule
    of which ``.h5`` files in a network's folder are its outputs."""
    return parse_shard_name(name, feature_type, ".h5")


def create_reserved(path: str, need: int, what: str):
    """A new, empty file at ``path``, open for writing, with ``need`` bytes checked free and
    reserved at its end first (``utils.files``): h5py on a full disk crashes the process, so
    it never meets one (HDF5 cuts the file to its own end when it closes it).  ``OSError``
    (ENOSPC naming ``what``) before anything is written past the empty file."""
    check_free_space(os.path.dirname(os.path.abspath(path)), need, what)
    h5py.File(path, "w-", libver=LIBVER).close()
    reserve_space(path, need)
    return h5py.File(path, "r+", libver=LIBVER)


def init_file(f, feature_type: str) -> None:
    """Mark a new file with the layout's attributes."""
    f.attrs["format"] = FORMAT
    f.attrs["feature_type"] = feature_type
    f.attrs["generation"] = 0


def file_generation(f, path: str) -> int:
    """The open file's ``generation`` attribute (0 when absent): an integer scalar >= 0 that
    a checkpoint can raise by one within int64, else ``ValueError`` naming ``path`` and the
    attribute (the store calls such a file damaged: ``utils.outputs.h5_store``)."""
    value = f.attrs.get("generation", 0)
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)) \
            and 0 <= value < np.iinfo(np.int64).max:
        return int(value)
    shown = repr(value) if len(repr(value)) <= 40 else type(value).__name__
    raise ValueError(f"{path}: its generation attribute is {shown}, not a checkpoint count "
                     "(an integer >= 0)")


def check_file(f, path: str) -> None:
    """``ValueError`` naming ``path`` when the file is not one of ours."""
    found = f.attrs.get("format")
    if isinstance(found, bytes):
        found = found.decode("utf-8", "replace")
    if not (isinstance(found, str) and found == FORMAT):
        raise ValueError(f"{path} is not a features file of this tool (format {found!r}, "
                         f"expected {FORMAT!r})")


def locked_message(path: str, error: OSError) -> Optional[str]:
    """The one line for ``path`` when ``error`` (from ``h5py.File``) is HDF5's file lock held by
    another process (a writer has it open: EAGAIN, "unable to lock file"), else None.  The
    file is not damaged for that: it is to be waited for, never moved away; turning HDF5's
    locking off (HDF5_USE_FILE_LOCKING=FALSE) would read a file while it is written."""
    if not (isinstance(error, BlockingIOError) or "unable to lock file" in str(error)):
        return None
    return (f"{path} is open in another process (HDF5's file lock is held: a run or a script "
            "still writing it?); wait for that process to end, then run this again (the file "
            "is not damaged for that: do not move it away)")


def name_error(name: Any, key: bool = False) -> str:
    """Why ``name`` cannot name a video in the layout ('' when it can): a '/'-separated path
    of non-empty parts, none ``.`` or ``..`` (``/`` alone would name the root group, ``.``
    the group itself); ``key``: a dataset's name, one part."""
    if not isinstance(name, str) or not name:
        return "not a non-empty text"
    parts = name.split("/")
    if key and len(parts) > 1:
        return "a key is one name, without '/'"
    if any(part in ("", ".", "..") for part in parts):
        return "a part of it is empty, '.' or '..' (names are relative paths, without '//')"
    return ""


def write_video(f, name: str, arrays: Mapping[str, np.ndarray], video_path: str,
                run: Optional[str]) -> None:
    """The video's group, one dataset per key.  A group of that name already there (the video
    written before, or the folder of videos ``<name>/...`` in the mirror layout) keeps its
    groups: only its datasets and attributes are replaced.  A name (or key) the layout cannot
    hold (``name_error``) is a ``ValueError``."""
    why = name_error(name) or next((f"key {k!r}: {name_error(k, key=True)}" for k in arrays
                                    if name_error(k, key=True)), "")
    if why:
        raise ValueError(f"{name!r} cannot be stored: {why}")
    parts = name.split("/")
    parent = f
    for i, part in enumerate(parts):  # never through (or over) another video's dataset
        link = parent.get(part, getlink=True)
        if link is None:
            break
        if not isinstance(link, h5py.HardLink):  # never written through: replaced
            del parent[part]
            break
        parent = parent[part]
        if isinstance(parent, h5py.Dataset):
            raise ValueError(f"'{name}' cannot be stored: '{'/'.join(parts[:i + 1])}' is a "
                             "dataset of another video")
    group = hard_get(f, name)
    if isinstance(group, h5py.Group):
        folders = [key for key in arrays
                   if isinstance(group.get(key, getlink=True), h5py.HardLink)
                   and isinstance(group[key], h5py.Group)]
        if folders:
            raise ValueError(f"'{name}' cannot be stored: '{name}/{folders[0]}' holds the "
                             "groups of other videos")
        for key in list(group):
            link = group.get(key, getlink=True)
            if not (isinstance(link, h5py.HardLink) and isinstance(group[key], h5py.Group)):
                del group[key]
        for attr in list(group.attrs):
            del group.attrs[attr]
    else:
        group = f.create_group(name)
    if is_utf8(video_path):
        group.attrs[VIDEO_ATTR] = video_path
    else:  # a file name that is not UTF-8: its bytes, as they are
        group.attrs[VIDEO_ATTR] = np.bytes_(os.fsencode(video_path))
    if run:
        group.attrs[RUN_ATTR] = run
    for key, value in arrays.items():
        value = np.asarray(value)
        if value.ndim == 2 and value.dtype == np.float32 and value.size:
            group.create_dataset(key, data=value, chunks=(min(len(value), CHUNK_ROWS),
                                                          value.shape[1]), **FEATURE_FILTER)
        else:
            group.create_dataset(key, data=value)


def name_clash(names: Sequence[str], keys: Sequence[str]) -> Optional[Tuple[str, str]]:
    """Two videos the layout cannot hold together, or None: ``<name>/<key>`` is the dataset
    of video ``<name>``, so no other video's group may pass through it (mirror layout:
    ``/in/x.mp4`` and ``/in/x/s3d/y.mp4``)."""
    videos = set(names)
    keys = set(keys)
    for name in names:
        parts = name.split("/")
        for i in range(1, len(parts)):
            if parts[i] in keys and "/".join(parts[:i]) in videos:
                return "/".join(parts[:i]), name
    return None


def add_runs(f, records: Mapping[str, Dict[str, Any]]) -> int:
    """Record each run's provenance on the root group (``run:<id>``); a record already there
    as it is is not written again (HDF5 never reclaims a rewritten attribute's bytes).
    Returns the estimated bytes added (see ``live_bytes``)."""
    added = 0
    for run_id, record in records.items():
        text = json.dumps(record, sort_keys=True)
        name = RUN_PREFIX + run_id
        old = f.attrs.get(name)
        if old != text:
            f.attrs[name] = text
            added += run_bytes(name, text) - (run_bytes(name, old) if isinstance(old, str)
                                               else 0)
    return added


def run_bytes(name: str, text: str) -> int:
    return RUN_BYTES + len(name.encode("utf-8", "surrogateescape")) \
        + len(text.encode("utf-8", "surrogateescape"))


def runs(f) -> Dict[str, Any]:
    """The provenance records of the runs that wrote the file, by run id, as decoded JSON
    (checked by the reader: ``utils.records.provenance.checked_runs``); a value that is not
    JSON text is left out with a warning."""
    found: Dict[str, Any] = {}
    for name, value in f.attrs.items():
        if name.startswith(RUN_PREFIX):
            try:
                found[name[len(RUN_PREFIX):]] = loads_json(value)
            except (TypeError, ValueError) as e:
                log.warning("%s", printable_path(f"{f.filename}: attribute {name} is not a "
                                                 f"run record ({one_line(e)}), ignored"))
    return found


def first_videos(f, run_ids: Container[str]) -> Dict[str, str]:
    """Run id -> the first video of the file (``video_names`` order) that the run made (its
    group's ``run`` attribute), for the runs of ``run_ids`` that still own a video here; the
    walk stops once each is found."""
    found: Dict[str, str] = {}
    for name in video_names(f, ()):
        try:
            run = video_group(f, name).attrs.get(RUN_ATTR)
        except (LinkError, KeyError, AttributeError):
            continue
        if isinstance(run, str) and run in run_ids and run not in found:
            found[run] = name
            if all(i in found for i in run_ids):  # type: ignore[attr-defined]
                break
    return found


def video_names(f, datasets: Container[str], require: Sequence[str] = (),
                lacking: Optional[Dict[str, List[str]]] = None) -> Iterator[str]:
    """The output name of every video in the file, depth first in name order, without
    reading arrays (a million videos in half a minute): only links are listed and each group
    is opened once, for its ``video_path`` attribute.  ``datasets``: the keys; a video group's members of
    those names are its datasets and are not opened (a group cannot also hold a group of the
    same name).  Soft and external links are never followed.  ``require``: keys a video
    must have a link of (checked by name, nothing opened); a video lacking one is not
    yielded but put in ``lacking`` (name -> the keys it lacks)."""
    need = [(k, k.encode("utf-8", "surrogateescape")) for k in require]
    return _video_names(f.id, "", False, datasets, VIDEO_ATTR.encode(), set(), 0,
                        (need, lacking if lacking is not None else {}))


def _video_names(gid, prefix: str, is_video: bool, datasets: Container[str],
                 attr: bytes, seen: set, depth: int, need) -> Iterator[str]:
    """Each group is walked once (``seen``: object addresses; a group reached again by
    another hard link is listed under that name too, but not walked again: a DAG of links
    costs its links, not its paths), and no deeper than ``MAX_DEPTH``."""
    if depth > MAX_DEPTH:
        raise ValueError(f"groups nested deeper than {MAX_DEPTH} levels (at '{prefix}')")
    links: List[bytes] = []
    gid.links.iterate(lambda name, info: links.append(name) if info.type == h5l.TYPE_HARD
                      else None, info=True)
    for raw in links:
        name = raw.decode("utf-8", "surrogateescape")
        if is_video and name in datasets:
            continue
        try:
            child = h5g.open(gid, raw)
        except ValueError:  # not a group
            continue
        video = h5a.exists(child, attr)
        if video:
            missing = [k for k, raw_key in need[0] if not child.links.exists(raw_key)]
            if missing:
                need[1][prefix + name] = missing
            else:
                yield prefix + name
        addr = h5o.get_info(child).addr
        if addr in seen:
            continue
        seen.add(addr)
        yield from _video_names(child, prefix + name + "/", video, datasets, attr, seen,
                                depth + 1, need)


def video_group(f, name: str):
    """The group of the video named ``name``, or None; reached through hard links only
    (``LinkError`` otherwise, see ``hard_get``)."""
    group = hard_get(f, name)
    if not isinstance(group, h5py.Group) or VIDEO_ATTR not in group.attrs:
        return None
    return group


def read_video(group, keys: Optional[Tuple[str, ...]] = None) -> Dict[str, np.ndarray]:
    """The video's arrays (all keys, or ``keys``), read into memory: real datasets only
    (``video_datasets``), each checked against the file's size first (``check_size``)."""
    datasets = video_datasets(group, keys)
    size = file_size(group)
    for key, dset in datasets.items():
        check_size(dset, size, f"{group.name}/{key}")
        check_filters(dset, f"{group.name}/{key}")
    return {key: dset[()] for key, dset in datasets.items()}


def file_size(obj) -> int:
    """The size in bytes of the file holding ``obj``."""
    return obj.file.id.get_filesize()
