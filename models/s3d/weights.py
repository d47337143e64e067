"""S3D checkpoints: where the default one lives, how it is fetched and verified, how any is loaded.

Checkpoints are read with ``torch.load(..., weights_only=True)``: a file can carry tensors,
never code.  Loading is strict: every key and every shape, or an error that names them.
"""
import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
import pickle
from collections import OrderedDict
from typing import Dict, Optional

import torch
from torch import nn

log = logging.getLogger(__name__)

DEFAULT_URL = ("https://github.com/v-iashin/video_features/raw/"
               "a2f61b7a4cf0ca6a2d91dcc2182f57e7cfd12664/models/s3d/checkpoint/"
               "S3D_kinetics400_torchified.pt")
DEFAULT_SHA1 = "65b27cbb412937b3dd705f4216cb822d679535df"  # git blob SHA-1 of that file
DEFAULT_FILENAME = "S3D_kinetics400_torchified.pt"


class WeightsError(Exception):
    """A checkpoint cannot be fetched, read or loaded; the message says which file and why."""


def git_blob_sha1(path: str) -> str:
    """``sha1(b"blob <size>\\0" + content)``, the id git gives the file's content."""
    digest = hashlib.sha1(f"blob {os.path.getsize(path)}\0".encode())
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def default_checkpoint_path() -> str:
    return os.path.join(torch.hub.get_dir(), "checkpoints", DEFAULT_FILENAME)


def download(url: str, dest: str, sha1: str, timeout: float = 60.0) -> str:
    """Fetch ``url`` to ``dest`` unless a verified copy is there; verify its git blob SHA-1.

    The file is written under a temporary name beside ``dest`` and renamed only once
    verified, so a failed or interrupted download never leaves a file that looks done.
    """
    if os.path.isfile(dest):
        if git_blob_sha1(dest) == sha1:
            return dest
        log.warning("%s: checksum mismatch, downloading it again", dest)
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(dest) + ".", suffix=".part",
                               dir=os.path.dirname(dest) or ".")
    try:
        log.info("downloading %s to %s", url, dest)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    out.write(chunk)
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise WeightsError(
                f"cannot download the default S3D weights from {url} ({reason}); without "
                f"network, get {DEFAULT_FILENAME} elsewhere and pass weights_path=/path/to/it"
            ) from None
        got = git_blob_sha1(tmp)
        if got != sha1:
            raise WeightsError(f"downloaded {url} but its git blob SHA-1 is {got}, expected "
                               f"{sha1}; the file was discarded")
        os.replace(tmp, dest)
        return dest
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat state dict (kylemin's ``module.`` prefix removed)."""
    if not os.path.isfile(path):
        raise WeightsError(f"weights_path {path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0]
        raise WeightsError(f"{path}: not a plain-tensor checkpoint, refused to load it "
                           f"(weights_only=True): {first}") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise WeightsError(f"{path}: corrupted or truncated checkpoint ({first})") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: expected a state dict of tensors, found {type(obj).__name__}")
    if obj and all(k.startswith("module.") for k in obj):
        obj = OrderedDict((k[len("module."):], v) for k, v in obj.items())
    return obj


def _preview(keys) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""
    return ", ".join(keys[:3]) + more


def load_into(model: nn.Module, state: Dict[str, torch.Tensor], source: str) -> None:
    """Strictly copy ``state`` into ``model``, naming every missing, unexpected or mis-shaped key."""
    expected = model.state_dict()
    missing = expected.keys() - state.keys()
    unexpected = state.keys() - expected.keys()
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_preview(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_preview(unexpected)}")
    if shapes:
        more = f" (+{len(shapes) - 3} more)" if len(shapes) > 3 else ""
        problems.append(f"{len(shapes)} wrong shape(s) (file vs model): {'; '.join(shapes[:3])}{more}")
    if problems:
        raise WeightsError(f"{source}: not an S3D Kinetics-400 checkpoint: {'; '.join(problems)}")
    model.load_state_dict(state, strict=True)


def resolve_weights(weights_path: Optional[str]) -> str:
    """The checkpoint file to use: ``weights_path`` or the verified default in torch's hub cache."""
    if weights_path:
        return weights_path
    return download(DEFAULT_URL, default_checkpoint_path(), DEFAULT_SHA1)


def load_weights(model: nn.Module, weights_path: Optional[str]) -> str:
    path = resolve_weights(weights_path)
    load_into(model, read_state_dict(path), path)
    return path
