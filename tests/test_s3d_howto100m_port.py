"""Our S3D HowTo100M against the port it must reproduce (antoine77340/S3D_HowTo100M).

The port's outputs were computed once, with our seeded random weights in its key format, by
tests/golden/make_s3d_howto100m_golden.py (it imports the port from a path given to it; the
port's code is not in this repository).  Here ours run on the same inputs: the plain network,
the network prepared for inference (BatchNorm folded, channels_last_3d, 2-D convolutions)
and the text encoder, each within 1e-5 (relative L2) of the port.
"""
import os

import numpy as np
import pytest
import torch

import howto100m_cases as cases
from batch_helpers import rel_err, rel_norm
from conftest import REPO
from models.s3d_howto100m import ExtractS3DHowTo100M
from models.s3d_howto100m.network import (EMBEDDING_DIM, FEATURE_DIM, MIN_STACK_SIZE, S3DG,
                                          space_to_depth)
from models.s3d_howto100m.random_weights import random_state, text_state, video_state
from models.s3d_howto100m.text import MAX_WORDS, SentenceEncoder, TextEncoder, Vocabulary
from models.s3d_howto100m.weights import TEXT_PREFIX
from utils.run.cli import preflight

GOLDEN = os.path.join(REPO, "tests", "golden", "s3d_howto100m_port.npz")
TOL = 1e-5


@pytest.fixture(scope="module")
def golden():
    with np.load(GOLDEN, allow_pickle=False) as data:
        return dict(data)


@pytest.fixture(scope="module")
def state():
    return random_state(0)


@pytest.fixture(scope="module")
def plain(state):
    model = S3DG()
    model.load_state_dict(video_state(state))
    return model.eval()


def test_the_golden_was_made_from_these_weights_and_inputs(golden, state):
    # if a random generator changed, say so here rather than as a wrong network below
    assert cases.sha256_state(state) == str(golden["weights_sha256"])
    for case in cases.VIDEO_CASES:
        assert cases.sha256_array(cases.frames(case)) == str(golden[f"{case}_input_sha256"])
    assert list(golden["words"]) == cases.WORDS and list(golden["sentences"]) == cases.SENTENCES


def test_state_dict_is_the_ports(golden):
    """Every key and shape of the port's S3D (video and text_module), no more, no less."""
    ours = {k: str(tuple(v.shape)) for k, v in S3DG().state_dict().items()}
    ours.update({TEXT_PREFIX + k: str(tuple(v.shape))
                 for k, v in SentenceEncoder().state_dict().items()})
    assert ours == dict(zip(golden["port_keys"], golden["port_shapes"]))
    assert sum(p.numel() for p in S3DG().parameters()) == 9_670_800


def _forward(model, frames: np.ndarray):
    with torch.inference_mode():
        features, embedding = model(cases.to_port_input(frames))
    return features.numpy(), embedding.numpy()


@pytest.mark.parametrize("case", list(cases.VIDEO_CASES))
def test_video_matches_the_port(case, golden, plain):
    features, embedding = _forward(plain, cases.frames(case))
    want_f, want_e = golden[f"{case}_mixed_5c"], golden[f"{case}_video_embedding"]
    assert features.shape == want_f.shape and features.shape[1] == FEATURE_DIM
    assert embedding.shape == want_e.shape and embedding.shape[1] == EMBEDDING_DIM
    assert rel_err(features, want_f) < TOL
    assert rel_err(embedding, want_e) < TOL


def test_inference_network_matches_the_port(golden, plain):
    """The extractor's forward: uint8 frames -> [0, 1] -> the prepared copy of the network."""
    extractor = ExtractS3DHowTo100M(model=plain, device="cpu", stack_size=2)
    for case in cases.VIDEO_CASES:
        features, embedding = extractor.forward(torch.from_numpy(cases.frames(case)))
        assert rel_err(features, golden[f"{case}_mixed_5c"]) < TOL, case
        assert rel_err(embedding, golden[f"{case}_video_embedding"]) < TOL, case


def test_the_comparison_can_fail(golden):
    # the two clips of a case, and the two outputs, are far apart: agreement is not by default
    f, e = golden["small_mixed_5c"], golden["small_video_embedding"]
    assert rel_norm(f[0], f[1]) > 1e-2 and rel_norm(e[0], e[1]) > 1e-2


@pytest.fixture(scope="module")
def text_encoder(state):
    encoder = SentenceEncoder()
    encoder.load_state_dict(text_state(state))
    return TextEncoder(encoder, Vocabulary(cases.WORDS))


def test_text_matches_the_port(golden, text_encoder):
    got = text_encoder.encode(cases.SENTENCES).numpy()
    want = golden["text_embedding"]
    assert got.shape == want.shape == (len(cases.SENTENCES), EMBEDDING_DIM)
    assert rel_err(got, want) < TOL
    # both sentences without a known word are the empty sentence; the others all differ
    empty, unknown = cases.SENTENCES.index(""), cases.SENTENCES.index("zzz qqq nothing known")
    np.testing.assert_array_equal(want[empty], want[unknown])
    others = [i for i in range(len(want)) if i != unknown]
    assert min(rel_norm(want[i], want[j]) for i in others for j in others if i < j) > 1e-3


def test_words_to_tokens():
    vocabulary = Vocabulary(cases.WORDS)
    tokens = vocabulary.tokens(["Cut the TOMATO!", "egg", "don't café", "Tomato", ""]).tolist()
    pad = [0] * MAX_WORDS
    assert tokens[0] == ([1, 5, 2] + pad)[:MAX_WORDS]     # lower-cased, punctuation dropped
    assert tokens[1] == ([21] + pad)[:MAX_WORDS]          # listed twice: the later position
    assert tokens[2] == ([12, 13] + pad)[:MAX_WORDS]      # apostrophes and accents kept
    assert tokens[3] == ([2] + pad)[:MAX_WORDS]           # "Tomato" (capital) in the list: never
    assert tokens[4] == pad
    long = vocabulary.tokens([" ".join(["salt"] * 20 + ["cut"])])[0].tolist()
    assert long == [31] * MAX_WORDS                       # the first 16 known words


def test_space_to_depth_layout():
    """Channel ((dt * 2 + dh) * 2 + dw) * C + c holds pixel (2t + dt, 2h + dh, 2w + dw)."""
    x = torch.arange(2 * 3 * 4 * 6 * 8, dtype=torch.float32).reshape(2, 3, 4, 6, 8)
    y = space_to_depth(x)
    assert y.shape == (2, 24, 2, 3, 4)
    for dt, dh, dw, c in [(0, 0, 0, 0), (1, 0, 1, 2), (0, 1, 1, 1), (1, 1, 1, 2)]:
        channel = ((dt * 2 + dh) * 2 + dw) * 3 + c
        assert torch.equal(y[:, channel], x[:, c, dt::2, dh::2, dw::2])


def test_minimum_stack_size(plain):
    """2 frames (one after space-to-depth) pass every pool; an odd count cannot be paired."""
    assert MIN_STACK_SIZE == 2
    with torch.inference_mode():
        features, embedding = plain(torch.rand(1, 3, 2, 224, 224))
        assert features.shape == (1, FEATURE_DIM) and embedding.shape == (1, EMBEDDING_DIM)
        for odd in (1, 3):
            with pytest.raises(ValueError, match="even number of frames"):
                plain(torch.rand(1, 3, odd, 64, 64))


@pytest.mark.parametrize("value,message", [
    (33, "stack_size: 33 is odd; s3d_howto100m's space-to-depth stem takes frames in pairs: "
         "expected an even integer >= 2"),
    (1, "stack_size: 1 is odd; s3d_howto100m's space-to-depth stem takes frames in pairs: "
        "expected an even integer >= 2"),
    (0, "stack_size: 0 is below the network's minimum; expected an even integer >= 2"),
])
def test_odd_or_too_small_stack_size_is_one_line_in_the_api_and_the_cli(value, message, plain):
    assert preflight(["feature_type=s3d_howto100m", "video_paths=a.mp4",
                      f"stack_size={value}"]) == message
    with pytest.raises(ValueError) as info:
        ExtractS3DHowTo100M(model=plain, device="cpu", stack_size=value)
    assert str(info.value) == message
