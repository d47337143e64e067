"""Many queries in one pass over the folder's embeddings, exactly as a scan of every file ranks.

``search(folder, queries, top_k)`` gives, for each query (a row of ``queries``, (Q, 512)), the
same ``top_k`` hits as ``models.s3d_howto100m.search.search`` over every video's files: the
same videos, stacks, order and scores (float64 dot products of the stored float32 embeddings).

With an index (``search_index``), the float16 matrix only chooses which videos to read:

1. each fresh row gets, for each query q, its float16 score (float32 GEMM), within
   m(q) = REL_MARGIN |q| max_norm + ABS_MARGIN |q|_1 of the exact score (float16 rounding
   of each value: 2^-11 relative, 2^-25 absolute below float16's normal range; float32
   summation of 512 products: 512 * 2^-24 relative; ``max_norm``: the largest row norm);
2. the true k-th best score is at least the k-th best float16 score minus m(q), so every
   row of the true top k has a float16 score of at least that minus m(q): those rows'
   videos are the candidates;
3. the candidates, and the videos the index cannot answer for (added or changed since it was
   built, unreadable, or values float16 cannot hold), are read from their files and scored
   exactly.

A video the index holds that is no longer searchable (failed since, removed from the
manifests) or whose identity changed is never answered from its rows.
"""
import logging
import os
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import numpy as np

from models.s3d_howto100m import search as base
from models.s3d_howto100m.search_index import (INDEX_COMMAND, Entry, Index, open_index,
                                               searchable)
from models.s3d_howto100m.spec import EMBEDDING_DIM, FEATURE_TYPE
from utils.errors import one_line
from utils.outputs.features import FileFeatures, locate

log = logging.getLogger(__name__)

_U16, _U32, _U64 = 2.0 ** -11, 2.0 ** -24, 2.0 ** -53
REL_MARGIN = 1.01 * (_U16 / (1 - _U16)  # float16 rounding of each value
                     + EMBEDDING_DIM * _U32 / (1 - EMBEDDING_DIM * _U32)  # float32 GEMM
                     + 2 * EMBEDDING_DIM * _U64)  # the float64 scores it is compared with
ABS_MARGIN = 2.0 ** -25  # times |q|_1: float16's subnormal spacing is 2^-24
CHUNK_ROWS = 8192  # rows of the matrix converted to float32 at a time (16 MiB: in cache)
NAMED = 3  # videos named in the hint to rerun the index


def order(hit: "base.Hit"):
    return -hit.score, hit.path, hit.start_ms


class Best:
    """The ``top_k`` best hits of one query, collected as ``search.search`` collects them."""

    def __init__(self, top_k: int):
        self.top_k = top_k
        self.hits: List[base.Hit] = []

    def add(self, path: str, stamps: np.ndarray, scores: np.ndarray) -> None:
        take = np.argsort(-scores, kind="stable")[:self.top_k]
        self.hits.extend(base.Hit(path, float(stamps[i, 0]), float(stamps[i, 1]),
                                  float(scores[i])) for i in take)
        if len(self.hits) > 4 * self.top_k:
            self.hits = sorted(self.hits, key=order)[:self.top_k]

    def result(self) -> List["base.Hit"]:
        return sorted(self.hits, key=order)[:self.top_k]


@dataclass
class Result:
    hits: List[List["base.Hit"]]  # per query, best first
    searched: int = 0  # videos searched (from the index or their files)
    from_index: int = 0  # videos answered by the index
    read: int = 0  # videos read from their files (candidates included)
    skipped: List[str] = field(default_factory=list)  # unreadable
    added: List[str] = field(default_factory=list)  # not in the index
    changed: List[str] = field(default_factory=list)  # in it, but changed since
    indexed: bool = False  # an index was used


def candidate_videos(index: Index, fresh: np.ndarray, queries: np.ndarray,
                     top_k: int) -> np.ndarray:
    """The index's videos (positions in ``index.paths``) that may hold a row of some query's
    exact top ``top_k`` among the ``fresh`` videos' rows (see the module's doc)."""
    if not fresh.any() or index.rows == 0:
        return np.zeros(0, np.int64)
    valid = np.repeat(fresh, index.counts)
    q32 = np.ascontiguousarray(queries, dtype=np.float32)
    q64 = q32.astype(np.float64)
    margin = REL_MARGIN * index.max_norm * np.linalg.norm(q64, axis=1) \
        + ABS_MARGIN * np.abs(q64).sum(axis=1)
    best = np.empty((0, len(q32)), np.float32)  # per query: the top_k float16 scores so far
    cut = np.full(len(q32), -np.inf, np.float32)
    kept_rows, kept_cols, kept_scores = [], [], []
    for start in range(0, index.rows, CHUNK_ROWS):
        ok = valid[start:start + CHUNK_ROWS]
        if not ok.any():
            continue
        scores = np.asarray(index.matrix[start:start + CHUNK_ROWS], dtype=np.float32) @ q32.T
        if not ok.all():
            scores[~ok] = -np.inf
        best = np.concatenate([best, scores])
        if len(best) > top_k:
            best = -np.partition(-best, top_k - 1, axis=0)[:top_k]
        if len(best) >= top_k:
            # a row of the true top k scores at least (k-th best - margin), so its float16
            # score is at least (k-th best - 2 margin); rounded down in float32
            cut64 = best.min(axis=0).astype(np.float64) - 2 * margin
            cut = cut64.astype(np.float32)
            cut = np.where(cut > cut64, np.nextafter(cut, np.float32(-np.inf)), cut)
        keep = scores >= cut[None, :]
        if not ok.all():
            keep &= ok[:, None]
        rows, cols = np.nonzero(keep)
        kept_rows.append(rows + start)
        kept_cols.append(cols)
        kept_scores.append(scores[rows, cols])
    if not kept_rows:
        return np.zeros(0, np.int64)
    rows, cols, scores = (np.concatenate(a) for a in (kept_rows, kept_cols, kept_scores))
    rows = rows[scores >= cut[cols]]  # the cut only rose: the final, tighter one
    return np.unique(np.searchsorted(index.starts, rows, side="right") - 1)


class _Listed(base._Outputs):
    """The outputs of a few videos, read through the loader's ``FileFeatures`` from the files
    their records name (each placed by ``locate``), without listing the whole folder (10^5
    videos: seconds); ``.h5`` outputs through ``load`` as usual."""

    def __init__(self, folder: str, entries: Sequence[Entry]):
        super().__init__(folder)
        self.files: dict = {}
        for entry in entries:
            for key, location in (entry.record.outputs or {}).items():
                found = locate(folder, location)
                if found is not None and found[0] != "h5":
                    self.files.setdefault(found[0], {}).setdefault(found[1], {})[key] = \
                        os.path.join(folder, location)

    def get(self, fmt: str):
        if fmt == "h5":
            return super().get(fmt)
        if fmt not in self.loaded:
            self.loaded[fmt] = FileFeatures(self.folder, fmt, self.files.get(fmt, {}),
                                            FEATURE_TYPE)
        return self.loaded[fmt]


def _hint(folder: str, result: Result) -> None:
    if not (result.added or result.changed):
        return
    named = (result.added + result.changed)[:NAMED]
    more = len(result.added) + len(result.changed) - len(named)
    parts = [f"{len(result.added)} added" if result.added else "",
             f"{len(result.changed)} changed" if result.changed else ""]
    log.warning("%s video(s) since the search index was built were read from their files "
                "(%s%s); to bring it up to date: %s %s", " and ".join(p for p in parts if p),
                ", ".join(named), f" and {more} more" if more else "", INDEX_COMMAND, folder)


def search(folder: str, queries: np.ndarray, top_k: int, use_index: bool = True,
           entries: Optional[Sequence[Entry]] = None) -> Result:
    """The ``top_k`` best stacks of the folder's videos for each row of ``queries`` (see the
    module's doc); unreadable videos are skipped with a warning each."""
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    entries = list(searchable(folder) if entries is None else entries)
    index = open_index(folder) if use_index else None
    result = Result([[] for _ in queries], indexed=index is not None)
    to_read: List[Entry] = []
    fresh = np.zeros(0, bool)
    if index is None:
        to_read = list(entries)
    else:
        where = index.by_path()
        fresh = np.zeros(len(index.paths), bool)
        for entry in entries:
            i = where.get(entry.path)
            if entry.identity is not None and i is not None \
                    and index.identities[i] == entry.identity:
                fresh[i] = True
                continue
            to_read.append(entry)
            unindexed = index.unindexed.get(entry.path, "")  # "" when not listed
            if unindexed == entry.identity:
                continue  # read from its files by design (unreadable, or beyond float16)
            (result.changed if i is not None or unindexed != "" else result.added).append(
                entry.path)
        _hint(folder, result)
        result.from_index = int(fresh.sum())
    scanned = len(to_read)  # to_read[scanned:] are candidates, counted in from_index
    if index is not None:
        by_path = {entry.path: entry for entry in entries}
        to_read += [by_path[index.paths[i]] for i in
                    candidate_videos(index, fresh, queries, top_k)]
    best = [Best(top_k) for _ in queries]
    q64 = queries.astype(np.float64)
    # a few videos to read: from their own files; all of them: one listing of the folder
    outputs = _Listed(folder, to_read) if len(to_read) < len(entries) // 4 \
        else base._Outputs(folder)
    searched = result.from_index
    try:
        for n, entry in enumerate(to_read):
            try:
                video = base._video(outputs, entry.record)
            except Exception as e:  # noqa: BLE001 -- a damaged file (any reader's error) skips one video
                log.warning("%s: skipped: %s", entry.path,
                            one_line(getattr(e, "strerror", None) or e, 300))
                result.skipped.append(entry.path)
                searched -= n >= scanned
                continue
            result.read += 1
            searched += n < scanned
            scores = video.embedding.astype(np.float64) @ q64.T  # (Tv, Q)
            for j, collected in enumerate(best):
                collected.add(video.path, video.timestamps_ms, scores[:, j])
    finally:
        outputs.close()
    result.searched = searched
    result.hits = [collected.result() for collected in best]
    return result
