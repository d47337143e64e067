"""Test videos made on the spot with the test-only FFmpeg 9 CLI that imageio-ffmpeg ships."""
import subprocess
from typing import List, Optional, Sequence

import imageio_ffmpeg

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg(*args: str) -> bytes:
    """Run the ffmpeg CLI quietly; return its stdout (raise with its stderr on failure)."""
    proc = subprocess.run([FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
                          capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg {' '.join(args)} failed: {proc.stderr.decode(errors='replace')}")
    return proc.stdout


def synth(path: str, seconds: float = 3.0, rate: str = "25", size: str = "320x240",
          codec: str = "libx264", pix_fmt: Optional[str] = "yuv420p",
          source: str = "testsrc2", extra: Optional[List[str]] = None) -> str:
    """Write a synthetic clip (``testsrc2`` moves, so consecutive stacks differ)."""
    args = ["-f", "lavfi", "-i", f"{source}=size={size}:rate={rate}:duration={seconds}",
            "-c:v", codec]
    if pix_fmt:
        args += ["-pix_fmt", pix_fmt]
    ffmpeg(*args, *(extra or []), path)
    return path


def clip_maker(folder, **defaults):
    """``make(name, **synth_kwargs)``: a synthetic clip in ``folder``, made once per name.

    ``defaults`` fill in the ``synth`` arguments a call leaves out."""
    made = {}

    def make(name: str, **kwargs) -> str:
        if name not in made:
            made[name] = synth(str(folder / name), **{**defaults, **kwargs})
        return made[name]

    return make


def cli_frames(path: str, vf: str, width: int, height: int, extra: Sequence[str] = ()):
    """Frames of ``ffmpeg -i path -vf vf [extra] -f rawvideo -pix_fmt rgb24 -`` as (N, H, W, 3)
    uint8."""
    import numpy as np

    raw = ffmpeg("-i", path, "-vf", vf, *extra, "-f", "rawvideo", "-pix_fmt", "rgb24", "-")
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


def kylemin_vf(width: int, height: int, fps) -> str:
    """The ``kylemin`` preset as an FFmpeg filter chain, for an upright ``width`` x ``height``
    video: resampled to ``fps`` (None: every decoded frame), short side scaled to 224, centre
    224x224 crop."""
    from utils.video.preprocess import CROP, crop_offsets, resized_size

    w, h = resized_size(width, height)
    x, y = crop_offsets(w, h)
    resample = f"fps={fps}," if fps is not None else ""
    return f"{resample}scale={w}:{h}:flags=bilinear,format=rgb24,crop={CROP}:{CROP}:{x}:{y}"
