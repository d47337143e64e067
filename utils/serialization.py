"""Reading and writing one video's arrays: one ``.npy`` or ``.pkl`` file per key."""
import pickle
from typing import Dict

import numpy as np

from utils.files import atomic_write_all


def _dump(value: np.ndarray, f, ext: str) -> None:
    if ext == "npy":
        np.save(f, value, allow_pickle=False)
    else:
        pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)


def load_output(path: str, mmap: bool = False) -> np.ndarray:
    """One output file's array; ``mmap``: a ``.npy`` is mapped, not read (a truncated one
    still fails to load)."""
    if path.endswith(".npy"):
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    with open(path, "rb") as f:
        return pickle.load(f)


def write_outputs(arrays: Dict[str, np.ndarray], files: Dict[str, str]) -> None:
    """Write every key's file (``files``: key -> path) so that the set appears together
    (``utils.files.atomic_write_all``)."""
    with atomic_write_all(list(files.values())) as out:
        for key, path in files.items():
            _dump(np.asarray(arrays[key]), out[path].file, path.rsplit(".", 1)[-1])
