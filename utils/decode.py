"""Decode a video with PyAV and resample it the way ``ffmpeg -i V -filter:v fps=fps=N`` does.

Frames come out one at a time (a video is never held whole), rotated upright as the ffmpeg
CLI does, with their presentation interval in milliseconds measured from the container's
start time.
"""
import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator, List, Optional, Tuple

import av
import av.error

from utils.errors import ExtractionError

log = logging.getLogger(__name__)

AV_TIME_BASE = 1_000_000


@dataclass
class TimedFrame:
    """A decoded frame with its ``[start_ms, end_ms)`` interval."""

    frame: av.VideoFrame
    start_ms: float
    end_ms: float


def fps_fraction(fps: float) -> Fraction:
    """The rate given to FFmpeg's ``fps`` filter, as an exact fraction (29.97 -> 2997/100)."""
    return Fraction(str(fps)).limit_denominator(1_000_000)


def _round_half_away(x: Fraction) -> int:
    n = abs(x.numerator) * 2 + x.denominator
    q = n // (2 * x.denominator)
    return q if x >= 0 else -q


def start_time_shift(start_time_us: Optional[int], time_base: Fraction) -> int:
    """The container's start time in ``time_base`` ticks, rounded as ``av_rescale_q``."""
    if not start_time_us:
        return 0
    return _round_half_away(Fraction(start_time_us, AV_TIME_BASE) / time_base)


def rotation_filters(rotation: float) -> List[Tuple[str, Optional[str]]]:
    """Filters the ffmpeg CLI inserts for a display-matrix rotation (counter-clockwise degrees)."""
    theta = (-round(rotation)) % 360
    if abs(theta - 90) < 1:
        return [("transpose", "clock")]
    if abs(theta - 180) < 1:
        return [("hflip", None), ("vflip", None)]
    if abs(theta - 270) < 1:
        return [("transpose", "cclock")]
    return []


def build_graph(template: av.VideoFrame, time_base: Fraction,
                filters: List[Tuple[str, Optional[str]]]):
    """A linear graph ``buffer -> filters -> buffersink`` for frames like ``template``."""
    graph = av.filter.Graph()
    sar = template.sample_aspect_ratio if hasattr(template, "sample_aspect_ratio") else None
    args = (f"video_size={template.width}x{template.height}:pix_fmt={template.format.name}"
            f":time_base={time_base.numerator}/{time_base.denominator}")
    if sar:
        args += f":pixel_aspect={sar.numerator}/{sar.denominator}"
    nodes = [graph.add("buffer", args)]
    for name, arg in filters:
        nodes.append(graph.add(name, arg) if arg is not None else graph.add(name))
    nodes.append(graph.add("buffersink"))
    graph.link_nodes(*nodes).configure()
    return graph, nodes[0], nodes[-1]


def drain(sink) -> Iterator[av.VideoFrame]:
    """Pull every frame a buffersink holds now."""
    while True:
        try:
            yield sink.pull()
        except (av.error.BlockingIOError, av.error.EOFError):
            return


def open_video(path: str):
    """Open ``path`` and return ``(container, video_stream)`` or raise an ``open`` error."""
    if not os.path.exists(path):
        raise ExtractionError("open", "no such file")
    if os.path.isdir(path):
        raise ExtractionError("open", "is a directory, not a video file")
    if os.path.getsize(path) == 0:
        raise ExtractionError("open", "empty file (0 bytes)")
    try:
        container = av.open(path, metadata_errors="ignore")
    except (av.error.FFmpegError, UnicodeDecodeError, OSError) as e:
        cause = getattr(e, "strerror", None) or e  # without the errno and the path again
        raise ExtractionError("open", f"not a readable video ({cause})") from None
    if not container.streams.video:
        container.close()
        raise ExtractionError("open", "no video stream (audio-only or data file)")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return container, stream


class VideoDecoder:
    """Streams the frames of one video, rotated upright and optionally resampled to ``fps``.

    Iterating yields ``TimedFrame`` objects.  Frame times are presentation times minus the
    container's start time; after resampling to N fps, frame k starts at k * 1000 / N ms.
    """

    def __init__(self, path: str, fps: Optional[float] = None):
        self.path = path
        self.fps = fps_fraction(fps) if fps else None
        self.container, self.stream = open_video(path)
        self.time_base = Fraction(self.stream.time_base) if self.stream.time_base else Fraction(1, AV_TIME_BASE)
        self.shift = start_time_shift(self.container.start_time, self.time_base)
        rate = self.stream.average_rate or self.stream.guessed_rate
        self.average_fps: Optional[Fraction] = Fraction(rate) if rate else None
        self.corrupt_packets = 0
        self.decoded_frames = 0
        self.packets = 0

    @property
    def output_fps(self) -> Optional[float]:
        """The frame rate of the frames this decoder yields."""
        if self.fps is not None:
            return float(self.fps)
        return float(self.average_fps) if self.average_fps else None

    def close(self) -> None:
        self.container.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _packets(self):
        demux = self.container.demux(self.stream)
        while True:
            try:
                packet = next(demux)
            except StopIteration:
                return
            except av.error.FFmpegError as e:
                log.warning("%s: demuxing stopped early: %s", self.path, e)
                yield None  # flush the decoder
                return
            yield packet

    def _decoded(self) -> Iterator[av.VideoFrame]:
        codec = self.stream.codec_context
        first = end = None
        for packet in self._packets():
            if packet is not None and packet.size:
                self.packets += 1
            try:
                frames = codec.decode(packet)
            except av.error.FFmpegError as e:
                self.corrupt_packets += 1
                log.debug("%s: undecodable packet skipped: %s", self.path, e)
                continue
            for frame in frames:
                self.decoded_frames += 1
                if frame.pts is not None:
                    first = frame.pts if first is None else min(first, frame.pts)
                    stop = frame.pts + (frame.duration or 0)
                    end = stop if end is None else max(end, stop)
                yield frame
        self._check_complete(first, end)

    def _check_complete(self, first: Optional[int], end: Optional[int]) -> None:
        """Fail when corrupt packets outnumber decoded frames; warn when the stream ends early."""
        if self.corrupt_packets > self.decoded_frames or not self.decoded_frames:
            raise ExtractionError("decode", f"{self.decoded_frames} frames decoded from "
                                  f"{self.packets} packets ({self.corrupt_packets} corrupt): too "
                                  "little of the video is readable")
        duration = self.stream.duration
        if duration and first is not None and end is not None:
            fps = self.average_fps or 25
            slack = max(duration / 20, 2 / (fps * self.time_base))
            if end - first < duration - slack:
                log.warning("%s: the video stops at %.2f s of the %.2f s its container announces "
                            "(truncated file?); features cover the decoded part only", self.path,
                            float((end - first) * self.time_base), float(duration * self.time_base))

    def __iter__(self) -> Iterator[TimedFrame]:
        pending: Optional[TimedFrame] = None
        for frame in self._resampled():
            tb = Fraction(frame.time_base) if frame.time_base else self.time_base
            start_ms = float(frame.pts * tb * 1000)
            if pending is not None:
                pending.end_ms = start_ms
                yield pending
            duration = frame.duration if frame.duration else None
            if duration:
                dur_ms = float(duration * tb * 1000)
            elif self.output_fps:
                dur_ms = 1000.0 / self.output_fps
            else:
                dur_ms = 0.0
            pending = TimedFrame(frame, start_ms, start_ms + dur_ms)
        if pending is not None:
            yield pending

    def _resampled(self) -> Iterator[av.VideoFrame]:
        graph = src = sink = None
        last_pts = None
        step = None
        for frame in self._decoded():
            pts = frame.pts if frame.pts is not None else frame.dts
            if pts is None:
                if step is None:
                    step = (int(round(1 / (self.average_fps * self.time_base)))
                            if self.average_fps else 1)
                pts = 0 if last_pts is None else last_pts + step
            pts -= self.shift
            if last_pts is not None and pts <= last_pts and self.fps is None:
                log.debug("%s: non-increasing pts %s after %s", self.path, pts, last_pts)
            last_pts = pts
            frame.pts = pts
            if graph is None:
                filters = rotation_filters(frame.rotation or 0)
                if self.fps is not None:
                    filters.append(("fps", f"fps={self.fps.numerator}/{self.fps.denominator}"))
                graph, src, sink = build_graph(frame, self.time_base, filters)
            try:
                src.push(frame)
            except av.error.FFmpegError as e:
                raise ExtractionError("decode", f"frame {self.decoded_frames}: {e}") from None
            yield from drain(sink)
        if graph is not None:
            src.push(None)
            yield from drain(sink)
