"""S3D checkpoints: where the default one lives, how it is fetched and verified, how any is loaded.

Checkpoints are read with ``torch.load(..., weights_only=True)``: a file can carry tensors,
never code.  Loading is strict: every key and every shape, or an error that names them.
A file is read once: its bytes give the git blob SHA-1 (the default file's check), the SHA-256
(the run record's) and the tensors (``read_checkpoint``); a download is hashed as it arrives.
"""
import hashlib
import http.client
import io
import logging
import os
import pickle
import re
import urllib.error
import urllib.request
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, Optional

import torch
from torch import nn

from models.s3d.spec import WEIGHTS
from utils.errors import WeightsError, one_line
from utils.files import AtomicFile

log = logging.getLogger(__name__)

DEFAULT_URL = WEIGHTS.url
DEFAULT_SHA1 = WEIGHTS.git_blob_sha1  # git blob SHA-1 of that file
DEFAULT_FILENAME = WEIGHTS.filename


def git_blob_sha1(path: str) -> str:
    """``sha1(b"blob <size>\\0" + content)``, the id git gives the file's content."""
    digest = hashlib.sha1(f"blob {os.path.getsize(path)}\0".encode())
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def git_blob_sha1_of(data: bytes) -> str:
    """``git_blob_sha1`` of bytes already read."""
    digest = hashlib.sha1(f"blob {len(data)}\0".encode())
    digest.update(data)
    return digest.hexdigest()


def state_dict_sha256(model: nn.Module) -> str:
    """A SHA-256 of a model's weights (keys, dtypes, shapes and bytes, in key order), for
    weights that come as an object rather than a file."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{key}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def default_checkpoint_path() -> str:
    return os.path.join(torch.hub.get_dir(), "checkpoints", DEFAULT_FILENAME)


def download(url: str, dest: str, sha1: Optional[str], timeout: float = 60.0, *,
             what: str = "the default S3D weights", option: str = "weights_path",
             check_existing: bool = True) -> str:
    """Fetch ``url`` to ``dest`` unless a verified copy is there; verify its git blob SHA-1.

    ``check_existing=False``: the caller found ``dest`` missing or wrong, download it anyway.

    The file is written through ``utils.files.AtomicFile`` and renamed into place only once
    verified, so a failed or interrupted download never leaves a file that looks done.
    ``sha1=None``: no published checksum to check (a file already at ``dest`` is taken as it
    is: only whole downloads get there).  ``what`` and ``option`` name the file and the
    option that replaces it in the messages.
    """
    if check_existing and os.path.isfile(dest):
        if sha1 is None or git_blob_sha1(dest) == sha1:
            return dest
        log.warning("%s: checksum mismatch, downloading it again", dest)
    filename = os.path.basename(dest)
    advice = (f"without network, get {filename} elsewhere and pass "
              f"{option}=/path/to/it")
    try:
        out = AtomicFile(dest)
    except OSError as e:  # e.g. a read-only TORCH_HOME on a cluster node
        raise WeightsError(f"cannot write {what} to {os.path.dirname(dest)} "
                           f"({one_line(e.strerror or e, 200)}); set TORCH_HOME to a writable "
                           f"folder or pass {option}=/path/to/{filename}") from None
    try:
        log.info("downloading %s to %s", url, dest)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                announced = resp.headers.get("Content-Length")
                # hashed as it arrives when the size is announced (git's hash starts with it)
                digest = (hashlib.sha1(f"blob {int(announced)}\0".encode())
                          if announced is not None and announced.isdigit() else None)
                received = 0
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    out.file.write(chunk)
                    if digest is not None:
                        digest.update(chunk)
                    received += len(chunk)
            out.finish()
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            if isinstance(e, urllib.error.HTTPError):
                reason = f"HTTP {e.code} {one_line(e.reason, 200)}"
            else:
                reason = one_line(getattr(e, "reason", None) or e, 200)
            raise WeightsError(f"cannot download {what} from {url} ({reason}); "
                               f"{advice}") from None
        # http.client (Python 3.11) ends a body the server cut short without an error,
        # so compare the bytes received with the announced length.
        if announced is not None and announced.isdigit() and received != int(announced):
            raise WeightsError(f"cannot download {what} from {url} (the "
                               f"connection closed after {received} of {announced} bytes); "
                               f"{advice}")
        got = None
        if sha1 is not None:
            got = digest.hexdigest() if digest is not None else git_blob_sha1(out.tmp)
        if got != sha1:
            raise WeightsError(f"downloaded {url} but its git blob SHA-1 is {got}, expected "
                               f"{sha1}; the file was discarded, {dest} not written")
        out.commit()
        return dest
    finally:
        out.discard()


_ZIP_MAGIC = b"PK\x03\x04"   # torch.save's default format is a zip archive
_PICKLE_MAGIC = b"\x80"       # the legacy format is a pickle stream (protocol >= 2)


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint file, read once: its state dict and both hashes of its bytes."""

    path: str
    state: Dict[str, torch.Tensor]
    sha256: str
    git_sha1: str


def read_bytes(path: str) -> bytes:
    """The whole file (what ``torch.load`` and both hashes read), or a ``WeightsError``."""
    if os.path.isdir(path):
        raise WeightsError(f"weights_path {path}: is a directory, expected a checkpoint file")
    if not os.path.isfile(path):
        raise WeightsError(f"weights_path {path}: no such file")
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise WeightsError(f"weights_path {path}: cannot read it ({one_line(e.strerror or e, 200)})"
                           ) from None


def read_checkpoint(path: str, data: Optional[bytes] = None) -> Checkpoint:
    """``path`` read once (or its ``data``, already read): state dict, SHA-256, git blob SHA-1."""
    if data is None:
        data = read_bytes(path)
    state = state_dict_from_bytes(path, data)
    return Checkpoint(path, state, hashlib.sha256(data).hexdigest(), git_blob_sha1_of(data))


def read_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat state dict (kylemin's ``module.`` prefix removed)."""
    return state_dict_from_bytes(path, read_bytes(path))


def state_dict_from_bytes(path: str, data: bytes) -> Dict[str, torch.Tensor]:
    """A checkpoint's bytes (read from ``path``, named in the messages) as a flat state dict
    (kylemin's ``module.`` prefix removed).

    Both of ``torch.save``'s formats are read (zip archive and legacy pickle) with
    ``weights_only=True``.  Any failure is a :class:`WeightsError` whose one-line message
    names the file and the cause.
    """
    head = data[:len(_ZIP_MAGIC)]
    if not head:
        raise WeightsError(f"{path}: empty file (0 bytes), not a checkpoint")
    if not (head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_MAGIC)):
        raise WeightsError(f"{path}: not a PyTorch checkpoint (starts with bytes {head.hex()}, "
                           f"neither a zip archive nor a pickle); corrupted or the wrong file")
    if head.startswith(_ZIP_MAGIC) and not zipfile.is_zipfile(io.BytesIO(data)):
        raise WeightsError(f"{path}: truncated or damaged checkpoint (a zip archive without its "
                           f"end record: an interrupted download or copy?)")
    try:
        with warnings.catch_warnings():
            # Damaged legacy files make torch warn about an odd pickle protocol before failing;
            # the error below says it in one line.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # The weights-only unpickler names a refused global ("GLOBAL posix.system"); any
        # other unpickling failure is damaged data.
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found:
            raise WeightsError(f"{path}: refused to load it: it holds {found.group(1)}, which is "
                               f"not a tensor and could run code (weights_only=True)") from None
        raise WeightsError(f"{path}: corrupted or truncated checkpoint (unreadable pickle data)"
                           ) from None
    except Exception as e:  # noqa: BLE001  damaged input makes torch.load fail in many ways
        # (RuntimeError, EOFError, ValueError, KeyError, IndexError, AssertionError... seen
        # by fuzzing truncated and bit-flipped files): all mean the file cannot be read.
        cause = f"{type(e).__name__}: {one_line(e, 200)}" if str(e).strip() else type(e).__name__
        raise WeightsError(f"{path}: corrupted or truncated checkpoint ({cause})") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: expected a state dict of tensors, found a "
                           f"{type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsError(f"{path}: expected a state dict of tensors, but {len(bad)} value(s) "
                           f"are not tensors: {_preview(map(str, bad))}")
    if obj and all(isinstance(k, str) and k.startswith("module.") for k in obj):
        obj = OrderedDict((k[len("module."):], v) for k, v in obj.items())
    return obj


def _preview(keys) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""
    return ", ".join(keys[:3]) + more


def load_into(model: nn.Module, state: Dict[str, torch.Tensor], source: str,
              what: str = "an S3D Kinetics-400 checkpoint") -> None:
    """Strictly copy ``state`` into ``model``; name every missing, unexpected or mis-shaped key
    (``what`` the file should have been, in the message)."""
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
        problems.append(f"{len(shapes)} wrong shape(s) (file vs model): "
                        f"{'; '.join(shapes[:3])}{more}")
    if problems:
        raise WeightsError(f"{source}: not {what}: {'; '.join(problems)}")
    model.load_state_dict(state, strict=True)


def load_checkpoint(model: nn.Module, weights_path: Optional[str]) -> Checkpoint:
    """Load ``weights_path`` (or the default checkpoint, downloaded if missing or wrong) into
    ``model``, reading the file once; the ``Checkpoint`` has its hashes (its ``state`` is the
    model's now)."""
    if weights_path:
        ckpt = read_checkpoint(weights_path)
    else:
        dest = default_checkpoint_path()
        data = read_bytes(dest) if os.path.isfile(dest) else None
        if data is not None and git_blob_sha1_of(data) != DEFAULT_SHA1:
            log.warning("%s: checksum mismatch, downloading it again", dest)
            data = None
        if data is None:
            download(DEFAULT_URL, dest, DEFAULT_SHA1, check_existing=False)
            data = read_bytes(dest)
        ckpt = read_checkpoint(dest, data)
    load_into(model, ckpt.state, ckpt.path)
    return ckpt
