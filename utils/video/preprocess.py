"""Per-frame geometry and pixel scaling: a ``preprocess`` preset (``utils.networks.Preset``:
data) turned into the code that does it.

Resize ``ffmpeg`` (the ``kylemin`` preset, and ``howto100m``): FFmpeg's
``scale=W:H:flags=bilinear,format=rgb24,crop=224:224:X:Y`` on the decoded frame, kept as uint8
until the network input, then scaled to the preset's range ([-1, 1] for kylemin's
Kinetics-400 weights, [0, 1] for the MIL-NCE HowTo100M S3D-G).

Resize ``torch`` (``video_features``): the incumbent tool's path, for users who must stay
consistent with features they already have: rgb24 -> float [0, 1] -> torch bilinear resize
with ``scale_factor = 224 / min(H, W)`` (``align_corners=False``, no antialias) -> the same
centre crop.
"""
from typing import Tuple

import av
import numpy as np
import torch

from utils.video.decode import build_graph, drain, frame_size_problem
from utils.errors import ExtractionError
from utils.networks import presets

CROP = 224


def resized_size(width: int, height: int, short: int = CROP) -> Tuple[int, int]:
    """``(W, H)`` with min(W, H) == ``short`` and the other side floored."""
    if width <= height:
        return short, height * short // width
    return width * short // height, short


def checked_resized_size(width: int, height: int) -> Tuple[int, int]:
    """``resized_size``, or a ``decode`` failure when that frame would be over the size limit
    (an extreme aspect ratio: 16384x2 would become 1835008x224, 1.2 GB of RGB)."""
    w, h = resized_size(width, height)
    problem = frame_size_problem(w, h, what=f"frames of {width}x{height} resized to")
    if problem:
        raise ExtractionError("decode", problem)
    return w, h


def crop_offsets(width: int, height: int, size: int = CROP) -> Tuple[int, int]:
    """Centre-crop offsets ``(x, y)``: Python's ``round((side - size) / 2)``."""
    return round((width - size) / 2), round((height - size) / 2)


class FilteredFrames:
    """av.VideoFrame -> ndarray through an FFmpeg filter chain (rebuilt when the frame changes).

    Pixel-format conversion goes through ``format=rgb24`` in a graph, as in the ffmpeg CLI:
    ``VideoFrame.to_ndarray(format="rgb24")`` differs from it on high-bit-depth 4:2:0 input
    (e.g. yuv420p10le, up to 112 levels at colour edges).
    """

    def __init__(self):
        self._graph = None
        self._key = None

    def filters(self, width: int, height: int):
        return [("format", "rgb24")]

    def view(self, frame: av.VideoFrame) -> np.ndarray:
        """The filtered frame as an array that views the filter's buffer (use it at once)."""
        key = (frame.width, frame.height, frame.format.name)
        if key != self._key:
            self._graph = build_graph(frame, frame.time_base or 1, self.filters(frame.width, frame.height))
            self._key = key
        _, src, sink = self._graph
        src.push(frame)
        out = list(drain(sink))
        if not out:  # FFmpeg's filters drop a frame they cannot allocate
            raise ExtractionError("decode", f"a {frame.width}x{frame.height} frame came out of "
                                  "the resize filters empty (out of memory?)")
        return out[-1].to_ndarray()

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        """The filtered frame as an array that owns its pixels.

        ``to_ndarray()`` views the filtered frame's buffer: after a crop, one that holds the
        whole resized frame (229376x224 for a 16384x16 input).  The copy owns just its pixels,
        so a stack holds ``stack_size`` crops, not ``stack_size`` resized frames."""
        return self.view(frame).copy()


class FFmpegFrames(FilteredFrames):
    """av.VideoFrame -> (224, 224, 3) uint8, through FFmpeg's scale/format/crop filters."""

    def filters(self, width: int, height: int):
        w, h = checked_resized_size(width, height)
        x, y = crop_offsets(w, h)
        return [("scale", f"{w}:{h}:flags=bilinear"), ("format", "rgb24"),
                ("crop", f"{CROP}:{CROP}:{x}:{y}")]


class KyleminFrames(FFmpegFrames):
    """FFmpeg's frames, given to the network in [-1, 1]."""

    @staticmethod
    def to_input(frames: torch.Tensor) -> torch.Tensor:
        """(..., H, W, 3) uint8 -> float32 in [-1, 1]."""
        return frames.to(torch.float32).mul_(2.0 / 255.0).sub_(1.0)


class UnitFrames(FFmpegFrames):
    """FFmpeg's frames, given to the network in [0, 1]."""

    @staticmethod
    def to_input(frames: torch.Tensor) -> torch.Tensor:
        """(..., H, W, 3) uint8 -> float32 in [0, 1]."""
        return frames.to(torch.float32).div_(255.0)


class VideoFeaturesFrames:
    """av.VideoFrame -> (224, 224, 3) float32 in [0, 1], resized as the incumbent tool does."""

    def __init__(self):
        self._rgb = FilteredFrames()

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        checked_resized_size(frame.width, frame.height)  # before any full-size float copy
        rgb = self._rgb.view(frame)  # full size: converted to float at once, not kept
        return resize_crop_float(torch.from_numpy(rgb)).numpy()

    @staticmethod
    def to_input(frames: torch.Tensor) -> torch.Tensor:
        return frames


def resize_crop_float(rgb: torch.Tensor) -> torch.Tensor:
    """(H, W, 3) uint8 -> (224, 224, 3) float32 in [0, 1].

    The sampling grid is the incumbent's: ``F.interpolate(scale_factor=224 / min(H, W),
    recompute_scale_factor=False)``.  Its output size is floored from a float product and
    gives 223 rows for some short sides (277, 299, ...); here the size is exact.
    """
    height, width = rgb.shape[:2]
    scale = float(CROP) / min(height, width)
    out_w, out_h = resized_size(width, height)
    x = rgb.permute(2, 0, 1).unsqueeze(0).to(torch.float32).div_(255.0)
    x = torch.ops.aten.upsample_bilinear2d(x, [out_h, out_w], False, scale, scale)
    left, top = crop_offsets(out_w, out_h)
    return x[0, :, top:top + CROP, left:left + CROP].permute(1, 2, 0).contiguous()


# (resize, value range) -> the class that does it
_CLASSES = {("ffmpeg", (-1, 1)): KyleminFrames, ("ffmpeg", (0, 1)): UnitFrames,
            ("torch", (0, 1)): VideoFeaturesFrames}


def preset_class(name: str):
    """The registered preset's class: instances convert one video's frames (they keep its
    filter graph), the class's ``to_input`` turns a batch of their frames into the network's
    input."""
    spec = presets().get(name)
    if spec is None:
        raise ValueError(f"preprocess: unknown preset {name!r}; expected one of "
                         f"{', '.join(presets())}")
    try:
        return _CLASSES[spec.resize, tuple(spec.value_range)]
    except KeyError:
        raise ValueError(f"preprocess: preset {name!r} asks for a {spec.resize} resize to "
                         f"{spec.value_range}, which is not implemented") from None
