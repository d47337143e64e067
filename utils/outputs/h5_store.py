"""A shard's HDF5 file, written so that ``kill -9`` at any moment loses nothing finished.

An HDF5 file modified in place can be left unreadable by a kill in the middle of a write, so
the shard's ``.h5`` is never modified in place:

- each finished video is appended to a journal beside it (``.<name>.h5.journal``,
  ``utils.outputs.h5_journal``): one record (a JSON header, the raw arrays, a SHA-256 of
  both), fsynced before the video is reported done.  A record cut short by a kill fails its
  checksum and is ignored;
- at a checkpoint (the end of the run, Ctrl-C or SIGTERM, the next run's start, or when the
  journal has grown as large as the file: copying stays linear in the data) the file is
  copied to a temporary, the journal's videos are added to the copy, and the copy is
  fsynced and renamed over the file; then the journal is removed.

The journal's first record names the file's ``generation`` it extends; a checkpoint raises
the file's generation by one.  So a kill between the rename and the journal's removal is
seen on the next start (the journal's generation is behind the file's) and the journal is
dropped, not applied twice.  A reader of the ``.h5`` (``utils.outputs.features``) sees the file as
of the last checkpoint.
"""
import contextlib
import itertools
import logging
import os
import shutil
import stat
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import h5py
import numpy as np

from utils.outputs import h5_format, h5_live
from utils.config import ExtractionConfig
from utils.console import printable_path
from utils.networks import network
from utils.errors import InputError, one_line
from utils.files import (atomic_path, check_free_space, find_temporaries, is_utf8, open_regular,
                         remove_temporaries, reserve_space, temporary_name)
from utils.outputs.h5_journal import (count_journal, encode, journal_of, journal_path,
                                      read_journal)
from utils.outputs.resume import arrays_complete
from utils.records.provenance import checked_runs, differences

log = logging.getLogger(__name__)

# fold the journal into the file when it is this large and at least as large as the file
MIN_CHECKPOINT_BYTES = 256 * 2**20
# a fold rewrites the file's live objects alone when the file has grown past this many times
# their size (each append session leaves about 5 KB dead: ``h5_live.live_bytes``)
REPACK_AT = 1.1
# space reserved for a fold beyond the journal's bytes: the file, and each video's metadata
FOLD_SLACK = 2**20
VIDEO_SLACK = 4096


Lost = Callable[[str, str], None]  # (video path, why): a journaled video left out of the file


def generation(path: str) -> int:
    """The file's checkpoint count (0 when there is no file yet); ``ValueError`` naming the
    file when its ``generation`` attribute is not one (``file_generation``)."""
    if not os.path.exists(path):
        return 0
    with h5py.File(path, "r") as f:
        return h5_format.file_generation(f, path)


def fold(path: str, feature_type: str, on_lost: Optional[Lost] = None) -> int:
    """Fold the journal beside ``path`` (if any) into it: copy the file, add the journal's
    videos, fsync, rename over the file, remove the journal.  Returns the number of videos
    added.  ``OSError`` (disk full: checked before anything is written, and the space the
    copy needs reserved before h5py writes there) or a damaged file: the file is left as it
    was, the journal kept and the temporary removed.  A video that cannot be stored is left
    out and reported to ``on_lost`` (``claim`` refuses such videos before they are
    extracted: this is the last line).  When the file has grown past ``REPACK_AT`` times
    its live size (HDF5 never reclaims the bytes an append leaves dead), the copy is
    rewritten with its live objects alone (``h5_live.copy_live``)."""
    journal = journal_path(path)
    if not os.path.lexists(journal):
        return 0
    records = read_journal(journal)
    try:
        first = next(records, None)
        if first is None or "generation" not in first[0]:
            _remove(journal)  # killed before its first record was written whole
            return 0
        header = first[0]
        if header["generation"] != generation(path):
            log.info("%s was already folded into %s; removed", journal, path)
            _remove(journal)
            return 0
        second = next(records, None)
        if second is None:
            _remove(journal)  # no video was journaled whole
            return 0
        size = os.path.getsize(path) if os.path.exists(path) else 0
        extra = os.path.getsize(journal) + FOLD_SLACK + count_journal(journal) * VIDEO_SLACK
        check_free_space(os.path.dirname(path) or ".", size + extra,
                         f"adding {journal} to {path}")
        with atomic_path(path) as tmp:
            count, live = _fold_into(path, tmp, header, itertools.chain([second], records),
                                     feature_type, on_lost, extra)
            if live is None or os.path.getsize(tmp) > REPACK_AT * live:
                try:
                    _repack(tmp, path)
                except (OSError, ValueError, KeyError, RuntimeError) as e:
                    # optional: no room for a second copy, or a file h5py cannot copy
                    log.warning("%s: not rewritten without its dead space (%s); kept as folded",
                                path, getattr(e, "strerror", None) or one_line(e))
    finally:
        records.close()
    _remove(journal)
    log.info("%d video%s added to %s", count, "" if count == 1 else "s", path)
    return count


def _fold_into(path: str, tmp: str, header: Dict[str, Any], records, feature_type: str,
               on_lost: Optional[Lost], extra: int) -> Tuple[int, Optional[int]]:
    """Write the file with the journal's videos added under ``tmp``, with ``extra`` bytes
    reserved for them first; their number, and the new file's live size estimate (None
    when the file had none: ``h5_live.live_bytes``)."""
    if os.path.exists(path):
        shutil.copyfile(path, tmp)
    else:
        with h5py.File(tmp, "w-", libver=h5_format.LIBVER) as f:
            h5_format.init_file(f, header.get("feature_type", feature_type))
            f.attrs[h5_live.LIVE_ATTR] = np.int64(h5_live.BASE_BYTES)
    reserve_space(tmp, extra)  # h5py on a full disk crashes the process: never let it meet one
    count = 0
    with h5py.File(tmp, "r+", libver=h5_format.LIBVER) as f:
        live = h5_live.live_bytes(f)
        added = h5_format.add_runs(f, {header["run"]: header["record"]})
        for video, arrays in records:
            replaced = h5_live.stored_bytes(f, video["name"]) if live is not None else 0
            try:
                h5_format.write_video(f, video["name"], arrays, video["video_path"],
                                      video["run"])
            except (ValueError, KeyError, TypeError, UnicodeError, RuntimeError) as e:
                # the name (RuntimeError: h5py's for a link name HDF5 will not look up)
                why = f"cannot be stored in {path} ({e})"
                log.error("%s: %s", video["video_path"], why)
                if on_lost:
                    on_lost(video["video_path"], why)
                continue
            added += h5_live.video_bytes(f[video["name"]], video["name"],
                                           video["video_path"]) - replaced
            count += 1
        f.attrs["generation"] = np.int64(h5_format.file_generation(f, path) + 1)
        if live is not None:
            live += added
            f.attrs[h5_live.LIVE_ATTR] = np.int64(live)
    return count, live


def _repack(tmp: str, path: str) -> None:
    """Rewrite the fold's copy ``tmp`` of ``path`` with its live objects alone
    (``h5_live.copy_live``), through a temporary named for ``path`` (a kill leaves one
    that the next run of the shard removes)."""
    size = os.path.getsize(tmp)
    packed = temporary_name(path)
    try:
        with h5py.File(tmp, "r") as src, \
                h5_format.create_reserved(packed, size + FOLD_SLACK, f"rewriting {path}") as dst:
            live = h5_live.copy_live(src, dst, path)
        os.replace(packed, tmp)
    finally:
        _remove(packed)
    log.info("%s rewritten without its dead space: %d -> %d bytes (live estimate %d)",
             path, size, os.path.getsize(tmp), live)


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def _shard_files(root: str, feature_type: str) -> Dict[str, int]:
    """Every shard file of ``root`` (``h5_format.h5_shard``), and the file of every shard
    journal whose file does not exist yet, sorted: path -> its num_shards."""
    found = {}
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(root):
            name = journal_of(entry.name) or entry.name
            shard = h5_format.h5_shard(name, feature_type)
            if shard and entry.is_file(follow_symlinks=False):  # never a link or a FIFO
                found[os.path.join(root, name)] = shard[1]
    return dict(sorted(found.items()))


class H5Store:
    """The outputs of one shard in one HDF5 file (see the module's doc).

    ``record``: this run's provenance record (stored on the file with its videos).  Opening
    folds the journal a killed run left, and those of runs with another ``num_shards`` (the
    lock, ``utils.records.lock``, guarantees none of them is alive); ``close()`` folds this run's.  A
    video counts as done when any shard file of the folder holds it whole (re-sharding, or a
    list that grew, moves videos between shards: they are not extracted again).
    ``on_lost``: told of a journaled video a fold had to leave out.  ``writable=False``:
    only answers ``complete`` (a read-only folder; videos still in a journal count as not
    done).
    """

    def __init__(self, root: str, feature_type: str, shard: int, num_shards: int,
                 keys: Sequence[str], features: Sequence[Tuple[str, int]], run_id: str,
                 record: Dict[str, Any], writable: bool = True, on_lost: Optional[Lost] = None):
        self.root = root
        self.writable = writable
        self.path = os.path.join(root, h5_format.h5_name(feature_type, shard, num_shards))
        self.journal = journal_path(self.path)
        self.feature_type = feature_type
        self.keys = tuple(keys)
        self.features = features
        self.run_id = run_id
        self.record = record
        self.on_lost = on_lost
        self._fd: Optional[int] = None  # the journal, open for appending
        self._journal_bytes = 0
        self._readers: List[h5py.File] = []
        self._found: Dict[str, str] = {}  # video -> the file holding it, when not ours
        if writable:
            os.makedirs(root, exist_ok=True)
        for path in (self.path, self.journal):
            if os.path.lexists(path) and not stat.S_ISREG(os.lstat(path).st_mode):
                raise InputError(f"output_path: {path} is not a regular file (a link, a "
                                 "folder or a special file); move it away")
        if writable:
            temporaries = find_temporaries(root)
            # ours, and those of runs with another num_shards: none is alive (the lock)
            for path in [self.path] + [p for p, k in _shard_files(root, feature_type).items()
                                       if k != num_shards]:
                remove_temporaries([path], temporaries)  # a killed checkpoint's copy
                if os.path.lexists(journal_path(path)):
                    self._fold_at_start(path)
        try:
            self._readers = [self._open_reader(self.path, own=True)] + [
                self._open_reader(p, own=False) for p in _shard_files(root, feature_type)
                if p != self.path]
        except InputError:
            self.close()
            raise
        self._readers = [r for r in self._readers if r is not None]

    @classmethod
    def open(cls, cfg: ExtractionConfig, root: str, run_id: str = "",
             record: Optional[Dict[str, Any]] = None, writable: bool = True,
             on_lost: Optional[Lost] = None) -> "H5Store":
        spec = network(cfg.feature_type)
        return cls(root, spec.name, cfg.shard, cfg.num_shards, spec.keys, spec.features,
                   run_id, record or {}, writable=writable, on_lost=on_lost)

    @staticmethod
    def name_clash(names: Sequence[str], keys: Sequence[str]) -> str:
        """Why one file cannot hold these videos ('' when it can): a video's group would pass
        through a dataset of another (``h5_format.name_clash``)."""
        clash = h5_format.name_clash(names, keys)
        if not clash:
            return ""
        return (f"output name clash in the HDF5 layout: the group of '{clash[1]}' would pass "
                f"through a dataset of '{clash[0]}'; rename one of them or use "
                "output_layout=flat")

    def _fold_at_start(self, path: str) -> None:
        try:
            fold(path, self.feature_type, self.on_lost)
        except OSError as e:
            raise InputError(f"output_path: cannot fold {journal_path(path)} into {path} "
                             f"({one_line(e)}); free space or move the file away") from None
        except ValueError as e:  # the file is damaged (it says how to start it anew)
            raise InputError(f"output_path: cannot fold {journal_path(path)} into {path} "
                             f"({one_line(e)}); move the file away to start the shard's file "
                             "anew") from None

    @staticmethod
    def _open_reader(path: str, own: bool) -> Optional[h5py.File]:
        if not os.path.exists(path):
            return None
        try:
            reader = h5py.File(path, "r")
            try:
                h5_format.check_file(reader, path)
                if own:  # a checkpoint raises it by one
                    h5_format.file_generation(reader, path)
            except ValueError:
                reader.close()
                raise
            return reader
        except (OSError, ValueError) as e:
            locked = h5_format.locked_message(path, e) if isinstance(e, OSError) else None
            if own:
                raise InputError(f"output_path: {locked}" if locked else
                                 f"output_path: cannot read {path} ({one_line(e)}); move it "
                                 "away to start the shard's file anew") from None
            log.warning("%s; its videos are not counted as done", locked or
                        f"cannot read {path} ({one_line(e)})")
            return None

    @staticmethod
    def held_runs(root: str, feature_type: str, features: Dict[str, Any]
                  ) -> List[Tuple[str, Dict[str, Any]]]:
        """``(where, features)`` of each run whose ``run:<id>`` record a shard file of the
        folder holds, whose features differ from ``features`` and that still owns a video
        there (a file copied alone into a folder keeps what made it)."""
        held: List[Tuple[str, Dict[str, Any]]] = []
        for path in _shard_files(root, feature_type):
            if not (os.path.lexists(path) and stat.S_ISREG(os.lstat(path).st_mode)):
                continue  # a journal alone
            try:
                with h5py.File(path, "r") as f:
                    h5_format.check_file(f, path)
                    other = {run_id: run.features for run_id, run in
                             checked_runs(h5_format.runs(f), path).items()
                             if differences(run.features, features)}
                    owned = h5_format.first_videos(f, set(other)) if other else {}
            except (OSError, ValueError):
                continue  # opening the store says why (its own file) or warns (another's)
            held += [(f"{path} (video '{printable_path(name[:200])}', run "
                      f"{printable_path(run_id[:80])})", other[run_id])
                     for run_id, name in owned.items()]
        return held

    # -- what batch_run asks ----------------------------------------------------------------
    def outputs(self, name: str) -> Dict[str, str]:
        """Where each key of the video lands: ``<file>.h5/<name>/<key>`` (for manifests)."""
        where = self._found.get(name, self.path)
        return {key: f"{where}/{name}/{key}" for key in self.keys}

    def claim(self, name: str) -> str:
        """Why the video cannot be stored in the shard's file ('' when it can): its name is
        not UTF-8 text, or its group would pass through a dataset already there, or over a
        folder of other videos named like one of its keys (see ``h5_format.name_clash``)."""
        if not is_utf8(name):
            return (f"its output name {ascii(name)} is not valid UTF-8, and HDF5 names are "
                    "UTF-8 text; rename the file, or use save_numpy")
        if name.count("/") >= h5_format.MAX_DEPTH:  # readers would call the file damaged
            return (f"its output name is {name.count('/')} folders deep, and a features file "
                    f"holds videos at most {h5_format.MAX_DEPTH} levels deep; set input_root "
                    "closer to it, use output_layout=flat, or save_numpy")
        reader = self._readers[0] if self._readers and self._readers[0].filename == self.path \
            else None
        if reader is None:
            return ""
        parts = name.split("/")
        try:  # through hard links only: a link is replaced by a real group when written
            for i in range(1, len(parts) + 1):
                prefix = "/".join(parts[:i])
                if isinstance(h5_format.hard_get(reader, prefix), h5py.Dataset):
                    return (f"{self.path} holds a dataset at '{prefix}', where the group of "
                            f"'{name}' would go; rename the video or use another output_path")
            group = h5_format.hard_get(reader, name)
            if isinstance(group, h5py.Group):
                for key in self.keys:
                    if isinstance(h5_format.hard_get(group, key), h5py.Group):
                        return (f"{self.path} holds other videos under '{name}/{key}', where "
                                f"'{name}' would store its {key}; rename the video or use "
                                "another output_path")
        except h5_format.LinkError:
            return ""
        return ""

    def source(self, name: str) -> Optional[str]:
        """The input whose features the shard files hold under ``name`` (its group's
        ``video_path``), or None."""
        for reader in self._readers:
            try:
                group = h5_format.video_group(reader, name) if is_utf8(name) else None
            except (OSError, ValueError):
                continue
            if group is not None:
                value = group.attrs.get(h5_format.VIDEO_ATTR)
                if isinstance(value, (bytes, np.bytes_)):
                    return os.fsdecode(bytes(value))
                return value if isinstance(value, str) else None
        return None

    def complete(self, name: str) -> Optional[Tuple[int, float]]:
        """``(Tv, seconds)`` when a shard file of the folder (as of its last checkpoint),
        this shard's first, holds the video whole."""
        if not is_utf8(name):
            return None
        for reader in self._readers:
            try:
                group = h5_format.video_group(reader, name)
                if group is None:
                    continue
                datasets = h5_format.video_datasets(group)
                size = h5_format.file_size(reader)
                for key, dset in datasets.items():
                    h5_format.check_size(dset, size, f"{name}/{key}")
                done = arrays_complete(datasets, self.features)
            except (OSError, KeyError, ValueError) as e:
                if isinstance(e, ValueError):  # a link, or a size the file cannot hold
                    log.warning("%s", printable_path(f"{reader.filename}: video '{name}' is "
                                                     f"damaged ({one_line(e)}); it is "
                                                     "extracted again"))
                done = None
            if done is not None:
                if reader.filename != self.path:
                    self._found[name] = reader.filename
                return done
        return None

    def write(self, name: str, arrays: Mapping[str, np.ndarray], video_path: str) -> None:
        """Append the video to the journal (fsynced): from here on it is done.  ``OSError``
        (disk full) leaves the journal as it was.  A checkpoint that fails here (disk full
        while copying) is logged; the journal stays and is folded later."""
        if self._fd is None:
            self._open_journal()
        data = encode({"name": name, "video_path": video_path, "run": self.run_id},
                       [(key, np.asarray(value)) for key, value in arrays.items()])
        self._append(data)
        if self._journal_bytes >= max(MIN_CHECKPOINT_BYTES, self._file_size()):
            try:
                self.checkpoint()
            except (OSError, ValueError) as e:
                log.error("%s: checkpoint failed (%s); the finished videos stay in %s and are "
                          "added at the next checkpoint", self.path, one_line(e), self.journal)

    def checkpoint(self) -> None:
        """Fold this run's journal into the file (see ``fold``)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        fold(self.path, self.feature_type, self.on_lost)

    def close(self) -> None:
        """Fold this run's videos into the file; release it (again: nothing happens)."""
        try:
            if self.writable and (self._fd is not None or os.path.lexists(self.journal)):
                self.checkpoint()
        finally:
            self.writable = False
            for reader in self._readers:
                reader.close()
            self._readers = []

    # -- the journal -----------------------------------------------------------------------
    def _open_journal(self) -> None:
        """Open the journal for appending: this run's, still there after a failed checkpoint,
        or a new one whose first record names the file's generation it extends."""
        if os.path.lexists(self.journal):
            self._fd = open_regular(self.journal, os.O_WRONLY | os.O_APPEND)
            self._journal_bytes = os.fstat(self._fd).st_size
            return
        header = {"generation": generation(self.path), "feature_type": self.feature_type,
                  "run": self.run_id, "record": self.record}
        self._fd = open_regular(self.journal, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        self._journal_bytes = 0
        try:
            self._append(encode(header))
        except OSError:
            os.close(self._fd)
            self._fd = None
            _remove(self.journal)
            raise

    def _append(self, data: bytes) -> None:
        try:
            written = 0
            while written < len(data):
                written += os.write(self._fd, data[written:])
            os.fsync(self._fd)
        except OSError:
            with contextlib.suppress(OSError):  # cut the partial record off again
                os.ftruncate(self._fd, self._journal_bytes)
                os.lseek(self._fd, self._journal_bytes, os.SEEK_SET)
            raise
        self._journal_bytes += len(data)

    def _file_size(self) -> int:
        try:
            return os.stat(self.path).st_size
        except FileNotFoundError:
            return 0
