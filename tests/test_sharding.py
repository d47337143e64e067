"""Sharding: ``paths[shard::num_shards]`` is disjoint, complete and stable, and bad shards fail early."""
import logging

import pytest
import torch
from omegaconf import OmegaConf

from utils.cli import preflight
from utils.config import ExtractionConfig
from utils.device import resolve_device
from utils.errors import InputError
from utils.inputs import shard_paths
from utils.naming import output_names

SIZES = [0, 1, 2, 3, 5, 7, 16, 100, 1001]
SHARDS = [1, 2, 3, 4, 7, 8, 64, 1500]


def paths_of(n):
    return [f"/data/videos/v{i:05d}.mp4" for i in range(n)]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("k", SHARDS)
def test_shards_are_disjoint_complete_and_in_file_order(n, k):
    paths = paths_of(n)
    shards = [shard_paths(paths, s, k) for s in range(k)]
    flat = [p for shard in shards for p in shard]
    assert len(flat) == n and set(flat) == set(paths)  # complete, and disjoint (no duplicates)
    for s, shard in enumerate(shards):
        assert shard == [paths[i] for i in range(s, n, k)]  # file order, no shuffling
    sizes = [len(shard) for shard in shards]
    assert max(sizes) - min(sizes) <= 1  # balanced; with k > n, the last k - n shards are empty
    assert sum(1 for size in sizes if size == 0) == max(0, k - n)


@pytest.mark.parametrize("n,k", [(10, 3), (1001, 64), (3, 8)])
def test_shards_are_stable_across_reruns(n, k):
    paths = paths_of(n)
    first = [shard_paths(list(paths), s, k) for s in range(k)]
    again = [shard_paths(list(paths), s, k) for s in range(k)]
    assert first == again
    # a video keeps its shard: position i always goes to shard i % k
    for s, shard in enumerate(first):
        assert all(paths.index(p) % k == s for p in shard)


def test_sharding_pairs_keeps_each_video_with_its_output_name():
    # batch_run names outputs on the whole list, then shards (path, name) pairs
    paths = ["/a/x.mp4", "/b/y.mkv", "/c/z.avi", "/d/w.webm", "/e/v.mov"]
    names = output_names(paths)
    pairs = list(zip(paths, names))
    for k in (1, 2, 3, 6):
        for s in range(k):
            assert shard_paths(pairs, s, k) == list(zip(paths[s::k], names[s::k]))


def test_a_name_collision_fails_in_every_shard_even_when_the_pair_is_split():
    # the two "clip" videos land in different shards of 2: neither shard alone would see it
    paths = ["/a/clip.mp4", "/b/clip.mp4"]
    assert shard_paths(paths, 0, 2) == ["/a/clip.mp4"] and shard_paths(paths, 1, 2) == ["/b/clip.mp4"]
    with pytest.raises(InputError, match="output name collision"):
        output_names(paths)  # computed on the whole list, before any shard is taken


@pytest.mark.parametrize("shard,num_shards,message", [
    (2, 2, "shard: 2 is not allowed; expected 0 <= shard < num_shards=2"),
    (5, 2, "shard: 5 is not allowed; expected 0 <= shard < num_shards=2"),
    (-1, 2, "shard: -1 is not allowed; expected 0 <= shard < num_shards=2"),
    (1, 1, "shard: 1 is not allowed; expected 0 <= shard < num_shards=1"),
    (0, 0, "num_shards: 0 is not allowed; expected an integer >= 1"),
    (0, -3, "num_shards: -3 is not allowed; expected an integer >= 1"),
])
def test_bad_shard_is_rejected(shard, num_shards, message):
    with pytest.raises(ValueError) as info:
        ExtractionConfig(video_paths="a.mp4", shard=shard, num_shards=num_shards)
    assert str(info.value) == message
    # the same line from the command line's pre-flight check (exit status 2, nothing run)
    assert preflight(["video_paths=a.mp4", f"shard={shard}", f"num_shards={num_shards}"]) == message


@pytest.mark.parametrize("shard,num_shards", [(0, 1), (0, 2), (1, 2), (63, 64), (7, 1000)])
def test_good_shard_is_accepted(shard, num_shards):
    ExtractionConfig(video_paths="a.mp4", shard=shard, num_shards=num_shards)
    assert preflight(["video_paths=a.mp4", f"shard={shard}", f"num_shards={num_shards}"]) is None


def test_shard_must_be_an_integer():
    assert preflight(["video_paths=a.mp4", "shard=one"]).startswith("shard: Value 'one'")


def test_device_per_shard_interpolation_resolves():
    """``'device=cuda:${shard}'`` gives shard i the device cuda:i (one GPU per joblib job)."""
    from utils.cli import compose_config

    for shard in (0, 1, 3):
        conf = OmegaConf.to_object(compose_config(["video_paths=a.mp4", "device=cuda:${shard}",
                                                   f"shard={shard}", "num_shards=4"]))
        assert conf.device == f"cuda:{shard}"


def test_cuda_device_of_a_shard_falls_back_to_cpu_without_cuda(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.WARNING):
        assert resolve_device("cuda:3") == torch.device("cpu")
    assert "device=cuda:3 but CUDA is not available" in caplog.text
