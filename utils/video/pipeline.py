"""The decoding pipeline: path -> decoded frames -> preset pixels -> stacks -> batches.

``video_batches(path, settings, record)`` is one video's stream of ``Batch`` objects (run in a
background thread by ``Plan``); it fills ``record`` (a ``VideoRecord``) as it learns the
video's frame rate and expected length.  ``Plan`` decodes the videos a batch run will ask
for ahead of the network, ``num_workers`` at a time, through bounded queues
(``utils.video.prefetch``), so memory does not grow with a video's length; ``PipelineStats`` says
where the time went.  Nothing here knows the network: the extractor consumes the batches.
"""
import logging
import time
from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple, Type

import numpy as np
import torch

from utils.console import RunProgress
from utils.video.decode import VideoDecoder
from utils.errors import ExtractionError, launcher_exceptions
from utils.video.prefetch import prefetch_jobs
from utils.video.stacks import Stack, StackCutter, num_stacks
from utils.video.kept_video import ResampledVideoWriter, kept_video_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecodeSettings:
    """How a video becomes batches of stacks (from the extractor's options)."""

    stack_size: int
    step_size: int
    extraction_fps: Optional[float]
    preset: Type            # a utils.video.preprocess preset class: one instance per video
    batch_size: int
    pin_memory: bool = False           # page-locked batches, for CUDA
    keep_tmp_files: bool = False
    tmp_path: str = "./tmp"
    max_resample_ratio: Optional[float] = None  # frames resampling may emit per decoded frame


@dataclass
class VideoRecord:
    """What the decoding thread learns about one video, read by the consumer."""

    path: str
    fps: Optional[float] = None              # the rate the stacks are cut at
    expected_stacks: Optional[int] = None    # from the container's duration, for progress


@dataclass
class Batch:
    frames: torch.Tensor       # (B, T, 224, 224, 3): uint8 (kylemin) or float32 (video_features)
    start_ms: List[float]
    end_ms: List[float]


@dataclass
class PipelineStats:
    """Where the time of a run went, seen from the network's thread."""

    videos: int = 0
    stacks: int = 0
    wall_s: float = 0.0
    forward_s: float = 0.0       # in the network (including host<->device copies)
    wait_s: float = 0.0          # blocked waiting for the next batch of frames

    @property
    def idle_share(self) -> float:
        """Share of wall time the network sat idle waiting for frames."""
        return self.wait_s / self.wall_s if self.wall_s > 0 else 0.0

    def line(self) -> str:
        return (f"pipeline: {self.stacks} stacks in {self.wall_s:.1f} s, network busy "
                f"{self.forward_s:.1f} s, waiting for frames {self.wait_s:.1f} s "
                f"({100 * self.idle_share:.1f} % of wall time idle)")


def _stacks(path: str, settings: DecodeSettings, record: VideoRecord) -> Iterator[Stack]:
    preset = settings.preset()  # one per video: it keeps that video's filter graph
    writer = None
    with VideoDecoder(path, settings.extraction_fps, settings.max_resample_ratio) as decoder:
        record.fps = decoder.output_fps
        duration = decoder.container.duration
        if duration and record.fps:
            record.expected_stacks = num_stacks(int(duration / 1e6 * record.fps),
                                                settings.stack_size, settings.step_size)
        if settings.keep_tmp_files:
            rate = decoder.fps or decoder.average_fps
            writer = ResampledVideoWriter(kept_video_path(settings.tmp_path, path, rate), rate,
                                          source=path)

        def frames():
            for timed in decoder:
                if writer is not None:
                    writer.write(timed.frame)
                yield preset(timed.frame), timed.start_ms, timed.end_ms

        cutter = StackCutter(settings.stack_size, settings.step_size)
        whole = False
        try:
            yield from cutter(frames())
            whole = True
        finally:
            if writer is not None:
                writer.close(keep=whole)  # a video left early or failed leaves no file
        n = cutter.num_frames
        if n < settings.stack_size:
            rate = f" at {record.fps:g} fps" if record.fps else ""
            corrupt = (f" ({decoder.corrupt_packets} corrupt packets skipped)"
                       if decoder.corrupt_packets else "")
            counted = f"{n} frame" if n == 1 else f"{n} frames"
            raise ExtractionError("too_short", f"{counted}{rate}{corrupt}, fewer than "
                                  f"stack_size={settings.stack_size}")
        if decoder.corrupt_packets:
            log.warning("%s: %d corrupt packets skipped while decoding",
                        path, decoder.corrupt_packets)


def video_batches(path: str, settings: DecodeSettings, record: VideoRecord) -> Iterator[Batch]:
    """The video's batches of stacks; any failure on the way is an ``ExtractionError``
    (stage ``decode`` unless it says otherwise)."""
    group: List[Stack] = []
    try:
        for stack in _stacks(path, settings, record):
            group.append(stack)
            if len(group) == settings.batch_size:
                yield collate(group, settings.pin_memory)
                group = []
        if group:
            yield collate(group, settings.pin_memory)
    except (ExtractionError, *launcher_exceptions()):  # a launcher's: never the video's
        raise
    except Exception as e:  # noqa: BLE001 -- tagged with its stage, cause kept
        raise ExtractionError.wrap("decode", e) from e


def collate(group: List[Stack], pin: bool = False) -> Batch:
    """Stack the frames into one (B, T, H, W, 3) tensor; in page-locked memory for CUDA."""
    first = group[0].frames
    if pin:
        frames = torch.empty((len(group),) + first.shape,
                             dtype=torch.from_numpy(first[:0]).dtype, pin_memory=True)
        for i, s in enumerate(group):
            frames[i].copy_(torch.from_numpy(s.frames))
    elif len(group) == 1:
        frames = torch.from_numpy(first).unsqueeze(0)  # no copy
    else:
        frames = torch.from_numpy(np.stack([s.frames for s in group]))
    return Batch(frames, [s.start_ms for s in group], [s.end_ms for s in group])


class Plan:
    """The videos a run will ask for, in order, decoded ahead by ``prefetch_jobs``.

    ``take(path)`` hands over ``(batches, record)`` for a planned path, skipping (and stopping
    the decoding of) the planned ones before it; a path not planned gives None.
    """

    def __init__(self, paths: List[str], settings: DecodeSettings, num_workers: int,
                 depth: int, progress: RunProgress):
        self.paths = paths
        self.records = [VideoRecord(p) for p in paths]
        jobs = [_job(p, settings, r) for p, r in zip(paths, self.records)]
        self.streams = prefetch_jobs(jobs, num_workers, depth)
        self.next = 0
        self.progress = progress
        self.stats = PipelineStats()
        self.started = time.perf_counter()

    def take(self, path: str) -> Optional[Tuple[Iterator[Batch], VideoRecord]]:
        try:
            index = self.paths.index(path, self.next)
        except ValueError:
            log.debug("%s was not planned: extracting it on its own", path)
            return None
        while self.next < index:  # planned but not asked for (e.g. skipped): stop its decoding
            next(self.streams).close()
            self.next += 1
        self.next += 1
        return next(self.streams), self.records[index]

    def close(self) -> None:
        self.streams.close()
        self.progress.close()
        self.stats.wall_s = time.perf_counter() - self.started


def _job(path: str, settings: DecodeSettings, record: VideoRecord):
    return lambda: video_batches(path, settings, record)
