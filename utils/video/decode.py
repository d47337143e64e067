"""Decode a video with PyAV and resample it the way ``ffmpeg -i V -filter:v fps=fps=N`` does.

Frames come out one at a time (a video is never held whole), rotated upright as the ffmpeg
CLI does, with their presentation interval in milliseconds measured from the container's
start time.

Hostile inputs cost bounded memory and time:

- frames over ``MAX_PIXELS`` (8192x8192) fail at ``decode`` before they are decoded; for
  streams whose headers understate the size, the decoder itself refuses larger pictures
  (``max_pixels``) and the size it took from the stream fails the video at ``decode`` (with
  frame threads it refuses them silently); big frames are decoded with fewer threads, so the
  frames the decoder holds stay within ``DECODER_MEMORY``;
- timestamps that jump in formats that allow it (MPEG-TS joined with ``cat``) are corrected
  as the ffmpeg CLI corrects them, and without resampling frame times never go backwards;
- resampling that would invent more than ``max_resample_ratio`` frames per decoded frame
  (a huge gap in the timestamps) fails at ``decode`` before a single repeat is made.
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

# The largest decoded (or resized) frame accepted: 8192x8192.  An 8192x8192 frame is 100 MB
# in 8-bit 4:2:0 and 800 MB as float RGB; H.264, HEVC and AV1 stop at 8192x4320 (level 6.2).
MAX_PIXELS = 8192 * 8192
# Frame threads each hold about two frames: fewer threads for big frames keep the decoder's
# frames within this (1080p keeps one thread per core up to 40 cores).
DECODER_MEMORY = 512 * 2**20
DECODER_BYTES_PER_PIXEL = 3  # 4:2:0 8-bit is 1.5; 4:4:4 and 10-bit formats take more
# The ffmpeg CLI's -dts_delta_threshold: a jump of more than 10 s in a format that allows
# discontinuities (MPEG-TS, MPEG-PS, FLV...) is a restart, not a gap.
DTS_DELTA_THRESHOLD_US = 10 * AV_TIME_BASE


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


def frame_size_problem(width: int, height: int, what: str = "frames of") -> Optional[str]:
    """Why ``width`` x ``height`` is too big to handle (None when it is fine)."""
    if width * height <= MAX_PIXELS:
        return None
    return (f"{what} {width}x{height} ({width * height / 1e6:.1f} Mpixel) are over the "
            f"{MAX_PIXELS / 1e6:.1f} Mpixel (8192x8192) size limit that keeps memory bounded")


def decoder_threads(width: int, height: int) -> int:
    """Frame threads for a ``width`` x ``height`` stream (0: FFmpeg's default, one per core),
    so that the frames they hold stay within ``DECODER_MEMORY``."""
    frame_bytes = max(1, width * height * DECODER_BYTES_PER_PIXEL)
    allowed = max(1, DECODER_MEMORY // (2 * frame_bytes))
    return 0 if allowed > (os.cpu_count() or 1) else allowed


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
    codec = stream.codec_context
    problem = frame_size_problem(codec.width, codec.height)
    if problem:
        container.close()
        raise ExtractionError("decode", problem)
    stream.thread_type = "AUTO"
    threads = decoder_threads(codec.width, codec.height)
    if threads:
        codec.thread_count = threads
    # the decoder refuses bigger pictures itself, whatever the container's header said
    codec.options = {**codec.options, "max_pixels": str(MAX_PIXELS)}
    return container, stream


class TimestampRestarts:
    """The ffmpeg CLI's correction of timestamp discontinuities, on packets.

    For formats that allow discontinuities (``AVFMT_TS_DISCONT``: MPEG-TS, MPEG-PS, FLV...),
    as ``ffmpeg_demux.c`` does (``ts_discontinuity_detect``): a packet whose dts lies more
    than 10 s from the one expected next, or more than 0.1 s before the previous one, moves
    it and every later packet by the jump, so the stream goes on where it was (two MPEG-TS
    files joined with ``cat``, whose timestamps restart).  ``restarts`` lists the jumps
    corrected: ``(the packet's corrected timestamp in stream ticks, jump in seconds)``.
    """

    def __init__(self, time_base: Fraction, frame_rate: Optional[Fraction]):
        self.time_base = time_base
        self.frame_us = (_round_half_away(AV_TIME_BASE / frame_rate) if frame_rate else 0)
        self.offset_us = 0
        self.next_dts_us: Optional[int] = None
        self.dts_us: Optional[int] = None
        self.restarts: List[Tuple[int, float]] = []

    def _us(self, ticks: int) -> int:
        return _round_half_away(ticks * self.time_base * AV_TIME_BASE)

    def _ticks(self, us: int) -> int:
        return _round_half_away(Fraction(us, AV_TIME_BASE) / self.time_base)

    def _move(self, packet, ticks: int) -> None:
        if ticks:
            if packet.dts is not None:
                packet.dts += ticks
            if packet.pts is not None:
                packet.pts += ticks

    def __call__(self, packet) -> None:
        """Correct ``packet``'s timestamps in place."""
        self._move(packet, self._ticks(self.offset_us))
        if packet.dts is None:
            return
        dts_us = self._us(packet.dts)
        if self.next_dts_us is not None:
            delta = dts_us - self.next_dts_us
            if abs(delta) > DTS_DELTA_THRESHOLD_US or dts_us + AV_TIME_BASE // 10 < self.dts_us:
                self.offset_us -= delta
                self._move(packet, -self._ticks(delta))
                at = packet.pts if packet.pts is not None else packet.dts
                self.restarts.append((at, delta / AV_TIME_BASE))
                dts_us = self._us(packet.dts)
        self.dts_us = dts_us
        step = self._us(packet.duration) if packet.duration else self.frame_us
        self.next_dts_us = dts_us + step


class VideoDecoder:
    """Streams the frames of one video, rotated upright and optionally resampled to ``fps``.

    Iterating yields ``TimedFrame`` objects.  Frame times are presentation times minus the
    container's start time; after resampling to N fps, frame k starts at k * 1000 / N ms.
    ``max_resample_ratio``: with ``fps``, the most frames resampling may emit per decoded
    frame (None: no limit); a video that would need more fails at ``decode``.
    """

    def __init__(self, path: str, fps: Optional[float] = None,
                 max_resample_ratio: Optional[float] = None):
        self.path = path
        self.fps = fps_fraction(fps) if fps else None
        self.max_resample_ratio = max_resample_ratio
        self.container, self.stream = open_video(path)
        codec = self.stream.codec_context
        self.announced = (codec.width, codec.height)  # the header's size (checked at open)
        self.time_base = Fraction(self.stream.time_base) if self.stream.time_base else Fraction(1, AV_TIME_BASE)
        self.shift = start_time_shift(self.container.start_time, self.time_base)
        rate = self.stream.average_rate or self.stream.guessed_rate
        self.average_fps: Optional[Fraction] = Fraction(rate) if rate else None
        discont = self.container.format.flags & av.format.Flags.ts_discont.value
        self.restarts = TimestampRestarts(self.time_base, self.average_fps) if discont else None
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
            if self.restarts is not None:
                seen = len(self.restarts.restarts)
                self.restarts(packet)
                for at, jump in self.restarts.restarts[seen:]:
                    log.warning("%s: the timestamps jump by %+.2f s at %.2f s (joined files?); "
                                "the frames after it follow on, as the ffmpeg CLI does",
                                self.path, jump, float((at - self.shift) * self.time_base))
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
                # a picture over max_pixels is refused by the decoder: say so, not "corrupt"
                self._check_stream_size()
                self.corrupt_packets += 1
                log.debug("%s: undecodable packet skipped: %s", self.path, e)
                continue
            # with frame threads the decoder refuses such a picture without an error: the
            # size it took from the stream (bigger than the header said) is the only sign
            self._check_stream_size()
            for frame in frames:
                problem = frame_size_problem(frame.width, frame.height)
                if problem:
                    raise ExtractionError("decode", problem)
                self.decoded_frames += 1
                if frame.pts is not None:
                    first = frame.pts if first is None else min(first, frame.pts)
                    stop = frame.pts + (frame.duration or 0)
                    end = stop if end is None else max(end, stop)
                yield frame
        self._check_complete(first, end)

    def _check_stream_size(self) -> None:
        """Fail when the stream's pictures turned out over ``MAX_PIXELS`` (the decoder took
        their size from the stream itself, whatever the container's header said)."""
        codec = self.stream.codec_context
        problem = frame_size_problem(codec.width, codec.height)
        if problem:
            if (codec.width, codec.height) != self.announced:
                problem += " (the container announced {}x{})".format(*self.announced)
            raise ExtractionError("decode", problem)

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
        budget = ResampleBudget(self) if self.fps is not None and self.max_resample_ratio else None
        backwards = 0
        for frame in self._decoded():
            pts = frame.pts if frame.pts is not None else frame.dts
            if step is None:  # a frame's nominal duration, in stream ticks
                step = (int(round(1 / (self.average_fps * self.time_base)))
                        if self.average_fps else 1)
            if pts is None:
                pts = 0 if last_pts is None else last_pts + step
            pts -= self.shift
            if last_pts is not None and pts <= last_pts and self.fps is None:
                # every decoded frame is kept: its time must not go back (the fps filter
                # drops such frames when resampling, as the ffmpeg CLI does)
                if not backwards:
                    log.warning("%s: frame times go back at %.3f s (to %.3f s); such frames "
                                "are given the time after the previous one", self.path,
                                float(last_pts * self.time_base), float(pts * self.time_base))
                backwards += 1
                pts = last_pts + max(1, step)
            last_pts = pts
            frame.pts = pts
            if budget is not None:
                budget.frame(pts, frame.duration)
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
            if budget is not None:
                budget.end()
            src.push(None)
            yield from drain(sink)
        if backwards > 1:
            log.warning("%s: %d frames had times going back", self.path, backwards)


class ResampleBudget:
    """Bounds the frames FFmpeg's ``fps`` filter may invent, checked before each push.

    The filter shows output tick k (rounded ``pts * fps``) with the last frame at or before
    it: a frame arriving at tick T makes it emit ticks up to T - 1, and at the end it
    emits up to the end of the last frame (its pts plus its duration).  When that would
    exceed ``max_resample_ratio`` times the frames decoded so far, the video fails at
    ``decode`` naming the gap, before a single repeated frame is made.
    """

    def __init__(self, decoder: VideoDecoder):
        self.decoder = decoder
        self.scale = decoder.time_base * decoder.fps  # stream ticks -> output ticks
        self.first: Optional[int] = None
        self.top: Optional[int] = None  # the highest output tick reached
        self.latest: Optional[int] = None  # the highest pts pushed
        self.last_end = 0  # the last frame's pts plus its duration (where the filter ends)
        self.frames = 0

    def _tick(self, pts: int) -> int:
        return _round_half_away(pts * self.scale)

    def frame(self, pts: int, duration: Optional[int]) -> None:
        self.frames += 1
        tick = self._tick(pts)
        if self.first is None:
            self.first = self.top = tick
        elif tick > self.top:
            tb = self.decoder.time_base
            self._check(tick, f"a {float((pts - self.latest) * tb):.2f} s gap in the timestamps "
                              f"(from {float(self.latest * tb):.2f} s to {float(pts * tb):.2f} s)")
            self.top = tick
        self.latest = pts if self.latest is None else max(self.latest, pts)
        self.last_end = pts + (duration or 0)

    def end(self) -> None:
        if self.first is None:
            return
        tick = self._tick(self.last_end)
        if tick > self.top:
            last = float((self.last_end - self.latest) * self.decoder.time_base)
            self._check(tick, f"a last frame lasting {last:.2f} s")

    def _check(self, tick: int, gap: str) -> None:
        emitted = tick - self.first
        ratio = self.decoder.max_resample_ratio
        if emitted > ratio * self.frames:
            raise ExtractionError(
                "decode", f"resampling to {float(self.decoder.fps):g} fps would make {emitted} "
                f"frames from {self.frames} decoded, because of {gap}: over "
                f"max_resample_ratio={ratio:g} frames per decoded frame (raise it, or null for "
                "no limit, to resample such a video anyway)")
