"""Write the resampled frames to a video in ``tmp_path`` (``keep_tmp_files=true``), libx264.

Kept videos are named ``<stem>_<fps>fps_<8 hex digits>.mp4``: the digits hash the input's
absolute path, so two inputs with the same stem (``day1/clip.mp4``, ``day2/clip.mp4``) keep
two videos.  A kept video is a by-product: when it cannot be written (``tmp_path`` full,
removed, unwritable), the video's features are still extracted and saved, a warning naming
the input says why, and no temporary file is left behind.
"""
import hashlib
import logging
import os
from fractions import Fraction
from typing import Optional

import av
import av.error

from utils.errors import one_line
from utils.files import NAME_MAX, AtomicFile, fit_name

log = logging.getLogger(__name__)

# x264's defaults (preset medium: 40 frames of lookahead, B-frames, 1.5 frame threads per
# core) hold about a hundred frames: 10 GB for 8192x8192.  Above this many pixels a frame,
# kept videos use preset ultrafast with tune zerolatency (no lookahead, no B-frames, sliced
# threads): a few frames (about 0.5 GB at 8192x8192), in a bigger file.
LOW_MEMORY_PIXELS = 2**22  # 4.2 Mpixel: 2560x1600 keeps the defaults, 3840x2160 does not
ENCODER_MEMORY = 256 * 2**20  # slice threads: at most this many bytes of frames per thread
WRITE_ERRORS = (OSError, av.error.FFmpegError)


def encoder_options(width: int, height: int) -> dict:
    """libx264 options for frames of ``width`` x ``height`` (x264's defaults for small ones)."""
    if width * height <= LOW_MEMORY_PIXELS:
        return {}
    frame_bytes = width * height * 3 // 2
    threads = max(1, min(os.cpu_count() or 1, ENCODER_MEMORY // frame_bytes))
    return {"preset": "ultrafast", "tune": "zerolatency", "threads": str(threads)}


def kept_video_path(tmp_path: str, video: str, fps: Fraction) -> str:
    """Where the resampled ``video`` is kept: ``<tmp_path>/<stem>_<fps>fps_<hash>.mp4``."""
    stem = os.path.splitext(os.path.basename(video))[0]
    digest = hashlib.sha256(os.fsencode(os.path.abspath(video))).hexdigest()[:8]
    suffix = f"_{float(fps):g}fps_{digest}.mp4"
    return os.path.join(tmp_path, fit_name(stem, NAME_MAX - len(suffix)) + suffix)


class ResampledVideoWriter:
    """Encodes frames as they flow past; the file appears under its final name when closed
    with ``keep=True`` (written through ``utils.files``, like every output).

    ``source``: the input video, named in the warning when the file cannot be written.
    """

    def __init__(self, path: str, fps: Fraction, source: str = ""):
        self.path = path
        self.fps = fps
        self.source = source
        self.out: Optional[AtomicFile] = None
        self.container = None
        self.stream = None
        self.failed: Optional[BaseException] = None
        try:
            # a temporary of its own: two videos with the same stem may be decoded at once
            self.out = AtomicFile(path)
            self.container = av.open(self.out.file, "w", format="mp4")
        except WRITE_ERRORS as e:
            self._fail(e)

    def _fail(self, error: BaseException) -> None:
        self.failed = error
        log.warning("%s: the resampled video cannot be kept at %s (%s); the features are not "
                    "affected", self.source, self.path, one_line(error))
        self._drop()

    def _drop(self) -> None:
        """Close the encoder and remove the temporary, whatever state they are in."""
        container, self.container = self.container, None
        if container is not None:
            try:
                container.close()
            except WRITE_ERRORS:
                log.debug("closing the failed kept video %s", self.path, exc_info=True)
        if self.out is not None:
            self.out.discard()

    def write(self, frame: av.VideoFrame) -> None:
        if self.failed is not None:
            return
        try:
            if self.stream is None:
                self.stream = self.container.add_stream(
                    "libx264", rate=self.fps, options=encoder_options(frame.width, frame.height))
                self.stream.width, self.stream.height = frame.width, frame.height
                even = frame.width % 2 == 0 and frame.height % 2 == 0
                self.stream.pix_fmt = "yuv420p" if even else "yuv444p"
                self.stream.time_base = Fraction(1, 1) / self.fps
            out = frame.reformat(format=self.stream.pix_fmt)
            out.pts = frame.pts
            out.time_base = frame.time_base
            self.container.mux(self.stream.encode(out))
        except WRITE_ERRORS as e:
            self._fail(e)

    def close(self, keep: bool = True) -> None:
        """``keep``: finish the file and move it into place; otherwise (the video failed or
        was left early) remove it."""
        if self.failed is not None:
            return
        if not keep or self.stream is None:
            self._drop()
            return
        try:
            self.container.mux(self.stream.encode(None))
            self.container.close()
            self.container = None
            self.out.commit()
            log.info("resampled video kept at %s", self.path)
        except WRITE_ERRORS as e:
            self._fail(e)
        finally:
            self._drop()
