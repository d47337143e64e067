"""Synthetic ``s3d_howto100m`` output folders for the tests and the search benchmark, written by
the tool's own writers (``FileStore`` / ``H5Store`` and the run report's manifest): seeded
random video embeddings, stacks of ``stack_ms``.  Meaningless as features; they serve to
check and time the search.
"""
import contextlib
import os
from typing import Dict, Iterator, Mapping, Optional, Sequence, Tuple

import numpy as np

from models.s3d_howto100m.spec import EMBEDDING_DIM, EMBEDDING_KEY, FEATURE_DIM, FEATURE_TYPE
from utils.networks import network
from utils.outputs.file_store import FileStore
from utils.outputs.h5_store import H5Store
from utils.outputs.naming import output_names
from utils.records.run_report import RunReport, manifest_name

SINKS = ("save_numpy", "save_pickle", "save_h5")


def video_arrays(rng: np.random.Generator, stacks: int, stack_ms: float = 3200.0,
                 feature_width: int = FEATURE_DIM) -> Dict[str, np.ndarray]:
    """One video's outputs: random embeddings (Tv, 512), zero features (Tv, ``feature_width``:
    the search never reads them), back-to-back stacks of ``stack_ms``, fps 10."""
    starts = np.arange(stacks, dtype=np.float64) * stack_ms
    return {FEATURE_TYPE: np.zeros((stacks, feature_width), np.float32),
            EMBEDDING_KEY: rng.standard_normal((stacks, EMBEDDING_DIM), dtype=np.float32),
            "timestamps_ms": np.stack([starts, starts + stack_ms], axis=1),
            "fps": np.float64(10.0)}


@contextlib.contextmanager
def without_fsync() -> Iterator[None]:
    """Synthetic data need not survive a power cut: ``os.fsync`` does nothing meanwhile
    (writing 10^5 files each fsynced takes minutes on a shared disk)."""
    fsync = os.fsync
    os.fsync = lambda fd: None
    try:
        yield
    finally:
        os.fsync = fsync


def write_folder(output_path: str, videos: Sequence[Tuple[str, Mapping[str, np.ndarray]]],
                 on_extraction: str = "save_numpy", run_id: str = "synthetic",
                 shard: int = 0, num_shards: int = 1, status: Optional[str] = None) -> str:
    """Write ``videos`` ((input path, arrays); their file stems must differ) as a saving run
    would into ``<output_path>/s3d_howto100m``, with the shard's manifest (appended to if it
    exists: a later run).  Returns the feature folder."""
    spec = network(FEATURE_TYPE)
    root = os.path.join(os.path.abspath(output_path), FEATURE_TYPE)
    os.makedirs(root, exist_ok=True)
    if on_extraction == "save_h5":
        store = H5Store(root, FEATURE_TYPE, shard, num_shards, spec.keys, spec.features,
                        run_id, {"run": run_id, "features": {"feature_type": FEATURE_TYPE}})
    else:
        store = FileStore(root, on_extraction, spec.keys, spec.features)
    report = RunReport(manifest_file=os.path.join(root, manifest_name(shard, num_shards)),
                       run_id=run_id)
    names = output_names([path for path, _ in videos], spec.keys)
    try:
        for name, (path, arrays) in zip(names, videos):
            store.write(name, arrays, path)
            stacks = len(arrays["timestamps_ms"])
            seconds = float(arrays["timestamps_ms"][-1, 1]) / 1000
            if status == "failed":
                report.add_failed(path, "decode", "synthetic failure")
            else:
                report.add_done(path, store.outputs(name), stacks, seconds)
    finally:
        store.close()
    return root
