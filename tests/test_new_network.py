"""A network is one folder under models/ and one registration line: a toy third network (S3D with
a 256-d head) is added to a copy of the checkout, touching nothing else, and the real command
line extracts it, names its outputs by its own keys, reads them back and refuses what it cannot
do (show_pred), all from its spec.

Its features are checked against an independent computation: the 256-d head applied to the
features that the plain ``ExtractS3D`` gives with the same S3D weights on the same video.
"""
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from batch_helpers import rel_err
from conftest import REPO, SAMPLE
from models.s3d import ExtractS3D

pytestmark = pytest.mark.slow

NAME = "s3d256"
STACK = 16
REGISTRATION = f"import models.{NAME}  # noqa: F401 -- feature_type={NAME}\n"

PACKAGE = {
    "__init__.py": '''
        """A toy network for the tests: S3D with a 256-d head."""
        from models.s3d256.spec import SPEC
        ''',
    "spec.py": '''
        from utils.networks import NetworkSpec, WeightsFile, register


        def build(cfg):
            from models.s3d256.extractor import ExtractS3D256

            return ExtractS3D256.from_config(cfg)


        SPEC = register(NetworkSpec(
            "s3d256", "S3D with a 256-d head (a test network)", stack_size=16, step_size=16,
            extraction_fps=25.0, preprocess="kylemin", min_stack_size=13,
            features=(("s3d256", 256),), build=build,
            weights=(WeightsFile("weights_path", "http://127.0.0.1:9/s3d256.pt", "s3d256.pt"),),
            no_labels_hint="it is a toy"))
        ''',
    "extractor.py": '''
        import torch
        from torch import nn

        from models.s3d.extractor import ExtractS3D
        from models.s3d.network import S3D
        from models.s3d256.spec import SPEC
        from utils.records.provenance import file_sha256


        class S3D256(nn.Module):
            def __init__(self):
                super().__init__()
                self.s3d = S3D()
                self.head = nn.Linear(1024, 256)

            def forward(self, x):
                features, logits = self.s3d(x)
                return self.head(features), logits


        class ExtractS3D256(ExtractS3D):
            spec = SPEC

            def load_model(self, options):
                model = S3D256()
                model.load_state_dict(torch.load(options.weights_path, weights_only=True))
                self.weights_path = options.weights_path
                self.weights = {"source": options.weights_path,
                                "sha256": file_sha256(options.weights_path)}
                return model.eval()
        ''',
}


def _copy_checkout(dest: str) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("main.py", "configs", "models", "utils"):
        src = os.path.join(REPO, name)
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(dest, name), ignore=ignore)
        else:
            shutil.copy2(src, os.path.join(dest, name))


def add_network(checkout: str) -> None:
    """What a developer adding the network writes: its folder and one line."""
    folder = os.path.join(checkout, "models", NAME)
    os.makedirs(folder)
    for name, text in PACKAGE.items():
        with open(os.path.join(folder, name), "w", encoding="utf-8") as f:
            f.write(textwrap.dedent(text).lstrip())
    with open(os.path.join(checkout, "models", "__init__.py"), "a", encoding="utf-8") as f:
        f.write(REGISTRATION)


def changed_files(checkout: str):
    """Files of the copy that differ from the checkout's, or are new."""
    changed = []
    for root, dirs, names in os.walk(checkout):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in names:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, checkout)
            original = os.path.join(REPO, rel)
            with open(path, "rb") as f:
                data = f.read()
            if not os.path.exists(original) or open(original, "rb").read() != data:
                changed.append(rel)
    return sorted(changed)


@pytest.fixture(scope="module")
def checkout(tmp_path_factory, random_model):
    dest = str(tmp_path_factory.mktemp("checkout"))
    _copy_checkout(dest)
    add_network(dest)
    head = torch.nn.Linear(1024, 256)
    with torch.no_grad():
        head.weight.copy_(torch.randn(256, 1024, generator=torch.Generator().manual_seed(1)) / 32)
        head.bias.copy_(torch.randn(256, generator=torch.Generator().manual_seed(2)))
    state = {f"s3d.{k}": v for k, v in random_model.state_dict().items()}
    state.update({f"head.{k}": v for k, v in head.state_dict().items()})
    weights = str(tmp_path_factory.mktemp("weights") / "s3d256.pt")
    torch.save(state, weights)
    return dest, head, weights


def cli(checkout: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    env.pop("HYDRA_FULL_ERROR", None)
    env.pop("PYTHONPATH", None)
    return subprocess.run([sys.executable, *args], cwd=checkout, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def test_the_network_touches_only_its_folder_and_one_line(checkout):
    dest, _, _ = checkout
    assert changed_files(dest) == ["models/__init__.py", "models/s3d256/__init__.py",
                                   "models/s3d256/extractor.py", "models/s3d256/spec.py"]
    with open(os.path.join(REPO, "models", "__init__.py"), encoding="utf-8") as f:
        before = f.read()
    with open(os.path.join(dest, "models", "__init__.py"), encoding="utf-8") as f:
        assert f.read() == before + REGISTRATION


def test_the_command_line_extracts_it_with_its_own_keys(checkout, random_model, tmp_path):
    dest, head, weights = checkout
    out = tmp_path / "out"
    long_stem = "v" * 248                              # 255 bytes with "_timestamps_ms.npy"...
    video = tmp_path / f"{long_stem}.mp4"
    shutil.copy(SAMPLE, video)
    proc = cli(dest, "main.py", f"feature_type={NAME}", f"video_paths=[{video}]", "device=cpu",
               f"weights_path={weights}", "on_extraction=save_numpy", f"output_path={out}")
    assert proc.returncode == 0, proc.stderr
    folder = out / NAME
    files = sorted(p.name for p in folder.glob("*.npy"))
    # ... and over 255 with "_s3d256.npy"? no: the name is fitted to this network's keys
    assert len(files) == 3 and all(len(f.encode()) <= 255 for f in files)
    [features_file] = [f for f in files if f.endswith(f"_{NAME}.npy")]
    features = np.load(folder / features_file)
    stamps = np.load(folder / features_file.replace(f"_{NAME}.npy", "_timestamps_ms.npy"))
    assert features.dtype == np.float32 and features.shape[1] == 256

    # the independent computation: S3D's features (the plain extractor) through the head
    plain = ExtractS3D(model=random_model, device="cpu", stack_size=STACK, step_size=STACK)
    reference = plain.extract(str(video))
    with torch.no_grad():
        expected = head(torch.from_numpy(reference["s3d"])).numpy()
    assert features.shape == expected.shape and features.shape[0] >= 2
    assert rel_err(features, expected) < 1e-5
    np.testing.assert_array_equal(stamps, reference["timestamps_ms"])

    # read back through the loader and the manifests, whatever the network
    summary = cli(dest, "-m", "utils.features", "summary", str(folder))
    assert summary.returncode == 0, summary.stderr
    assert NAME in summary.stdout
    manifests = cli(dest, "-m", "utils.manifests", str(out))
    assert manifests.returncode == 0, manifests.stderr + manifests.stdout


def test_its_spec_drives_help_and_checks(checkout):
    dest, _, _ = checkout
    proc = cli(dest, "main.py", "--help")
    assert proc.returncode == 0
    [line] = [ln for ln in proc.stdout.splitlines() if ln.split()[:1] == ["feature_type"]]
    assert line.split("(default")[0].rstrip().endswith(f"s3d, s3d_howto100m, {NAME}")
    proc = cli(dest, "main.py", f"feature_type={NAME}", "video_paths=x.mp4", "show_pred=true")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"error: show_pred: {NAME} has no classes to show; expected "
                                   "false (it is a toy)")
    proc = cli(dest, "main.py", f"feature_type={NAME}", "video_paths=x.mp4", "stack_size=12")
    assert proc.returncode == 2 and "expected an integer >= 13" in proc.stderr
