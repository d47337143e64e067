"""What a batch run did: counts by outcome, the FAILED lines, ``failed.jsonl`` and the manifest.

A shard's manifest describes every video ever attempted there, by its latest record: a run
over a sub-list (a retry from ``failed.jsonl``) keeps the records of the videos it does not
touch.  At start the file is rewritten (atomically) with the latest record of each video,
then this run appends one line per video, flushed, so a killed run keeps what it reported.
A record's ``outputs`` are written relative to the manifest's folder (``clip_s3d.npy``,
``s3d-0-of-1.h5/clip/s3d``: ``portable``), so the folder may be moved or copied whole; records
written by earlier versions hold absolute locations, read as before where they were written.
``failed.jsonl`` lists the videos whose latest record is a failure; it is rewritten
(atomically) when that list changes, at most every ``FAILED_EVERY_S`` and at the run's end.
"""
import logging
import os
import time
from collections import Counter
from typing import Dict, List, Optional, Tuple

from utils.records import jsonl
from utils.console import printable_path
from utils.files import write_bytes
from utils.inputs.paths import parse_shard_name, shard_suffix
from utils.records.schema import ManifestRecord

log = logging.getLogger(__name__)

FAILED_EVERY_S = 5.0  # failed.jsonl is rewritten at most this often during a run
# the manifests' names as utils.records.manifests matches them (manifest_shard is the rule)
def manifest_name(shard: int, num_shards: int) -> str:
    """Every run writes one manifest per shard (``manifest-0-of-1.jsonl`` unsharded)."""
    return f"manifest{shard_suffix(shard, num_shards)}.jsonl"


def manifest_shard(name: str) -> Optional[Tuple[int, int]]:
    """``(shard, num_shards)`` of a manifest's file name (``manifest_name``), else None."""
    return parse_shard_name(name, "manifest", ".jsonl")


def failed_name(shard: int, num_shards: int) -> str:
    """``failed.jsonl`` unsharded, ``failed-<shard>-of-<num_shards>.jsonl`` per shard."""
    return "failed.jsonl" if num_shards == 1 else f"failed{shard_suffix(shard, num_shards)}.jsonl"


class RunReport:
    """Counts outcomes; keeps the shard's manifest and failure list (see the module's doc).

    ``run_id``: the run, named in every record it writes (``run``), whose provenance record
    says what made the outputs.  Skipped videos keep the ``run`` and ``warnings`` of the
    record that made their outputs.  ``launch``: the scheduler's task (``provenance.launch_id``),
    also named in every record, so that a summary can tell a video made by an earlier attempt
    of the same task (requeued) from one made by an earlier command.
    """

    def __init__(self, failed_file: Optional[str] = None, manifest_file: Optional[str] = None,
                 started: Optional[float] = None, run_id: Optional[str] = None,
                 previous: Optional[Dict[str, ManifestRecord]] = None,
                 launch: Optional[str] = None):
        self.started = time.time() if started is None else started
        self.stopped: Optional[str] = None  # "interrupted" (Ctrl-C) or "terminated" (SIGTERM)
        self.done = 0
        self.skipped = 0
        self.failed: Counter = Counter()
        self.stacks = 0
        self.video_seconds = 0.0
        self.failed_file = failed_file
        self.manifest_file = manifest_file
        self.run_id = run_id
        self.launch = launch  # named in every record (a requeued task's attempts share it)
        self.previous: Dict[str, ManifestRecord] = {}  # path -> latest record before this run
        self.failures: Dict[str, dict] = {}  # path -> its failed_file line
        self._failures_changed = False
        self._failures_written = -FAILED_EVERY_S  # the first change is written at once
        if manifest_file:
            if previous is not None:  # the manifest's latest records, read by the caller
                self.previous = dict(previous)
            else:
                for record in jsonl.read_records(manifest_file):
                    self.previous.pop(record.path, None)  # keep the order of latest records
                    self.previous[record.path] = record
            write_bytes(manifest_file, jsonl.encode(r.to_json() for r in self.previous.values()))
        if failed_file:
            self.failures = {p: r.failure_json() for p, r in self.previous.items()
                             if r.status == "failed"}
            if not manifest_file:
                self.failures = _failure_lines(failed_file)
            write_bytes(failed_file, jsonl.encode(self.failures.values()))

    def _append(self, record: ManifestRecord) -> None:
        if self.manifest_file and record.outputs:
            record = record.with_key("outputs", portable(record.outputs, self.manifest_file))
        if self.run_id and "run" not in record.keys:
            record = record.with_key("run", self.run_id)
        if self.launch:
            record = record.with_key("launch", self.launch)
        if self.manifest_file:
            try:
                with open(self.manifest_file, "a", encoding="utf-8") as f:
                    f.write(jsonl.dumps(record.to_json()) + "\n")
            except OSError as e:  # e.g. disk full: the run goes on, the log still has it all
                log.error("cannot append to %s: %s", self.manifest_file, e.strerror or e)
        self._update_failures(record)

    def _update_failures(self, record: ManifestRecord) -> None:
        path = record.path
        if record.status == "failed":
            self.failures.pop(path, None)
            self.failures[path] = record.failure_json()
        elif self.failures.pop(path, None) is None:
            return
        self._failures_changed = True
        if time.monotonic() - self._failures_written >= FAILED_EVERY_S:
            self.flush()

    def flush(self) -> None:
        """Rewrite ``failed.jsonl`` if its list changed since it was last written (done at
        most every ``FAILED_EVERY_S`` during a run, so a run where most videos fail does not
        rewrite a growing file for each; the run calls it at its end and when stopped; after
        ``kill -9`` the next run rebuilds the file from the manifest)."""
        if not (self.failed_file and self._failures_changed):
            return
        try:
            write_bytes(self.failed_file, jsonl.encode(self.failures.values()))
        except OSError as e:
            log.error("cannot write %s: %s", self.failed_file, e.strerror or e)
        self._failures_changed = False
        self._failures_written = time.monotonic()

    def add_done(self, video: str, files: Dict[str, str], num_stacks: int, seconds: float,
                 warnings: Optional[List[str]] = None) -> None:
        self.done += 1
        self.stacks += num_stacks
        self.video_seconds += seconds
        self._append(ManifestRecord(video, "done", outputs=files, Tv=num_stacks,
                                    seconds=round(seconds, 3), warnings=warnings or None))

    def add_skipped(self, video: str, files: Dict[str, str], num_stacks: int,
                    seconds: float) -> None:
        self.skipped += 1
        record = ManifestRecord(video, "skipped", outputs=files, Tv=num_stacks,
                                seconds=round(seconds, 3))
        made = self.previous.get(video)
        if made is not None and made.made:  # the record that made these outputs
            for key in ("run", "warnings"):
                if key in made.keys:
                    record = record.with_key(key, getattr(made, key))
        if "run" not in record.keys:
            record = record.with_key("run", None)  # made before runs were recorded
        self._append(record)

    def add_failed(self, video: str, stage: str, message: str) -> None:
        message = " ".join(str(message).split())  # one line, whatever FFmpeg or torch said
        self.failed[stage] += 1
        log.error("FAILED %s: %s: %s", printable_path(video), stage, message)
        self._append(ManifestRecord(video, "failed", stage=stage, message=message))

    @property
    def num_failed(self) -> int:
        return sum(self.failed.values())

    def summary(self) -> str:
        wall = time.time() - self.started
        failed = ", ".join(f"{stage} {n}" for stage, n in sorted(self.failed.items()))
        rate = self.stacks / wall if wall > 0 else 0.0
        line = (f"{self.stopped + '; ' if self.stopped else ''}"
                f"done {self.done}, skipped {self.skipped} (already present), "
                f"failed {self.num_failed}{f' ({failed})' if failed else ''}; "
                f"{self.stacks} stacks from {self.video_seconds:.1f} s of video in {wall:.1f} s "
                f"({rate:.2f} stacks/s)")
        if self.num_failed and self.failed_file:
            line += f"; failures listed in {self.failed_file}"
        return line


def portable(files: Dict[str, str], manifest_file: str) -> Dict[str, str]:
    """``files`` (key -> output location) as a manifest keeps them: relative to the manifest's
    folder (the feature folder), so that moving or copying the folder whole keeps them true.
    A location outside that folder (none of the stores' is) stays as it is."""
    folder = os.path.dirname(os.path.abspath(manifest_file))
    kept = {}
    for key, location in files.items():
        rel = os.path.relpath(os.path.abspath(location), folder)
        outside = rel == os.curdir or rel == os.pardir or rel.startswith(os.pardir + os.sep)
        kept[key] = location if outside else rel
    return kept


def _failure_lines(failed_file: str) -> Dict[str, dict]:
    """The lines of a ``failed.jsonl`` (read when the run keeps no manifest), by path."""
    lines: Dict[str, dict] = {}
    for where, line in jsonl.read_lines(failed_file):
        if isinstance(line, dict) and isinstance(line.get("path"), str):
            lines[line["path"]] = line
        else:
            log.warning("%s: not a failure record (no path), skipped", where)
    return lines
