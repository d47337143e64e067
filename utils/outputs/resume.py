"""Is a video already done?  Its output set is complete and loads (a rerun skips it)."""
import logging
import os
import stat
from typing import Any, Dict, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from utils.errors import one_line
from utils.outputs.safe_pickle import UnsafePickleError
from utils.outputs.serialization import load_output

log = logging.getLogger(__name__)


class Verdict(NamedTuple):
    """Is an output set complete: ``done`` ``(Tv, seconds of video)``, else None with the key
    at fault (``key``; '' when none is) and why (``why``: of that key's file or array);
    ``planted``: a file that is not a regular one, or a pickle refused as unsafe."""
    done: Optional[Tuple[int, float]]
    key: str = ""
    why: str = ""
    planted: bool = False


def check_outputs(files: Dict[str, str],
                  features: Sequence[Tuple[str, Optional[int]]]) -> Verdict:
    """``outputs_complete``'s verdict, with the file at fault and why; logs nothing.  Each file
    is loaded on its own, so the one that fails is the one named."""
    if not files:
        return Verdict(None, "", "no files")
    for key, path in files.items():
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            return Verdict(None, key, "missing")
        if not stat.S_ISREG(mode):  # a link, a FIFO, a folder: never read (it could hang)
            return Verdict(None, key, "not a regular file (a link, a FIFO or a folder); "
                           "never read", planted=True)
    arrays = {}
    for key, path in files.items():
        try:
            arrays[key] = load_output(path, mmap=True)
        except UnsafePickleError as e:
            return Verdict(None, key, str(e), planted=True)
        except Exception as e:  # noqa: BLE001 - a garbled pickle can raise almost anything
            return Verdict(None, key, f"cannot be read ({one_line(e)})")
    return check_arrays(arrays, features)


def outputs_complete(files: Dict[str, str],
                     features: Sequence[Tuple[str, Optional[int]]]
                     ) -> Optional[Tuple[int, float]]:
    """``(Tv, seconds of video)`` when every file of the set exists and loads, with shapes that
    agree (``features``: each per-stack key and its width); None otherwise (a missing key, a
    truncated or garbled file: the video is redone).  A file that is not a regular one, or a
    pickle refused as unsafe, is warned about (naming that file).

    ``.npy`` files are memory-mapped: a rerun over many finished videos reads their headers
    and one row of timestamps, not every feature.
    """
    verdict = check_outputs(files, features)
    if verdict.planted:
        log.warning("%s: %s; treated as damaged, the video is extracted again",
                    files[verdict.key], verdict.why)
    return verdict.done


def _dtype(value: Any) -> np.dtype:
    """The value's dtype (an HDF5 dataset's without reading it; a Python number's as numpy
    holds it: ``object`` for an int beyond 64 bits)."""
    dtype = getattr(value, "dtype", None)
    return dtype if dtype is not None else np.asarray(value).dtype


def _numbers(value: Any) -> bool:
    """Are these (integer or floating-point) numbers?"""
    return _dtype(value).kind in "iuf"


def check_arrays(arrays: Mapping[str, Any],
                 features: Sequence[Tuple[str, Optional[int]]]) -> Verdict:
    """``arrays_complete``'s verdict, with the key at fault and why."""
    stamps, fps = arrays.get("timestamps_ms"), arrays.get("fps")
    shape = tuple(getattr(stamps, "shape", ()))
    if stamps is None:
        return Verdict(None, "timestamps_ms", "missing")
    if not (len(shape) == 2 and shape[1] == 2 and shape[0] > 0 and _numbers(stamps)):
        return Verdict(None, "timestamps_ms", f"not (Tv, 2) numbers with Tv > 0 (found "
                       f"{shape} {_dtype(stamps)})")
    if fps is None:
        return Verdict(None, "fps", "missing")
    if not (np.shape(fps) == () and _numbers(fps)):
        return Verdict(None, "fps", f"not one number (found shape {np.shape(fps)}, "
                       f"{_dtype(fps)})")
    for key, width in features:
        feats = arrays.get(key)
        if feats is None:
            return Verdict(None, key, "missing")
        found = tuple(getattr(feats, "shape", ()))
        if not (len(found) == 2 and found[0] == shape[0] and width in (None, found[1])
                and feats.dtype == np.float32):
            want = f"({shape[0]}, {width if width is not None else 'width'}) float32"
            return Verdict(None, key, f"not {want} (found {found} {_dtype(feats)}; Tv "
                           f"{shape[0]} from timestamps_ms)")
    seconds = float(stamps[-1, 1]) / 1000.0
    if not (np.isfinite(seconds) and seconds >= 0):  # it would go into the manifest
        return Verdict(None, "timestamps_ms", f"its last end time is {seconds * 1000.0}, not "
                       "a finite number >= 0")
    return Verdict((shape[0], seconds))


def arrays_complete(arrays: Mapping[str, Any],
                    features: Sequence[Tuple[str, Optional[int]]]
                    ) -> Optional[Tuple[int, float]]:
    """The one rule of a complete output set, for arrays from any format (numpy arrays,
    memory maps, HDF5 datasets): ``(Tv, seconds of video)`` when ``timestamps_ms`` is
    ``(Tv, 2)`` numbers with Tv > 0, ``fps`` one number and each feature key ``(Tv, width)``
    float32 (a width None: any, for a network the reader does not know); None otherwise
    (``check_arrays`` says which key and why).  Reads one row of timestamps, never the
    features."""
    return check_arrays(arrays, features).done
