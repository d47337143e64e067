"""Reading and writing one video's arrays: one ``.npy`` or ``.pkl`` file per key.

Data never runs code: ``.npy`` files load with ``allow_pickle=False``, and ``.pkl`` files
through ``utils.outputs.safe_pickle`` (numpy's array-building names only), then must be an array or a
number; every other global is refused (a crafted pickle in a shared output folder could otherwise run a shell
command on the next rerun).
"""
import pickle
from typing import Dict

import numpy as np

from utils.files import atomic_write_all
from utils.outputs.safe_pickle import UnsafePickleError, restricted_load


def safe_pickle_load(f) -> object:
    """A numpy array, numpy scalar or plain number from a pickle stream (through
    ``utils.outputs.safe_pickle.restricted_load``: nothing in the file runs), or
    ``UnsafePickleError``."""
    try:
        value = restricted_load(f)
    except UnsafePickleError as e:
        raise UnsafePickleError(f"refused to load {e.module}.{e.name}: only numpy arrays and "
                                "numbers are read from pickles", e.module, e.name) from None
    if isinstance(value, (np.ndarray, np.generic)):
        if value.dtype.hasobject:
            raise UnsafePickleError("refused an array of Python objects")
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    raise UnsafePickleError(f"expected a numpy array or a number, found a "
                            f"{type(value).__name__}")


def _dump(value: np.ndarray, f, ext: str) -> None:
    if ext == "npy":
        np.save(f, value, allow_pickle=False)
    else:
        pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)


def load_output(path: str, mmap: bool = False) -> np.ndarray:
    """One output file's array; ``mmap``: a ``.npy`` is mapped, not read (a truncated one
    still fails to load).  Pickles go through ``safe_pickle_load``."""
    if path.endswith(".npy"):
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    with open(path, "rb") as f:
        return safe_pickle_load(f)


def write_outputs(arrays: Dict[str, np.ndarray], files: Dict[str, str]) -> None:
    """Write every key's file (``files``: key -> path) so that the set appears together
    (``utils.files.atomic_write_all``)."""
    with atomic_write_all(list(files.values())) as out:
        for key, path in files.items():
            _dump(np.asarray(arrays[key]), out[path].file, path.rsplit(".", 1)[-1])
