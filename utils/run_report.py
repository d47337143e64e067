"""What a batch run did: counts by outcome, the FAILED lines, ``failed.jsonl`` and the manifest."""
import json
import logging
import os
import re
import time
from collections import Counter
from typing import Dict, List, Optional

from utils.files import write_bytes

log = logging.getLogger(__name__)

MANIFEST_RE = re.compile(r"^manifest-(\d+)-of-(\d+)\.jsonl$")


def manifest_name(shard: int, num_shards: int) -> str:
    """Every run writes one manifest per shard (``manifest-0-of-1.jsonl`` unsharded)."""
    return f"manifest-{shard}-of-{num_shards}.jsonl"


def failed_name(shard: int, num_shards: int) -> str:
    """``failed.jsonl`` unsharded, ``failed-<shard>-of-<num_shards>.jsonl`` per shard."""
    return "failed.jsonl" if num_shards == 1 else f"failed-{shard}-of-{num_shards}.jsonl"


class RunReport:
    """Counts outcomes; appends failures to ``failed_file`` and every video to ``manifest_file``.

    Both files are JSON lines, flushed per video, so a killed run keeps what it reported.
    """

    def __init__(self, failed_file: Optional[str] = None, manifest_file: Optional[str] = None,
                 started: Optional[float] = None):
        self.started = time.time() if started is None else started
        self.interrupted = False
        self.done = 0
        self.skipped = 0
        self.failed: Counter = Counter()
        self.stacks = 0
        self.video_seconds = 0.0
        self.failed_file = failed_file
        self.manifest_file = manifest_file
        for path in (failed_file, manifest_file):
            if path:
                write_bytes(path, b"")  # this run's records start afresh

    def _append(self, path: Optional[str], record: Dict) -> None:
        if path:
            line = json.dumps(record, ensure_ascii=False)
            try:
                line.encode("utf-8")
            except UnicodeEncodeError:  # a file name that is not UTF-8: keep it, \u-escaped
                line = json.dumps(record)
            try:
                with open(path, "a", encoding="utf-8") as f:
                    f.write(line + "\n")
            except OSError as e:  # e.g. disk full: the run goes on, the log still has it all
                log.error("cannot append to %s: %s", path, e.strerror or e)

    def add_done(self, video: str, files: Dict[str, str], num_stacks: int, seconds: float,
                 warnings: Optional[List[str]] = None) -> None:
        self.done += 1
        self.stacks += num_stacks
        self.video_seconds += seconds
        record = {"path": video, "status": "done", "outputs": files,
                  "Tv": num_stacks, "seconds": round(seconds, 3)}
        if warnings:
            record["warnings"] = warnings
        self._append(self.manifest_file, record)

    def add_skipped(self, video: str, files: Dict[str, str], num_stacks: int,
                    seconds: float) -> None:
        self.skipped += 1
        self._append(self.manifest_file, {"path": video, "status": "skipped", "outputs": files,
                                          "Tv": num_stacks, "seconds": round(seconds, 3)})

    def add_failed(self, video: str, stage: str, message: str) -> None:
        message = " ".join(str(message).split())  # one line, whatever FFmpeg or torch said
        self.failed[stage] += 1
        log.error("FAILED %s: %s: %s", video, stage, message)
        record = {"path": video, "stage": stage, "message": message}
        self._append(self.failed_file, record)
        self._append(self.manifest_file, dict(record, status="failed"))

    @property
    def num_failed(self) -> int:
        return sum(self.failed.values())

    def summary(self) -> str:
        wall = time.time() - self.started
        failed = ", ".join(f"{stage} {n}" for stage, n in sorted(self.failed.items()))
        rate = self.stacks / wall if wall > 0 else 0.0
        line = (f"{'interrupted; ' if self.interrupted else ''}"
                f"done {self.done}, skipped {self.skipped} (already present), "
                f"failed {self.num_failed}{f' ({failed})' if failed else ''}; "
                f"{self.stacks} stacks from {self.video_seconds:.1f} s of video in {wall:.1f} s "
                f"({rate:.2f} stacks/s)")
        if self.num_failed and self.failed_file:
            line += f"; failures listed in {self.failed_file}"
        return line
