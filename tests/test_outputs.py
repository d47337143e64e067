"""End to end: golden outputs, the CLI against the Python API, sinks, batching, tmp files."""
import os
import pickle
import re

import numpy as np
import pytest
import torch
from torchvision.models.video import s3d as torchvision_s3d

from batch_helpers import rel_norm, run_cli
from batch_helpers import KEYS
from conftest import REPO
from models.s3d import ExtractS3D
from s3d_reference import to_torchvision_key
from test_preprocess import incumbent
from utils.errors import ExtractionError
from videos import cli_frames

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


# -- the golden file against independent oracles -------------------------------------------
# The sample is 320x240. Its kylemin chain, worked out by hand rather than by utils.video.preprocess:
# short side 240 -> 224, long side 320 * 224 / 240 = 298.67 -> 298, centre crop at
# x = (298 - 224) / 2 = 37.
SAMPLE_SIZE = (320, 240)
KYLEMIN_CHAIN = "fps=25,scale=298:224:flags=bilinear,format=rgb24,crop=224:224:37:0"
# Three stacks of the network cost about 12 s on a 2-core CPU: each preset is checked on some
# of the golden file's stacks, and the stacks checked cover all three positions.
ORACLE_STACKS = {"kylemin": [0, 2], "video_features": [1]}
STACK = 64


@pytest.fixture(scope="module")
def torchvision_twin(random_model):
    """torchvision's S3D (an independent implementation) with the seed-0 weights."""
    tv = torchvision_s3d().eval()
    tv.load_state_dict({to_torchvision_key(k): v for k, v in random_model.state_dict().items()})
    return tv


def oracle_stacks(preset, path, stacks):
    """The network inputs (B, 3, 64, 224, 224) of the given stacks, from the FFmpeg CLI's frames
    at 25 fps: kylemin's filter chain scaled to [-1, 1], or the incumbent's torch resize of
    rgb24 frames in [0, 1]."""
    if preset == "kylemin":
        frames = cli_frames(path, KYLEMIN_CHAIN, 224, 224, extra=["-fps_mode", "passthrough"])
    else:
        frames = cli_frames(path, "fps=25,format=rgb24", *SAMPLE_SIZE,
                            extra=["-fps_mode", "passthrough"])
    assert len(frames) == 249  # 10 s at 29.97 fps resampled to 25 fps
    clips = []
    for i in stacks:
        clip = torch.from_numpy(frames[i * STACK:(i + 1) * STACK].copy())
        if preset == "kylemin":
            clip = (clip.to(torch.float64) / 127.5 - 1).to(torch.float32)
        else:
            clip = torch.stack([incumbent(frame) for frame in clip])
        clips.append(clip.permute(3, 0, 1, 2))  # (T, H, W, 3) -> (3, T, H, W)
    return torch.stack(clips)


@pytest.mark.parametrize("preset", sorted(ORACLE_STACKS))
def test_golden_equals_ffmpeg_cli_and_torchvision(preset, golden, torchvision_twin, sample_video):
    """The golden file is made by our own pipeline; here its numbers are recomputed without it:
    frames from the FFmpeg CLI, the preset's scaling written out, torchvision's S3D."""
    import av

    with av.open(sample_video) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == SAMPLE_SIZE
    stacks = ORACLE_STACKS[preset]
    x = oracle_stacks(preset, sample_video, stacks).contiguous(memory_format=torch.channels_last_3d)
    with torch.inference_mode():
        # our features: the head's average pool (kernel (2, 7, 7), stride 1 on 224x224
        # input), averaged over time; the logits: torchvision's classifier on the same pool,
        # averaged as its forward does (the layout, channels_last_3d, is only for speed)
        pooled = torchvision_twin.avgpool(torchvision_twin.features(x))
        features = pooled.mean(dim=(2, 3, 4)).numpy()
        logits = torchvision_twin.classifier(pooled).mean(dim=(2, 3, 4)).numpy()
    for row, i in enumerate(stacks):
        np.testing.assert_array_equal(golden[f"{preset}_timestamps_ms"][i],
                                      [i * STACK * 40, (i + 1) * STACK * 40])  # 40 ms a frame
        for key, oracle in (("s3d", features[row]), ("logits", logits[row])):
            err = rel_norm(golden[f"{preset}_{key}"][i], oracle)
            assert err < RTOL, f"{preset}_{key} stack {i}: relative difference {err:.2e}"


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
    from models.s3d.spec import SPEC

    labels = SPEC.labels.read()
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
