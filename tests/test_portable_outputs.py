"""An output folder is portable (issue 19, item 7): manifests name outputs relative to their own
folder, so a folder moved or copied whole (``mv``, ``cp -a``, ``rsync -a``) is resumed, loaded,
summarized and searched in its new place.  Records of earlier versions (absolute locations) are
still read where they were written; a relative location climbing out with ``..`` names nothing."""
import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from batch_helpers import cli_args, read_jsonl, run_cli
from models.s3d_howto100m import search as search_module
from models.s3d_howto100m import search_exact, search_index
from models.s3d_howto100m.synthetic_outputs import video_arrays, write_folder
from utils.outputs.features import load, locate
from utils.records.manifests import main as manifests_main
from utils.records.schema import ManifestRecord
from videos import synth

SINKS = ["save_numpy", "save_h5"]
MANIFEST = "manifest-0-of-1.jsonl"
RSYNC = "/usr/bin/rsync"
TIMEOUT = 120


def _cp_a(src, dst):
    if shutil.which("cp"):
        subprocess.run(["cp", "-a", src, dst], check=True)
    else:
        shutil.copytree(src, dst, symlinks=True)


def _rsync_a(src, dst):
    if not os.path.exists(RSYNC):
        pytest.skip("no rsync")
    subprocess.run([RSYNC, "-a", src + os.sep, dst], check=True)


MOVES = {"mv": shutil.move, "cp -a": _cp_a, "rsync -a": _rsync_a}


def _moved(folder, tmp_path, how):
    """A copy of ``folder`` taken to a new place by ``how``; for ``mv``, the copy is made
    first elsewhere, then moved (the fixture's folder stays for the other tests)."""
    dst = str(tmp_path / "moved" / "out")
    os.makedirs(os.path.dirname(dst))
    src = folder
    if how == "mv":
        src = str(tmp_path / "first" / "out")
        shutil.copytree(folder, src, symlinks=True)
    MOVES[how](src, dst)
    return dst


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    return [synth(str(folder / f"{name}.mp4"), seconds=0.6, size="32x24") for name in "ab"]


def _run(checkpoint, out, clips, cwd, sink):
    return run_cli(cli_args(checkpoint, out, video_paths=clips, on_extraction=sink),
                   cwd=str(cwd), timeout=TIMEOUT)


def _features(folder):
    """``{name: (arrays, video_path, run)}`` of a feature folder, read by the loader."""
    with load(folder) as features:
        return {name: (features[name], features.video_path(name), features.run(name))
                for name in features}


def _same(got, want):
    assert sorted(got) == sorted(want)
    for name, (arrays, video_path, run) in want.items():
        assert (got[name][1], got[name][2]) == (video_path, run)
        for key, value in arrays.items():
            np.testing.assert_array_equal(got[name][0][key], value)


@pytest.fixture(scope="module", params=SINKS)
def made(request, random_checkpoint, clips, tmp_path_factory):
    """One CLI run of the clips per sink, copied by each test; its features as read in place."""
    folder = tmp_path_factory.mktemp("made")
    out = str(folder / "out")
    first = _run(random_checkpoint, out, clips, folder, request.param)
    assert first.returncode == 0, first.stderr
    want = _features(os.path.join(out, "s3d"))
    assert sorted(v[1] for v in want.values()) == sorted(clips)  # video_path, in place
    return request.param, out, want


def test_a_manifest_names_its_outputs_relative_to_its_folder(made):
    sink, out, _ = made
    for record in read_jsonl(os.path.join(out, "s3d", MANIFEST)):
        for key, location in record["outputs"].items():
            assert not os.path.isabs(location)
            if sink == "save_h5":
                assert location == f"s3d-0-of-1.h5/{record['path'][-5]}/{key}"
            else:
                assert location == f"{record['path'][-5]}_{key}.npy"


@pytest.mark.parametrize("how", list(MOVES))
def test_a_moved_folder_is_loaded_and_summarized_in_its_new_place(made, tmp_path, how, capsys):
    _, out, want = made
    moved = _moved(out, tmp_path, how)
    _same(_features(os.path.join(moved, "s3d")), want)  # video_path from the manifest
    assert manifests_main([moved]) == 0
    assert "done 2" in capsys.readouterr().out


@pytest.mark.parametrize("how", ["mv", "rsync -a"])
def test_a_rerun_after_a_move_skips_every_video_and_keeps_the_folder_portable(
        made, random_checkpoint, clips, tmp_path, how):
    sink, out, want = made
    moved = _moved(out, tmp_path, how)
    outputs = [os.path.join(moved, "s3d", f) for f in sorted(os.listdir(os.path.join(moved, "s3d")))
               if f.endswith((".npy", ".h5"))]
    before = {f: (os.stat(f).st_mtime_ns, open(f, "rb").read()) for f in outputs}
    again = _run(random_checkpoint, moved, clips, tmp_path, sink)
    assert again.returncode == 0, again.stderr
    assert "done 0, skipped 2" in again.stderr
    assert {f: (os.stat(f).st_mtime_ns, open(f, "rb").read()) for f in outputs} == before
    skipped = read_jsonl(os.path.join(moved, "s3d", MANIFEST))[-2:]
    assert [r["status"] for r in skipped] == ["skipped"] * 2
    further = _moved(moved, tmp_path / "again", "mv")  # moved once more: still read
    _same(_features(os.path.join(further, "s3d")), want)


def _rewrite_outputs(manifest, change, written_in=None):
    """Each record's output locations, made relative to the folder they were written in
    (default: the manifest's), ``change``d."""
    folder = written_in or os.path.dirname(manifest)
    records = read_jsonl(manifest)
    for record in records:
        if record.get("outputs"):
            record["outputs"] = {k: change(os.path.relpath(v, folder) if os.path.isabs(v) else v)
                                 for k, v in record["outputs"].items()}
    with open(manifest, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)


def test_an_old_manifest_of_absolute_locations_is_read_in_place(made, random_checkpoint, clips,
                                                                 tmp_path):
    """As an earlier version wrote it; a rerun of the same command there makes it portable."""
    sink, out, want = made
    here = str(tmp_path / "out")
    shutil.copytree(out, here, symlinks=True)
    folder = os.path.join(here, "s3d")
    manifest = os.path.join(folder, MANIFEST)
    _rewrite_outputs(manifest, lambda location: os.path.join(folder, location))
    assert all(os.path.isabs(v) for r in read_jsonl(manifest) for v in r["outputs"].values())
    _same(_features(folder), want)
    again = _run(random_checkpoint, here, clips, tmp_path, sink)
    assert again.returncode == 0, again.stderr
    assert "done 0, skipped 2" in again.stderr
    _same(_features(os.path.join(_moved(here, tmp_path / "then", "mv"), "s3d")), want)


def test_a_relative_location_climbing_out_of_the_folder_names_no_output(made, tmp_path):
    """``../s3d/a_s3d.npy`` climbs out (and back: moved or renamed, the folder is lost)."""
    sink, out, want = made
    here = str(tmp_path / "out")
    shutil.copytree(out, here, symlinks=True)
    folder = os.path.join(here, "s3d")
    _rewrite_outputs(os.path.join(folder, MANIFEST), lambda location: "../s3d/" + location,
                     os.path.join(out, "s3d"))
    for record in read_jsonl(os.path.join(folder, MANIFEST)):
        assert [locate(folder, location) for location in record["outputs"].values()] == \
            [None] * len(record["outputs"])
    with load(folder) as features:
        assert sorted(features) == sorted(want)  # the files are there, found by the walk
        if sink == "save_numpy":  # .h5 groups carry their own video_path
            assert [features.video_path(name) for name in features] == [None, None]


# -- search over a moved s3d_howto100m folder (synthetic: written by the tool's own writers) --
@pytest.fixture(scope="module", params=SINKS)
def searchable(request, tmp_path_factory):
    """A small s3d_howto100m folder with its index, and the hits found in place."""
    out = str(tmp_path_factory.mktemp("search") / "out")
    rng = np.random.default_rng(3)
    folder = write_folder(out, [(f"/v/{i}.mp4", video_arrays(rng, int(rng.integers(1, 6))))
                                for i in range(6)], on_extraction=request.param)
    assert search_module.main(["index", out]) == 0
    queries = rng.standard_normal((3, 512)).astype(np.float32)
    want = [search_module.search(search_module.indexed_videos(folder), q, 4) for q in queries]
    assert all(len(hits) == 4 for hits in want)
    return out, queries, want


def _hits(found):
    return [[(h.path, h.start_ms, h.end_ms, round(h.score, 5)) for h in hits] for hits in found]


@pytest.mark.parametrize("how", list(MOVES))
def test_a_moved_folder_is_searched_in_its_new_place(searchable, tmp_path, how):
    out, queries, want = searchable
    folder = os.path.join(_moved(out, tmp_path, how), "s3d_howto100m")
    skipped = []
    scanned = [search_module.search(search_module.indexed_videos(folder, skipped), q, 4)
               for q in queries]
    assert skipped == [] and _hits(scanned) == _hits(want)
    result = search_exact.search(folder, queries, 4)  # the index still answers
    assert result.indexed and result.skipped == [] and result.changed == []
    assert result.from_index == 6
    assert _hits(result.hits) == _hits(want)


def test_search_refuses_a_location_climbing_out_of_the_folder(searchable, tmp_path, caplog):
    out, queries, _ = searchable
    here = str(tmp_path / "out")
    shutil.copytree(out, here, symlinks=True)
    folder = os.path.join(here, "s3d_howto100m")
    manifest = os.path.join(folder, MANIFEST)
    _rewrite_outputs(manifest, lambda location: "../s3d_howto100m/" + location,
                     os.path.join(out, "s3d_howto100m"))
    skipped = []
    assert list(search_module.indexed_videos(folder, skipped)) == []
    assert len(skipped) == 6 and "is not an output in" in caplog.text
    assert all(search_index.identity_of(folder, ManifestRecord.from_json(r, manifest)) is None
               for r in read_jsonl(manifest))
