"""What the S3D HowTo100M golden was made of: seeded frames, a small word list, sentences.

Shared by ``tests/golden/make_s3d_howto100m_golden.py`` (which runs the port on them once)
and the tests (which run ours on the same inputs and compare).  The golden also stores the
SHA-256 of every input and of the seeded weights, so a change in a random generator shows as
such, not as a wrong network.
"""
import hashlib
from typing import Dict

import numpy as np
import torch

# (batch, frames, height, width): the network is fully convolutional, so reduced sizes test
# the same arithmetic; "min" is the smallest stack (2 frames), "full" the model's default input
VIDEO_CASES = {"small": (2, 16, 112, 112), "min": (1, 2, 64, 64), "full": (1, 32, 224, 224)}

# A word list of our own (the real one has 66249 words).  "egg" is listed twice: the later
# position is its token; "Tomato" has a capital, so lower-cased text never finds it.
WORDS = ["cut", "tomato", "open", "door", "the", "a", "onion", "knife", "pan", "fry", "egg",
         "don't", "café", "water", "boil", "pour", "into", "bowl", "mix", "flour", "egg",
         "Tomato", "with", "and", "slice", "bread", "butter", "spread", "on", "toast", "salt",
         "pepper", "add", "stir", "heat", "oil", "chop", "garlic", "peel", "potato"]

SENTENCES = [
    "cut tomato",
    "open door",
    "Cut the TOMATO with a knife",
    "",
    "zzz qqq nothing known",
    "fry the egg",
    "don't stir; café au lait!",
    "cut, tomato! (knife) - onion... 'pan'",
    "egg",
    # more than 16 known words: only the first 16 count
    "add salt and pepper then stir the oil and heat the pan and chop garlic and peel potato "
    "and slice bread",
]


def frames(case: str, seed: int = 0) -> np.ndarray:
    """(B, T, H, W, 3) uint8 frames: the first clip random pixels, the second (if any) a
    smooth moving pattern (more like video)."""
    b, t, h, w = VIDEO_CASES[case]
    rng = np.random.default_rng([seed, t, h])
    out = rng.integers(0, 256, size=(b, t, h, w, 3), dtype=np.uint8)
    if b > 1:
        tt, yy, xx = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij")
        for c in range(3):
            wave = np.sin((xx + 3 * tt) / (7.0 + c)) * np.cos((yy - 2 * tt) / 11.0)
            out[1, ..., c] = np.round(127.5 + 120 * wave).astype(np.uint8)
    return out


def to_port_input(uint8_frames: np.ndarray) -> torch.Tensor:
    """(B, T, H, W, 3) uint8 -> the port's (B, 3, T, H, W) float32 in [0, 1]."""
    return torch.from_numpy(uint8_frames).to(torch.float32).div(255.0).permute(0, 4, 1, 2, 3)


def sha256_array(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def sha256_state(state: Dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key, value in state.items():
        digest.update(key.encode())
        digest.update(value.contiguous().numpy().tobytes())
    return digest.hexdigest()


def save_words(path: str, words=WORDS, as_objects: bool = False) -> str:
    """The word list as ``np.save`` writes it: a unicode array, or (``as_objects``) an object
    array, whose elements ``np.save`` stores as a pickle."""
    array = np.array(words, dtype=object if as_objects else None)
    np.save(path, array, allow_pickle=as_objects)
    return str(path)
