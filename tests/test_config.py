"""Every bad option fails at start with one line naming the option and what is allowed."""
import os

import pytest
from omegaconf import OmegaConf

from batch_helpers import run_cli
from utils.run.cli import compose_config, preflight

BAD = [
    (["on_extraction=save_npz"], "on_extraction: Invalid value 'save_npz', expected one of [print, save_numpy, save_pickle, save_h5]"),
    (["video_paths=a.mp4", "stack_size=-3"], "stack_size: -3 is below the network's minimum; expected an integer >= 13"),
    (["video_paths=a.mp4", "stack_size=12"], "stack_size: 12 is below the network's minimum; expected an integer >= 13"),
    (["video_paths=a.mp4", "stack_size=abc"], "stack_size: Value 'abc' of type 'str' could not be converted to Integer"),
    (["video_paths=a.mp4", "step_size=0"], "step_size: 0 is not allowed; expected an integer >= 1"),
    (["video_paths=a.mp4", "feature_type=i3d"], "feature_type: 'i3d' is not available; expected one of [s3d, s3d_howto100m]"),
    ([], "video_paths: no input given; set video_paths (a path or a list) or file_with_video_paths (a text file, one path a line)"),
    (["video_paths=a.mp4", "preprocess=imagenet"], "preprocess: Invalid value 'imagenet', expected one of [kylemin, video_features, howto100m]"),
    (["video_paths=a.mp4", "batch_size=0"], "batch_size: 0 is not allowed"),
    (["video_paths=a.mp4", "extraction_fps=-5"], "extraction_fps: -5.0 is not allowed"),
    (["video_paths=a.mp4", "shard=2", "num_shards=2"], "shard: 2 is not allowed; expected 0 <= shard < num_shards=2"),
    (["video_paths=a.mp4", "stak_size=3"], "stak_size: unknown option"),
]


@pytest.mark.parametrize("overrides,message", BAD, ids=[" ".join(o) or "no-input" for o, _ in BAD])
def test_bad_option_is_one_line(overrides, message):
    error = preflight(overrides)
    assert error is not None and error.startswith(message)
    assert "\n" not in error


@pytest.mark.parametrize("overrides", [
    ["video_paths=a.mp4"],
    ["file_with_video_paths=list.txt", "stack_size=13", "extraction_fps=null", "device=cpu"],
    ["feature_type=s3d", "video_paths=[a.mp4, b.mkv]", "on_extraction=save_pickle",
     "preprocess=video_features", "batch_size=4"],
])
def test_good_options_pass(overrides):
    assert preflight(overrides) is None


def test_defaults_match_the_spec():
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_object(compose_config(["video_paths=a.mp4"]))
    assert (cfg.feature_type, cfg.stack_size, cfg.step_size, cfg.extraction_fps) == ("s3d", 64, 64, 25)
    assert (cfg.device, cfg.on_extraction.value, cfg.output_path) == ("cuda:0", "print", "./output")
    assert (cfg.keep_tmp_files, cfg.tmp_path, cfg.show_pred) == (False, "./tmp", False)
    assert (cfg.weights_path, cfg.preprocess, cfg.batch_size) == (None, "kylemin", None)
    assert (cfg.shard, cfg.num_shards) == (0, 1)


@pytest.mark.parametrize("args,option", [
    (["on_extraction=save_npz", "video_paths=a.mp4"], "on_extraction"),
    (["video_paths=a.mp4", "stack_size=5"], "stack_size"),
    (["feature_type=i3d", "video_paths=a.mp4"], "feature_type"),
])
def test_cli_prints_one_line_and_leaves_no_droppings(tmp_path, args, option):
    proc = run_cli(args, cwd=str(tmp_path), timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {option}: ")
    assert proc.stdout == ""
    assert os.listdir(tmp_path) == []


# -- one place for every rule: the Python API says what the command line says ---------------
SAME = [  # (override, value as the API gets it, expected message)
    ("stack_size=12", ("stack_size", 12),
     "stack_size: 12 is below the network's minimum; expected an integer >= 13"),
    ("step_size=0", ("step_size", 0), "step_size: 0 is not allowed; expected an integer >= 1"),
    ("extraction_fps=0", ("extraction_fps", 0),
     "extraction_fps: 0.0 is not allowed; expected a positive number or null (keep every "
     "decoded frame)"),
    ("extraction_fps=-1", ("extraction_fps", -1),
     "extraction_fps: -1.0 is not allowed; expected a positive number or null (keep every "
     "decoded frame)"),
    ("batch_size=0", ("batch_size", 0),
     "batch_size: 0 is not allowed; expected an integer >= 1 or null (1 on CPU, 8 on CUDA)"),
    ("num_workers=-1", ("num_workers", -1),
     "num_workers: -1 is not allowed; expected an integer >= 0"),
    ("preprocess=imagenet", ("preprocess", "imagenet"),
     "preprocess: Invalid value 'imagenet', expected one of [kylemin, video_features, howto100m]"),
    ("precision=fp8", ("precision", "fp8"),
     "precision: Invalid value 'fp8', expected one of [fp32, fp16, bf16]"),
    ("device=mps", ("device", "mps"),
     "device: 'mps' is not supported; expected cpu, cuda or cuda:N (the N-th GPU)"),
    ("device=foo", ("device", "foo"),
     "device: 'foo' is not supported; expected cpu, cuda or cuda:N (the N-th GPU)"),
    ("device=cpu:1", ("device", "cpu:1"),
     "device: 'cpu:1' is not supported; expected cpu, cuda or cuda:N (the N-th GPU)"),
    ("stack_size=abc", ("stack_size", "abc"),
     "stack_size: Value 'abc' of type 'str' could not be converted to Integer"),
    ("max_resample_ratio=0.5", ("max_resample_ratio", 0.5),
     "max_resample_ratio: 0.5 is not allowed; expected a number >= 1 (frames emitted per "
     "decoded frame) or null (no limit)"),
]


@pytest.mark.parametrize("override,api,message", SAME, ids=[o for o, _, _ in SAME])
def test_api_and_cli_give_the_same_message(override, api, message, random_model):
    from models.s3d import ExtractS3D

    assert preflight(["video_paths=a.mp4", override]) == message
    with pytest.raises(ValueError) as info:
        ExtractS3D(model=random_model, **dict([api]))
    assert str(info.value) == message


@pytest.mark.parametrize("args,message", [
    (["device=mps"], "error: device: 'mps' is not supported; expected cpu, cuda or cuda:N"),
    (["device=foo"], "error: device: 'foo' is not supported; expected cpu, cuda or cuda:N"),
    (["extraction_fps=0"], "error: extraction_fps: 0.0 is not allowed"),
])
def test_bad_device_or_fps_on_the_command_line_is_one_line_and_exit_2(tmp_path, args, message):
    proc = run_cli(["video_paths=a.mp4", *args], cwd=str(tmp_path), timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), proc.stderr
    assert os.listdir(tmp_path) == []


def test_a_gpu_this_machine_lacks_is_an_error_where_cuda_exists(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert preflight(["video_paths=a.mp4", "device=cuda:9"]) == (
        "device: cuda:9 does not exist; this machine has 2 CUDA device(s), cuda:0 to cuda:1")
    assert preflight(["video_paths=a.mp4", "device=cuda:1"]) is None
    # without CUDA the same command falls back to the CPU (utils.device), it is not refused
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert preflight(["video_paths=a.mp4", "device=cuda:9"]) is None


def test_api_defaults_are_the_command_lines():
    from dataclasses import fields

    from utils.config import ExtractorOptions

    cli = OmegaConf.to_object(compose_config(["video_paths=a.mp4"]))
    api = ExtractorOptions()
    for f in fields(ExtractorOptions):
        assert getattr(api, f.name) == getattr(cli, f.name), f.name


def test_help_lists_every_option_with_its_default(tmp_path):
    from dataclasses import fields

    from utils.config import ExtractionConfig, option_help

    proc = run_cli(["--help"], cwd=str(tmp_path), timeout=120)
    assert proc.returncode == 0 and proc.stderr == ""
    lines = proc.stdout.splitlines()
    for f in fields(ExtractionConfig):
        [line] = [ln for ln in lines if ln.split()[:1] == [f.name]]
        assert "(default: " in line and option_help(f) in line, line
    assert any(ln.split()[:1] == ["stack_size"] and "(default: the network's (s3d: 64, s3d_howto100m: 32))" in ln
               for ln in lines)
    assert os.listdir(tmp_path) == []


def test_readme_options_table_has_every_option(repo_root):
    from dataclasses import fields

    from utils.config import ExtractionConfig

    with open(os.path.join(repo_root, "README.md"), encoding="utf-8") as f:
        rows = [ln for ln in f if ln.startswith("| `")]
    documented = {name.strip(" `") for row in rows for name in row.split("|")[1].split(",")}
    assert {f.name for f in fields(ExtractionConfig)} <= documented
