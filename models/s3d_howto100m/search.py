"""Search extracted videos by text: rank every stack by its similarity to a query.

    python -m models.s3d_howto100m.search OUTPUT_PATH "cut tomato" [--top_k 10] [--json]
                                          [--weights_path s3d_howto100m.pth] [--dict_path s3d_dict.npy]
    python -m models.s3d_howto100m.search OUTPUT_PATH --queries queries.txt [--json] [--html PAGE.html]
    python -m models.s3d_howto100m.search index OUTPUT_PATH

``--queries``: one query a line, all embedded in one batch and searched in one pass
(``search_exact``); ``--html``: a self-contained page of the hits (``search_page``);
``index``: one float16 matrix of every embedding, which the search then uses
(``search_index``: exact, the same hits as reading every file).

OUTPUT_PATH is the ``output_path`` of a saving run with ``feature_type=s3d_howto100m`` (or its
``s3d_howto100m`` folder).  The run's manifests (``manifest-<i>-of-<K>.jsonl``: one JSON line
per video with its ``path``, ``status`` and ``outputs`` {key: file}) say which videos are
done and where their files are; each video's ``video_embedding`` (Tv x 512) and
``timestamps_ms`` (Tv x 2) are read, the query is embedded by the model's text encoder (the
same checkpoint and word list as the extraction: ``--weights_path`` / ``--dict_path``, or the
default files), and every stack's score is the dot product of its video embedding with the
query's.  The ``top_k`` best stacks of all videos are printed, best first: score, start-end
seconds, video (``--json``: one JSON object per line, ``path``, ``start_ms``, ``end_ms``,
``score``).

Outputs are read through ``utils.outputs.features.load`` (the one reader of every format: ``.npy``,
``.pkl`` unpickled with the restricted unpickler, numpy arrays only, never code, and the
shards' ``.h5`` files of ``on_extraction=save_h5``); each manifest record's ``outputs`` say
which format and output name hold the video.  A video whose outputs are missing, incomplete
or unreadable is skipped with a warning.
Exit status: 0 with results, 2 when nothing can be searched (no manifest, no readable
output) or the model's files cannot be loaded.
"""
import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional

import numpy as np

from models.s3d_howto100m.spec import EMBEDDING_DIM, EMBEDDING_KEY, FEATURE_TYPE
from utils.console import printable_text, setup_logging
from utils.errors import InputError, WeightsError, one_line
from utils.outputs.features import Features, load, locate
from utils.records.manifests import NoFeatureFolder, feature_folder, find_manifests, latest_records
from utils.records.schema import ManifestRecord

log = logging.getLogger(__name__)


@dataclass
class Video:
    path: str
    embedding: np.ndarray      # (Tv, 512)
    timestamps_ms: np.ndarray  # (Tv, 2)


@dataclass
class Hit:
    path: str
    start_ms: float
    end_ms: float
    score: float

    def as_dict(self) -> dict:
        return {"path": self.path, "start_ms": self.start_ms, "end_ms": self.end_ms,
                "score": self.score}


class _Outputs:
    """The folder's outputs, one ``utils.outputs.features`` mapping per format, loaded when first
    needed (a folder may hold .npy files of one run and .h5 files of another)."""

    def __init__(self, folder: str):
        self.folder = folder
        self.loaded: Dict[str, object] = {}

    def get(self, fmt: str) -> Features:
        if fmt not in self.loaded:
            try:
                self.loaded[fmt] = load(self.folder, format=fmt, feature_type=FEATURE_TYPE)
            except ValueError as e:  # no such outputs: every video of that format is skipped
                self.loaded[fmt] = e
        found = self.loaded[fmt]
        if isinstance(found, Exception):
            raise found
        return found  # type: ignore[return-value]

    def close(self) -> None:
        for found in self.loaded.values():
            if isinstance(found, Features):
                found.close()


def _video(outputs: _Outputs, record: ManifestRecord) -> Video:
    named = record.outputs
    if named is None or EMBEDDING_KEY not in named or "timestamps_ms" not in named:
        raise ValueError(f"its manifest record names no {EMBEDDING_KEY} and timestamps_ms "
                         f"files (not an {FEATURE_TYPE} output?)")
    location = named[EMBEDDING_KEY]
    found = locate(outputs.folder, location)  # relative: to the manifest's folder
    if found is None:
        raise ValueError(f"{location} is not an output in {outputs.folder}")
    fmt, name = found
    features = outputs.get(fmt)
    if name not in features:
        raise ValueError(f"{features.source} holds no complete {fmt} outputs named {name!r}")
    arrays = features.read(name, (EMBEDDING_KEY, "timestamps_ms"))
    embedding, stamps = arrays[EMBEDDING_KEY], arrays["timestamps_ms"]
    if embedding.ndim != 2 or embedding.shape[1] != EMBEDDING_DIM or stamps.ndim != 2 \
            or stamps.shape != (embedding.shape[0], 2):
        raise ValueError(f"{EMBEDDING_KEY} {embedding.shape} and timestamps_ms {stamps.shape} "
                         f"do not fit (expected Tv x {EMBEDDING_DIM} and Tv x 2)")
    return Video(record.path, embedding, stamps)


def indexed_videos(folder: str, skipped: Optional[List[str]] = None) -> Iterator[Video]:
    """Every searchable video of the folder's manifests; unreadable ones are logged (and their
    paths appended to ``skipped``)."""
    outputs = _Outputs(folder)
    try:
        for path, record in latest_records(folder).items():
            if not record.made:  # failed: no complete outputs
                continue
            try:
                yield _video(outputs, record)
            except Exception as e:  # noqa: BLE001 -- a damaged file (any reader's error) skips one video
                log.warning("%s: skipped: %s", path,
                            one_line(getattr(e, "strerror", None) or e, 300))
                if skipped is not None:
                    skipped.append(path)
    finally:
        outputs.close()


def search(videos: Iterator[Video], query: np.ndarray, top_k: int) -> List[Hit]:
    """The ``top_k`` stacks with the largest dot product with ``query`` (512,), best first
    (ties: by path, then start).  Memory holds one video and about ``4 top_k`` candidates."""
    query = np.asarray(query, dtype=np.float64)
    best: List[Hit] = []

    def order(hit: Hit):
        return -hit.score, hit.path, hit.start_ms

    for video in videos:
        scores = video.embedding.astype(np.float64) @ query
        take = np.argsort(-scores, kind="stable")[:top_k]
        best.extend(Hit(video.path, float(video.timestamps_ms[i, 0]),
                        float(video.timestamps_ms[i, 1]), float(scores[i])) for i in take)
        if len(best) > 4 * top_k:
            best = sorted(best, key=order)[:top_k]
    return sorted(best, key=order)[:top_k]


def format_hits(hits: List[Hit]) -> str:
    lines = [f"{'score':>10}  {'start-end (s)':>17}  video"]
    for hit in hits:
        span = f"{hit.start_ms / 1000:.2f}-{hit.end_ms / 1000:.2f}"
        lines.append(f"{hit.score:10.4f}  {span:>17}  {hit.path}")
    return "\n".join(lines)


def index_main(argv: List[str]) -> int:
    """``python -m models.s3d_howto100m.search index OUTPUT_PATH``: build or update the index."""
    from models.s3d_howto100m import search_index

    parser = argparse.ArgumentParser(
        prog="python -m models.s3d_howto100m.search index",
        description="Build (or bring up to date) the search index of a feature folder: one "
                    "float16 matrix of every video embedding, used by the search when present.")
    parser.add_argument("output_path", help="the run's output_path (or its s3d_howto100m folder)")
    parser.add_argument("--debug", action="store_true", help="tracebacks, debug logging")
    args = parser.parse_args(argv)
    setup_logging(args.debug)
    folder = _feature_folder(args.output_path)
    if folder is None:
        return 2
    if not find_manifests(folder):
        print(f"error: no manifest-<shard>-of-<num_shards>.jsonl in {folder}", file=sys.stderr)
        return 2
    try:
        built = search_index.build(folder)
    except OSError as e:
        log.debug("traceback (--debug)", exc_info=True)
        print(f"error: {folder}: the index cannot be written ({e.strerror or e})",
              file=sys.stderr)
        return 2
    print(f"{os.path.join(folder, search_index.MATRIX_FILE)}: {built.videos} video(s), "
          f"{built.rows} stacks ({built.reused} unchanged, {built.read} read)"
          + (f"; {built.unindexed} searched from their files (values over float16's range)"
             if built.unindexed else "")
          + (f"; {len(built.skipped)} unreadable, not indexed" if built.skipped else ""))
    return 0


def _feature_folder(path: str) -> Optional[str]:
    """The feature folder ``path`` names (``utils.records.manifests.feature_folder``); None
    after printing the error when it names several."""
    try:
        return feature_folder(path)
    except NoFeatureFolder:
        return path  # no manifest there: said by the caller
    except InputError as e:  # several
        print(f"error: {e}", file=sys.stderr)
        return None


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["index"]:
        return index_main(argv[1:])
    from models.s3d_howto100m import queries as queries_module, search_exact

    parser = argparse.ArgumentParser(
        prog="python -m models.s3d_howto100m.search",
        description="Rank the stacks of videos extracted with feature_type=s3d_howto100m by "
                    "their similarity to a text query (or to each query of a file). "
                    "'python -m models.s3d_howto100m.search index OUTPUT_PATH' builds the "
                    "index that makes it fast over many videos.")
    parser.add_argument("output_path", help="the run's output_path (or its s3d_howto100m folder)")
    parser.add_argument("query", nargs="?", help='the text to search for, e.g. "cut tomato"')
    parser.add_argument("--queries", metavar="FILE",
                        help="search each line of FILE (UTF-8, one query a line) in one pass")
    parser.add_argument("--top_k", type=int, default=10, help="how many stacks to list (10)")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per hit and line: path, start_ms, end_ms, score "
                             "(with --queries: one object per query, {query, hits})")
    parser.add_argument("--html", metavar="PAGE.html",
                        help="write a self-contained page of the hits: frames, times, players")
    parser.add_argument("--no_index", action="store_true",
                        help="read every video from its files, even where an index could answer")
    parser.add_argument("--weights_path", default=None,
                        help="the checkpoint the outputs were extracted with (default: the "
                             "default s3d_howto100m.pth, downloaded once)")
    parser.add_argument("--dict_path", default=None,
                        help="its word list (default: the default s3d_dict.npy, downloaded once)")
    parser.add_argument("--debug", action="store_true", help="tracebacks, debug logging")
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error(f"--top_k: {args.top_k} is not allowed; expected an integer >= 1")
    if (args.query is None) == (args.queries is None):
        parser.error("give one query, or --queries FILE (not both)")
    setup_logging(args.debug)

    try:
        queries = [args.query] if args.queries is None else \
            queries_module.read_queries(args.queries)
    except queries_module.QueriesError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    folder = _feature_folder(args.output_path)
    if folder is None:
        return 2
    if not find_manifests(folder):
        print(f"error: no manifest-<shard>-of-<num_shards>.jsonl in {folder} (manifests are "
              f"written by saving runs: feature_type={FEATURE_TYPE} on_extraction=save_numpy, "
              "save_pickle or save_h5)", file=sys.stderr)
        return 2
    try:
        from models.s3d_howto100m.weights import load_text_encoder  # torch: only to search
        encoder, _, _ = load_text_encoder(args.weights_path, args.dict_path)
    except WeightsError as e:
        log.debug("traceback (--debug)", exc_info=True)
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    for query in queries:
        if not encoder.vocabulary.known(query):
            log.warning("none of the words of %r is in the word list: it is embedded as an "
                        "empty sentence", query)
    embedded = encoder.encode(queries).numpy()  # one batch
    found = search_exact.search(folder, embedded, args.top_k, use_index=not args.no_index)
    if not found.searched:
        print(f"error: no readable {FEATURE_TYPE} outputs listed in the manifests of {folder}"
              + (f" ({len(found.skipped)} video(s) skipped)" if found.skipped else ""),
              file=sys.stderr)
        return 2
    log.info("searched %d video(s)%s%s", found.searched,
             f" ({found.from_index} through the index)" if found.indexed else "",
             f", skipped {len(found.skipped)} unreadable" if found.skipped else "")
    if args.html:
        from models.s3d_howto100m import search_page

        try:
            search_page.write_page(args.html, queries, found.hits)
        except OSError as e:
            print(f"error: {args.html}: cannot be written ({e.strerror or e})", file=sys.stderr)
            return 2
        log.info("wrote %s", args.html)
    if args.json:
        for query, hits in zip(queries, found.hits):
            if args.queries is None:
                for hit in hits:
                    print(json.dumps(hit.as_dict()))
            else:
                print(queries_module.hits_json(query, hits))
    elif not args.html:
        print(printable_text(format_hits(found.hits[0]) if args.queries is None
              else queries_module.format_results(queries, found.hits, format_hits)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
