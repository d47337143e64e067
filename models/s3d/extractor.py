"""The S3D feature extractor: the Python API that the command line uses.

    from models.s3d.extractor import ExtractS3D
    extractor = ExtractS3D(weights_path="S3D_kinetics400_torchified.pt", device="cpu")
    out = extractor.extract("sample/sample.mp4")
    out["s3d"]            # (Tv, 1024) float32
    out["timestamps_ms"]  # (Tv, 2) float64, [start, end) of every stack
    out["fps"]            # the frame rate the stacks were cut at

Data flows one way: path -> decoded frames (utils.decode) -> preset pixels
(utils.preprocess) -> stacks (utils.stacks) -> batches -> S3D -> arrays.
"""
import logging
import os
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional

import numpy as np
import torch

from models.s3d.network import MIN_STACK_SIZE, S3D
from models.s3d.weights import load_weights
from utils.decode import VideoDecoder
from utils.device import resolve_device
from utils.failures import ExtractionError
from utils.prefetch import prefetch
from utils.preprocess import make_preset
from utils.stacks import Stack, StackCutter
from utils.tmp_video import ResampledVideoWriter

log = logging.getLogger(__name__)

LABELS_FILE = os.path.join(os.path.dirname(__file__), "kinetics400_labels.txt")


def kinetics400_labels() -> List[str]:
    with open(LABELS_FILE, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


@dataclass
class Batch:
    frames: torch.Tensor       # (B, T, 224, 224, 3): uint8 (kylemin) or float32 (video_features)
    start_ms: List[float]
    end_ms: List[float]


class ExtractS3D:
    """Turns one video at a time into ``{"s3d", "timestamps_ms", "fps"}`` arrays."""

    def __init__(self, weights_path: Optional[str] = None, device: str = "cpu",
                 stack_size: int = 64, step_size: int = 64,
                 extraction_fps: Optional[float] = 25, preprocess: str = "kylemin",
                 batch_size: Optional[int] = None, keep_tmp_files: bool = False,
                 tmp_path: str = "./tmp", prefetch_batches: int = 2,
                 model: Optional[S3D] = None):
        if stack_size < MIN_STACK_SIZE:
            raise ValueError(f"stack_size: {stack_size} is below S3D's minimum of {MIN_STACK_SIZE} frames")
        if step_size < 1:
            raise ValueError(f"step_size: {step_size} must be at least 1")
        self.device = resolve_device(device)
        self.stack_size = stack_size
        self.step_size = step_size
        self.extraction_fps = extraction_fps
        self.preprocess = preprocess
        make_preset(preprocess)  # validates the name now, not at the first video
        self.batch_size = batch_size or (8 if self.device.type == "cuda" else 1)
        self.keep_tmp_files = keep_tmp_files
        self.tmp_path = tmp_path
        self.prefetch_batches = prefetch_batches
        if model is None:
            model = S3D()
            self.weights_path = load_weights(model, weights_path)
        else:
            self.weights_path = None
        self.model = model.eval().to(self.device, memory_format=torch.channels_last_3d)
        self.labels = kinetics400_labels()

    @classmethod
    def from_config(cls, cfg, **overrides) -> "ExtractS3D":
        kwargs = dict(weights_path=cfg.weights_path, device=cfg.device, stack_size=cfg.stack_size,
                      step_size=cfg.step_size, extraction_fps=cfg.extraction_fps,
                      preprocess=getattr(cfg.preprocess, "value", cfg.preprocess), batch_size=cfg.batch_size,
                      keep_tmp_files=cfg.keep_tmp_files, tmp_path=cfg.tmp_path)
        kwargs.update(overrides)
        return cls(**kwargs)

    # -- stages ---------------------------------------------------------------------------
    def _stacks(self, path: str, info: dict) -> Iterator[Stack]:
        preset = make_preset(self.preprocess)
        writer = None
        with VideoDecoder(path, self.extraction_fps) as decoder:
            info["fps"] = decoder.output_fps
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
            try:
                yield from cutter(frames())
            finally:
                if writer is not None:
                    writer.close()
            n = cutter.num_frames
            if n == 0 and decoder.corrupt_packets:
                raise ExtractionError("decode", f"no frame could be decoded "
                                      f"({decoder.corrupt_packets} corrupt packets)")
            if n < self.stack_size:
                rate = f" at {info['fps']:g} fps" if info.get("fps") else ""
                corrupt = (f" ({decoder.corrupt_packets} corrupt packets skipped)"
                           if decoder.corrupt_packets else "")
                raise ExtractionError("too_short", f"{n} frames{rate}{corrupt}, fewer than "
                                      f"stack_size={self.stack_size}")
            if decoder.corrupt_packets:
                log.warning("%s: %d corrupt packets skipped while decoding",
                            path, decoder.corrupt_packets)

    def _batches(self, path: str, info: dict) -> Iterator[Batch]:
        group: List[Stack] = []
        for stack in self._stacks(path, info):
            group.append(stack)
            if len(group) == self.batch_size:
                yield self._collate(group)
                group = []
        if group:
            yield self._collate(group)

    @staticmethod
    def _collate(group: List[Stack]) -> Batch:
        frames = torch.from_numpy(np.stack([s.frames for s in group]))
        return Batch(frames, [s.start_ms for s in group], [s.end_ms for s in group])

    def forward(self, frames: torch.Tensor):
        """(B, T, H, W, 3) preset pixels -> ``(features, logits)`` on the CPU, float32."""
        preset = make_preset(self.preprocess)
        x = frames.to(self.device, non_blocking=True)
        x = preset.to_input(x).permute(0, 4, 1, 2, 3)  # NDHWC storage = channels_last_3d
        with torch.inference_mode():
            features, logits = self.model(x)
        return features.float().cpu(), logits.float().cpu()

    # -- API ------------------------------------------------------------------------------
    def iter_extract(self, path: str, info: Optional[dict] = None):
        """Yield ``(features, logits, start_ms, end_ms)`` per batch of stacks, streaming."""
        info = {} if info is None else info
        for batch in prefetch(self._batches(path, info), self.prefetch_batches):
            try:
                features, logits = self.forward(batch.frames)
            except RuntimeError as e:
                raise ExtractionError("model", str(e).strip().splitlines()[0]) from None
            yield features, logits, batch.start_ms, batch.end_ms

    def extract(self, path: str, with_logits: bool = False) -> Dict[str, np.ndarray]:
        """Features of one video: ``s3d`` (Tv, 1024) float32, ``timestamps_ms`` (Tv, 2), ``fps``."""
        info: dict = {}
        feats, logits, spans = [], [], []
        for f, l, starts, ends in self.iter_extract(path, info):
            feats.append(f)
            logits.append(l)
            spans.extend(zip(starts, ends))
        out = {
            "s3d": torch.cat(feats).numpy().astype(np.float32),
            "timestamps_ms": np.asarray(spans, dtype=np.float64).reshape(-1, 2),
            "fps": np.float64(info["fps"] if info.get("fps") is not None else np.nan),
        }
        if with_logits:
            out["logits"] = torch.cat(logits).numpy()
        return out
