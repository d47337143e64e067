"""The search index of an ``s3d_howto100m`` feature folder: every video embedding in one matrix.

    python -m models.s3d_howto100m.search index OUTPUT_PATH

writes two files into the feature folder (``<output_path>/s3d_howto100m``), together
(``utils.files.atomic_write_all``: a reader sees the old pair, the new pair, or no index):

- ``search-index.npy``: (rows, 512) float16, the ``video_embedding`` rows of every video,
  video after video (memory-mapped by the search), then the build's random ``token``
  (16 ASCII bytes after the array: ``np.load`` ignores them);
- ``search-index.json``: ``max_norm``, the largest L2 norm of a row; ``videos``: ``[path, identity, first row, rows]`` of each indexed
  video, in row order (row ``first + i`` is its stack ``i``), and ``unindexed``:
  ``[path, identity]`` of videos that were unreadable or whose values float16 cannot hold
  (the search reads them from their files, with no hint to rebuild while they stay so).

A video's ``identity`` (a SHA-256, cut to 32 hex digits) is of what changes whenever its
embeddings may have: the run and ``Tv`` of its latest manifest record, the location of its
``video_embedding`` output and that file's size and modification time (for ``.h5``
outputs, the shard file's: a checkpoint of the file makes its videos look changed).  The times of a hit, like its
score, always come from the video's files (``search_exact``), never from the index.
The search serves a video from the index only when its identity now is the one recorded;
others are read from their files.  Building again reuses the rows of unchanged videos.

Neither file is trusted when read back: no link is followed, the matrix's header, dtype,
shape, size and token must agree with the JSON (a reader racing a rebuild, or a file copied
from another build, is caught) and the JSON's size is bounded; anything wrong is one
warning, and the search then reads every video from its files.
"""
import hashlib
import json
import logging
import math
import os
import secrets
import stat
import struct
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from models.s3d_howto100m import search as base
from models.s3d_howto100m.spec import EMBEDDING_DIM, EMBEDDING_KEY
from utils.errors import one_line
from utils.files import atomic_write_all, loads_json, open_regular
from utils.outputs.features.names import climbs
from utils.records.manifests import latest_records
from utils.records.schema import ManifestRecord

log = logging.getLogger(__name__)

MATRIX_FILE = "search-index.npy"
META_FILE = "search-index.json"
FORMAT = "s3d_howto100m/search-index/1"
DTYPE = np.dtype("<f2")
MAX_META_BYTES = 2**30  # a larger search-index.json is not read (about 10M videos)
_HEADER_BYTES = 128  # the .npy header is written at this fixed length (rows filled in last)
TOKEN_BYTES = 16  # a random token after the rows, also in the JSON: the two are one build
INDEX_COMMAND = "python -m models.s3d_howto100m.search index"


@dataclass
class Entry:
    """A searchable video of the folder's manifests (its latest record made its outputs)."""

    path: str
    record: ManifestRecord
    identity: Optional[str]  # None: unknown (a missing output, a link): never from the index


def _roots(folder: str) -> List[str]:
    """The folder as manifests may name it: absolute, and with its links resolved."""
    found = [os.path.abspath(folder), os.path.realpath(folder)]
    return [root.rstrip(os.sep) + os.sep for root in dict.fromkeys(found)]


def identity_of(folder: str, record: ManifestRecord, roots: Optional[List[str]] = None) -> Optional[str]:
    """The video's identity (see the module's doc), or None when an output is missing, is a
    link or not a regular file, or lies outside ``folder`` (as ``utils.outputs.features.locate``
    places a manifest's locations: relative ones in ``folder``, never climbing out with ``..``,
    ``<file>.h5/<name>/<key>``)."""
    outputs = record.outputs
    if outputs is None:
        return None
    roots = roots or _roots(folder)
    if not isinstance(outputs.get("timestamps_ms"), str):
        return None
    parts: list = [record.run, record.Tv]
    for key in (EMBEDDING_KEY,):  # a hit's times are always read from its files
        location = outputs.get(key)
        if not isinstance(location, str) or climbs(location):
            return None
        path = os.path.normpath(os.path.join(roots[0], location))
        root = next((r for r in roots if path.startswith(r)), None)
        if root is None:
            return None
        rel = path[len(root):].split(os.sep)
        h5 = len(rel) >= 3 and rel[0].endswith(".h5")
        try:
            st = os.lstat(root + rel[0] if h5 else path)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        parts += [location, st.st_size, st.st_mtime_ns]
    return hashlib.sha256(json.dumps(parts).encode("utf-8", "surrogateescape")).hexdigest()[:32]


def searchable(folder: str) -> List[Entry]:
    """Every video of the folder's manifests whose latest record made its outputs."""
    roots = _roots(folder)
    entries = []
    for path, record in latest_records(folder).items():
        if record.made:
            entries.append(Entry(path, record, identity_of(folder, record, roots)))
    return entries


# -- the files -------------------------------------------------------------------------------
def _npy_header(rows: int) -> bytes:
    """A version 1.0 ``.npy`` header for (rows, 512) float16, always ``_HEADER_BYTES`` long."""
    text = repr({"descr": DTYPE.str, "fortran_order": False, "shape": (rows, EMBEDDING_DIM)})
    pad = _HEADER_BYTES - 10 - len(text) - 1
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", _HEADER_BYTES - 10) \
        + text.encode("latin1") + b" " * pad + b"\n"


@dataclass
class Index:
    """An index read back: the memory-mapped matrix and where each video's rows are."""

    matrix: np.ndarray  # (rows, 512) float16, memory-mapped
    paths: List[str]
    identities: List[Optional[str]]
    starts: np.ndarray  # int64, first row of each video
    counts: np.ndarray  # int64, its rows
    max_norm: float  # the largest L2 norm of a row (as float16)
    unindexed: Dict[str, Optional[str]] = field(default_factory=dict)  # path -> identity

    @property
    def rows(self) -> int:
        return int(self.matrix.shape[0])

    def by_path(self) -> Dict[str, int]:
        return {p: i for i, p in enumerate(self.paths)}


def index_paths(folder: str) -> Tuple[str, str]:
    return os.path.join(folder, MATRIX_FILE), os.path.join(folder, META_FILE)


def _read_meta(path: str) -> dict:
    fd = open_regular(path)  # never through a link, never a FIFO
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_META_BYTES:
            raise ValueError(f"{size} bytes, over the {MAX_META_BYTES} read")
        meta = loads_json(f.read(MAX_META_BYTES + 1).decode("utf-8"))
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"not an index of this tool (format {FORMAT!r} expected)")
    return meta


def _map_matrix(path: str, rows: int, token: str) -> np.ndarray:
    fd = open_regular(path)
    with os.fdopen(fd, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version != (1, 0):
            raise ValueError(f".npy version {version}, expected (1, 0)")
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        offset = f.tell()
        if dtype != DTYPE or fortran or tuple(shape) != (rows, EMBEDDING_DIM):
            raise ValueError(f"matrix {shape} {dtype}, expected ({rows}, {EMBEDDING_DIM}) "
                             f"{DTYPE} (the JSON's)")
        size = os.fstat(f.fileno()).st_size
        end = offset + rows * EMBEDDING_DIM * DTYPE.itemsize
        if size != end + TOKEN_BYTES:
            raise ValueError(f"matrix file of {size} bytes does not hold {rows} rows")
        f.seek(end)
        if f.read(TOKEN_BYTES) != token.encode("ascii", "replace"):
            raise ValueError("the matrix and the JSON are of different builds")
        if rows == 0:
            return np.zeros((0, EMBEDDING_DIM), DTYPE)
        return np.memmap(f, dtype=DTYPE, mode="r", offset=offset, shape=(rows, EMBEDDING_DIM))


def _entries(meta: dict) -> Tuple[List[list], List[list]]:
    videos, unindexed = meta.get("videos"), meta.get("unindexed", [])
    if not isinstance(videos, list) or not isinstance(unindexed, list):
        raise ValueError("videos and unindexed must be lists")
    row = 0
    for v in videos:
        if not (isinstance(v, list) and len(v) == 4 and isinstance(v[0], str)
                and isinstance(v[1], (str, type(None))) and all(
                    isinstance(x, int) and not isinstance(x, bool) for x in v[2:])):
            raise ValueError("a video is not [path, identity, first row, rows]")
        if v[2] != row or v[3] < 1:
            raise ValueError(f"{v[0]}: rows {v[2]}+{v[3]} do not follow row {row}")
        row += v[3]
    for v in unindexed:
        if not (isinstance(v, list) and len(v) == 2 and isinstance(v[0], str)
                and isinstance(v[1], (str, type(None)))):
            raise ValueError("an unindexed video is not [path, identity]")
    if row != meta.get("rows"):
        raise ValueError(f"the videos hold {row} rows, not {meta.get('rows')!r}")
    norm = meta.get("max_norm")
    if not (isinstance(norm, (int, float)) and not isinstance(norm, bool)
            and math.isfinite(norm) and norm >= 0):  # an int beyond float: OverflowError
        raise ValueError(f"max_norm {norm!r} is not a number >= 0")
    paths = [v[0] for v in videos] + [v[0] for v in unindexed]
    if len(set(paths)) != len(paths):
        raise ValueError("a video is listed twice")
    return videos, unindexed


def open_index(folder: str, quiet: bool = False) -> Optional[Index]:
    """The folder's index, or None: absent, or unusable (one warning, unless ``quiet``)."""
    matrix_path, meta_path = index_paths(folder)
    if not (os.path.lexists(matrix_path) or os.path.lexists(meta_path)):
        return None
    try:
        meta = _read_meta(meta_path)
        videos, unindexed = _entries(meta)
        matrix = _map_matrix(matrix_path, int(meta["rows"]), str(meta.get("token")))
    except (OSError, ValueError, UnicodeDecodeError, KeyError, OverflowError) as e:
        if not quiet:
            log.warning("%s: the search index is not used (%s); every video is read from its "
                        "files. To rebuild it: %s %s", folder,
                        one_line(getattr(e, "strerror", None) or e, 200), INDEX_COMMAND, folder)
        return None
    return Index(matrix, [v[0] for v in videos], [v[1] for v in videos],
                 np.array([v[2] for v in videos], np.int64),
                 np.array([v[3] for v in videos], np.int64), float(meta["max_norm"]),
                 {v[0]: v[1] for v in unindexed})


# -- building ------------------------------------------------------------------------------
@dataclass
class Built:
    """What ``build`` did."""

    videos: int = 0  # indexed
    rows: int = 0
    reused: int = 0  # videos whose rows came from the previous index
    read: int = 0  # videos read from their files
    skipped: List[str] = field(default_factory=list)  # unreadable videos
    unindexed: int = 0  # values float16 cannot hold


def _half(embedding: np.ndarray) -> Optional[np.ndarray]:
    """``embedding`` as float16, or None if a value is not finite there (over 65504, NaN)."""
    with np.errstate(over="ignore", invalid="ignore"):
        half = np.ascontiguousarray(embedding, dtype=DTYPE)
    return half if np.isfinite(half).all() else None


def build(folder: str) -> Built:
    """Build or bring up to date the index of ``folder`` (a feature folder with manifests)."""
    entries = searchable(folder)
    old = open_index(folder, quiet=True)
    previous: Dict[str, Tuple[Optional[str], int, int]] = {}
    if old is not None:
        previous = {p: (i, int(s), int(c)) for p, i, s, c
                    in zip(old.paths, old.identities, old.starts, old.counts)}
    done = Built()
    videos: List[list] = []
    unindexed: List[list] = []
    max_norm = 0.0
    outputs = base._Outputs(folder)
    matrix_path, meta_path = index_paths(folder)
    try:
        with atomic_write_all([matrix_path, meta_path]) as files:
            out = files[matrix_path].file
            out.write(_npy_header(0))
            for entry in entries:
                if entry.identity is None:  # outputs missing or not regular files
                    log.warning("%s: not indexed: an output is missing, not a regular file, or "
                                "outside %s", entry.path, folder)
                    done.skipped.append(entry.path)
                    unindexed.append([entry.path, None])
                    continue
                block = None
                old_identity, start, count = previous.get(entry.path, (None, 0, 0))
                if old is not None and old_identity == entry.identity:
                    block = np.asarray(old.matrix[start:start + count])
                    done.reused += 1
                else:
                    try:  # the identity was taken before the read: a change meanwhile shows
                        video = base._video(outputs, entry.record)
                    except Exception as e:  # noqa: BLE001 -- any reader's error skips one video
                        log.warning("%s: not indexed: %s", entry.path,
                                    one_line(getattr(e, "strerror", None) or e, 300))
                        done.skipped.append(entry.path)
                        unindexed.append([entry.path, entry.identity])
                        continue
                    done.read += 1
                    block = _half(video.embedding)
                    if block is None:
                        unindexed.append([entry.path, entry.identity])
                        done.unindexed += 1
                        continue
                if len(block) == 0:  # no stack (the loader refuses Tv = 0): from its files
                    unindexed.append([entry.path, entry.identity])
                    done.unindexed += 1
                    continue
                out.write(block.tobytes())
                max_norm = max(max_norm, float(np.linalg.norm(block.astype(np.float32),
                                                              axis=1).max()))
                videos.append([entry.path, entry.identity, done.rows, len(block)])
                done.rows += len(block)
            token = secrets.token_hex(TOKEN_BYTES // 2)
            out.write(token.encode("ascii"))  # after the rows; the JSON holds it too
            out.seek(0)
            out.write(_npy_header(done.rows))
            meta = {"format": FORMAT, "dtype": DTYPE.str, "dim": EMBEDDING_DIM,
                    "rows": done.rows, "max_norm": max_norm, "videos": videos,
                    "unindexed": unindexed, "token": token}
            # ASCII JSON: a file name that is not UTF-8 (surrogates) comes back as it was
            files[meta_path].file.write(json.dumps(meta, separators=(",", ":")).encode("ascii"))
    finally:
        outputs.close()
    done.videos = len(videos)
    return done
