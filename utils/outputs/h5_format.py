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
import os
from typing import Any, Container, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import h5py
import numpy as np
from h5py import h5a, h5g, h5l

from utils.files import is_utf8
from utils.inputs.paths import parse_shard_name, shard_suffix

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


def h5_name(feature_type: str, shard: int, num_shards: int) -> str:
    """The shard's file name: ``s3d-0-of-1.h5`` unsharded."""
    return f"{feature_type}{shard_suffix(shard, num_shards)}.h5"


def h5_shard(name: str, feature_type: str) -> Optional[Tuple[int, int]]:
    """``(shard, num_shards)`` of a shard file's name (``h5_name``), else None: the one rule
    of which ``.h5`` files in a network's folder are its outputs."""
    return parse_shard_name(name, feature_type, ".h5")


def init_file(f, feature_type: str) -> None:
    """Mark a new file with the layout's attributes."""
    f.attrs["format"] = FORMAT
    f.attrs["feature_type"] = feature_type
    f.attrs["generation"] = 0


def check_file(f, path: str) -> None:
    """``ValueError`` naming ``path`` when the file is not one of ours."""
    found = f.attrs.get("format")
    if isinstance(found, bytes):
        found = found.decode("utf-8", "replace")
    if not (isinstance(found, str) and found == FORMAT):
        raise ValueError(f"{path} is not a features file of this tool (format {found!r}, "
                         f"expected {FORMAT!r})")


def write_video(f, name: str, arrays: Mapping[str, np.ndarray], video_path: str,
                run: Optional[str]) -> None:
    """The video's group, one dataset per key.  A group of that name already there (the video
    written before, or the folder of videos ``<name>/...`` in the mirror layout) keeps its
    groups: only its datasets and attributes are replaced."""
    parts = name.split("/")
    for i in range(1, len(parts) + 1):  # never through (or over) another video's dataset
        if isinstance(f.get("/".join(parts[:i])), h5py.Dataset):
            raise ValueError(f"'{name}' cannot be stored: '{'/'.join(parts[:i])}' is a "
                             "dataset of another video")
    group = f.get(name)
    if isinstance(group, h5py.Group):
        folders = [key for key in arrays if isinstance(group.get(key), h5py.Group)]
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


def add_runs(f, records: Mapping[str, Dict[str, Any]]) -> None:
    """Record each run's provenance on the root group (``run:<id>``)."""
    for run_id, record in records.items():
        f.attrs[RUN_PREFIX + run_id] = json.dumps(record, sort_keys=True)


def runs(f) -> Dict[str, Dict[str, Any]]:
    """The provenance records of the runs that wrote the file, by run id."""
    return {name[len(RUN_PREFIX):]: json.loads(value) for name, value in f.attrs.items()
            if name.startswith(RUN_PREFIX)}


def video_names(f, datasets: Container[str]) -> Iterator[str]:
    """The output name of every video in the file, depth first in name order, without
    reading arrays (a million videos in half a minute): only links are listed and each group
    is opened once, for its ``video_path`` attribute.  ``datasets``: the keys; a video group's members of
    those names are its datasets and are not opened (a group cannot also hold a group of the
    same name).  Soft and external links are never followed."""
    return _video_names(f.id, "", False, datasets, VIDEO_ATTR.encode())


def _video_names(gid, prefix: str, is_video: bool, datasets: Container[str],
                 attr: bytes) -> Iterator[str]:
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
            yield prefix + name
        yield from _video_names(child, prefix + name + "/", video, datasets, attr)


def video_group(f, name: str):
    """The group of the video named ``name``, or None."""
    group = f.get(name)
    if not isinstance(group, h5py.Group) or VIDEO_ATTR not in group.attrs:
        return None
    return group


def read_video(group, keys: Optional[Tuple[str, ...]] = None) -> Dict[str, np.ndarray]:
    """The video's arrays (all keys, or ``keys``), read into memory."""
    names = keys or [k for k in group if isinstance(group[k], h5py.Dataset)]
    return {key: group[key][()] for key in names}
