"""The S3D feature extractor: the Python API that the command line uses.

    from models.s3d.extractor import ExtractS3D
    extractor = ExtractS3D(weights_path="S3D_kinetics400_torchified.pt", device="cpu")
    out = extractor.extract("sample/sample.mp4")
    out["s3d"]            # (Tv, 1024) float32
    out["timestamps_ms"]  # (Tv, 2) float64, [start, end) of every stack
    out["fps"]            # the frame rate the stacks were cut at

    for result in extractor.extract_many(["a.mp4", "b.mkv"]):   # decodes ahead, across videos
        arrays = result.get()                                   # re-raises that video's error

Data flows one way: path -> decoded frames (utils.decode) -> preset pixels
(utils.preprocess) -> stacks (utils.stacks) -> batches -> S3D -> arrays.  Everything up to
the batches runs in ``num_workers`` background threads (utils.prefetch), through bounded
queues, so memory does not grow with a video's length and the next video is decoded while
the current one is computed.  The network runs a BatchNorm-folded, channels_last_3d copy of
the loaded model (models.s3d.fast) under ``torch.inference_mode``.
"""
import contextlib
import functools
import logging
import os
import time
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch

from models.s3d.fast import autocast, inference_model, resolve_precision
from models.s3d.network import MIN_STACK_SIZE, S3D
from models.s3d.weights import load_weights
from utils.decode import VideoDecoder
from utils.device import resolve_device
from utils.failures import ExtractionError
from utils.prefetch import prefetch_jobs
from utils.preprocess import preset_class
from utils.stacks import Stack, StackCutter, num_stacks
from utils.tmp_video import ResampledVideoWriter

log = logging.getLogger(__name__)

LABELS_FILE = os.path.join(os.path.dirname(__file__), "kinetics400_labels.txt")
CPU_BATCH_SIZE = 1    # measured: larger batches are no faster on the CPU and hold more memory
CUDA_BATCH_SIZE = 8   # several stacks per forward keep a GPU busy


def kinetics400_labels() -> List[str]:
    with open(LABELS_FILE, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


@dataclass
class Batch:
    frames: torch.Tensor       # (B, T, 224, 224, 3): uint8 (kylemin) or float32 (video_features)
    start_ms: List[float]
    end_ms: List[float]


@dataclass
class VideoResult:
    """One video's outcome from ``extract_many``: its arrays, or the exception it failed with."""

    path: str
    arrays: Optional[Dict[str, np.ndarray]] = None
    error: Optional[BaseException] = None

    def get(self) -> Dict[str, np.ndarray]:
        """The arrays; raises the video's exception (with its traceback) if it failed."""
        if self.error is not None:
            raise self.error
        return self.arrays


@dataclass
class PipelineStats:
    """Where the time of ``extract_many`` went, seen from the network's thread."""

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


class ExtractS3D:
    """Turns videos into ``{"s3d", "timestamps_ms", "fps"}`` arrays.

    Speed options (see docs): ``batch_size`` stacks per forward (default 1 on CPU, 8 on CUDA),
    ``num_workers`` decoding threads (0: decode inline), ``precision`` fp32|fp16|bf16 (autocast;
    CUDA only, fp32 on the CPU), ``compile`` (torch.compile with inductor and frozen weights).
    """

    def __init__(self, weights_path: Optional[str] = None, device: str = "cpu",
                 stack_size: int = 64, step_size: int = 64,
                 extraction_fps: Optional[float] = 25, preprocess: str = "kylemin",
                 batch_size: Optional[int] = None, keep_tmp_files: bool = False,
                 tmp_path: str = "./tmp", prefetch_batches: int = 2,
                 model: Optional[S3D] = None, num_workers: int = 1, precision: str = "fp32",
                 compile: bool = False, fold_bn: bool = True):
        if stack_size < MIN_STACK_SIZE:
            raise ValueError(f"stack_size: {stack_size} is below S3D's minimum of {MIN_STACK_SIZE} frames")
        if step_size < 1:
            raise ValueError(f"step_size: {step_size} must be at least 1")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size: {batch_size} must be at least 1")
        if num_workers < 0:
            raise ValueError(f"num_workers: {num_workers} must be at least 0 (0: decode inline)")
        self.device = resolve_device(device)
        self.stack_size = stack_size
        self.step_size = step_size
        self.extraction_fps = extraction_fps
        self.preprocess = preprocess
        self._preset = preset_class(preprocess)  # validates the name now, not at the first video
        self.precision = resolve_precision(precision, self.device)
        self.batch_size = batch_size or (CUDA_BATCH_SIZE if self.device.type == "cuda" else CPU_BATCH_SIZE)
        self.keep_tmp_files = keep_tmp_files
        self.tmp_path = tmp_path
        self.prefetch_batches = max(1, prefetch_batches)
        self.num_workers = num_workers
        self.compile = compile
        if model is None:
            model = S3D()
            self.weights_path = load_weights(model, weights_path)
        else:
            self.weights_path = None
        # ``net``: a fast copy of the loaded network on the device (the caller's model is untouched)
        self.net = inference_model(model, self.device, fold_bn=fold_bn, compile=compile)
        self._plan: Optional["_Plan"] = None
        self.labels = kinetics400_labels()
        self.stats = PipelineStats()

    @classmethod
    def from_config(cls, cfg, **overrides) -> "ExtractS3D":
        kwargs = dict(weights_path=cfg.weights_path, device=cfg.device, stack_size=cfg.stack_size,
                      step_size=cfg.step_size, extraction_fps=cfg.extraction_fps,
                      preprocess=getattr(cfg.preprocess, "value", cfg.preprocess), batch_size=cfg.batch_size,
                      keep_tmp_files=cfg.keep_tmp_files, tmp_path=cfg.tmp_path,
                      num_workers=cfg.num_workers,
                      precision=getattr(cfg.precision, "value", cfg.precision),
                      compile=cfg.compile)
        kwargs.update(overrides)
        return cls(**kwargs)

    # -- stages (run in the decoding threads) -----------------------------------------------
    def _stacks(self, path: str, info: dict) -> Iterator[Stack]:
        preset = self._preset()  # one per video: it keeps that video's filter graph
        writer = None
        with VideoDecoder(path, self.extraction_fps) as decoder:
            info["fps"] = decoder.output_fps
            duration = decoder.container.duration
            if duration and info["fps"]:
                info["expected_stacks"] = num_stacks(int(duration / 1e6 * info["fps"]),
                                                     self.stack_size, self.step_size)
            if self.keep_tmp_files:
                stem = os.path.splitext(os.path.basename(path))[0]
                rate = decoder.fps or decoder.average_fps
                writer = ResampledVideoWriter(
                    os.path.join(self.tmp_path, f"{stem}_{float(rate):g}fps.mp4"), rate)

            def frames():
                for timed in decoder:
                    if writer is not None:
                        writer.write(timed.frame)
                    yield preset(timed.frame), timed.start_ms, timed.end_ms

            cutter = StackCutter(self.stack_size, self.step_size)
            whole = False
            try:
                yield from cutter(frames())
                whole = True
            finally:
                if writer is not None:
                    writer.close(keep=whole)  # a video left early or failed leaves no file
            n = cutter.num_frames
            if n < self.stack_size:
                rate = f" at {info['fps']:g} fps" if info.get("fps") else ""
                corrupt = (f" ({decoder.corrupt_packets} corrupt packets skipped)"
                           if decoder.corrupt_packets else "")
                frames = f"{n} frame" if n == 1 else f"{n} frames"
                raise ExtractionError("too_short", f"{frames}{rate}{corrupt}, fewer than "
                                      f"stack_size={self.stack_size}")
            if decoder.corrupt_packets:
                log.warning("%s: %d corrupt packets skipped while decoding",
                            path, decoder.corrupt_packets)

    def _batches(self, path: str, info: dict) -> Iterator[Batch]:
        """The video's batches of stacks; any failure on the way is an ``ExtractionError``
        (stage ``decode`` unless it says otherwise)."""
        group: List[Stack] = []
        pin = self.device.type == "cuda"
        try:
            for stack in self._stacks(path, info):
                group.append(stack)
                if len(group) == self.batch_size:
                    yield self._collate(group, pin)
                    group = []
            if group:
                yield self._collate(group, pin)
        except ExtractionError:
            raise
        except Exception as e:  # noqa: BLE001 -- tagged with its stage, cause kept
            raise ExtractionError.wrap("decode", e) from e

    @staticmethod
    def _collate(group: List[Stack], pin: bool = False) -> Batch:
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

    # -- the network ----------------------------------------------------------------------
    def forward(self, frames: torch.Tensor):
        """(B, T, H, W, 3) preset pixels -> ``(features, logits)`` on the CPU, float32.

        With ``compile=true`` a batch smaller than ``batch_size`` runs one stack at a time, so
        the compiled graph only ever sees two input shapes (no recompilation per video).
        """
        if self.compile and 1 < frames.shape[0] < self.batch_size:
            parts = [self._forward(frames[i:i + 1]) for i in range(frames.shape[0])]
            return torch.cat([f for f, _ in parts]), torch.cat([lg for _, lg in parts])
        return self._forward(frames)

    def _forward(self, frames: torch.Tensor):
        # Inputs are always made inside inference_mode and in channels_last_3d: a compiled
        # graph recompiles if either changes between calls.
        with torch.inference_mode():
            x = frames.to(self.device, non_blocking=True)
            x = self._preset.to_input(x).permute(0, 4, 1, 2, 3)  # NDHWC storage = channels_last_3d
            with autocast(self.device, self.precision), self._cudnn_flags():
                features, logits = self.net(x)
            return features.float().cpu(), logits.float().cpu()

    def _cudnn_flags(self):
        """On CUDA: cuDNN's autotuner on (one input shape), and fp32 really fp32 (no TF32)."""
        if self.device.type != "cuda":
            return contextlib.nullcontext()
        return torch.backends.cudnn.flags(enabled=True, benchmark=True, deterministic=False,
                                          allow_tf32=self.precision != "fp32")

    def _oom_error(self, frames: torch.Tensor, cause: BaseException) -> ExtractionError:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        smaller = max(1, frames.shape[0] // 2)
        hint = (f"set batch_size={smaller} or lower" if frames.shape[0] > 1
                else "batch_size is already 1: use a larger device, or precision=fp16/bf16 on CUDA")
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        return ExtractionError("model", f"out of memory on {self.device} running "
                               f"{frames.shape[0]} stacks of {frames.shape[1]} frames at once "
                               f"(batch_size={self.batch_size}): {hint} ({first})")

    def _run_batch(self, batch: Batch):
        try:
            return self.forward(batch.frames)
        except torch.cuda.OutOfMemoryError as e:
            raise self._oom_error(batch.frames, e) from None
        except RuntimeError as e:
            text = str(e)
            if "out of memory" in text or "can't allocate memory" in text:
                raise self._oom_error(batch.frames, e) from None
            raise ExtractionError("model", text.strip().splitlines()[0]) from e
        except ExtractionError:
            raise
        except Exception as e:  # noqa: BLE001 -- tagged with its stage, cause kept
            raise ExtractionError.wrap("model", e) from e

    # -- API ------------------------------------------------------------------------------
    def _consume(self, batches: Iterator[Batch], info: dict, with_logits: bool,
                 stats: PipelineStats, progress=None) -> Dict[str, np.ndarray]:
        feats, logits, spans = [], [], []
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                stats.wait_s += time.perf_counter() - t0
                break
            t1 = time.perf_counter()
            f, lg = self._run_batch(batch)
            t2 = time.perf_counter()
            stats.wait_s += t1 - t0
            stats.forward_s += t2 - t1
            stats.stacks += len(batch.start_ms)
            feats.append(f)
            if with_logits:
                logits.append(lg)
            spans.extend(zip(batch.start_ms, batch.end_ms))
            if progress is not None:
                progress.stacks_done(len(batch.start_ms), info)
        out = {
            "s3d": torch.cat(feats).numpy().astype(np.float32, copy=False),
            "timestamps_ms": np.asarray(spans, dtype=np.float64).reshape(-1, 2),
            "fps": np.float64(info["fps"] if info.get("fps") is not None else np.nan),
        }
        if with_logits:
            out["logits"] = torch.cat(logits).numpy()
        return out

    @contextlib.contextmanager
    def planned(self, paths: Sequence[str], progress: bool = False, log_stats: bool = True):
        """Within the block, ``extract(p)`` for the ``paths`` (in this order) is decoded ahead.

        Up to ``num_workers`` videos are decoded at once, each a bounded number of batches
        ahead, so the next video's decoding starts while the current one computes.  A path
        asked for out of order skips the planned ones before it; one not planned is extracted
        on its own.  ``progress``: draw bars (utils.progress) when stderr is a terminal.  On
        leaving, ``self.stats`` holds the run's totals, and (``log_stats``) a "pipeline:" line
        is logged.
        """
        from utils.progress import RunProgress

        paths = list(paths)
        plan = _Plan(self, paths, RunProgress(len(paths), enabled=None if progress else False))
        self._plan, previous = plan, self._plan
        try:
            yield plan
        finally:
            self._plan = previous
            plan.close()
            self.stats = plan.stats
            if log_stats and plan.stats.stacks:
                log.info(plan.stats.line())

    def extract_many(self, paths: Sequence[str], with_logits: bool = False,
                     progress: bool = False) -> Iterator[VideoResult]:
        """Yield one ``VideoResult`` per path, in order, decoding up to ``num_workers`` ahead.

        A video's failure is caught and handed back in its result (``result.get()`` re-raises
        it), so the next videos go on.
        """
        paths = list(paths)
        with self.planned(paths, progress=progress):
            for path in paths:
                try:
                    result = VideoResult(path, arrays=self.extract(path, with_logits))
                except Exception as e:  # noqa: BLE001 -- the caller decides, via result.get()
                    result = VideoResult(path, error=e)
                yield result

    def extract(self, path: str, with_logits: bool = False) -> Dict[str, np.ndarray]:
        """Features of one video: ``s3d`` (Tv, 1024) float32, ``timestamps_ms`` (Tv, 2), ``fps``."""
        plan = self._plan
        taken = plan.take(path) if plan is not None else None
        if taken is None:  # not planned: a plan of its own
            with self.planned([path], log_stats=False):
                return self.extract(path, with_logits)
        batches, info = taken
        ok = False
        plan.progress.video_started(path)
        try:
            out = self._consume(batches, info, with_logits, plan.stats, plan.progress)
            ok = True
            return out
        finally:
            batches.close()
            plan.stats.videos += 1
            plan.progress.video_finished(path, ok)


class _Plan:
    """The videos an ``ExtractS3D.planned`` block will ask for, decoded ahead by ``prefetch_jobs``."""

    def __init__(self, extractor: ExtractS3D, paths: List[str], progress):
        self.paths = paths
        self.infos: List[dict] = [{} for _ in paths]
        jobs = [functools.partial(extractor._batches, p, info) for p, info in zip(paths, self.infos)]
        self.streams = prefetch_jobs(jobs, extractor.num_workers, extractor.prefetch_batches)
        self.next = 0
        self.progress = progress
        self.stats = PipelineStats()
        self.started = time.perf_counter()

    def take(self, path: str):
        """``(batches, info)`` for ``path`` if it is planned at or after the next position."""
        try:
            index = self.paths.index(path, self.next)
        except ValueError:
            log.debug("%s was not planned: extracting it on its own", path)
            return None
        while self.next < index:  # planned but not asked for (e.g. skipped): stop its decoding
            next(self.streams).close()
            self.next += 1
        self.next += 1
        return next(self.streams), self.infos[index]

    def close(self) -> None:
        self.streams.close()
        self.progress.close()
        self.stats.wall_s = time.perf_counter() - self.started
