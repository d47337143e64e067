"""Is a video already done?  Its output set is complete and loads (a rerun skips it)."""
import logging
import os
import stat
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from utils.outputs.safe_pickle import UnsafePickleError
from utils.outputs.serialization import load_output

log = logging.getLogger(__name__)


def outputs_complete(files: Dict[str, str],
                     features: Sequence[Tuple[str, Optional[int]]]
                     ) -> Optional[Tuple[int, float]]:
    """``(Tv, seconds of video)`` when every file of the set exists and loads, with shapes that
    agree (``features``: each per-stack key and its width); None otherwise (a missing key, a
    truncated or garbled file: the video is redone).

    ``.npy`` files are memory-mapped: a rerun over many finished videos reads their headers
    and one row of timestamps, not every feature.
    """
    if not files:
        return None
    for path in files.values():
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            return None  # missing: not done
        if not stat.S_ISREG(mode):  # a link, a FIFO, a folder: never read (it could hang)
            log.warning("%s is not a regular file; treated as damaged, the video is "
                        "extracted again", path)
            return None
    try:
        arrays = {key: load_output(path, mmap=True) for key, path in files.items()}
        return arrays_complete(arrays, features)
    except UnsafePickleError as e:
        log.warning("%s: %s; treated as damaged, the video is extracted again",
                    next(iter(files.values())), e)
        return None
    except Exception:  # noqa: BLE001 - a garbled pickle can raise almost anything; redo it
        return None


def arrays_complete(arrays: Mapping[str, Any],
                    features: Sequence[Tuple[str, Optional[int]]]
                    ) -> Optional[Tuple[int, float]]:
    """The one rule of a complete output set, for arrays from any format (numpy arrays,
    memory maps, HDF5 datasets): ``(Tv, seconds of video)`` when ``timestamps_ms`` is
    ``(Tv, 2)`` with Tv > 0, ``fps`` a scalar and each feature key ``(Tv, width)`` float32
    (a width None: any, for a network the reader does not know); None otherwise.  Reads one
    row of timestamps, never the features."""
    stamps, fps = arrays.get("timestamps_ms"), arrays.get("fps")
    shape = tuple(getattr(stamps, "shape", ()))
    if not (len(shape) == 2 and shape[1] == 2 and shape[0] > 0
            and fps is not None and np.shape(fps) == ()):
        return None
    for key, width in features:
        feats = arrays.get(key)
        found = tuple(getattr(feats, "shape", ()))
        if not (len(found) == 2 and found[0] == shape[0] and width in (None, found[1])
                and feats.dtype == np.float32):
            return None
    return shape[0], float(stamps[-1, 1]) / 1000.0
