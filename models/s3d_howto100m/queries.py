"""The queries of a search (``--queries FILE``: one a line) and how their hits are printed."""
import json
from typing import List, Sequence

from utils.files import open_regular

MAX_QUERIES_BYTES = 64 * 2**20  # a larger --queries file is refused, not read


class QueriesError(ValueError):
    """A queries file that cannot be used (the message names it)."""


def read_queries(path: str) -> List[str]:
    """The file's lines, stripped, blank ones left out (UTF-8 text; a regular file)."""
    try:
        fd = open_regular(path)
    except OSError as e:
        raise QueriesError(f"--queries {path}: {e.strerror or e}") from None
    with open(fd, "rb") as f:
        data = f.read(MAX_QUERIES_BYTES + 1)
    if len(data) > MAX_QUERIES_BYTES:
        raise QueriesError(f"--queries {path}: over {MAX_QUERIES_BYTES // 2**20} MiB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise QueriesError(f"--queries {path}: not UTF-8 text (byte {e.start})") from None
    queries = [line.strip() for line in text.splitlines() if line.strip()]
    if not queries:
        raise QueriesError(f"--queries {path}: no query (one a line)")
    return queries


def hits_json(query: str, hits: Sequence) -> str:
    """One query's line of ``--queries ... --json``."""
    return json.dumps({"query": query, "hits": [hit.as_dict() for hit in hits]})


def format_results(queries: Sequence[str], results: Sequence[Sequence], table) -> str:
    """Each query's table (``table(hits)``) under a ``query: ...`` line."""
    return "\n\n".join(f"query: {query}\n{table(hits)}" for query, hits in zip(queries, results))
