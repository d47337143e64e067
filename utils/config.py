"""Every option in one place: its type, default, meaning and validation.

``ExtractorOptions`` holds what shapes the features (the Python API, ``ExtractS3D(**options)``,
takes exactly these); ``ExtractionConfig`` adds what a batch run needs (inputs, sink, shards)
and is the typed schema Hydra composes the command line into.  Both validate in
``__post_init__`` (run by ``OmegaConf.to_object`` at start-up, and by the dataclass
constructor in the API), so a bad value gives the same one-line ``ValueError`` whichever way it
came in: ``"<option>: <what is wrong>; expected <what is allowed>"``.

Per-network defaults (``stack_size``, ``step_size``, ``extraction_fps``, ``preprocess``) are in
each network's spec (``utils.networks``, registered by ``models/<name>/spec.py``): the schema
leaves them ``???`` (Hydra's "missing"), the ``feature_type`` config group made from the
registered specs fills them on the command line, and ``__post_init__`` does in the API.
``help_text()`` is what ``python main.py --help`` prints; help that lists networks or presets
is a function, read when shown, so that it names whatever is registered.

Every option says whether it changes the features (``feature=True``: their values, or where
they are written); the rerun check (``utils.records.provenance``) compares exactly those
(``feature_options()``), so a new option cannot be left out of it by mistake.
"""
import os
import re
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any, Callable, Dict, Optional, Tuple, Union

from hydra.core.config_store import ConfigStore

from utils.networks import DEFAULT_NETWORK, network, networks, presets


class OnExtraction(str, Enum):
    print = "print"
    save_numpy = "save_numpy"
    save_pickle = "save_pickle"
    save_h5 = "save_h5"


class Precision(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


class OutputLayout(str, Enum):
    flat = "flat"
    mirror = "mirror"


Check = Callable[[Any, Any], Optional[str]]  # (value, options) -> what is wrong, or None


Text = Union[str, Callable[[], str]]  # a help text, or a function giving it when shown


def option(default, help: Text, check: Optional[Check] = None, *, feature: bool,
           default_shown: Optional[Text] = None):
    """A dataclass field with its meaning (``help``), its ``check``, whether it changes the
    features (``feature``) and how ``--help`` shows its default (``default_shown``)."""
    return field(default=default, metadata={"help": help, "check": check, "feature": feature,
                                            "default_shown": default_shown})


def _text(value: Optional[Text]) -> Optional[str]:
    return value() if callable(value) else value


def option_help(f) -> str:
    """An option field's meaning, as ``--help`` shows it."""
    return _text(f.metadata.get("help")) or ""


# -- checks: each returns the text after "<option>: ", or None when the value is fine ---------
def _int_at_least(low: int, extra: str = "") -> Check:
    def check(value, _):
        if value is not None and value < low:
            return f"{value} is not allowed; expected an integer >= {low}{extra}"
        return None
    return check


def _at_least_zero(value, _) -> Optional[str]:
    if value < 0:
        return f"{value} is not allowed; expected a number >= 0"
    return None


def _check_stack_size(value, options) -> Optional[str]:
    spec = network(options.feature_type)
    even = spec.even_stack_reason is not None
    low, kind = spec.min_stack_size, "an even integer" if even else "an integer"
    if even and value % 2:
        return f"{value} is odd; {spec.name}'s {spec.even_stack_reason}: expected {kind} >= {low}"
    if value < low:
        return f"{value} is below the network's minimum; expected {kind} >= {low}"
    return None


def _check_dict_path(value, options) -> Optional[str]:
    if value and "dict_path" not in network(options.feature_type).options:
        return (f"{options.feature_type} reads no word list; expected null (dict_path is for "
                f"{_readers('dict_path')})")
    return None


def _readers(option_name: str) -> str:
    return ", ".join(n for n, s in networks().items() if option_name in s.options) or "none"


def _check_show_pred(value, options) -> Optional[str]:
    spec = network(options.feature_type)
    if value and spec.labels is None:
        hint = f" ({spec.no_labels_hint})" if spec.no_labels_hint else ""
        return f"{options.feature_type} has no classes to show; expected false{hint}"
    return None


def _check_preprocess(value, _) -> Optional[str]:
    if value not in presets():
        return f"Invalid value {value!r}, expected one of [{', '.join(presets())}]"
    return None


def _per_network(name: str) -> Callable[[], str]:
    """How ``--help`` shows a per-network default: ``the network's (s3d: 64, ...)``."""
    def default_text() -> str:
        values = ", ".join(f"{n}: {getattr(s, name):g}" if isinstance(getattr(s, name), float)
                           else f"{n}: {getattr(s, name)}" for n, s in networks().items())
        return f"the network's ({values})"
    return default_text


def _minimums() -> str:
    return ", ".join(f"{s.min_stack_size} for {n}" + (" (even)" if s.even_stack_reason else "")
                     for n, s in networks().items())


def _check_fps(value, _) -> Optional[str]:
    if value is not None and not value > 0:
        return (f"{value} is not allowed; expected a positive number or null (keep every "
                "decoded frame)")
    return None


def _check_ratio(value, _) -> Optional[str]:
    if value is not None and not value >= 1:
        return (f"{value} is not allowed; expected a number >= 1 (frames emitted per decoded "
                "frame) or null (no limit)")
    return None


def _check_tmp_path(value, options) -> Optional[str]:
    """With ``keep_tmp_files``: a folder that exists and is writable, or can be made in one
    that is, on a filesystem with room left (a disk that fills later costs only the kept
    video, with a warning: utils.video.kept_video)."""
    if not options.keep_tmp_files:
        return None
    expected = "; expected a folder the resampled videos can be written to (keep_tmp_files=true)"
    folder = os.path.abspath(value)
    while not os.path.lexists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        what = "is a file" if folder == os.path.abspath(value) else f"is under a file ({folder})"
        return f"{value} {what}, not a folder{expected}"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"{value}: cannot write in {folder} (permission denied){expected}"
    fs = os.statvfs(folder)
    if fs.f_bavail == 0:
        return f"{value}: the filesystem of {folder} is full{expected}"
    return None


def _check_feature_type(value, _) -> Optional[str]:
    if value not in networks():
        return f"{value!r} is not available; expected one of [{', '.join(networks())}]"
    return None


_DEVICE = re.compile(r"^(cpu|cuda)(:(\d+))?$")


def _check_device(value, _) -> Optional[str]:
    """``cpu``, ``cuda`` or ``cuda:N``; an N this machine lacks is an error when it has CUDA
    (without CUDA, the run falls back to the CPU with a warning: utils.device)."""
    m = _DEVICE.match(str(value))
    if not m or (m[1] == "cpu" and m[2]):
        return f"{value!r} is not supported; expected cpu, cuda or cuda:N (the N-th GPU)"
    if m[1] == "cuda" and m[3] is not None:
        import torch

        if torch.cuda.is_available() and int(m[3]) >= torch.cuda.device_count():
            return (f"{value} does not exist; this machine has {torch.cuda.device_count()} "
                    "CUDA device(s), cuda:0 to cuda:{}".format(torch.cuda.device_count() - 1))
    return None


def _check_shard(value, options) -> Optional[str]:
    if options.num_shards >= 1 and not 0 <= value < options.num_shards:
        return f"{value} is not allowed; expected 0 <= shard < num_shards={options.num_shards}"
    return None


_TYPE_NAMES = {int: "Integer", float: "Float", bool: "Boolean", str: "String"}


def _coerce(name: str, value, kind):
    """``value`` as the field's type (``kind``), with OmegaConf's wording when it is not one,
    so the API and the command line say the same."""
    optional = getattr(kind, "__origin__", None) is not None and type(None) in kind.__args__
    if optional:
        kind = next(a for a in kind.__args__ if a is not type(None))
        if value is None:
            return None
    if isinstance(kind, type) and issubclass(kind, Enum):
        try:
            return kind(getattr(value, "value", value))
        except ValueError:
            allowed = ", ".join(m.value for m in kind)
            raise ValueError(f"{name}: Invalid value {value!r}, expected one of [{allowed}]"
                             ) from None
    if kind in (int, float) and not isinstance(value, bool):
        if isinstance(value, int) or (kind is float and isinstance(value, float)):
            return kind(value)
    elif kind is bool and isinstance(value, bool) or kind is str and isinstance(value, str):
        return value
    elif kind not in _TYPE_NAMES:
        return value
    raise ValueError(f"{name}: Value {value!r} of type {type(value).__name__!r} could not be "
                     f"converted to {_TYPE_NAMES[kind]}")


NETWORK_DEFAULT = "???"  # Hydra's "missing": the value comes from the network's spec
NETWORK_OPTIONS = ("stack_size", "step_size", "extraction_fps", "preprocess")


class _Validated:
    """Fill the network's defaults, coerce every field to its type, run every check."""

    def __post_init__(self) -> None:
        problem = _check_feature_type(self.feature_type, self)
        if problem:
            raise ValueError(f"feature_type: {problem}")
        spec = network(self.feature_type)
        for name in NETWORK_OPTIONS:
            if getattr(self, name) == NETWORK_DEFAULT:
                setattr(self, name, getattr(spec, name))
        for f in fields(self):
            setattr(self, f.name, _coerce(f.name, getattr(self, f.name), _resolve(f.type)))
        for f in fields(self):
            check = f.metadata.get("check")
            problem = check(getattr(self, f.name), self) if check else None
            if problem:
                raise ValueError(f"{f.name}: {problem}")
        self._check_across_fields()

    def _check_across_fields(self) -> None:
        pass


def _resolve(kind):
    """Dataclass field types may be strings (``from __future__ import annotations``) or types."""
    return eval(kind, globals()) if isinstance(kind, str) else kind  # noqa: S307 -- our own annotations


def _network_help() -> str:
    return "the network: " + ", ".join(networks())


def _stack_help() -> str:
    return f"frames per feature window (the network's minimum: {_minimums()})"


def _preset_help() -> str:
    return "; ".join(f"{p.name}: {p.help}" for p in presets().values())


def _dict_help() -> str:
    files = ", ".join(f"{n}: {w.filename}" for n, s in networks().items() for w in s.weights
                      if w.option == "dict_path")
    return (f"the word list of a network that reads one ({files}), a local file; null: the "
            "default, downloaded once into torch's hub cache")


def _show_pred_help() -> str:
    heads = ", ".join(f"{n}: {s.labels.name}" for n, s in networks().items() if s.labels)
    return f"print the top-5 classes of every stack ({heads})"


@dataclass
class ExtractorOptions(_Validated):
    """What turns a video into features: the options of ``ExtractS3D`` and of the CLI."""

    feature_type: str = option(DEFAULT_NETWORK, _network_help, _check_feature_type,
                               feature=True)
    stack_size: int = option(NETWORK_DEFAULT, _stack_help, _check_stack_size, feature=True,
                             default_shown=_per_network("stack_size"))
    step_size: int = option(NETWORK_DEFAULT, "frames between window starts", _int_at_least(1),
                            feature=True, default_shown=_per_network("step_size"))
    extraction_fps: Optional[float] = option(
        NETWORK_DEFAULT, "resample to this frame rate first (FFmpeg's fps filter); null keeps "
        "every decoded frame", _check_fps, feature=True,
        default_shown=_per_network("extraction_fps"))
    max_resample_ratio: Optional[float] = option(
        100.0, "with extraction_fps: the most frames resampling may emit per decoded frame "
        "(repeats filling gaps in the timestamps); a video that needs more fails at decode; "
        "null: no limit", _check_ratio, feature=False)
    preprocess: str = option(NETWORK_DEFAULT, _preset_help, _check_preprocess, feature=True,
                             default_shown=_per_network("preprocess"))
    # the weights are compared by their SHA-256 (the run's identity), not by this path
    weights_path: Optional[str] = option(None, "a local checkpoint; null: the default weights, "
                                         "downloaded once into torch's hub cache",
                                         feature=False)
    dict_path: Optional[str] = option(None, _dict_help, _check_dict_path, feature=False)
    device: str = option("cuda:0", "torch device: cpu, cuda or cuda:N; without CUDA, the CPU "
                         "(with a warning)", _check_device, feature=False)
    batch_size: Optional[int] = option(None, "stacks per forward pass; null: 1 on CPU, 8 on CUDA",
                                       _int_at_least(1, " or null (1 on CPU, 8 on CUDA)"),
                                       feature=False)
    num_workers: int = option(1, "videos decoded ahead in background threads (0: inline)",
                              _int_at_least(0), feature=False)
    precision: Precision = option(Precision.fp32, "fp32, fp16 or bf16 (CUDA; bf16 also on CPUs "
                                  "with native bfloat16, AVX512_BF16 or AMX; else fp32)",
                                  feature=True)
    compile: bool = option(False, "torch.compile with inductor freezing (tens of seconds to "
                           "compile; for long runs)", feature=False)
    keep_tmp_files: bool = option(False, "keep the resampled video (libx264) in tmp_path",
                                  feature=False)
    tmp_path: str = option("./tmp", "where kept resampled videos go (checked at start "
                           "when keep_tmp_files=true)", _check_tmp_path, feature=False)


@dataclass
class ExtractionConfig(ExtractorOptions):
    """The command line's options: the extractor's, plus inputs, sink and sharding."""

    video_paths: Any = option(None, "one path or a list: \"[a.mp4, b.mkv]\"; a folder stands "
                              "for its video files (any depth, by extension, sorted), a glob "
                              "pattern ('/data/**/*.mp4') for what it matches", feature=False)
    file_with_video_paths: Optional[str] = option(
        None, "a text file, one path a line (or a failed.jsonl / manifest to retry); a line "
        "may be a folder or a glob pattern, as in video_paths", feature=False)
    on_extraction: OnExtraction = option(OnExtraction.print, "print, save_numpy (.npy), "
                                         "save_pickle (.pkl) or save_h5 (one HDF5 file a shard)",
                                         feature=False)
    output_path: str = option("./output", "features go to "
                              "<output_path>/<feature_type>/<name>_<key>.<ext> (save_h5: "
                              "<feature_type>-<shard>-of-<num_shards>.h5 there)", feature=False)
    output_layout: OutputLayout = option(OutputLayout.flat, "flat (<stem>_<key>) or mirror "
                                         "(the inputs' folders kept, see input_root)",
                                         feature=True)
    input_root: Optional[str] = option(None, "with output_layout=mirror, each input's folders "
                                       "are kept relative to this folder; null: from the "
                                       "filesystem root (/data/a/v.mp4 -> data/a/v)",
                                       feature=True)
    overwrite: bool = option(False, "redo videos whose outputs exist", feature=False)
    show_pred: bool = option(False, _show_pred_help, _check_show_pred, feature=False)
    shard: int = option(0, "this process takes the inputs i with i % num_shards == shard",
                        _check_shard, feature=False)
    num_shards: int = option(1, "number of shards the input list is split into",
                             _int_at_least(1), feature=False)
    lock_wait_s: float = option(0.0, "when another run holds this shard of the output folder "
                                "(or shards it another way), wait up to this many seconds for "
                                "it to end (0: exit 2 at once, naming it)", _at_least_zero,
                                feature=False)
    progress_every_s: float = option(60.0, "when stderr is not a terminal, one 'progress:' "
                                     "line at most this often, in seconds (0: none)",
                                     _at_least_zero, feature=False)
    debug: bool = option(False, "tracebacks for failures, debug logging", feature=False)

    def _check_across_fields(self) -> None:
        if self.video_paths in (None, "", []) and not self.file_with_video_paths:
            raise ValueError("video_paths: no input given; set video_paths (a path or a list) "
                             "or file_with_video_paths (a text file, one path a line)")


def feature_options(schema: type = None) -> Tuple[str, ...]:
    """The options of ``schema`` (default ``ExtractionConfig``) that change the features (their
    values or where they go), in field order: what the rerun check compares."""
    return tuple(f.name for f in fields(schema or ExtractionConfig) if f.metadata["feature"])


def extractor_options(cfg) -> Dict[str, Any]:
    """The ``ExtractorOptions`` fields of ``cfg`` (a config or any object with them)."""
    return {f.name: getattr(cfg, f.name) for f in fields(ExtractorOptions)}


def help_text() -> str:
    """The options, their defaults and meanings, for ``python main.py --help``."""
    rows = []
    for f in fields(ExtractionConfig):
        default = _text(f.metadata.get("default_shown"))
        if default is None:
            value = f.default
            default = "null" if value is None else str(getattr(value, "value", value)).lower() \
                if isinstance(value, bool) else str(getattr(value, "value", value))
        rows.append((f.name, default, option_help(f)))
    width = max(len(name) for name, _, _ in rows)
    lines = ["usage: python main.py [option=value ...]   (Hydra overrides; -m for multirun)",
             "", "options:"]
    for name, default, meaning in rows:
        lines.append(f"  {name:<{width}}  {meaning} (default: {default})")
    lines += ["", "Hydra's own flags: python main.py --hydra-help"]
    return "\n".join(lines)


def register_configs() -> None:
    """The schema, and one ``feature_type`` group entry per network (its defaults, at the top
    level: ``python main.py feature_type=s3d stack_size=32``)."""
    store = ConfigStore.instance()
    store.store(name="extraction_schema", node=ExtractionConfig)
    for spec in networks().values():
        node = {"feature_type": spec.name, **{n: getattr(spec, n) for n in NETWORK_OPTIONS}}
        store.store(group="feature_type", name=spec.name, node=node, package="_global_")
