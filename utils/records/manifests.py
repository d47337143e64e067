"""Merge the per-shard manifests of a (sharded) run into one summary.

Every process of a run writes ``<output_path>/<feature_type>/manifest-<shard>-of-<num_shards>.jsonl``:
one JSON line a video (``path``, ``status`` done / skipped / failed, ``outputs``, ``Tv``,
``seconds``, or ``stage`` and ``message`` for a failure).  This command reads them all:

    python -m utils.records.manifests OUTPUT_PATH [--file_with_video_paths LIST] [--json]

It prints the totals (done, skipped, failed, stacks, seconds of video), every failure, the
shards that left no manifest, and, given the run's input list, the videos no shard has
reported yet with the ``shard=...`` override that reruns just their shards.  Exit status: 0
when everything is accounted for and nothing failed, 1 otherwise, 2 when there is nothing to
read.  A video reported more than once (a shard restarted, or runs with another num_shards)
counts once, by its latest record; it counts as done when that record is a success made by
any attempt of the same launch (``made_by_same_launch``: a requeued SLURM task skips what its
earlier attempt made).
"""
import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

from utils.console import printable_path, printable_text, setup_logging
from utils.errors import InputError
from utils.inputs.paths import collect_paths, excluded_folders, shard_of
from utils.records.jsonl import read_records
from utils.records.provenance import FEATURE_OPTIONS, option_sets, read_runs
from utils.records.run_report import manifest_shard
from utils.records.schema import RUNS_FOLDER, ManifestRecord, RunRecord

log = logging.getLogger(__name__)


@dataclass
class Manifest:
    shard: int
    num_shards: int
    path: str


@dataclass
class Summary:
    folder: str
    manifests: List[Manifest] = field(default_factory=list)
    records: Dict[str, ManifestRecord] = field(default_factory=dict)  # path -> latest record
    done: int = 0
    skipped: int = 0
    stacks: int = 0
    seconds: float = 0.0
    unmeasured: int = 0  # done / skipped records without Tv and seconds (hand-made manifests)
    failures: List[dict] = field(default_factory=list)
    num_shards: Optional[int] = None  # of the latest manifest: the run that counts
    missing_shards: List[int] = field(default_factory=list)  # of num_shards, no manifest yet
    other_num_shards: List[int] = field(default_factory=list)  # older runs sharded otherwise
    inputs: Optional[int] = None  # length of the input list, when given
    unreported: List[str] = field(default_factory=list)
    unreported_shards: List[int] = field(default_factory=list)
    # the distinct feature options (and weights) that made the videos, with their counts
    option_sets: List[tuple] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def complete(self) -> bool:
        return not (self.failures or self.unreported or self.missing_shards
                    or len(self.option_sets) > 1)

    def as_dict(self) -> dict:
        return {
            "folder": self.folder,
            "manifests": [m.path for m in self.manifests],
            "videos": len(self.records), "done": self.done, "skipped": self.skipped,
            "failed": self.failed, "Tv": self.stacks, "seconds": round(self.seconds, 3),
            "unmeasured": self.unmeasured, "failures": self.failures,
            "num_shards": self.num_shards, "missing_shards": self.missing_shards,
            "other_num_shards": self.other_num_shards,
            "inputs": self.inputs, "unreported": self.unreported,
            "unreported_shards": self.unreported_shards,
            "option_sets": [{"features": f, "videos": n} for f, n in self.option_sets],
            "complete": self.complete,
        }


class NoFeatureFolder(InputError):
    """``feature_folder``: the path is no feature folder and holds none."""

    def __init__(self, path: str):
        super().__init__(f"{path}: no manifest-<shard>-of-<num_shards>.jsonl, {RUNS_FOLDER}/ or "
                         "outputs, there or in a folder directly under it")
        self.path = path


def _never(name: str) -> bool:
    return False


def _is_feature_folder(folder: str, is_output: Callable[[str], bool]) -> bool:
    """Does the folder hold a manifest, run records (``runs/``) or an output of its own?"""
    try:
        with os.scandir(folder) as entries:
            return any(not e.name.startswith(".") and (
                manifest_shard(e.name) is not None or e.name == RUNS_FOLDER or is_output(e.name))
                for e in entries)
    except OSError:  # not a folder, gone, unreadable
        return False


def feature_folder(path: str, is_output: Callable[[str], bool] = _never) -> str:
    """The feature folder (``<output_path>/<feature_type>``: one network's outputs, manifests
    and ``runs/``) that ``path`` names: ``path`` itself when it holds a manifest, ``runs/``
    or an output (``is_output``: the file names the caller reads as outputs), else its one
    subfolder that does.  Several: an ``InputError`` naming them; none: ``NoFeatureFolder``."""
    if _is_feature_folder(path, is_output):
        return path
    try:
        with os.scandir(path) as entries:
            subs = sorted(e.name for e in entries if not e.name.startswith(".") and e.is_dir()
                          and _is_feature_folder(e.path, is_output))
    except OSError:
        subs = []
    if len(subs) == 1:
        return os.path.join(path, subs[0])
    if subs:
        raise InputError(f"{path} holds the outputs of {len(subs)} networks ({', '.join(subs)}); "
                         f"choose one of {', '.join(os.path.join(path, s) for s in subs)}")
    raise NoFeatureFolder(path)


def find_manifests(folder: str) -> List[Manifest]:
    """The folder's manifests, oldest first (by modification time), so later ones win."""
    found = []
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    for name in names:
        m = manifest_shard(name)
        if m:
            path = os.path.join(folder, name)
            try:
                mtime = os.lstat(path).st_mtime  # a link's own: never followed
            except OSError:  # gone since the listing
                continue
            found.append((mtime, name, Manifest(m[0], m[1], path)))
    return [m for _, _, m in sorted(found, key=lambda t: (t[0], t[1]))]


def latest_records(folder: str, manifests: Optional[List[Manifest]] = None,
                   per_manifest: Optional[Dict[str, Dict[str, ManifestRecord]]] = None
                   ) -> Dict[str, ManifestRecord]:
    """Input path -> its latest record over every manifest of the folder.  ``per_manifest``:
    filled with each manifest's own latest records (by its path), read in the same pass."""
    records: Dict[str, ManifestRecord] = {}
    for manifest in manifests if manifests is not None else find_manifests(folder):
        own: Dict[str, ManifestRecord] = {}
        for record in read_records(manifest.path):
            for latest in (records, own):
                latest.pop(record.path, None)  # the latest last
                latest[record.path] = record
        if per_manifest is not None:
            per_manifest[manifest.path] = own
    return records


def made_by_same_launch(record: ManifestRecord, runs: Dict[str, RunRecord]) -> bool:
    """A ``skipped`` record whose outputs an earlier attempt of the same launch made (a SLURM
    task requeued after its time limit or a preemption): that launch did the video, so the
    summary counts it done.  A skip by a later command (another launch) stays skipped."""
    maker = runs.get(record.run) if record.status == "skipped" and record.run else None
    return bool(record.launch and maker is not None and maker.launch == record.launch)


def merge_manifests(output_path: str, file_with_video_paths: Optional[str] = None) -> Summary:
    """The summary of the manifests of ``output_path``'s feature folder (``feature_folder``:
    raises ``InputError`` when it names several or none)."""
    folder = feature_folder(output_path)
    summary = Summary(folder=folder, manifests=find_manifests(folder))
    summary.records = latest_records(folder, summary.manifests)
    runs = read_runs(folder, {r.run for r in summary.records.values() if r.run is not None})
    summary.option_sets = [(features, len(videos)) for features, videos
                           in option_sets(summary.records, runs)]

    for path, record in summary.records.items():
        if record.status == "failed":
            summary.failures.append({
                "path": path, "stage": "?" if record.stage is None else record.stage,
                "message": "" if record.message is None else record.message})
            continue
        if record.status == "done" or made_by_same_launch(record, runs):
            summary.done += 1
        else:
            summary.skipped += 1
        if record.Tv is None:
            summary.unmeasured += 1
            continue
        summary.stacks += record.Tv
        summary.seconds += float(record.seconds or 0.0)

    if summary.manifests:
        k = summary.num_shards = summary.manifests[-1].num_shards
        found = {m.shard for m in summary.manifests if m.num_shards == k}
        summary.missing_shards = sorted(set(range(k)) - found)
        summary.other_num_shards = sorted({m.num_shards for m in summary.manifests} - {k})

    if file_with_video_paths is not None:
        exclude = [output_path]  # and the runs' tmp_path, as they left them out
        for run in runs.values():
            exclude += excluded_folders(None, (run.options or {}).get("tmp_path"))
        _check_inputs(summary, file_with_video_paths, exclude)
    return summary


def _check_inputs(summary: Summary, file_with_video_paths: str,
                  exclude: List[Optional[str]]) -> None:
    """Compare with the run's input list as the runs built it (``exclude``: the folders they
    took no input from), sharded as the run shards it."""
    paths = collect_paths(None, file_with_video_paths, exclude=exclude)
    summary.inputs = len(paths)
    summary.unreported = [p for p in paths if p not in summary.records]
    if not summary.unreported:
        return
    k = summary.num_shards or 1
    index = {p: i for i, p in enumerate(paths)}
    summary.unreported_shards = sorted({shard_of(index[p], k) for p in summary.unreported})


def format_manifest_summary(s: Summary, max_listed: int = 50) -> str:
    lines = []
    k = s.num_shards
    text = f"{s.folder}: {k - len(s.missing_shards)} of {k} shard manifests (num_shards={k})"
    if s.missing_shards:
        text += f"; none yet from shard(s) {_ranges(s.missing_shards)}"
    lines.append(text)
    if s.other_num_shards:
        lines.append(f"note: also manifests of earlier runs with num_shards="
                     f"{', '.join(map(str, s.other_num_shards))}; each video counts once, "
                     "by its latest record")
    lines.append(f"videos: {len(s.records)} reported: done {s.done}, skipped {s.skipped} "
                 f"(outputs already present), failed {s.failed}")
    stacks = f"features: {s.stacks} stacks (Tv) from {s.seconds:.1f} s of video"
    if s.unmeasured:
        stacks += f" ({s.unmeasured} video(s) without Tv in their manifest record not counted)"
    lines.append(stacks)
    if s.inputs is not None:
        lines.append(f"inputs: {s.inputs} listed, {s.inputs - len(s.unreported)} reported, "
                     f"{len(s.unreported)} not reported yet")
        for path in s.unreported[:max_listed]:
            lines.append(f"  not reported: {path}")
        if len(s.unreported) > max_listed:
            lines.append(f"  ... and {len(s.unreported) - max_listed} more")
        if s.unreported:
            lines.append(f"  to rerun just their shards: -m shard={','.join(map(str, s.unreported_shards))} "
                         f"num_shards={s.num_shards} (finished videos are skipped)")
    if len(s.option_sets) > 1:
        lines.append(f"mixed: the videos were made with {len(s.option_sets)} different option "
                     "sets (overwrite=true over part of the folder?):")
        for features, count in s.option_sets:
            shown = ", ".join(f"{k}={features.get(k)}" for k in FEATURE_OPTIONS)
            sha = ((features.get("weights") or {}).get("sha256") or "?")[:12]
            lines.append(f"  {count} video(s): {shown}, weights sha256 {sha}")
    if s.failures:
        lines.append(f"failed: {s.failed}")
        for fail in s.failures[:max_listed]:
            lines.append(f"  FAILED {fail['path']}: {fail['stage']}: {fail['message']}")
        if s.failed > max_listed:
            lines.append(f"  ... and {s.failed - max_listed} more (--json lists them all)")
    return "\n".join(lines)


def _ranges(numbers: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``0-2, 5``."""
    parts, start, prev = [], None, None
    for n in numbers:
        if start is None:
            start = prev = n
        elif n == prev + 1:
            prev = n
        else:
            parts.append(f"{start}-{prev}" if prev != start else str(start))
            start = prev = n
    if start is not None:
        parts.append(f"{start}-{prev}" if prev != start else str(start))
    return ", ".join(parts)


def _no_manifests(folder: str) -> int:
    print(f"error: no manifest-<shard>-of-<num_shards>.jsonl in {folder} "
          "(manifests are written with on_extraction=save_numpy, save_pickle or save_h5)",
          file=sys.stderr)
    return 2


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m utils.records.manifests",
        description="Merge the per-shard manifests of a network's folder "
                    "(OUTPUT_PATH/<feature_type>) into one summary.")
    parser.add_argument("output_path", help="the run's output_path (or its network's folder)")
    parser.add_argument("--file_with_video_paths", metavar="LIST",
                        help="the run's input list: also report videos no shard has reported "
                             "(relative paths resolve against the current directory, as in the run)")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    args = parser.parse_args(argv)
    setup_logging(level=logging.WARNING)

    try:
        summary = merge_manifests(args.output_path, args.file_with_video_paths)
    except NoFeatureFolder as e:
        return _no_manifests(e.path)
    except InputError as e:
        print(f"error: {printable_path(str(e))}", file=sys.stderr)
        return 2
    if not summary.manifests:
        return _no_manifests(summary.folder)
    print(json.dumps(summary.as_dict(), indent=1) if args.json
          else printable_text(format_manifest_summary(summary)))
    return 0 if summary.complete else 1


if __name__ == "__main__":
    sys.exit(main())
