"""The S3D feature extractor: the Python API that the command line uses.

    from models.s3d import ExtractS3D
    extractor = ExtractS3D(weights_path="S3D_kinetics400_torchified.pt", device="cpu")
    out = extractor.extract("sample/sample.mp4")
    out["s3d"]            # (Tv, 1024) float32
    out["timestamps_ms"]  # (Tv, 2) float64, [start, end) of every stack
    out["fps"]            # the frame rate the stacks were cut at

    for result in extractor.extract_many(["a.mp4", "b.mkv"]):   # decodes ahead, across videos
        arrays = result.get()                                   # re-raises that video's error

The options are those of the command line (``utils.config.ExtractorOptions``: same defaults,
same validation, same messages).  Frames come from the decoding pipeline (utils.video.pipeline:
decode, preset, stacks, batches, in ``num_workers`` background threads); the network runs a
BatchNorm-folded, channels_last_3d copy of the loaded model (models.s3d.inference) under
``torch.inference_mode``.
"""
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Dict, Iterator, Optional, Sequence

import numpy as np
import torch

from models.s3d.inference import BatchRunner, inference_model, resolve_precision
from models.s3d.network import S3D
from models.s3d.spec import SPEC
from models.s3d.weights import DEFAULT_URL, load_checkpoint, state_dict_sha256
from utils.config import ExtractorOptions, extractor_options
from utils.console import RunProgress
from utils.device import resolve_device
from utils.video.pipeline import Batch, DecodeSettings, PipelineStats, Plan, VideoRecord
from utils.video.preprocess import preset_class

log = logging.getLogger(__name__)

CPU_BATCH_SIZE = 1    # measured: larger batches are no faster on the CPU and hold more memory
CUDA_BATCH_SIZE = 8   # several stacks per forward keep a GPU busy


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


class ExtractS3D:
    """Turns videos into ``{"s3d", "timestamps_ms", "fps"}`` arrays.

    Keyword options: those of ``utils.config.ExtractorOptions`` (``python main.py --help``
    lists them), validated as on the command line.  Also: ``model``, an already loaded S3D
    to use instead of ``weights_path`` (not modified); ``fold_bn``; ``prefetch_batches``,
    batches decoded ahead per video.

    Another network's extractor subclasses it with its ``spec`` (``utils.networks.NetworkSpec``),
    ``load_model`` and ``network_outputs`` (models.s3d_howto100m): the pipeline and batching
    are shared.
    """

    spec = SPEC

    @property
    def feature_type(self) -> str:
        return self.spec.name

    def __init__(self, options: Optional[ExtractorOptions] = None, *, model: Optional[S3D] = None,
                 fold_bn: bool = True, prefetch_batches: int = 2, **overrides):
        if options is None or overrides:
            base = extractor_options(options) if options is not None else {}
            options = ExtractorOptions(**{"feature_type": self.spec.name, **base, **overrides})
        if options.feature_type != self.feature_type:
            raise ValueError(f"feature_type: {type(self).__name__} extracts "
                             f"{self.feature_type!r}, not {options.feature_type!r}")
        self.options = options
        self.device = resolve_device(options.device)
        self.precision = resolve_precision(options.precision, self.device)
        self.batch_size = options.batch_size or (
            CUDA_BATCH_SIZE if self.device.type == "cuda" else CPU_BATCH_SIZE)
        self.num_workers = options.num_workers
        self.prefetch_batches = max(1, prefetch_batches)
        preset = preset_class(options.preprocess)
        self.settings = DecodeSettings(
            stack_size=options.stack_size, step_size=options.step_size,
            extraction_fps=options.extraction_fps, preset=preset, batch_size=self.batch_size,
            pin_memory=self.device.type == "cuda", keep_tmp_files=options.keep_tmp_files,
            tmp_path=options.tmp_path, max_resample_ratio=options.max_resample_ratio)
        if model is None:
            model = self.load_model(options)  # sets self.weights (source, sha256)
        else:
            self.weights_path = None
            self.weights = {"source": "a model object passed to ExtractS3D",
                            "sha256": state_dict_sha256(model)}
        # a copy of the loaded network, prepared for inference on the device
        net = inference_model(model, self.device, fold_bn=fold_bn, compile=options.compile,
                              precision=self.precision)
        self.runner = BatchRunner(net, self.device, self.precision, self.batch_size,
                                  preset.to_input, compiled=options.compile)
        self._plan: Optional[Plan] = None
        self.labels = self.spec.labels.read() if self.spec.labels else []
        self.stats = PipelineStats()

    def load_model(self, options: ExtractorOptions) -> torch.nn.Module:
        """The network with the weights of ``options.weights_path`` (or the default ones)."""
        model = S3D()
        checkpoint = load_checkpoint(model, options.weights_path)  # the file read once
        self.weights_path = checkpoint.path
        self.weights = {"source": options.weights_path or DEFAULT_URL,
                        "sha256": checkpoint.sha256}
        return model

    def network_outputs(self, features: torch.Tensor, second: torch.Tensor,
                        with_logits: bool) -> Dict[str, np.ndarray]:
        """A video's arrays from the network's two outputs (all its stacks): here the
        features and, ``with_logits``, the Kinetics-400 logits."""
        out = {self.feature_type: features.numpy().astype(np.float32, copy=False)}
        if with_logits:
            out["logits"] = second.numpy()
        return out

    @classmethod
    def from_config(cls, cfg, **kwargs) -> "ExtractS3D":
        """The extractor for a run's config (``utils.config.ExtractionConfig``)."""
        return cls(ExtractorOptions(**extractor_options(cfg)), **kwargs)

    def identity(self) -> Dict[str, object]:
        """The weights (source and SHA-256), the precision the network really runs at and the
        device: with the options, what decides the numbers (recorded by saving runs)."""
        return {"weights": dict(self.weights), "precision": self.precision,
                "device": str(self.device)}

    def forward(self, frames: torch.Tensor):
        """(B, T, H, W, 3) preset pixels -> ``(features, logits)`` on the CPU, float32."""
        return self.runner.forward(frames)

    # -- API ------------------------------------------------------------------------------
    def _consume(self, batches: Iterator[Batch], record: VideoRecord, with_logits: bool,
                 stats: PipelineStats, progress: RunProgress) -> Dict[str, np.ndarray]:
        feats, others, spans = [], [], []
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                stats.wait_s += time.perf_counter() - t0
                break
            t1 = time.perf_counter()
            f, lg = self.runner(batch.frames)
            t2 = time.perf_counter()
            stats.wait_s += t1 - t0
            stats.forward_s += t2 - t1
            stats.stacks += len(batch.start_ms)
            feats.append(f)
            others.append(lg)
            spans.extend(zip(batch.start_ms, batch.end_ms))
            progress.stacks_done(len(batch.start_ms), record.expected_stacks)
        out = self.network_outputs(torch.cat(feats), torch.cat(others), with_logits)
        out["timestamps_ms"] = np.asarray(spans, dtype=np.float64).reshape(-1, 2)
        out["fps"] = np.float64(record.fps if record.fps is not None else np.nan)
        return out

    @contextlib.contextmanager
    def planned(self, paths: Sequence[str], progress: bool = False, log_stats: bool = True):
        """Within the block, ``extract(p)`` for the ``paths`` (in this order) is decoded ahead.

        Up to ``num_workers`` videos are decoded at once, each a bounded number of batches
        ahead, so the next video's decoding starts while the current one computes.  A path
        asked for out of order skips the planned ones before it; one not planned is extracted
        on its own.  ``progress``: draw bars when stderr is a terminal.  On leaving,
        ``self.stats`` holds the run's totals, and (``log_stats``) a "pipeline:" line is logged.
        """
        plan = Plan(list(paths), self.settings, self.num_workers, self.prefetch_batches,
                    RunProgress(len(paths), enabled=None if progress else False))
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
        batches, record = taken
        plan.progress.video_started(path)
        try:
            return self._consume(batches, record, with_logits, plan.stats, plan.progress)
        finally:
            batches.close()
            plan.stats.videos += 1
            plan.progress.video_finished()
