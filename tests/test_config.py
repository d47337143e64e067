"""Every bad option fails at start with one line naming the option and what is allowed."""
import os

import pytest

from batch_helpers import run_cli
from utils.cli import compose_config, preflight

BAD = [
    (["on_extraction=save_npz"], "on_extraction: Invalid value 'save_npz', expected one of [print, save_numpy, save_pickle]"),
    (["video_paths=a.mp4", "stack_size=-3"], "stack_size: -3 is below the network's minimum; expected an integer >= 13"),
    (["video_paths=a.mp4", "stack_size=12"], "stack_size: 12 is below the network's minimum; expected an integer >= 13"),
    (["video_paths=a.mp4", "stack_size=abc"], "stack_size: Value 'abc' of type 'str' could not be converted to Integer"),
    (["video_paths=a.mp4", "step_size=0"], "step_size: 0 is not allowed; expected an integer >= 1"),
    (["video_paths=a.mp4", "feature_type=i3d"], "feature_type: 'i3d' is not available; expected one of [s3d]"),
    ([], "video_paths: no input given; set video_paths (a path or a list) or file_with_video_paths (a text file, one path a line)"),
    (["video_paths=a.mp4", "preprocess=imagenet"], "preprocess: Invalid value 'imagenet', expected one of [kylemin, video_features]"),
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
    assert (cfg.weights_path, cfg.preprocess.value, cfg.batch_size) == (None, "kylemin", None)
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
