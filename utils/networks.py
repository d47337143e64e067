"""The networks and pixel presets, as ``utils/`` knows them: specs that ``models/`` registers.

``utils/`` names no network but the default (``s3d``, the ``feature_type`` option's default).
Everything it needs of one (defaults, limits, output keys and widths, pixel preset, weights,
labels, and how to build its extractor) is in the ``NetworkSpec`` that the network's package
declares in ``models/<name>/spec.py`` and registers with ``register``; ``models/__init__.py``
imports each such package (one line a network).  This module is pure data: registering a
network imports neither torch nor PyAV.

A pixel preset (the ``preprocess`` option) is data too: how frames are resized (``ffmpeg``:
FFmpeg's bilinear ``scale`` filter and a centre crop, uint8 until the network input; ``torch``:
the incumbent tool's float bilinear resize) and the range the network takes pixels in.
``utils.video.preprocess`` turns a ``Preset`` into the code that does it.
"""
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

DEFAULT_NETWORK = "s3d"


@dataclass(frozen=True)
class Preset:
    """A ``preprocess`` value: the resize and the pixel range (``help`` is for ``--help``)."""

    name: str
    resize: str                          # "ffmpeg" or "torch"
    value_range: Tuple[float, float]     # (-1, 1) or (0, 1)
    help: str

    def __post_init__(self) -> None:
        if self.resize not in ("ffmpeg", "torch") or self.value_range not in ((-1, 1), (0, 1)):
            raise ValueError(f"preset {self.name}: resize must be ffmpeg or torch and "
                             f"value_range (-1, 1) or (0, 1), not {self.resize}, {self.value_range}")


@dataclass(frozen=True)
class WeightsFile:
    """A file a network loads: the option that names a local copy, and the default download."""

    option: str                          # "weights_path", "dict_path"
    url: str
    filename: str                        # its name in torch's hub cache
    what: str = "checkpoint"             # for messages: "checkpoint", "word list"
    git_blob_sha1: Optional[str] = None  # checked after download when known


@dataclass(frozen=True)
class Labels:
    """The classes a network predicts (``show_pred``): their set's name and a file, one a line."""

    name: str                            # "Kinetics-400"
    path: str

    def read(self):
        with open(self.path, encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()]


@dataclass(frozen=True)
class NetworkSpec:
    """A network the tool extracts: the defaults and limits of its input, and its outputs.

    Every video gives, for each ``(key, width)`` of ``features``, a (Tv, width) float32 array,
    plus ``timestamps_ms`` (Tv, 2) and ``fps``; they go to ``<output_path>/<name>/``.
    """

    name: str
    description: str
    stack_size: int
    step_size: int
    extraction_fps: float
    preprocess: str                      # a registered Preset's name
    min_stack_size: int
    features: Tuple[Tuple[str, int], ...]
    build: Callable[[Any], Any]          # config -> the extractor (imports torch when called)
    weights: Tuple[WeightsFile, ...] = ()
    labels: Optional[Labels] = None      # None: no classification head, no show_pred
    no_labels_hint: str = ""             # what to do instead of show_pred, when labels is None
    even_stack_reason: Optional[str] = None  # set: stack_size must be even, and this says why

    @property
    def keys(self) -> Tuple[str, ...]:
        """Every output key, in the order files are written and printed."""
        return tuple(key for key, _ in self.features) + ("timestamps_ms", "fps")

    @property
    def options(self) -> Tuple[str, ...]:
        """The file options this network reads (``weights_path``, ``dict_path``...)."""
        return tuple(w.option for w in self.weights)


_NETWORKS: Dict[str, NetworkSpec] = {}
_PRESETS: Dict[str, Preset] = {}


def register(spec: NetworkSpec) -> NetworkSpec:
    """Make ``spec`` a ``feature_type`` (once per name; its preset must be registered)."""
    known = _NETWORKS.get(spec.name)
    if known is not None and known != spec:
        raise ValueError(f"network {spec.name!r} is registered twice, differently")
    if spec.preprocess not in _PRESETS:
        raise ValueError(f"network {spec.name}: preset {spec.preprocess!r} is not registered")
    _NETWORKS[spec.name] = spec
    return spec


def register_preset(preset: Preset) -> Preset:
    known = _PRESETS.get(preset.name)
    if known is not None and known != preset:
        raise ValueError(f"preset {preset.name!r} is registered twice, differently")
    _PRESETS[preset.name] = preset
    return preset


def networks() -> Mapping[str, NetworkSpec]:
    """The registered networks, by ``feature_type``, in registration order."""
    return dict(_NETWORKS)


def presets() -> Mapping[str, Preset]:
    return dict(_PRESETS)


def network(name: str) -> NetworkSpec:
    """The spec of ``feature_type=name``; ``KeyError`` when no package registered it."""
    return _NETWORKS[name]


def preset(name: str) -> Preset:
    return _PRESETS[name]


# The presets of more than one network (a network may register its own, as s3d_howto100m does).
register_preset(Preset(
    "kylemin", resize="ffmpeg", value_range=(-1, 1),
    help="FFmpeg bilinear resize, pixels in [-1, 1]"))
register_preset(Preset(
    "video_features", resize="torch", value_range=(0, 1),
    help="the incumbent's torch resize, [0, 1]"))
