"""The records kept beside the outputs, typed: a manifest line (``ManifestRecord``) and a run
record (``RunRecord``), and the folder the run records go to (``RUNS_FOLDER``).

A manifest (``<feature folder>/manifest-<k>-of-<K>.jsonl``, ``utils.records.run_report``) has
one JSON line per video:

    {"path": "/v/a.mp4", "status": "done", "outputs": {"s3d": "a_s3d.npy", ...},
     "Tv": 3, "seconds": 7.68, "warnings": ["..."], "run": "20261203T101500Z-3f9a1c"}
    {"path": "/v/b.mp4", "status": "failed", "stage": "decode", "message": "...", "run": "..."}

A run record (``<feature folder>/runs/<run id>.json``, also ``run:<id>`` attributes of the
``.h5`` files; ``utils.records.provenance``) is one JSON object, ``run`` and ``features``
required.

Both are read from files anyone may have edited, so ``from_json`` checks every field it knows
(its type, and the values a status or a count may take) and raises ``RecordError`` naming the
place it was read (``file:line``); the readers skip such a record with one warning.
``outputs`` are relative to the manifest's folder (``a_s3d.npy``, ``s3d-0-of-1.h5/a/s3d``),
absolute in records written by earlier versions (``utils.outputs.features.locate`` reads both).
``to_json`` gives back exactly the keys and values read (the order too, and keys this version
does not know), so a file rewritten from its records keeps them byte for byte.
"""
import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, List, Optional, Tuple

RUNS_FOLDER = "runs"  # <feature folder>/runs/: the run records and the runs' lock files
STATUSES = ("done", "skipped", "failed")
MADE = ("done", "skipped")  # statuses whose outputs are complete, made by the record's run

_JSON_NAMES = {dict: "an object", list: "a list", str: "a string", bool: "true or false",
               int: "an integer", float: "a number", type(None): "null"}


class RecordError(ValueError):
    """A manifest line or run record that does not have its type's shape; the message names
    where it was read and what is wrong."""


def _shown(value: Any) -> str:
    """A value as the error names it: a number or a short string as itself, anything else by
    its JSON type."""
    if _number(value) or (isinstance(value, str) and len(value) <= 40):
        return repr(value)
    return _JSON_NAMES.get(type(value), type(value).__name__)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is(test: Callable[[Any], bool], expected: str) -> Callable[[Any], str]:
    """A check: what is wrong with a value ('' when ``test`` passes)."""
    return lambda value: "" if test(value) else f"{_shown(value)}, expected {expected}"


_string = _is(lambda v: isinstance(v, str), "a string")
_optional_string = _is(lambda v: v is None or isinstance(v, str), "a string or null")
_count = _is(lambda v: _number(v) and isinstance(v, int) and v >= 0, "an integer >= 0")
_seconds = _is(lambda v: _number(v) and math.isfinite(v) and v >= 0, "a number >= 0")
_object = _is(lambda v: isinstance(v, dict), "an object")
_strings = _is(lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
               "a list of strings")
_files = _is(lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
             "an object of file names")
_status = _is(lambda v: isinstance(v, str) and v in STATUSES, f"one of {', '.join(STATUSES)}")
_weights = _is(lambda v: v is None or (isinstance(v, dict) and all(
    isinstance(v.get(k), (str, type(None))) for k in ("source", "sha256"))),
    "an object of strings (source, sha256) or null")


def _features(value: Any) -> str:
    """The options that decided the numbers, and their ``weights``."""
    wrong = _object(value)
    if wrong:
        return wrong
    weights = _weights(value.get("weights"))
    return f"an object whose weights are {weights}" if weights else ""


class _Record:
    """What both records share: the checks, ``from_json`` and ``to_json``.

    ``extra``: the keys this version does not know, as read; ``keys``: every key present, in
    the order read (or written), so a field set to None that was read as ``null`` stays
    ``null`` and one absent stays absent."""

    KIND = ""
    CHECKS: Dict[str, Callable[[Any], str]] = {}
    REQUIRED: Tuple[str, ...] = ()

    extra: Dict[str, Any]
    keys: Tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.keys:  # made here: the fields that are set, in their order
            self.keys = tuple(name for name in self.CHECKS if getattr(self, name) is not None) \
                + tuple(self.extra)

    @classmethod
    def from_json(cls, obj: Any, where: str):
        """The record of a decoded JSON value; ``RecordError`` naming ``where`` (file:line)
        and the first thing wrong."""
        if not isinstance(obj, dict):
            raise RecordError(f"{where}: not {cls.KIND} ({_shown(obj)}, expected an object)")
        for name in cls.REQUIRED:
            if name not in obj:
                raise RecordError(f"{where}: not {cls.KIND} (no {name})")
        known: Dict[str, Any] = {}
        for name, check in cls.CHECKS.items():
            if name in obj:
                wrong = check(obj[name])
                if wrong:
                    raise RecordError(f"{where}: not {cls.KIND} ({name} is {wrong})")
                known[name] = obj[name]
        extra = {k: v for k, v in obj.items() if k not in cls.CHECKS}
        return cls(**known, extra=extra, keys=tuple(obj))

    def to_json(self) -> Dict[str, Any]:
        """The JSON object: exactly the keys read (or set), in their order."""
        return {k: self.extra[k] if k in self.extra else getattr(self, k) for k in self.keys}

    def with_key(self, name: str, value: Any):
        """A copy with field ``name`` set to ``value`` (present, ``null`` included), added
        last if it was absent."""
        keys = self.keys if name in self.keys else self.keys + (name,)
        return replace(self, **{name: value, "keys": keys})


@dataclass
class ManifestRecord(_Record):
    """One video's outcome in a shard's manifest (the module's doc)."""

    path: str
    status: str  # done, skipped or failed
    outputs: Optional[Dict[str, str]] = None  # key -> where its array is
    Tv: Optional[int] = None  # stacks
    seconds: Optional[float] = None  # of video
    stage: Optional[str] = None  # of a failure
    message: Optional[str] = None  # of a failure
    warnings: Optional[List[str]] = None  # logged while the video was extracted
    run: Optional[str] = None  # the run that made the outputs (null: before runs were recorded)
    # the launch (a SLURM job array task, the same through its requeues) of the process that
    # wrote this record (absent outside a scheduler)
    launch: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict, repr=False)
    keys: Tuple[str, ...] = field(default=(), repr=False, compare=False)

    KIND = "a manifest record"
    CHECKS = {"path": _string, "status": _status, "outputs": _files, "Tv": _count,
              "seconds": _seconds, "stage": _string, "message": _string, "warnings": _strings,
              "run": _optional_string, "launch": _optional_string}
    REQUIRED = ("path", "status")

    @property
    def made(self) -> bool:
        """Its outputs are complete (done now, or skipped as already done)."""
        return self.status in MADE

    def failure_json(self) -> Dict[str, Any]:
        """The record as a ``failed.jsonl`` line."""
        return {k: v for k, v in self.to_json().items() if k in ("path", "stage", "message", "run")}


@dataclass
class RunRecord(_Record):
    """What made a run's outputs: its feature options and weights (``features``), the
    versions, the device, the other options, where and when it ran."""

    run: str
    features: Dict[str, Any]  # the options that decide the numbers, and "weights"
    format: Optional[int] = None
    started: Optional[str] = None
    versions: Optional[Dict[str, Any]] = None
    device: Optional[str] = None
    options: Optional[Dict[str, Any]] = None
    host: Optional[str] = None
    pid: Optional[int] = None
    shard: Optional[int] = None
    num_shards: Optional[int] = None
    launch: Optional[str] = None  # the scheduler's task, the same through its requeues
    extra: Dict[str, Any] = field(default_factory=dict, repr=False)
    keys: Tuple[str, ...] = field(default=(), repr=False, compare=False)

    KIND = "a run record"
    CHECKS = {"run": _string, "features": _features, "format": _count, "started": _string,
              "versions": _object, "device": _optional_string, "options": _object,
              "host": _string, "pid": _count, "shard": _count, "num_shards": _count,
              "launch": _optional_string}
    REQUIRED = ("run", "features")

    @property
    def sha256(self) -> Optional[str]:
        """Of the weights that made the features (None when not recorded)."""
        return (self.features.get("weights") or {}).get("sha256")
