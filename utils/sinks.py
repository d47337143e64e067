"""Where features go: the terminal, or one ``.npy``/``.pkl`` file per key, written atomically."""
import os
import pickle
import secrets
from typing import Dict, List, Optional, Tuple

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


def load_output(path: str, mmap: bool = False) -> np.ndarray:
    """One output file's array; ``mmap``: a ``.npy`` is mapped, not read (a truncated one
    still fails to load)."""
    if path.endswith(".npy"):
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    with open(path, "rb") as f:
        return pickle.load(f)


TMP_SUFFIX = ".tmp"


def _create_temporary(path: str) -> Tuple[int, str]:
    """A new file ``.<name>.<random>.tmp`` beside ``path``, opened for writing: ``(fd, its path)``.

    Created with mode 0666 less the umask, as ``open()`` would (``mkstemp`` would give 0600).
    """
    folder = os.path.dirname(path) or "."
    while True:
        tmp = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(4)}{TMP_SUFFIX}")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def write_outputs(arrays: Dict[str, np.ndarray], files: Dict[str, str]) -> None:
    """Write every key under a temporary name in its target folder, then rename them all.

    Old files of the set are removed just before the renames, so a run killed at any
    moment leaves under the final names either the whole old set, an incomplete set
    (which ``outputs_complete`` rejects, so a rerun redoes the video) or the whole new
    set: never a complete-looking mix of two extractions.
    """
    tmps = []
    try:
        for key, path in files.items():
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            fd, tmp = _create_temporary(path)
            tmps.append((tmp, path))
            with os.fdopen(fd, "wb") as f:
                _dump(np.asarray(arrays[key]), f, path.rsplit(".", 1)[-1])
                f.flush()
                os.fsync(f.fileno())
        for _, path in tmps:
            if os.path.lexists(path):
                os.remove(path)
        for tmp, path in tmps:
            os.replace(tmp, path)
    finally:
        for tmp, _ in tmps:
            if os.path.exists(tmp):
                os.remove(tmp)


def find_temporaries(root: str) -> Dict[str, List[str]]:
    """Temporary files left under ``root`` by killed runs, by the output file they were for.

    Scans the tree once (cheap even for 10^5 outputs); ``remove_temporaries`` then deletes
    those of the videos this process owns, never another shard's files in flight.
    """
    found: Dict[str, List[str]] = {}
    if not os.path.isdir(root):
        return found
    for folder, _, names in os.walk(root):
        for name in names:
            if not (name.startswith(".") and name.endswith(TMP_SUFFIX)):
                continue
            target = name[1:-len(TMP_SUFFIX)].rpartition(".")[0]  # the random part has no dot
            if target:
                final = os.path.join(folder, target)
                found.setdefault(final, []).append(os.path.join(folder, name))
    return found


def remove_temporaries(files: Dict[str, str], temporaries: Dict[str, List[str]]) -> None:
    """Delete the leftover temporaries of one video's output files (see ``find_temporaries``)."""
    for path in files.values():
        for tmp in temporaries.pop(path, ()):
            try:
                os.remove(tmp)
            except FileNotFoundError:
                pass


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
