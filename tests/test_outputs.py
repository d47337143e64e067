"""End to end: golden outputs, the CLI against the Python API, sinks, batching, tmp files."""
import os
import pickle
import re

import numpy as np
import pytest

from batch_helpers import rel_norm, run_cli
from utils.naming import KEYS
from conftest import REPO
from models.s3d import ExtractS3D
from utils.errors import ExtractionError

GOLDEN = os.path.join(REPO, "tests", "golden", "sample_golden.npz")
RTOL = 1e-4




@pytest.fixture(scope="module")
def golden():
    return np.load(GOLDEN)


@pytest.mark.parametrize("preset", ["kylemin", "video_features"])
def test_golden_sample(preset, golden, random_model, sample_video):
    out = ExtractS3D(model=random_model, device="cpu", preprocess=preset).extract(
        sample_video, with_logits=True)
    # 10 s at 29.97 fps resampled to 25 fps: 249 frames -> (249 - 64) // 64 + 1 = 3 stacks.
    assert out["s3d"].shape == (3, 1024) and out["s3d"].dtype == np.float32
    np.testing.assert_array_equal(out["timestamps_ms"], [[0, 2560], [2560, 5120], [5120, 7680]])
    np.testing.assert_array_equal(out["timestamps_ms"], golden[f"{preset}_timestamps_ms"])
    assert out["fps"] == golden[f"{preset}_fps"] == 25.0
    assert rel_norm(out["s3d"], golden[f"{preset}_s3d"]) < RTOL
    for i in range(3):
        assert rel_norm(out["s3d"][i], golden[f"{preset}_s3d"][i]) < RTOL
    assert rel_norm(out["logits"], golden[f"{preset}_logits"]) < RTOL


def test_presets_and_stacks_differ(golden):
    # If the presets or the stacks gave (nearly) the same numbers, the golden test would be blind.
    assert rel_norm(golden["video_features_s3d"], golden["kylemin_s3d"]) > 1e-2
    assert rel_norm(golden["kylemin_s3d"][0], golden["kylemin_s3d"][1]) > 1e-2


def _cli(cwd, *args, check=True):
    proc = run_cli(["feature_type=s3d", "device=cpu", *args], cwd=str(cwd), timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"CLI failed ({proc.returncode}): {proc.stderr}")
    return proc


FAST = ["extraction_fps=5", "stack_size=16", "step_size=12"]  # 50 frames -> 3 stacks


@pytest.fixture(scope="module")
def api_fast(random_model, sample_video):
    return ExtractS3D(model=random_model, device="cpu", extraction_fps=5, stack_size=16,
                      step_size=12).extract(sample_video, with_logits=True)


def test_cli_equals_api_and_npy_equals_pkl(tmp_path, random_checkpoint, api_fast):
    # Relative paths are relative to where the command runs; nothing else is left there.
    os.symlink(os.path.join(REPO, "sample"), tmp_path / "clips")
    for sink in ("save_numpy", "save_pickle"):
        _cli(tmp_path, "video_paths=[clips/sample.mp4]", f"on_extraction={sink}",
             f"weights_path={random_checkpoint}", "output_path=out", *FAST)
    assert sorted(os.listdir(tmp_path)) == ["clips", "out"]
    folder = tmp_path / "out" / "s3d"
    assert api_fast["s3d"].shape == (3, 1024)
    np.testing.assert_array_equal(api_fast["timestamps_ms"], [[0, 3200], [2400, 5600], [4800, 8000]])
    for key in KEYS:
        npy = np.load(folder / f"sample_{key}.npy")
        with open(folder / f"sample_{key}.pkl", "rb") as f:
            pkl = pickle.load(f)
        np.testing.assert_array_equal(npy, pkl)
        np.testing.assert_array_equal(npy, api_fast[key])
    assert np.load(folder / "sample_s3d.npy").dtype == np.float32
    assert np.load(folder / "sample_timestamps_ms.npy").dtype == np.float64


def test_cli_print_and_show_pred(tmp_path, random_checkpoint, sample_video, api_fast):
    proc = _cli(tmp_path, f"video_paths={sample_video}", "show_pred=true",
                f"weights_path={random_checkpoint}", *FAST)
    out = proc.stdout
    assert "top-5 Kinetics-400 classes per stack" in out
    assert out.count("  stack ") == 3 and "stack 1 [2.40 s, 5.60 s)" in out
    assert "s3d (shape (3, 1024), float32)" in out and "timestamps_ms (shape (3, 2), float64)" in out
    # The top class printed for each stack is the argmax of the API's logits.
    from models.s3d.extractor import kinetics400_labels

    labels = kinetics400_labels()
    for i, row in enumerate(api_fast["logits"]):
        block = out.split(f"  stack {i} [")[1].splitlines()[1]
        assert block.split("  ")[-1].strip() == labels[int(np.argmax(row))]
    assert os.listdir(tmp_path) == []  # print sink and no Hydra folders


def test_batch_size_does_not_change_features(random_model, sample_video, api_fast):
    out = ExtractS3D(model=random_model, device="cpu", extraction_fps=5, stack_size=16,
                     step_size=12, batch_size=4).extract(sample_video)
    assert rel_norm(out["s3d"], api_fast["s3d"]) < 1e-5
    np.testing.assert_array_equal(out["timestamps_ms"], api_fast["timestamps_ms"])


def test_keep_tmp_files(tmp_path, random_model, sample_video):
    import av

    kwargs = dict(model=random_model, device="cpu", extraction_fps=5, stack_size=16, step_size=16)
    ExtractS3D(tmp_path=str(tmp_path / "tmp_off"), **kwargs).extract(sample_video)
    assert not (tmp_path / "tmp_off").exists()
    ExtractS3D(keep_tmp_files=True, tmp_path=str(tmp_path / "tmp_on"), **kwargs).extract(sample_video)
    [kept] = os.listdir(tmp_path / "tmp_on")
    assert re.fullmatch(r"sample_5fps_[0-9a-f]{8}\.mp4", kept)
    with av.open(str(tmp_path / "tmp_on" / kept)) as c:
        stream = c.streams.video[0]
        assert (stream.width, stream.height) == (320, 240)
        assert sum(1 for _ in c.decode(stream)) == 50
        assert float(stream.average_rate) == 5.0

    # a video that fails part-way leaves no resampled file, complete or not
    failing = ExtractS3D(keep_tmp_files=True, tmp_path=str(tmp_path / "tmp_failed"), **kwargs)

    def broken_network(x):
        raise RuntimeError("broken network")

    failing.runner.net = broken_network
    with pytest.raises(ExtractionError, match="broken network"):
        failing.extract(sample_video)
    assert os.listdir(tmp_path / "tmp_failed") == []


def test_too_short_names_both_numbers(random_model, sample_video):
    with pytest.raises(ExtractionError) as info:
        ExtractS3D(model=random_model, device="cpu", extraction_fps=1, stack_size=16).extract(sample_video)
    assert info.value.stage == "too_short"
    assert str(info.value) == "too_short: 10 frames at 1 fps, fewer than stack_size=16"
