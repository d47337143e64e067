"""Is a video already done?  Its output set is complete and loads (a rerun skips it)."""
from typing import Dict, Optional, Tuple

import numpy as np

from utils.serialization import load_output


def outputs_complete(files: Dict[str, str]) -> Optional[Tuple[int, float]]:
    """``(Tv, seconds of video)`` when every file of the set exists and loads, with shapes that
    agree; None otherwise (a missing key, a truncated or garbled file: the video is redone).

    ``.npy`` files are memory-mapped: a rerun over many finished videos reads their headers
    and one row of timestamps, not every feature.
    """
    if not files:
        return None
    try:
        arrays = {key: load_output(path, mmap=True) for key, path in files.items()}
        feats, stamps = arrays.get("s3d"), arrays.get("timestamps_ms")
        fps = arrays.get("fps")
        if not (isinstance(feats, np.ndarray) and feats.ndim == 2 and feats.shape[1] == 1024
                and feats.shape[0] > 0 and feats.dtype == np.float32
                and isinstance(stamps, np.ndarray) and stamps.shape == (feats.shape[0], 2)
                and fps is not None and np.ndim(fps) == 0):
            return None
        return int(feats.shape[0]), float(stamps[-1, 1]) / 1000.0
    except Exception:  # noqa: BLE001 - a garbled pickle can raise almost anything; redo it
        return None
