"""Helpers for the batch-run tests: configs, the CLI in a subprocess, an FFmpeg-CLI reference."""
import contextlib
import json
import os
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

from models.s3d import ExtractS3D
from models.s3d.spec import SPEC as S3D
from utils.config import ExtractionConfig, OnExtraction, OutputLayout
from utils.video.preprocess import KyleminFrames
from utils.outputs.naming import output_files
from utils.outputs.serialization import load_output
from videos import cli_frames, kylemin_vf

KEYS = S3D.keys  # the default network's output keys, for the tests

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN = os.path.join(REPO, "main.py")
STACK = 13  # the network's minimum: the cheapest forward pass


def make_cfg(video_paths=None, output_path: str = "./output", **kw) -> ExtractionConfig:
    """A config as the CLI would build it, for ``utils.run.batch_run.run`` in-process."""
    kw.setdefault("stack_size", STACK)
    kw.setdefault("step_size", kw["stack_size"])
    kw.setdefault("device", "cpu")
    kw["on_extraction"] = OnExtraction(kw.get("on_extraction", "save_numpy"))
    kw["output_layout"] = OutputLayout(kw.get("output_layout", "flat"))
    return ExtractionConfig(video_paths=video_paths, output_path=output_path, **kw)


def make_extractor(model, stack_size: int = STACK, **kw) -> ExtractS3D:
    kw.setdefault("step_size", stack_size)
    return ExtractS3D(model=model, device="cpu", stack_size=stack_size, **kw)


class ExtractorDouble:
    """Base of the tests' stand-in extractors (``utils.run.batch_run.Extractor``): no decoding ahead."""

    def planned(self, paths, progress=False):
        return contextlib.nullcontext()

    def identity(self):
        return {"weights": {"source": "test double", "sha256": "0" * 64}, "precision": "fp32",
                "device": "cpu"}


def run_cli(args: List[str], cwd: str, timeout: float = 240, preexec_fn=None,
            env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    """``python main.py ARGS`` in ``cwd``; text output (UTF-8), as a user's shell would run it
    (without ``HYDRA_FULL_ERROR``, which would turn one-line errors into tracebacks).
    ``preexec_fn``: run in the child before ``main.py`` (resource limits, umask); ``env``:
    variables added to the environment."""
    env = dict(os.environ, PYTHONIOENCODING="utf-8", PYTHONUNBUFFERED="1", **(env or {}))
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, MAIN, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, encoding="utf-8", timeout=timeout, check=False,
                          preexec_fn=preexec_fn)


def cli_args(weights: str, output_path: str, stack_size: int = STACK, **kw) -> List[str]:
    args = {"on_extraction": "save_numpy", "device": "cpu", "weights_path": weights,
            "stack_size": stack_size, "step_size": stack_size, "output_path": output_path}
    args.update(kw)
    return [f"{k}={override_value(v)}" for k, v in args.items()]


def override_value(value) -> str:
    """A Hydra override value: quoted when it holds characters the override grammar treats
    specially (spaces, quotes, brackets, ``=``...); a list becomes a list of such values."""
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(override_value(v) for v in value) + "]"
    text = str(value)
    if text and all(c.isalnum() or c in "/._-:+" for c in text):
        return text
    return "'" + text.replace("'", "\\'") + "'"


def wait_for_state(predicate: Callable[[], bool], proc: Optional[subprocess.Popen] = None,
                   timeout: float = 180.0, interval: float = 0.02) -> bool:
    """Poll ``predicate`` (a state: files on disk, a process's progress) until it holds.

    False at the deadline, or once ``proc`` has ended without the state holding. Between two
    checks it waits on ``proc`` itself, so an exit is seen at once; no duration is asserted.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        if proc is None:
            time.sleep(min(interval, left))
            continue
        try:
            proc.wait(timeout=min(interval, left))
        except subprocess.TimeoutExpired:
            continue
        return predicate()  # it ended: whatever it wrote is there now
    return True


def read_jsonl(path: str) -> List[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_set(root: str, name: str, ext: str = "npy") -> Dict[str, np.ndarray]:
    sink = {"npy": "save_numpy", "pkl": "save_pickle"}[ext]
    return {key: load_output(path) for key, path in output_files(root, name, sink, S3D.keys).items()}


def output_files_under(root: str) -> List[str]:
    """Every file under ``root`` (relative paths, sorted), temporaries included; not the run
    records in ``root/runs/`` (tests/test_provenance.py checks those)."""
    found = []
    for folder, subfolders, names in os.walk(root):
        if folder == root and "runs" in subfolders:
            subfolders.remove("runs")
        found.extend(os.path.relpath(os.path.join(folder, n), root) for n in names)
    return sorted(found)


def rel_norm(a, b) -> float:
    """Relative L2 difference of the whole arrays (CPU tensors too)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """Largest per-row relative L2 difference."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.linalg.norm(a - b, axis=-1) / np.linalg.norm(b, axis=-1)))


def assert_same_outputs(got: Dict[str, np.ndarray], want: Dict[str, np.ndarray], tol: float = 1e-5):
    assert got["s3d"].dtype == np.float32 and got["s3d"].shape == want["s3d"].shape
    assert rel_err(got["s3d"], want["s3d"]) <= tol
    np.testing.assert_allclose(got["timestamps_ms"], want["timestamps_ms"], rtol=0, atol=1e-6)
    assert float(got["fps"]) == float(want["fps"])


def cli_reference(path: str, model, width: int, height: int, fps: Optional[float] = 25,
                  stack_size: int = STACK, step_size: Optional[int] = None,
                  max_stacks: Optional[int] = None) -> np.ndarray:
    """Features computed from the FFmpeg CLI's frames, independently of our decoder.

    ``width`` x ``height`` is the upright (displayed) size: the CLI applies rotation
    metadata itself.  The chain is the ``kylemin`` preset's, as FFmpeg filters; ``fps=None``:
    every decoded frame (no ``fps`` filter).
    """
    step = step_size or stack_size
    frames = cli_frames(path, kylemin_vf(width, height, fps), 224, 224,
                        extra=["-fps_mode", "passthrough"])
    starts = list(range(0, len(frames) - stack_size + 1, step))[:max_stacks]
    feats = []
    with torch.inference_mode():
        for s in starts:
            clip = torch.from_numpy(frames[s:s + stack_size].copy())[None]
            inp = KyleminFrames.to_input(clip).permute(0, 4, 1, 2, 3)  # channels_last_3d, as ours
            feats.append(model(inp)[0].float().numpy())
    return np.concatenate(feats) if feats else np.zeros((0, 1024), np.float32)


def features_cli(*args, timeout: float = 60, memory: Optional[int] = None
                 ) -> subprocess.CompletedProcess:
    """``python -m utils.features ARGS`` (``memory``: an address-space cap in bytes)."""
    def cap():
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    return subprocess.run([sys.executable, "-m", "utils.features", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout,
                          preexec_fn=cap if memory else None)


def our_h5(path: str):
    """A new, empty features file of the HDF5 layout, open for writing (for planting)."""
    import h5py
    f = h5py.File(path, "w", libver=("v110", "latest"))
    f.attrs["format"] = "s3d-video-features/h5/1"
    f.attrs["feature_type"] = "s3d"
    f.attrs["generation"] = 1
    return f
