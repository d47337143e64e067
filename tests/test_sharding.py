"""Sharding: ``paths[shard::num_shards]`` is disjoint, complete and stable, ``shard_of`` names
the shard of each input, and bad shards fail early."""
import json
import logging
import os
import random
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from models.s3d.spec import SPEC as S3D
from utils.run.cli import preflight
from utils.config import ExtractionConfig
from utils.device import resolve_device
from utils.errors import InputError
from utils.inputs.paths import parse_shard_name, shard_of, shard_paths, shard_suffix
from utils.outputs.naming import output_names


def paths_of(n):
    return [f"/data/videos/v{i:05d}.mp4" for i in range(n)]


def all_shards(paths, k):
    return [shard_paths(list(paths), s, k) for s in range(k)]


def check_sharding(n, k):
    """Every property of one (number of inputs, number of shards) pair."""
    paths = paths_of(n)
    shards = all_shards(paths, k)
    where = {}
    for s, shard in enumerate(shards):
        for p in shard:
            assert p not in where, f"n={n} k={k}: {p} in shards {where[p]} and {s}"  # disjoint
            where[p] = s
    assert sorted(where) == paths, f"n={n} k={k}: inputs left out"  # complete
    for s, shard in enumerate(shards):
        # the documented rule, by Python's own slicing: file order, every k-th input
        assert shard == paths[s::k], f"n={n} k={k} shard {s}"
    sizes = [len(shard) for shard in shards]
    assert max(sizes) - min(sizes) <= 1, f"n={n} k={k}: unbalanced {sizes}"
    assert sizes.count(0) == max(0, k - n)  # with k > n, the last k - n shards are empty
    # the merger names the shard of a missing video with shard_of: it must be the one holding it
    assert all(shard_of(i, k) == where[p] for i, p in enumerate(paths)), f"n={n} k={k}"
    assert all_shards(paths, k) == shards  # the same again
    return shards


# edge cases: no input, one shard, one input, more shards than inputs, a big list
EDGES = [(0, 1), (0, 5), (1, 1), (1, 3), (2, 2), (3, 8), (7, 1500), (100, 1), (1001, 64),
         (1001, 1001), (1001, 1000)]


def random_pairs(count=300, seed=0):
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        n = rng.choice([rng.randrange(0, 12), rng.randrange(0, 400)])
        k = rng.choice([rng.randrange(1, 12), rng.randrange(1, 2 * n + 2)])
        pairs.append((n, k))
    return pairs


def test_sharding_properties_on_many_sizes():
    """Disjoint, complete, in file order, balanced, and ``shard_of`` names the shard of each
    input, on edge cases and on seeded random (number of inputs, number of shards) pairs."""
    pairs = EDGES + random_pairs()
    assert any(k > n for n, k in pairs) and any(k == 1 for n, k in pairs)
    for n, k in pairs:
        check_sharding(n, k)


STABLE_PAIRS = [(10, 3), (1001, 64), (3, 8), (37, 5)]
_SHARDS_IN_A_NEW_PROCESS = """
import json, sys
from utils.inputs.paths import shard_of, shard_paths
pairs = json.loads(sys.argv[1])
paths = lambda n: [f"/data/videos/v{i:05d}.mp4" for i in range(n)]
print(json.dumps([[[shard_paths(paths(n), s, k) for s in range(k)],
                   [shard_of(i, k) for i in range(n)]] for n, k in pairs]))
"""


def test_shards_are_stable_across_reruns(repo_root):
    """A rerun (a new process, with another string-hash seed) gives every shard the same
    inputs: a requeued shard resumes its own videos."""
    expected = [[all_shards(paths_of(n), k), [shard_of(i, k) for i in range(n)]]
                for n, k in STABLE_PAIRS]
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        proc = subprocess.run([sys.executable, "-c", _SHARDS_IN_A_NEW_PROCESS,
                               json.dumps(STABLE_PAIRS)], cwd=repo_root, env=env,
                              capture_output=True, text=True, check=True, timeout=120)
        assert json.loads(proc.stdout) == expected
    # a video keeps its shard: position i always goes to shard i % k
    for (n, k), (shards, _) in zip(STABLE_PAIRS, expected):
        paths = paths_of(n)
        for s, shard in enumerate(shards):
            assert all(paths.index(p) % k == s for p in shard)


def test_sharding_pairs_keeps_each_video_with_its_output_name():
    # batch_run names outputs on the whole list, then shards (path, name) pairs
    paths = ["/a/x.mp4", "/b/y.mkv", "/c/z.avi", "/d/w.webm", "/e/v.mov"]
    names = output_names(paths, S3D.keys)
    pairs = list(zip(paths, names))
    for k in (1, 2, 3, 6):
        for s in range(k):
            assert shard_paths(pairs, s, k) == list(zip(paths[s::k], names[s::k]))


def test_a_name_collision_fails_in_every_shard_even_when_the_pair_is_split():
    # the two "clip" videos land in different shards of 2: neither shard alone would see it
    paths = ["/a/clip.mp4", "/b/clip.mp4"]
    assert shard_paths(paths, 0, 2) == ["/a/clip.mp4"] and shard_paths(paths, 1, 2) == ["/b/clip.mp4"]
    with pytest.raises(InputError, match="output name collision"):
        output_names(paths, S3D.keys)  # computed on the whole list, before any shard is taken


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
    from utils.run.cli import compose_config

    for shard in (0, 1, 3):
        conf = OmegaConf.to_object(compose_config(["video_paths=a.mp4", "device=cuda:${shard}",
                                                   f"shard={shard}", "num_shards=4"]))
        assert conf.device == f"cuda:{shard}"


def test_cuda_device_of_a_shard_falls_back_to_cpu_without_cuda(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.WARNING):
        assert resolve_device("cuda:3") == torch.device("cpu")
    assert "device=cuda:3 but CUDA is not available" in caplog.text


def test_shard_file_names_both_ways():
    """``shard_suffix`` writes every shard's file name; ``parse_shard_name`` reads back
    exactly those names and no other."""
    assert shard_suffix(0, 1) == "-0-of-1" and shard_suffix(12, 64) == "-12-of-64"
    for k, n in ((0, 1), (3, 8), (63, 64), (9, 10)):
        for prefix, ext in (("manifest", ".jsonl"), ("s3d", ".h5"), (".lock", "")):
            assert parse_shard_name(prefix + shard_suffix(k, n) + ext, prefix, ext) == (k, n)
    for name in ("s3d-01-of-2.h5", "s3d-2-of-2.h5", "s3d-0-of-01.h5", "s3d-0-of-0.h5",
                 "s3d--1-of-2.h5", "s3d-0-of-1.h5.tmp", "s3d_howto100m-0-of-1.h5",
                 "xs3d-0-of-1.h5", "s3d-\u0661-of-2.h5", "s3d-0-of-1", "s3d.h5"):
        assert parse_shard_name(name, "s3d", ".h5") is None, name
