"""Write the resampled frames to a video in ``tmp_path`` (``keep_tmp_files=true``), libx264."""
import logging
from fractions import Fraction

import av

from utils.files import AtomicFile

log = logging.getLogger(__name__)


class ResampledVideoWriter:
    """Encodes frames as they flow past; the file appears under its final name when closed
    with ``keep=True`` (written through ``utils.files``, like every output)."""

    def __init__(self, path: str, fps: Fraction):
        self.path = path
        self.fps = fps
        # a temporary of its own: two videos with the same stem may be decoded at once
        self.out = AtomicFile(path)
        self.container = av.open(self.out.file, "w", format="mp4")
        self.stream = None

    def write(self, frame: av.VideoFrame) -> None:
        if self.stream is None:
            self.stream = self.container.add_stream("libx264", rate=self.fps)
            self.stream.width, self.stream.height = frame.width, frame.height
            even = frame.width % 2 == 0 and frame.height % 2 == 0
            self.stream.pix_fmt = "yuv420p" if even else "yuv444p"
            self.stream.time_base = Fraction(1, 1) / self.fps
        out = frame.reformat(format=self.stream.pix_fmt)
        out.pts = frame.pts
        out.time_base = frame.time_base
        self.container.mux(self.stream.encode(out))

    def close(self, keep: bool = True) -> None:
        try:
            if self.stream is not None:
                self.container.mux(self.stream.encode(None))
            self.container.close()
            if keep and self.stream is not None:
                self.out.commit()
                log.info("resampled video kept at %s", self.path)
        finally:
            self.out.discard()
