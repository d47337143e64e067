"""A shard file's live size and its rewrite without dead space (``utils.outputs.h5_store``'s
folds use them).  HDF5 never reclaims the bytes an append session leaves dead (about 5 KB a
checkpoint, and a rewritten attribute's old copy), so the file keeps an estimate of its
live size (``live_bytes``), and a fold that finds the file grown well past it writes the
live objects alone into a new file (``copy_live``).
"""
import logging
import os
from typing import Any, Optional

import numpy as np

from utils.console import printable_path
from utils.errors import one_line
from utils.outputs.h5_format import (RUN_ATTR, RUN_PREFIX, VIDEO_ATTR, check_size, file_size,
                                     run_bytes, video_datasets, video_group, video_names)

log = logging.getLogger(__name__)

# the live size estimate (``live_bytes``): what a packed file spends besides the datasets'
# bytes, for the file (BASE), each video (its group, link, attributes and dataset headers:
# about 1.3 KB measured, plus its names) and each run record (plus its text)
LIVE_ATTR = "live_bytes"
BASE_BYTES = 8192
VIDEO_BYTES = 1536


def live_bytes(f) -> Optional[int]:
    """The file's estimated size without dead space (the ``live_bytes`` attribute: what its
    videos' datasets store, ``VIDEO_BYTES`` and the names for each video, its run records;
    kept up to date by each write), or None when the file does not say (a file of an earlier
    version, or a damaged value)."""
    value = f.attrs.get(LIVE_ATTR)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 0:
        return int(value)
    return None


def video_bytes(group, name: str, video_path: Any) -> int:
    """What the video adds to the live size of its file (``live_bytes``)."""
    stored = sum(dset.id.get_storage_size() for dset in video_datasets(group).values())
    path = os.fsencode(video_path) if isinstance(video_path, (str, bytes)) else b""
    return stored + VIDEO_BYTES + len(name.encode("utf-8", "surrogateescape")) + len(path)


def stored_bytes(f, name: str) -> int:
    """What the video ``name`` now in the file counts in its live size (``video_bytes``; 0
    when there is none, or it is damaged): a video written again replaces it."""
    try:
        group = video_group(f, name)
        return 0 if group is None else video_bytes(group, name, group.attrs.get(VIDEO_ATTR))
    except (KeyError, ValueError, OSError, RuntimeError):
        return 0


def copy_live(src, dst, where: str = "") -> int:
    """Write the live objects of file ``src`` into the new file ``dst``: its attributes of
    the layout (format, feature type, generation, run records) and every video reached
    through hard links (``video_names``) with its ``video_path`` and ``run`` attributes
    and its datasets, copied as stored (no decompression), and the records of the runs that
    made them.  Anything else -- dead space, planted objects, links, the records of runs
    whose videos were all redone, a video whose datasets are links or claim more bytes than the
    file holds (logged) -- is left behind.  Returns the new file's live size estimate, also
    stored as its ``live_bytes``."""
    for name in ("format", "feature_type", "generation"):
        if name in src.attrs:
            dst.attrs[name] = src.attrs[name]
    live = BASE_BYTES
    owners = set()  # the runs that made a video kept
    size = file_size(src)
    for name in video_names(src, ()):
        try:
            group = video_group(src, name)
            datasets = video_datasets(group)
            for key, dset in datasets.items():
                check_size(dset, size, f"{name}/{key}")
        except (KeyError, ValueError, OSError) as e:
            log.warning("%s", printable_path(
                f"{where or src.filename}: video '{name}' is damaged ({one_line(e)}); left "
                "out when the file is rewritten, extracted again by the next run"))
            continue
        out = dst.require_group(name)
        for attr in (VIDEO_ATTR, RUN_ATTR):
            if attr in group.attrs:
                out.attrs[attr] = group.attrs[attr]
        for key, dset in datasets.items():
            src.copy(dset, out, name=key)
        live += video_bytes(out, name, group.attrs.get(VIDEO_ATTR, ""))
        run = group.attrs.get(RUN_ATTR)
        if isinstance(run, str):
            owners.add(run)
    for name, text in src.attrs.items():  # the records of runs that made a video kept
        if name.startswith(RUN_PREFIX) and name[len(RUN_PREFIX):] in owners \
                and isinstance(text, str):
            dst.attrs[name] = text
            live += run_bytes(name, text)
    dst.attrs[LIVE_ATTR] = np.int64(live)
    return live
