"""Regenerate tests/golden/s3d_howto100m_port.npz: the port's outputs on seeded inputs.

The independent implementation is the PyTorch port of the MIL-NCE model,
antoine77340/S3D_HowTo100M (``s3dg.py``, Apache-2.0).  It is not part of this repository:
get it yourself and point this script at the folder holding ``s3dg.py``:

    git clone https://github.com/antoine77340/S3D_HowTo100M /tmp/S3D_HowTo100M
    python tests/golden/make_s3d_howto100m_golden.py /tmp/S3D_HowTo100M

It builds our seeded random weights (models.s3d_howto100m.random_weights, the port's key
format) and a small word list (tests/howto100m_cases.py), saves them as the port's two files
(``.pth``, ``.npy``), loads them with the port's own code, exactly as its README does
(``S3D(dict_path, 512)``, ``load_state_dict``, ``eval``), and stores its ``mixed_5c``,
``video_embedding`` and ``text_embedding`` on the cases' inputs, its state dict's keys and
shapes, and the inputs' and the weights' SHA-256 (tests/test_s3d_howto100m_port.py compares ours with them).
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [REPO, os.path.dirname(HERE)]

import howto100m_cases as cases  # noqa: E402
from models.s3d_howto100m.random_weights import random_state  # noqa: E402

GOLDEN = os.path.join(HERE, "s3d_howto100m_port.npz")
SEED = 0


def port_commit(folder: str) -> str:
    try:
        out = subprocess.run(["git", "-C", folder, "rev-parse", "HEAD"], capture_output=True,
                             text=True, check=True, timeout=30)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("port", help="folder of antoine77340/S3D_HowTo100M (holds s3dg.py)")
    parser.add_argument("--commit", help="the port's commit, if the folder is not a git clone")
    args = parser.parse_args(argv)
    sys.path.insert(0, os.path.abspath(args.port))
    from s3dg import S3D  # the port's module  # noqa: E402

    state = random_state(SEED)
    out = {"weights_sha256": np.array(cases.sha256_state(state)),
           "sentences": np.array(cases.SENTENCES), "words": np.array(cases.WORDS),
           "port_commit": np.array(args.commit or port_commit(args.port))}
    with tempfile.TemporaryDirectory() as tmp:
        weights = os.path.join(tmp, "s3d_howto100m.pth")
        torch.save(state, weights)
        words = cases.save_words(os.path.join(tmp, "s3d_dict.npy"))
        net = S3D(words, 512)
        net.load_state_dict(torch.load(weights))
        net = net.eval()
    # the port's own layout: its keys and shapes (ours must load its files unchanged)
    layout = net.state_dict()
    out["port_keys"] = np.array(list(layout))
    out["port_shapes"] = np.array([str(tuple(v.shape)) for v in layout.values()])
    with torch.no_grad():
        for case in cases.VIDEO_CASES:
            frames = cases.frames(case, SEED)
            result = net(cases.to_port_input(frames))
            out[f"{case}_input_sha256"] = np.array(cases.sha256_array(frames))
            out[f"{case}_mixed_5c"] = result["mixed_5c"].numpy()
            out[f"{case}_video_embedding"] = result["video_embedding"].numpy()
        out["text_embedding"] = net.text_module(cases.SENTENCES)["text_embedding"].numpy()
    np.savez_compressed(GOLDEN, **out)
    print(f"wrote {GOLDEN}: " + ", ".join(f"{k} {v.shape}" for k, v in out.items()))


if __name__ == "__main__":
    main()
