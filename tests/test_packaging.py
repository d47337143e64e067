"""The dependency list is declared once (pyproject.toml); the conda file mirrors it."""
import os
import re
import tomllib

import yaml

from conftest import REPO


def _name(req: str) -> str:
    return re.split(r"[<>=!~ \[;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_conda_env_mirrors_pyproject():
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        declared = tomllib.load(f)["project"]["dependencies"]
    with open(os.path.join(REPO, "conda_env_torch_zoo.yml")) as f:
        env = yaml.safe_load(f)
    pip_reqs = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert sorted(pip_reqs) == sorted(declared)
    assert {_name(r) for r in declared} == {"torch", "torchvision", "hydra-core", "omegaconf",
                                            "av", "numpy", "tqdm"}


def test_layout_and_license():
    for path in ("main.py", "configs", "models", "utils", "sample", "tests", "README.md",
                 "LICENSE", "conda_env_torch_zoo.yml", "sample/make_sample.py",
                 "sample/sample.mp4", "sample/sample_video_paths.txt",
                 "models/s3d/kinetics400_labels.txt"):
        assert os.path.exists(os.path.join(REPO, path)), path
    with open(os.path.join(REPO, "LICENSE")) as f:
        assert f.readline().strip() == "MIT License"
    with open(os.path.join(REPO, "models/s3d/kinetics400_labels.txt")) as f:
        labels = [line.strip() for line in f if line.strip()]
    assert len(labels) == 400 and labels[0] == "abseiling" and labels == sorted(labels)
