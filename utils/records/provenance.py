"""What made the features in an output folder: one JSON record per run, and the rerun check.

Every saving run writes ``<output_path>/<feature_type>/runs/<run id>.json`` before any video:

    {"format": 1, "run": "20261203T101500Z-3f9a1c", "started": "2026-12-03T10:15:00Z",
     "features": {"feature_type": "s3d", "stack_size": 64, "step_size": 64,
                  "extraction_fps": 25.0, "preprocess": "kylemin", "precision": "fp32",
                  "output_layout": "flat", "input_root": null,
                  "weights": {"source": "...", "sha256": "..."}},
     "versions": {"tool": "0.1.0", "python": "3.11.7", "torch": "...", "torchvision": "...",
                  "av": "18.1.0", "ffmpeg": {"libavcodec": "62.28.102", ...}, "numpy": "..."},
     "device": "cpu", "options": {every other option}, "host": "...", "pid": 123,
     "shard": 0, "num_shards": 1}

``features`` is what decides the numbers (and where they go); each manifest record names the
run that made its outputs (``run``).  ``check_rerun`` refuses a run whose ``features`` differ
from those of the runs that made the outputs already in the folder, naming each difference,
unless ``overwrite=true``.  ``folder_runs`` reads the records (the Python API's way in: JSON
objects); the code reads them typed (``utils.records.schema.RunRecord``, ``read_runs``), and
skips one that is not a run record with one warning naming its file.
"""
import datetime
import hashlib
import json
import logging
import os
import platform
import re
import secrets
import socket
from dataclasses import fields
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from utils.config import ExtractionConfig, feature_options
from utils.errors import InputError
from utils.files import loads_json, open_regular, write_bytes
from utils.records.schema import RUNS_FOLDER, ManifestRecord, RecordError, RunRecord

log = logging.getLogger(__name__)

FORMAT = 1
# The options that decide the features' values or where they are written: those marked
# ``feature=True`` in utils/config.py, so that a new one cannot be left out of the rerun check.
FEATURE_OPTIONS = feature_options()


_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # what new_run_id makes: a safe file name


def new_run_id(now: Optional[datetime.datetime] = None) -> str:
    """Sortable and unique: the UTC start time and 6 random hex digits."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def _plain(value: Any) -> Any:
    """A JSON-ready value (enums as their names)."""
    return getattr(value, "value", value)


# Feature options that are folders: compared as the folder they name (``/x/v``, ``/x/v/`` and
# a relative ``v`` run from ``/x`` are one folder, never a change of options).
PATH_OPTIONS = ("input_root",)


def _comparable(name: str, value: Any) -> Any:
    if name in PATH_OPTIONS and isinstance(value, str) and value:
        return os.path.normpath(os.path.abspath(value))
    return value


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def versions() -> Dict[str, Any]:
    """The versions of this tool and of everything that computes the features."""
    import importlib.metadata

    import av
    import numpy
    import torch

    def installed(name: str, missing: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return missing

    # torchvision's version from its metadata: importing it costs ~190 MB and a second
    tool = installed("s3d-video-features", "unknown (not installed)")
    return {
        "tool": tool, "python": platform.python_version(), "torch": torch.__version__,
        "torchvision": installed("torchvision", "not installed"), "av": av.__version__,
        "numpy": numpy.__version__,
        "ffmpeg": {lib: ".".join(map(str, v)) for lib, v in sorted(av.library_versions.items())},
    }


def launch_id(environ=None) -> Optional[str]:
    """The scheduler's name for this task, which stays the same when the task is requeued
    (a SLURM array task ``slurm:<array job>_<task>``, or job ``slurm:<job>``); None outside
    SLURM.  Attempts of one launch share it; a rerun of the command is another launch."""
    env = os.environ if environ is None else environ
    array, task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"slurm:{array}_{task}"
    job = env.get("SLURM_JOB_ID")
    return f"slurm:{job}" if job else None


def run_record(cfg: ExtractionConfig, run_id: str, identity: Dict[str, Any]) -> RunRecord:
    """The record of a run: ``identity`` is the extractor's (weights, effective precision,
    device)."""
    marked = feature_options(type(cfg))
    features = {name: _comparable(name, _plain(getattr(cfg, name))) for name in marked}
    features["precision"] = identity.get("precision", features["precision"])
    features["weights"] = identity.get("weights")
    others = {f.name: _plain(getattr(cfg, f.name)) for f in fields(cfg)
              if f.name not in marked}
    now = datetime.datetime.now(datetime.timezone.utc)
    return RunRecord(run=run_id, features=features, format=FORMAT,
                     started=f"{now:%Y-%m-%dT%H:%M:%SZ}", versions=versions(),
                     device=identity.get("device"), options=others, host=socket.gethostname(),
                     pid=os.getpid(), shard=cfg.shard, num_shards=cfg.num_shards,
                     launch=launch_id(), keys=tuple(RunRecord.CHECKS))  # every field (a device of None: null)


def write_run_record(root: str, record: RunRecord) -> str:
    path = os.path.join(root, RUNS_FOLDER, f"{record.run}.json")
    write_bytes(path, (json.dumps(record.to_json(), indent=1, sort_keys=True) + "\n")
                .encode("utf-8"))
    return path


# a run record is a few KB (its options and versions); a larger file is not one
MAX_RUN_RECORD_BYTES = 2**20


def _short(value: Any, limit: int = 80) -> str:
    """A value read from a file, as a message shows it: repr, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def folder_runs(root: str, ids: Optional[Iterable[str]] = None) -> Dict[str, Dict[str, Any]]:
    """Every run record in ``root`` (``<output_path>/<feature_type>``), by run id, as JSON
    objects (``read_runs``)."""
    return {run_id: record.to_json() for run_id, record in read_runs(root, ids).items()}


def read_runs(root: str, ids: Optional[Iterable[str]] = None) -> Dict[str, RunRecord]:
    """Every run record in ``root`` (``<output_path>/<feature_type>``), by run id, or only
    those of ``ids`` (the runs that manifests name: one file each, not the whole folder); a
    damaged one, or one that is not a run record, is skipped with a warning."""
    folder = os.path.join(root, RUNS_FOLDER)
    runs: Dict[str, RunRecord] = {}
    try:
        names = (sorted(os.listdir(folder)) if ids is None
                 else sorted(f"{i}.json" for i in set(ids) if _RUN_ID.fullmatch(i or "")))
    except OSError:
        return runs
    for name in names:
        if not name.endswith(".json") or name.startswith("."):
            continue
        path = os.path.join(folder, name)
        if ids is not None and not os.path.lexists(path):
            continue
        try:
            # never through a link, nor from a FIFO or a device (it would hang or flood)
            with open(open_regular(path), "rb") as f:
                data = f.read(MAX_RUN_RECORD_BYTES + 1)
            if len(data) > MAX_RUN_RECORD_BYTES:
                raise ValueError(f"larger than {MAX_RUN_RECORD_BYTES} bytes")
            record = RunRecord.from_json(loads_json(data), path)
            if record.run != name[:-len(".json")]:  # one run, one file: never another's
                raise RecordError(f"{path}: not the record of run {name[:-len('.json')]} "
                                  f"(it says run {_short(record.run)})")
            runs[record.run] = record
        except RecordError as e:
            log.warning("%s, ignored", e)
        except (OSError, ValueError) as e:
            log.warning("%s: not a run record (%s), ignored", path,
                        getattr(e, "strerror", None) or e)
    return runs


def checked_runs(found: Mapping[str, Any], where: str) -> Dict[str, RunRecord]:
    """The run records of ``found`` (run id -> decoded JSON, e.g. an ``.h5`` file's ``run:<id>``
    attributes) that are run records; each other one is skipped with a warning naming
    ``where`` and its id."""
    runs: Dict[str, RunRecord] = {}
    for run_id, value in found.items():
        try:
            runs[run_id] = RunRecord.from_json(value, f"{where}: run:{run_id}")
        except RecordError as e:
            log.warning("%s, ignored", e)
    return runs


def differences(old: Dict[str, Any], new: Dict[str, Any]) -> List[Tuple[str, Any, Any]]:
    """``(option, old, new)`` for each feature option (and the weights) that differ: those
    marked in utils/config.py and any other the new record holds."""
    found = []
    for name in dict.fromkeys([*FEATURE_OPTIONS, *(k for k in new if k != "weights")]):
        if _comparable(name, old.get(name)) != _comparable(name, new.get(name)):
            found.append((name, old.get(name), new.get(name)))
    old_w, new_w = old.get("weights") or {}, new.get("weights") or {}
    if old_w.get("sha256") != new_w.get("sha256"):
        found.append(("weights", _weights(old_w), _weights(new_w)))
    return found


def _weights(w: Dict[str, Any]) -> str:
    sha = w.get("sha256") or "?"
    return f"{w.get('source', '?')} (sha256 {sha[:12]})"


def option_sets(latest: Dict[str, ManifestRecord], runs: Dict[str, RunRecord]
                ) -> List[Tuple[Dict[str, Any], List[str]]]:
    """The distinct ``features`` of the runs that made the outputs now in the folder (from the
    manifests' latest records), each with the videos it made; videos whose run is unknown
    (made before runs were recorded) are not counted."""
    by_run: Dict[str, List[str]] = {}  # compared once per run, not once per video
    for path, record in latest.items():
        if record.made and record.run in runs:
            by_run.setdefault(record.run, []).append(path)  # type: ignore[arg-type]
    sets: List[Tuple[Dict[str, Any], List[str]]] = []
    for run_id, paths in by_run.items():
        features = runs[run_id].features
        for known, videos in sets:
            if not differences(known, features):
                videos.extend(paths)
                break
        else:
            sets.append((features, list(paths)))
    return sets


def check_rerun(root: str, record: RunRecord, latest: Dict[str, ManifestRecord],
                overwrite: bool, held: Sequence[Tuple[str, Dict[str, Any]]] = ()) -> None:
    """Refuse (``InputError``, exit 2) a run into a folder whose outputs were made with other
    feature options or weights; ``overwrite=true`` goes on.  A folder with outputs but no run
    record (made before records existed) gets one warning.  ``held``: ``(where, features)``
    of runs whose outputs an output file records itself (an ``.h5`` file's ``run:<id>``
    records of runs that still own a video there), compared too."""
    made = [r for r in latest.values() if r.made]
    runs = read_runs(root, {r.run for r in made if r.run is not None})
    sets = option_sets(latest, runs)
    if made and not sets:
        log.warning("%s has outputs but no record of the options that made them (made by an "
                    "older version?): they are kept as they are; from this run on, %s/ says "
                    "what made each video", root, RUNS_FOLDER)
    if overwrite:
        return
    found = [(f"{root} holds features of {len(videos)} video(s)", features)
             for features, videos in sets]
    for what, features in found + [(f"{where} holds features", f) for where, f in held]:
        diff = differences(features, record.features)
        if diff:
            listed = ", ".join(f"{name} {_short(old)} there vs {_short(new)} now"
                               for name, old, new in diff)
            raise InputError(
                f"output_path: {what} made with other options ({listed}); use another "
                "output_path, or overwrite=true to redo every video with the new options")
