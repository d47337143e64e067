"""A shard file's journal and ``generation`` are read from the output folder, which anyone may
have written (issue 19): a journal record's SHA-256 is a checksum, not a signature.  A record
that does not have the shape this tool writes is one warning naming the journal and the
record's offset; it and the rest of the journal are ignored (those videos are extracted
again), never a traceback or a stopped run.  A ``generation`` attribute that is not a
checkpoint count makes the store call its file damaged: one line naming the file and the
attribute, nothing changed."""
import hashlib
import json
import logging
import os
import shutil
import struct

import h5py
import numpy as np
import pytest

from batch_helpers import cli_args, run_cli
from videos import synth

from utils.errors import InputError
from utils.outputs import h5_format
from utils.outputs.h5_journal import encode, journal_path, read_journal
from utils.outputs.h5_store import H5Store, fold, generation

KEYS = ("s3d", "timestamps_ms", "fps")
H5 = "s3d-0-of-1.h5"


def _arrays(i=0):
    return {"s3d": np.full((2, 1024), i, np.float32),
            "timestamps_ms": np.arange(4, dtype=np.float64).reshape(2, 2), "fps": np.float64(25)}


def _store(root, run="r0"):
    return H5Store(str(root), "s3d", 0, 1, KEYS, (("s3d", 1024),), run,
                   {"run": run, "features": {"step_size": 13}})


def _frame(payload: bytes) -> bytes:
    return struct.pack("<4sQ", b"S3DJ", len(payload)) + payload + hashlib.sha256(payload).digest()


def _raw(header, tail=b"") -> bytes:
    """A checksum-valid record of any header (a JSON value, or the header's bytes as given)."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return _frame(struct.pack("<I", len(text)) + text + tail)


def _head(**kw):
    head = {"generation": 1, "feature_type": "s3d", "run": "planted",
            "record": {"run": "planted", "features": {}}}
    head.update(kw)
    return head


def _video(name, **kw):
    header = {"name": name, "video_path": f"/in/{name}.mp4", "run": "planted"}
    header.update(kw)
    return encode(header, [(k, np.asarray(v)) for k, v in _arrays(7).items()])


def _fields(**kw):
    header = {"name": "p", "video_path": "/in/p.mp4", "run": "planted", "arrays": []}
    header.update(kw)
    return header


DEEP = b"[" * 200000 + b"]" * 200000
HEADS = {  # the journal's first record
    "a list": _raw([1, 2]),
    "no run": _raw({"generation": 1, "arrays": []}),
    "generation a string": encode(_head(generation="1")),
    "generation negative": encode(_head(generation=-1)),
    "generation true": encode(_head(generation=True)),
    "generation beyond int64": encode(_head(generation=2**64)),
    "no feature_type": encode({k: v for k, v in _head().items() if k != "feature_type"}),
    "record a list": encode(_head(record=[1])),
    "nested deep": _raw(DEEP),
}
VIDEOS = {  # a video's record
    "nested deep": _raw(DEEP),
    "bad JSON": _raw(b"{not json"),
    "bad UTF-8": _raw(b'{"name": "\xff\xfe", "video_path": "/x", "run": "r", "arrays": []}'),
    "UTF-16 JSON": _raw(json.dumps(_fields()).encode("utf-16")),
    "a list": _raw([1, 2]),
    "no arrays": _raw({k: v for k, v in _fields().items() if k != "arrays"}),
    "no video_path": _raw({k: v for k, v in _fields().items() if k != "video_path"}),
    "no name": _raw({k: v for k, v in _fields().items() if k != "name"}),
    "name empty": _raw(_fields(name="")),
    "name an int": _video(5),
    # names the layout cannot hold: '/' is the root group (its attributes were wiped, the
    # whole file lost), '.' made h5py raise RuntimeError (a traceback on every run)
    "name the root": _video("/"),
    "name //": _video("//"),
    "name .": _video("."),
    "name v0/.": _video("v0/."),
    "name ./v1": _video("./v1"),
    "name ..": _video(".."),
    "name x//y": _video("x//y"),
    "name x/": _video("x/"),
    "key with a slash": _raw(_fields(arrays=[["/s3d", "<f4", [1]]]), b"\0" * 4),
    "key .": _raw(_fields(arrays=[[".", "<f4", [1]]]), b"\0" * 4),
    "video_path an int": _video("p", video_path=5),
    "run an int": _video("p", run=5),
    "unknown dtype": _raw(_fields(arrays=[["s3d", "xx", [1]]]), b"\0" * 4),
    "object dtype": _raw(_fields(arrays=[["s3d", "|O", [1]]]), b"\0" * 8),
    "string dtype": _raw(_fields(arrays=[["s3d", "<U2", [1]]]), b"\0" * 8),
    "void dtype": _raw(_fields(arrays=[["s3d", "|V8", [1]]]), b"\0" * 8),
    "dtype a name": _raw(_fields(arrays=[["s3d", "float32", [1]]]), b"\0" * 4),
    "negative shape": _raw(_fields(arrays=[["s3d", "<f4", [-1]]]), b"\0" * 64),
    "shape a dict": _raw(_fields(arrays=[["s3d", "<f4", {"a": 1}]]), b"\0" * 4),
    "shape of floats": _raw(_fields(arrays=[["s3d", "<f4", [1.0]]]), b"\0" * 4),
    "shape of true": _raw(_fields(arrays=[["s3d", "<f4", [True]]]), b"\0" * 4),
    "shape 2^62": _raw(_fields(arrays=[["s3d", "<f8", [2**62, 2**62]]]), b"\0" * 8),
    "arrays a string": _raw(_fields(arrays="abc")),
    "an array too short": _raw(_fields(arrays=[["s3d"]])),
    "a key twice": _raw(_fields(arrays=[["s3d", "<f4", [1]], ["s3d", "<f4", [1]]]), b"\0" * 8),
    "bytes missing": _raw(_fields(arrays=[["s3d", "<f4", [4]]]), b"\0" * 8),
    "bytes left over": _raw(_fields(arrays=[["s3d", "<f4", [1]]]), b"\0" * 8),
    "header size beyond the payload": _frame(struct.pack("<I", 2**32 - 1) + b"{}"),
    "payload of 2 bytes": _frame(b"{}"),
}


@pytest.fixture
def shard(tmp_path):
    """A shard file holding video 'v0' (generation 1), and its path."""
    store = _store(tmp_path)
    store.write("v0", _arrays(), "/in/v0.mp4")
    store.close()
    return str(tmp_path / H5)


def _names(path):
    with h5py.File(path, "r") as f:
        return sorted(h5_format.video_names(f, KEYS))


def _warned(caplog, journal, offset):
    [line] = [r.getMessage() for r in caplog.records if journal in r.getMessage()]
    assert f"offset {offset} " in line and "extracted again" in line, line
    assert "\n" not in line


@pytest.mark.parametrize("case", sorted(HEADS))
def test_an_odd_journal_header_is_one_warning_and_the_journal_dropped(shard, caplog, case):
    journal = journal_path(shard)
    with open(journal, "wb") as f:
        f.write(HEADS[case] + _video("a"))
    lost = []
    with caplog.at_level(logging.WARNING):
        assert fold(shard, "s3d", lambda *a: lost.append(a)) == 0
    _warned(caplog, journal, 0)
    assert not os.path.exists(journal) and not lost
    assert _names(shard) == ["v0"] and generation(shard) == 1


@pytest.mark.parametrize("case", sorted(VIDEOS))
def test_an_odd_video_record_ends_the_journal_with_one_warning(shard, caplog, case):
    """The videos before the record are folded; it and those after are not (extracted again:
    the store does not count them done)."""
    journal = journal_path(shard)
    before = encode(_head()) + _video("a")
    with open(journal, "wb") as f:
        f.write(before + VIDEOS[case] + _video("b"))
    lost = []
    with caplog.at_level(logging.WARNING):
        assert fold(shard, "s3d", lambda *a: lost.append(a)) == 1
    _warned(caplog, journal, len(before))
    assert not os.path.exists(journal) and not lost
    assert _names(shard) == ["a", "v0"] and generation(shard) == 2
    store = _store(os.path.dirname(shard), "r1")
    try:
        assert store.complete("a") and store.complete("b") is None
    finally:
        store.close()


def test_read_journal_raises_nothing_but_stops_at_a_bad_record(tmp_path):
    journal = str(tmp_path / "j")
    with open(journal, "wb") as f:
        f.write(encode(_head()) + _video("a") + VIDEOS["negative shape"] + _video("b"))
    got = [header.get("name") for header, _ in read_journal(journal)]
    assert got == [None, "a"]


ODD = {"1e300": np.float64(1e300), "an array": np.array([1, 2]), "a string": "abc",
       "NaN": np.float64("nan"), "-1": np.int64(-1), "true": np.bool_(True),
       "int64 max": np.int64(2**63 - 1), "1.0": np.float64(1.0)}


def _plant_generation(shard, value):
    with h5py.File(shard, "r+") as f:
        f.attrs["generation"] = value


@pytest.mark.parametrize("case", sorted(ODD))
def test_an_odd_generation_is_a_damaged_file_named_with_its_attribute(shard, case):
    _plant_generation(shard, ODD[case])
    with pytest.raises(ValueError) as e:
        generation(shard)
    assert shard in str(e.value) and "generation attribute" in str(e.value)
    with pytest.raises(InputError) as e:  # opening the store: nothing to fold
        _store(os.path.dirname(shard), "r1")
    message = str(e.value)
    assert "\n" not in message and shard in message and "generation attribute" in message
    assert "move it away to start the shard's file anew" in message
    assert _names(shard) == ["v0"]


@pytest.mark.parametrize("case", sorted(ODD))
def test_an_odd_generation_refuses_the_fold_and_keeps_file_and_journal(shard, case):
    _plant_generation(shard, ODD[case])
    journal = journal_path(shard)
    data = encode(_head()) + _video("a")
    with open(journal, "wb") as f:
        f.write(data)
    with open(shard, "rb") as f:
        before = f.read()
    with pytest.raises(InputError) as e:
        _store(os.path.dirname(shard), "r1")
    message = str(e.value)
    assert "\n" not in message and shard in message and "generation attribute" in message
    assert "move the file away" in message and "free space" not in message
    with open(shard, "rb") as f:
        assert f.read() == before
    with open(journal, "rb") as f:
        assert f.read() == data
    assert sorted(os.listdir(os.path.dirname(shard))) == sorted([H5, os.path.basename(journal)])


def test_a_rerun_after_a_hostile_journal_extracts_the_lost_video_and_finishes(
        random_checkpoint, tmp_path):
    """The CLI: the journal a run finds holds a planted record before the clip's; the run
    warns once, extracts the clip again and ends with its summary."""
    clip = synth(str(tmp_path / "clip.mp4"), seconds=0.6, size="32x24")
    out = tmp_path / "out"
    root = out / "s3d"
    root.mkdir(parents=True)
    journal = journal_path(str(root / H5))
    with open(journal, "wb") as f:  # no file yet: generation 0
        f.write(encode(_head(generation=0)) + VIDEOS["nested deep"]
                + _video("clip", video_path=clip))
    proc = run_cli(cli_args(random_checkpoint, str(out), video_paths=[clip],
                            on_extraction="save_h5"), cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    [line] = [ln for ln in proc.stderr.splitlines() if journal in ln]
    assert "offset" in line and "extracted again" in line
    assert "done 1, skipped 0" in proc.stderr
    assert not os.path.exists(journal)
    with h5py.File(root / H5, "r") as f:  # extracted, not the planted values
        assert f["clip"].attrs["video_path"] == clip and f["clip"]["s3d"].shape[0] >= 1
        assert not np.all(f["clip"]["s3d"][()] == 7)
    shutil.rmtree(out)
