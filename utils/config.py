"""The typed configuration: one dataclass, registered with Hydra's ConfigStore.

Hydra checks types and enum values while composing; ``__post_init__`` (run by
``OmegaConf.to_object`` at start-up) checks the rules that span fields.  Every failure is
a ``ValueError`` whose message starts with the option's name.
"""
from dataclasses import dataclass
from enum import Enum
from typing import Any, Optional

from hydra.core.config_store import ConfigStore

from models.s3d.network import MIN_STACK_SIZE


class OnExtraction(str, Enum):
    print = "print"
    save_numpy = "save_numpy"
    save_pickle = "save_pickle"


class Preprocess(str, Enum):
    kylemin = "kylemin"
    video_features = "video_features"


class Precision(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


class OutputLayout(str, Enum):
    flat = "flat"
    mirror = "mirror"


@dataclass
class ExtractionConfig:
    feature_type: str = "s3d"
    stack_size: int = 64
    step_size: int = 64
    extraction_fps: Optional[float] = 25.0
    device: str = "cuda:0"
    video_paths: Any = None
    file_with_video_paths: Optional[str] = None
    on_extraction: OnExtraction = OnExtraction.print
    output_path: str = "./output"
    keep_tmp_files: bool = False
    tmp_path: str = "./tmp"
    show_pred: bool = False
    weights_path: Optional[str] = None
    preprocess: Preprocess = Preprocess.kylemin
    batch_size: Optional[int] = None
    num_workers: int = 1
    precision: Precision = Precision.fp32
    compile: bool = False
    shard: int = 0
    num_shards: int = 1
    overwrite: bool = False
    output_layout: OutputLayout = OutputLayout.flat
    debug: bool = False

    def __post_init__(self) -> None:
        if self.feature_type != "s3d":
            raise ValueError(f"feature_type: {self.feature_type!r} is not supported; expected s3d")
        if self.stack_size < MIN_STACK_SIZE:
            raise ValueError(f"stack_size: {self.stack_size} is below the network's minimum; "
                             f"expected an integer >= {MIN_STACK_SIZE}")
        if self.step_size < 1:
            raise ValueError(f"step_size: {self.step_size} is not allowed; expected an integer >= 1")
        if self.extraction_fps is not None and not self.extraction_fps > 0:
            raise ValueError(f"extraction_fps: {self.extraction_fps} is not allowed; expected a "
                             "positive number or null (keep every decoded frame)")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size: {self.batch_size} is not allowed; expected an integer "
                             ">= 1 or null (1 on CPU, 8 on CUDA)")
        if self.num_workers < 0:
            raise ValueError(f"num_workers: {self.num_workers} is not allowed; expected an integer >= 0")
        if self.num_shards < 1:
            raise ValueError(f"num_shards: {self.num_shards} is not allowed; expected an integer >= 1")
        if not 0 <= self.shard < self.num_shards:
            raise ValueError(f"shard: {self.shard} is not allowed; expected 0 <= shard < "
                             f"num_shards={self.num_shards}")
        if self.video_paths in (None, "", []) and not self.file_with_video_paths:
            raise ValueError("video_paths: no input given; set video_paths (a path or a list) "
                             "or file_with_video_paths (a text file, one path a line)")


def register_configs() -> None:
    ConfigStore.instance().store(name="extraction_schema", node=ExtractionConfig)
