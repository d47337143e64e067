"""utils.outputs.features: one loader for .npy, .pkl and .h5 outputs (lazy), summary, pack and merge.

Outputs are made in-process by ``utils.run.batch_run.run`` with a double that returns seeded
arrays (no network), in both output layouts; every value read back is compared with what the
double returned, dtype included."""
import logging
import os
import pickle
import shutil
import subprocess
import sys
import zlib

import h5py
import numpy as np
import pytest
import torch

from batch_helpers import REPO, ExtractorDouble, make_cfg
from utils.outputs import features as features_module
from utils.outputs import h5_format, serialization
from utils.run.batch_run import run
from utils.networks import networks
from utils.outputs.features import OutputError, load, main, merge_h5, pack, summarize
from utils.outputs.h5_journal import journal_path
from utils.outputs.h5_store import H5Store

PATHS = ["/in/a/b.mp4", "/in/a.mp4", "/in/c/d/e.mp4", "/in/f.mp4"]
NAMES = {"flat": ["b", "a", "e", "f"], "mirror": ["a/b", "a", "c/d/e", "f"]}
SINKS = ("save_numpy", "save_pickle", "save_h5")


class Seeded(ExtractorDouble):
    """Seeded arrays per path (1 to 3 stacks), remembered in ``returned``."""

    device, labels = torch.device("cpu"), []

    def __init__(self, feature_type="s3d"):
        self.spec = networks()[feature_type]
        self.returned = {}

    def extract(self, path, with_logits=False):
        seed = zlib.crc32(path.encode())
        rng = np.random.default_rng(seed)
        tv = 1 + seed % 3
        arrays = {key: rng.standard_normal((tv, width)).astype(np.float32)
                  for key, width in self.spec.features}
        arrays["timestamps_ms"] = np.arange(2 * tv, dtype=np.float64).reshape(tv, 2) * 400.0
        arrays["fps"] = np.float64(10 + seed % 7)
        self.returned[path] = arrays
        return {k: v.copy() for k, v in arrays.items()}


def _run(out, sink, layout, feature_type="s3d", double=None, **kw):
    double = double or Seeded(feature_type)
    report = run(make_cfg(PATHS, str(out), on_extraction=sink, output_layout=layout,
                          input_root="/in", feature_type=feature_type, **kw), double)
    assert report.done == len([p for i, p in enumerate(PATHS)
                               if i % kw.get("num_shards", 1) == kw.get("shard", 0)])
    return double


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Every sink in both layouts, and save_h5 in two shards: {(sink, layout): output_path}."""
    base = tmp_path_factory.mktemp("features")
    double = Seeded()
    outs = {}
    for layout in NAMES:
        for sink in SINKS:
            outs[sink, layout] = base / f"{sink}-{layout}"
            _run(outs[sink, layout], sink, layout, double=double)
        outs["shards", layout] = base / f"shards-{layout}"
        for shard in (0, 1):
            _run(outs["shards", layout], "save_h5", layout, double=double, num_shards=2,
                 shard=shard)
    return {"outs": outs, "returned": double.returned}


def expected(made, layout):
    return {name: made["returned"][path] for name, path in zip(NAMES[layout], PATHS)}


def assert_same(got, want):
    assert list(got) == list(want)
    for key, value in want.items():
        assert np.array_equal(got[key], value), key
        assert got[key].dtype == value.dtype and isinstance(got[key], np.ndarray), key


def assert_features_equal(features, want):
    assert sorted(features) == sorted(want) and len(features) == len(want)
    for name in want:
        assert_same(features[name], want[name])


# -- the loader ---------------------------------------------------------------------------
@pytest.mark.parametrize("layout", sorted(NAMES))
@pytest.mark.parametrize("sink", SINKS + ("shards",))
def test_loader_reads_every_format_and_layout(made, sink, layout):
    out = made["outs"][sink, layout]
    want = expected(made, layout)
    for path in (out, out / "s3d"):  # the output_path, or its network folder
        with load(str(path)) as features:
            assert features.format == {"save_numpy": "npy", "save_pickle": "pkl"}.get(sink, "h5")
            assert features.feature_type == "s3d" and features.incomplete == []
            assert_features_equal(features, want)
            for name, video in zip(NAMES[layout], PATHS):
                assert features.video_path(name) == video  # .h5 attribute, or manifests
                assert features.run(name) in features.runs()
    if sink in ("save_h5", "shards"):  # one file alone
        [first] = [p for p in sorted(os.listdir(out / "s3d")) if p.endswith("-0-of-2.h5")
                   or p.endswith("-0-of-1.h5")]
        with load(str(out / "s3d" / first)) as one:
            assert set(one) <= set(want) and len(one) >= 2
            for name in one:
                assert_same(one[name], want[name])


def test_listing_reads_no_array(made, monkeypatch):
    def no(*args, **kwargs):
        raise AssertionError("an array was read")

    monkeypatch.setattr(serialization, "load_output", no)
    monkeypatch.setattr(h5_format, "read_video", no)
    monkeypatch.setattr(h5py.Dataset, "__getitem__", no)
    monkeypatch.setattr(h5py.Dataset, "read_direct", no)
    for sink in SINKS + ("shards",):
        with load(str(made["outs"][sink, "mirror"])) as features:
            assert sorted(features) == sorted(NAMES["mirror"]) and "c/d/e" in features
            assert "c/d" not in features and len(features) == 4
            with pytest.raises((AssertionError, OutputError), match="an array was read"):
                features["a"]  # the value is what reads


def test_npy_memory_mapped(made):
    with load(str(made["outs"]["save_numpy", "flat"]), mmap=True) as features:
        video = features["e"]
        assert isinstance(video["s3d"], np.memmap)
        assert_same({k: np.asarray(v) for k, v in video.items()}, expected(made, "flat")["e"])


def test_incomplete_set_left_out_with_a_warning(made, tmp_path, caplog):
    folder = tmp_path / "s3d"
    shutil.copytree(made["outs"]["save_numpy", "mirror"] / "s3d", folder)
    os.remove(folder / "c" / "d" / "e_fps.npy")
    (folder / "c" / "d" / ".e_fps.npy.0123abcd.tmp").write_bytes(b"partial")  # a temporary
    (folder / ".hidden_s3d.npy").write_bytes(b"x")
    with caplog.at_level(logging.WARNING):
        features = load(str(folder))
    assert sorted(features) == ["a", "a/b", "f"] and features.incomplete == ["c/d/e"]
    assert "1 video lacks key files" in caplog.text and "c/d/e, without fps" in caplog.text


def test_crafted_pickle_is_refused_not_run(made, tmp_path):
    folder = tmp_path / "s3d"
    shutil.copytree(made["outs"]["save_pickle", "flat"] / "s3d", folder)
    marker = tmp_path / "MARKER"
    evil = folder / "e_timestamps_ms.pkl"
    evil.write_bytes(b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    (folder / "f_s3d.pkl").write_bytes(pickle.dumps({"not": "an array"}))
    features = load(str(folder))
    with pytest.raises(OutputError, match=f"{evil}: cannot be read \\(refused to load os.system"):
        features["e"]
    with pytest.raises(OutputError, match="f_s3d.pkl: cannot be read \\(expected a numpy array"):
        features["f"]
    assert not marker.exists()
    assert_same(features["a"], expected(made, "flat")["a"])  # the others still read


def test_damaged_files_are_one_clear_error(made, tmp_path):
    folder = tmp_path / "npy" / "s3d"
    shutil.copytree(made["outs"]["save_numpy", "flat"] / "s3d", folder)
    with open(folder / "b_s3d.npy", "r+b") as f:
        f.truncate(100)
    with pytest.raises(OutputError, match="b_s3d.npy: cannot be read"):
        load(str(folder))["b"]
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not an HDF5 file at all" * 10)
    with pytest.raises(OutputError, match=f"{bad}: not a readable HDF5 file"):
        load(str(bad))
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(OutputError, match="not a features file of this tool"):
        load(str(foreign))
    with pytest.raises(OutputError, match="no such file or folder"):
        load(str(tmp_path / "nowhere"))
    truncated = tmp_path / "truncated.h5"
    shutil.copy(made["outs"]["save_h5", "mirror"] / "s3d" / "s3d-0-of-1.h5", truncated)
    os.truncate(truncated, os.path.getsize(truncated) // 2)
    with pytest.raises(OutputError, match=f"{truncated}: not a readable HDF5 file"):
        load(str(truncated))
    for attr, value in (("format", np.array([1, 2])), ("format", 5),
                        ("feature_type", np.array([1, 2]))):
        odd = tmp_path / f"odd-{attr}.h5"
        shutil.copy(made["outs"]["save_h5", "mirror"] / "s3d" / "s3d-0-of-1.h5", odd)
        with h5py.File(odd, "r+") as f:
            del f.attrs[attr]
            f.attrs[attr] = value
        with pytest.raises(OutputError) as info:
            load(str(odd))
        assert str(odd) in str(info.value), (attr, value, str(info.value))


def test_damaged_h5_is_always_an_output_error_naming_it(made, tmp_path, caplog):
    """Bytes overwritten anywhere in a shard file: opening, listing, summarizing, reading
    each video and the run records either work or raise OutputError naming the file (not
    OSError, KeyError or a JSON error from deep inside h5py)."""
    data = (made["outs"]["save_h5", "mirror"] / "s3d" / "s3d-0-of-1.h5").read_bytes()
    path = tmp_path / "damaged.h5"
    stages = []
    for at in range(0, len(data), 97):
        damaged = bytearray(data)
        damaged[at:at + 64] = b"\xa5" * 64
        path.write_bytes(bytes(damaged))
        stage = "load"
        try:
            with load(str(path)) as features:
                stage = "summary"
                summarize(features)
                stage = "read"
                for name in features:
                    features[name]
                    features.video_path(name), features.run(name)
                stage = "runs"
                features.runs()
        except OutputError as e:
            assert str(path) in str(e), (at, stage, str(e))
            stages.append(stage)
    assert "load" in stages, stages  # listing was hit
    # and the run records: a damaged one is a warning naming the file (issue 19: ignored)
    assert "runs" in stages or any(str(path) in r.getMessage() and "not a run record" in
                                   r.getMessage() for r in caplog.records)


def test_mixed_formats_need_a_choice(made, tmp_path):
    folder = tmp_path / "s3d"
    shutil.copytree(made["outs"]["save_numpy", "flat"] / "s3d", folder)
    shutil.copy(made["outs"]["save_h5", "flat"] / "s3d" / "s3d-0-of-1.h5", folder)
    with pytest.raises(OutputError, match="holds outputs of 2 formats \\(12 .npy, 1 .h5 files\\)"):
        load(str(folder))
    for fmt in ("npy", "h5"):
        with load(str(folder), format=fmt) as features:
            assert features.format == fmt
            assert_features_equal(features, expected(made, "flat"))


def test_only_shard_file_names_are_h5_outputs(made, tmp_path):
    """The .h5 files of a folder are its outputs only when named like a shard file
    (``<feature_type>-<k>-of-<K>.h5``, the rule of the extraction's store): a packed or
    merged file kept beside them is not read as one."""
    folder = tmp_path / "s3d"
    shutil.copytree(made["outs"]["save_numpy", "flat"] / "s3d", folder)
    for name in ("all.h5", "s3d-01-of-2.h5", "s3d-1-of-1.h5"):
        shutil.copy(made["outs"]["save_h5", "flat"] / "s3d" / "s3d-0-of-1.h5", folder / name)
    with load(str(folder)) as features:
        assert features.format == "npy"
        assert_features_equal(features, expected(made, "flat"))
    with load(str(folder / "all.h5")) as one:  # read when named
        assert_features_equal(one, expected(made, "flat"))


def test_video_in_two_shard_files_is_an_error_naming_both(made, tmp_path):
    folder = tmp_path / "s3d"
    folder.mkdir()
    shards = made["outs"]["shards", "mirror"] / "s3d"
    one = made["outs"]["save_h5", "mirror"] / "s3d" / "s3d-0-of-1.h5"
    shutil.copy(shards / "s3d-1-of-2.h5", folder)
    shutil.copy(one, folder)
    with pytest.raises(OutputError) as info:
        load(str(folder))
    assert "is in two files" in str(info.value)
    assert str(folder / "s3d-0-of-1.h5") in str(info.value)
    assert str(folder / "s3d-1-of-2.h5") in str(info.value)


def test_journal_beside_the_file_is_warned_about(made, tmp_path, caplog):
    root = tmp_path / "s3d"
    shutil.copytree(made["outs"]["save_h5", "flat"] / "s3d", root)
    spec = networks()["s3d"]
    store = H5Store(str(root), "s3d", 0, 1, spec.keys, spec.features, "later-run", {})
    extra = Seeded().extract("/in/g.mp4")
    try:
        store.write("g", extra, "/in/g.mp4")  # in the journal, not in the file yet
        assert os.path.exists(journal_path(store.path))
        with caplog.at_level(logging.WARNING), load(str(root)) as features:
            assert "g" not in features and len(features) == 4
        assert f"{journal_path(store.path)}: 1 video finished after the last checkpoint" \
            in caplog.text and "run again folds them" in caplog.text
    finally:
        store.close()
    with load(str(root)) as features:  # folded
        assert_same(features["g"], extra)


def test_journal_warning_reads_only_the_journal_header(made, tmp_path, caplog, monkeypatch):
    """The warning's count comes from the record frames: no video's payload is hashed or
    decoded (a journal can be tens of GB)."""
    from utils.outputs import h5_journal
    root = tmp_path / "s3d"
    shutil.copytree(made["outs"]["save_h5", "flat"] / "s3d", root)
    spec = networks()["s3d"]
    store = H5Store(str(root), "s3d", 0, 1, spec.keys, spec.features, "later-run", {})
    big = {"s3d": np.ones((2048, 1024), np.float32), "timestamps_ms": np.zeros((2048, 2)),
           "fps": np.float64(10)}  # about 8 MB a record
    try:
        for i in range(6):
            store.write(f"g{i}", big, f"/in/g{i}.mp4")
        journal = journal_path(store.path)
        assert os.path.getsize(journal) > 6 * 8 * 2**20
        hashed = []
        real_decode, real_sha = h5_journal.decode, h5_journal.hashlib.sha256

        def decode(payload):
            header, arrays = real_decode(payload)
            if arrays or "name" in header:
                raise AssertionError("a video's record was decoded")
            return header, arrays

        def sha256(data=b""):
            hashed.append(len(data))
            return real_sha(data)

        monkeypatch.setattr(h5_journal, "decode", decode)
        monkeypatch.setattr(h5_journal.hashlib, "sha256", sha256)
        with caplog.at_level(logging.WARNING), load(str(root)) as features:
            assert len(features) == 4
        monkeypatch.undo()
        assert f"{journal}: 6 videos finished after the last checkpoint" in caplog.text
        assert sum(hashed) < 2**20, hashed  # the header only
    finally:
        store.close()


def test_video_names_skip_links(made, tmp_path):
    path = tmp_path / "x.h5"
    shutil.copy(made["outs"]["save_h5", "mirror"] / "s3d" / "s3d-0-of-1.h5", path)
    with h5py.File(path, "r+") as f:
        f["c/link"] = h5py.SoftLink("/a")
        f["hard"] = f["a/b"]  # a second hard link: a second name of the same video
    with h5py.File(path, "r") as f:
        names = list(h5_format.video_names(f, features_module.registered_keys()))
        assert names == ["a", "a/b", "c/d/e", "f", "hard"]


# -- summary, pack, merge -------------------------------------------------------------------
def test_summary_numbers(made):
    want = expected(made, "mirror")
    stacks = sum(v["timestamps_ms"].shape[0] for v in want.values())
    for sink in SINKS + ("shards",):
        with load(str(made["outs"][sink, "mirror"])) as features:
            s = summarize(features)
        assert (s["videos"], s["stacks"], s["feature_type"]) == (4, stacks, "s3d")
        assert s["keys"] == {
            "s3d": [{"shape": "(Tv, 1024)", "dtype": "float32", "videos": 4}],
            "timestamps_ms": [{"shape": "(Tv, 2)", "dtype": "float64", "videos": 4}],
            "fps": [{"shape": "()", "dtype": "float64", "videos": 4}]}


@pytest.mark.parametrize("layout", sorted(NAMES))
def test_pack_equals_a_direct_h5_run(made, tmp_path, layout):
    out = tmp_path / "packed.h5"
    assert pack(str(made["outs"]["save_numpy", layout]), str(out)) == (4, 0)
    direct = made["outs"]["save_h5", layout] / "s3d" / "s3d-0-of-1.h5"
    with load(str(out)) as packed, load(str(direct)) as one:
        assert sorted(packed) == sorted(one)
        for name in one:
            assert_same(packed[name], one[name])
            assert packed.video_path(name) == one.video_path(name)
        npy_runs = load(str(made["outs"]["save_numpy", layout])).runs()
        assert packed.runs() == npy_runs and packed.run("a") in npy_runs
    with h5py.File(out, "r") as f:
        assert f.attrs["format"] == h5_format.FORMAT and f.attrs["feature_type"] == "s3d"
    assert os.listdir(tmp_path) == ["packed.h5"]  # no temporary left


def test_pack_leaves_out_incomplete_sets(made, tmp_path, capsys, restore_logging):
    folder = tmp_path / "s3d"
    shutil.copytree(made["outs"]["save_pickle", "flat"] / "s3d", folder)
    os.remove(folder / "e_s3d.pkl")
    (folder / "f_s3d.pkl").write_bytes(b"garbled")
    out = tmp_path / "p.h5"
    assert main(["pack", str(folder), str(out)]) == 1
    captured = capsys.readouterr()
    assert f"{out}: 2 videos packed; 2 incomplete sets left out" in captured.out
    # the command's own log lines (its logging replaces the test's capture)
    assert captured.err.count("incomplete or unreadable output set") == 2
    with load(str(out)) as packed:
        assert sorted(packed) == ["a", "b"]
        assert_same(packed["b"], expected(made, "flat")["b"])


def test_merge_of_two_shards_equals_the_one_file_run(made, tmp_path):
    shards = made["outs"]["shards", "mirror"] / "s3d"
    out = tmp_path / "merged.h5"
    inputs = [str(shards / "s3d-0-of-2.h5"), str(shards / "s3d-1-of-2.h5")]
    assert merge_h5(str(out), inputs) == (4, 0)
    with load(str(out)) as merged, load(str(made["outs"]["save_h5", "mirror"])) as one:
        assert_features_equal(merged, {n: one[n] for n in one})
        for name in one:
            assert merged.video_path(name) == one.video_path(name)
        assert len(merged.runs()) == 2  # both shards' runs
        assert merged.runs() == load(str(shards)).runs()


def test_an_h5_run_record_of_the_wrong_shape_is_left_out_with_a_warning(made, tmp_path, caplog):
    """A ``run:<id>`` attribute that is JSON but no run record (here: no ``features``) is
    skipped with a warning naming the file and the attribute; the others are read."""
    path = tmp_path / "s3d-0-of-1.h5"
    shutil.copy(made["outs"]["save_h5", "flat"] / "s3d" / "s3d-0-of-1.h5", path)
    with load(str(path)) as features:
        good = features.runs()
    with h5py.File(path, "r+") as f:
        f.attrs["run:bogus"] = '{"format": 1, "run": "bogus"}'
    with caplog.at_level(logging.WARNING), load(str(path)) as features:
        assert features.runs() == good and len(good) == 1
    assert f"{path}: run:bogus: not a run record (no features), ignored" in caplog.text


def test_merge_and_pack_refuse_bad_input_without_leaving_anything(made, tmp_path, capsys,
                                                                   monkeypatch, restore_logging):
    shards = made["outs"]["shards", "flat"] / "s3d"
    dup = tmp_path / "dup.h5"
    shutil.copy(shards / "s3d-0-of-2.h5", dup)
    out = tmp_path / "out.h5"
    assert main(["merge", str(out), str(shards / "s3d-0-of-2.h5"), str(dup)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: video ") and "is in two files" in err[0]
    assert str(dup) in err[0] and str(shards / "s3d-0-of-2.h5") in err[0]
    assert os.listdir(tmp_path) == ["dup.h5"]
    assert main(["merge", str(out), str(dup), str(dup)]) == 2
    assert capsys.readouterr().err == f"error: {dup} is given twice ({dup})\n"

    out.write_bytes(b"keep me")
    assert main(["pack", str(made["outs"]["save_numpy", "flat"]), str(out)]) == 2
    assert capsys.readouterr().err == f"error: {out} exists; --force replaces it\n"
    assert out.read_bytes() == b"keep me"

    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    real = h5_format.write_video
    monkeypatch.setattr(h5_format, "write_video", failing)
    assert main(["pack", "--force", str(made["outs"]["save_numpy", "flat"]), str(out)]) == 2
    assert capsys.readouterr().err == (f"error: {out}: not enough free space (No space left on "
                                       "device); nothing was written\n")
    assert out.read_bytes() == b"keep me" and sorted(os.listdir(tmp_path)) == ["dup.h5", "out.h5"]


def _one_error(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def _h5_of(path, videos):
    """A shard file holding ``videos`` (name -> arrays); a name given as bytes is written as
    that raw link name (not UTF-8)."""
    with h5py.File(path, "w", libver=h5_format.LIBVER) as f:
        h5_format.init_file(f, "s3d")
        for name, arrays in videos.items():
            if isinstance(name, bytes):
                group = f.create_group(name)  # h5py refuses such a str, not bytes
                group.attrs[h5_format.VIDEO_ATTR] = "/in/x.mp4"
                for key, value in arrays.items():
                    group[key] = value
            else:
                h5_format.write_video(f, name, arrays, f"/in/{name}.mp4", None)


def test_pack_and_merge_refuse_names_hdf5_cannot_hold(made, tmp_path, capsys, monkeypatch,
                                                       restore_logging):
    """A video whose group would pass through another's dataset (mirror: a.mp4 and
    a/s3d/y.mp4), or whose name is not UTF-8 (an undecodable byte in a file name): one
    error line naming it, exit 2, nothing written (no OUT, no temporary)."""
    want = expected(made, "mirror")
    clash = tmp_path / "clash" / "s3d"
    shutil.copytree(made["outs"]["save_numpy", "mirror"] / "s3d", clash)
    (clash / "a" / "s3d").mkdir()
    for key in networks()["s3d"].keys:
        shutil.copy(clash / f"f_{key}.npy", clash / "a" / "s3d" / f"y_{key}.npy")
    work = tmp_path / "work"
    work.mkdir()
    out = work / "out.h5"
    assert main(["pack", str(clash), str(out)]) == 2
    err = _one_error(capsys)
    assert "videos 'a' and 'a/s3d/y' cannot both be stored" in err and str(clash) in err
    assert os.listdir(work) == []
    monkeypatch.setattr(h5_format, "name_clash", lambda *a: None)  # write_video's own refusal
    assert main(["pack", str(clash), str(out)]) == 2
    err = _one_error(capsys)
    assert "'a/s3d/y' cannot be stored: 'a/s3d' is a dataset of another video" in err
    assert str(clash / "a" / "s3d" / "y_s3d.npy") in err and os.listdir(work) == []
    monkeypatch.undo()

    # a file name with an undecodable byte: listed and read (a surrogate in the name), not packed
    odd = tmp_path / "odd" / "s3d"
    shutil.copytree(made["outs"]["save_numpy", "flat"] / "s3d", odd)
    for key in networks()["s3d"].keys:
        os.rename(odd / f"a_{key}.npy", os.path.join(os.fsencode(odd), b"caf\xe9_" + key.encode()
                                                     + b".npy"))
    name = os.fsdecode(b"caf\xe9")
    with load(str(odd)) as features:
        assert sorted(features) == sorted(["b", name, "e", "f"])
        assert_same(features[name], expected(made, "flat")["a"])
        assert summarize(features)["videos"] == 4
    assert main(["summary", str(odd)]) == 0
    assert "videos: 4" in capsys.readouterr().out
    assert main(["pack", str(odd), str(out)]) == 2
    err = _one_error(capsys)
    assert f"{odd}/caf\\xe9_s3d.npy: the video's name is not UTF-8 text" in err, err
    assert os.listdir(work) == []
    monkeypatch.setattr(features_module.FileFeatures, "video_path",
                        lambda self, n: os.fsdecode(b"/in/d\xe9j\xe0.mp4"))  # from a manifest
    # an input path that is not UTF-8 (from a manifest): packed, kept as its bytes
    assert main(["pack", str(made["outs"]["save_numpy", "flat"]), str(out)]) == 0
    capsys.readouterr()
    with load(str(out)) as features:
        assert features.video_path("a") == os.fsdecode(b"/in/d\xe9j\xe0.mp4")
    os.remove(out)
    monkeypatch.undo()

    # merge: shards whose videos clash, and a link name that is not UTF-8
    first, second = tmp_path / "s3d-0-of-2.h5", tmp_path / "s3d-1-of-2.h5"
    _h5_of(first, {"x": want["a"]})
    _h5_of(second, {"x/s3d/y": want["f"]})
    assert main(["merge", str(out), str(first), str(second)]) == 2
    err = _one_error(capsys)
    assert "videos 'x' and 'x/s3d/y' cannot both be stored" in err
    assert str(first) in err and str(second) in err and os.listdir(work) == []
    monkeypatch.setattr(h5_format, "name_clash", lambda *a: None)
    assert main(["merge", str(out), str(first), str(second)]) == 2
    err = _one_error(capsys)
    assert "'x/s3d/y' cannot be stored" in err and str(second) in err
    assert os.listdir(work) == []
    monkeypatch.undo()
    raw = tmp_path / "raw.h5"
    _h5_of(raw, {b"caf\xe9": want["a"], "b": want["f"]})
    with load(str(raw)) as features:
        assert sorted(features) == ["b", name]
        assert_same(features[name], want["a"])
        assert summarize(features)["videos"] == 2
    assert main(["merge", str(out), str(raw)]) == 2
    err = _one_error(capsys)
    assert f"{raw}: video 'caf\\xe9' has a name that is not UTF-8 text" in err, err
    assert os.listdir(work) == []


def test_the_command_line(made, tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO)

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "utils.outputs.features", *args], cwd=str(tmp_path),
                              env=env, capture_output=True, text=True, timeout=60, check=False)

    out = tmp_path / "all.h5"
    proc = cli("pack", str(made["outs"]["save_numpy", "mirror"] / "s3d"), str(out))
    assert (proc.returncode, proc.stdout) == (0, f"{out}: 4 videos packed\n"), proc.stderr
    proc = cli("summary", str(out))
    want = expected(made, "mirror")
    stacks = sum(v["timestamps_ms"].shape[0] for v in want.values())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[1:] == [
        "videos: 4", f"stacks: {stacks} (Tv summed over the videos)", "keys:",
        "  s3d: (Tv, 1024) float32", "  timestamps_ms: (Tv, 2) float64", "  fps: () float64"]
    proc = cli("summary", str(tmp_path / "nowhere"))
    assert proc.returncode == 2 and proc.stderr.startswith("error: ")
    assert "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) == 1


def test_search_reads_h5_outputs(tmp_path):
    """models.s3d_howto100m.search finds its videos in the .h5 of save_h5 as in .npy files."""
    from models.s3d_howto100m import search

    for sink in ("save_h5", "save_numpy"):
        double = _run(tmp_path / sink, sink, "mirror", feature_type="s3d_howto100m",
                      stack_size=32)
        videos = list(search.indexed_videos(str(tmp_path / sink / "s3d_howto100m")))
        assert [v.path for v in videos] == PATHS
        for v in videos:
            assert_same({"e": v.embedding, "t": v.timestamps_ms},
                        {"e": double.returned[v.path]["video_embedding"],
                         "t": double.returned[v.path]["timestamps_ms"]})
