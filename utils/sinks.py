"""Where features go: the terminal, or one ``.npy``/``.pkl`` file per key, written atomically."""
import os
import pickle
import tempfile
from typing import Dict, List, Optional

import numpy as np

KEYS = ("s3d", "timestamps_ms", "fps")
EXTENSIONS = {"save_numpy": "npy", "save_pickle": "pkl"}


def output_files(root: str, name: str, on_extraction: str) -> Dict[str, str]:
    """``{key: <root>/<name>_<key>.<ext>}`` for a saving sink; ``{}`` for ``print``."""
    ext = EXTENSIONS.get(on_extraction)
    if ext is None:
        return {}
    return {key: os.path.join(root, f"{name}_{key}.{ext}") for key in KEYS}


def _dump(value: np.ndarray, f, ext: str) -> None:
    if ext == "npy":
        np.save(f, value, allow_pickle=False)
    else:
        pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)


def load_output(path: str) -> np.ndarray:
    if path.endswith(".npy"):
        return np.load(path, allow_pickle=False)
    with open(path, "rb") as f:
        return pickle.load(f)


def write_outputs(arrays: Dict[str, np.ndarray], files: Dict[str, str]) -> None:
    """Write every key under a temporary name in its target folder, then rename them all.

    A run killed at any moment leaves either no file or a complete one under each final
    name; ``outputs_complete`` tells whether a video's whole set is there.
    """
    tmps = []
    try:
        for key, path in files.items():
            folder = os.path.dirname(path) or "."
            os.makedirs(folder, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
            tmps.append((tmp, path))
            with os.fdopen(fd, "wb") as f:
                _dump(np.asarray(arrays[key]), f, path.rsplit(".", 1)[-1])
                f.flush()
                os.fsync(f.fileno())
        for tmp, path in tmps:
            os.replace(tmp, path)
    finally:
        for tmp, _ in tmps:
            if os.path.exists(tmp):
                os.remove(tmp)


def outputs_complete(files: Dict[str, str]) -> bool:
    """True when every file of the set exists and loads with the expected shape."""
    if not files:
        return False
    try:
        arrays = {key: load_output(path) for key, path in files.items()}
    except (OSError, ValueError, EOFError, pickle.UnpicklingError):
        return False
    feats, stamps = arrays.get("s3d"), arrays.get("timestamps_ms")
    return (isinstance(feats, np.ndarray) and feats.ndim == 2 and feats.shape[1] == 1024
            and isinstance(stamps, np.ndarray) and stamps.shape == (feats.shape[0], 2))


def print_features(path: str, arrays: Dict[str, np.ndarray]) -> None:
    """The ``print`` sink."""
    print(f"{path}:")
    for key in KEYS:
        value = np.asarray(arrays[key])
        print(f"  {key} (shape {value.shape}, {value.dtype}):")
        print("   ", np.array2string(value, threshold=64, edgeitems=3, precision=4).replace("\n", "\n    "))


def print_predictions(path: str, logits: np.ndarray, spans: List[tuple], labels: List[str],
                      k: int = 5, out=None) -> None:
    """``show_pred``: per stack, its time range and the top-k classes with logit and probability."""
    logits = np.asarray(logits, dtype=np.float64)
    z = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    print(f"{path}: top-{k} Kinetics-400 classes per stack", file=out)
    for i, (row, prob, (start, end)) in enumerate(zip(logits, probs, spans)):
        top = np.argsort(-row, kind="stable")[:k]
        print(f"  stack {i} [{start / 1000:.2f} s, {end / 1000:.2f} s)", file=out)
        for c in top:
            print(f"    {row[c]:9.3f}  {prob[c]:.3f}  {labels[c]}", file=out)
