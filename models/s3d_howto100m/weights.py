"""The MIL-NCE HowTo100M model's two files: where they live, how they are fetched and loaded.

``s3d_howto100m.pth`` holds both sides of the model in one state dict: the video network's
keys (``conv1.*`` ... ``fc.*``, ``models.s3d_howto100m.network``) and the text encoder's
(``text_module.*``, ``models.s3d_howto100m.text``).  ``s3d_dict.npy`` is the word list.
Both are the port's files (antoine77340/S3D_HowTo100M, README), loaded unchanged.

The port publishes no checksums and no machine of this project reaches its server, so
nothing can be verified on download: each file's SHA-256 is computed when it is loaded,
logged when it is first downloaded, and kept (``ModelFile``) so that a run can record which
files made its features.  Downloads are atomic (``models.s3d.weights.download``): a file in
the cache is a whole one.  Checkpoints load with ``weights_only=True``, strictly: every key
of both sides and every shape, or one ``WeightsError`` line.
"""
import logging
import os
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
from torch import nn

from models.s3d.weights import download, load_into, read_state_dict
from models.s3d_howto100m.network import S3DG
from models.s3d_howto100m.spec import WEIGHTS, WORD_LIST
from models.s3d_howto100m.text import SentenceEncoder, TextEncoder, Vocabulary
from models.s3d_howto100m.words import read_word_list
from utils.records.provenance import file_sha256
from utils.errors import WeightsError

log = logging.getLogger(__name__)

WEIGHTS_FILENAME, WEIGHTS_URL = WEIGHTS.filename, WEIGHTS.url
DICT_FILENAME, DICT_URL = WORD_LIST.filename, WORD_LIST.url
TEXT_PREFIX = "text_module."
WHAT = "an S3D HowTo100M (MIL-NCE) checkpoint"


@dataclass(frozen=True)
class ModelFile:
    """A file the model was loaded from: its path, where it came from (the URL of a default
    download, or the local path given), and its SHA-256."""

    path: str
    source: str
    sha256: str


def default_path(filename: str) -> str:
    return os.path.join(torch.hub.get_dir(), "checkpoints", filename)


def _resolve(given: Optional[str], url: str, filename: str, what: str, option: str) -> ModelFile:
    """``given`` (a local file), or the default one downloaded once into torch's hub cache."""
    if given:
        if not os.path.isfile(given):
            state = "is a directory" if os.path.isdir(given) else "no such file"
            raise WeightsError(f"{option} {given}: {state}")
        return ModelFile(given, given, file_sha256(given))
    dest = default_path(filename)
    fresh = not os.path.isfile(dest)
    download(url, dest, None, what=what, option=option)
    digest = file_sha256(dest)
    if fresh:
        log.info("downloaded %s (%d bytes), SHA-256 %s; no checksum is published to check it "
                 "against: keep this one to compare later downloads with", url,
                 os.path.getsize(dest), digest)
    return ModelFile(dest, url, digest)


def resolve_weights(weights_path: Optional[str]) -> ModelFile:
    return _resolve(weights_path, WEIGHTS_URL, WEIGHTS_FILENAME,
                    "the default S3D HowTo100M weights", "weights_path")


def resolve_dict(dict_path: Optional[str]) -> ModelFile:
    return _resolve(dict_path, DICT_URL, DICT_FILENAME,
                    "the default S3D HowTo100M word list", "dict_path")


class _Layout(nn.Module):
    """The checkpoint's layout: the video network's modules at the top, the text encoder
    under ``text_module`` (the same module objects: loading into it loads into them)."""

    def __init__(self, video: nn.Module, text: nn.Module):
        super().__init__()
        for name, child in video.named_children():
            self.add_module(name, child)
        for name, param in video.named_parameters(recurse=False):
            self.register_parameter(name, param)
        self.text_module = text


def load_checkpoint(path: str, video: Optional[S3DG] = None,
                    text: Optional[SentenceEncoder] = None) -> None:
    """Read ``path`` (``weights_only``) and ``load_state`` it."""
    load_state(read_state_dict(path), path, video, text)


def load_state(state: Dict[str, torch.Tensor], source: str, video: Optional[S3DG] = None,
               text: Optional[SentenceEncoder] = None) -> None:
    """Check every key and shape of both sides against ``state``; load the sides given.

    A side not given is checked on the ``meta`` device (no memory, nothing loaded).  The
    Kinetics-400 S3D's checkpoint is refused with a line that says so.
    """
    if "base.0.conv_s.weight" in state:  # kylemin's layout (models/s3d/network.py)
        raise WeightsError(f"{source}: not {WHAT}: this is the Kinetics-400 S3D's checkpoint "
                           f"(keys base.*); use it with feature_type=s3d")
    state = OrderedDict(state)
    # BatchNorm's step counters do not take part in inference; a checkpoint saved without them
    # (as PyTorch itself accepts from hand-made state dicts) gets them as zeros
    for key in [k[:-len("running_mean")] + "num_batches_tracked" for k in state
                if k.endswith(".running_mean")]:
        state.setdefault(key, torch.tensor(0, dtype=torch.int64))
    with torch.device("meta"):
        video_part = video if video is not None else S3DG()
        text_part = text if text is not None else SentenceEncoder()
    with warnings.catch_warnings():
        # copying into a meta tensor does nothing, as intended here; torch warns about it
        warnings.filterwarnings("ignore", message=".*to a meta parameter in the current model")
        load_into(_Layout(video_part, text_part), state, source, what=WHAT)


def load_text_encoder(weights_path: Optional[str], dict_path: Optional[str]
                      ) -> Tuple[TextEncoder, ModelFile, ModelFile]:
    """The text encoder of the checkpoint and its word list, with both files' provenance."""
    weights, words = resolve_weights(weights_path), resolve_dict(dict_path)
    vocabulary = vocabulary_of(words.path)
    encoder = SentenceEncoder()
    load_checkpoint(weights.path, text=encoder)
    return TextEncoder(encoder, vocabulary), weights, words


def vocabulary_of(path: str) -> Vocabulary:
    words = read_word_list(path)
    try:
        return Vocabulary(words)
    except ValueError as e:
        raise WeightsError(f"{path}: not the model's word list: {e}") from None
