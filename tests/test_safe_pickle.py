"""utils.outputs.safe_pickle: numpy arrays and strings come out of a pickle; nothing else gets in."""
import io
import pickle

import numpy as np
import pytest

from utils.outputs.safe_pickle import UnsafePickleError, load_npy, read_npy_header, restricted_load

VALUES = [
    np.zeros((3, 1024), np.float32),
    np.arange(12, dtype=np.float64).reshape(6, 2)[:, ::-1],   # not contiguous
    np.asarray(np.float64(25.0)),                             # how the sinks write fps
    np.float64(29.97),                                        # a numpy scalar
    np.array(["cut", "tomato", "café"]),                      # unicode
    np.array(["cut", "tomato", "don't"], dtype=object),       # object array of str
    np.zeros((0, 512), np.float32),
]


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
@pytest.mark.parametrize("value", VALUES, ids=[f"v{i}" for i in range(len(VALUES))])
def test_numpy_values_round_trip(value, protocol):
    got = restricted_load(io.BytesIO(pickle.dumps(value, protocol=protocol)))
    assert type(got) is type(value)
    np.testing.assert_array_equal(got, value)
    assert got.dtype == value.dtype


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("make,name", [
    (lambda m: b"cos\nsystem\n(S'touch " + m.encode() + b"'\ntR.", "os.system"),
    (lambda m: pickle.dumps(_Payload(m)), "io.open"),
    (lambda m: pickle.dumps(np.array([_Payload(m)], dtype=object)), "io.open"),
    (lambda m: pickle.dumps([np.zeros(2), _Payload(m)]), "io.open"),
    (lambda m: b"cbuiltins\neval\n(S'open(\"" + m.encode() + b"\", \"w\")'\ntR.", "builtins.eval"),
    (lambda m: pickle.dumps(np.load), "numpy.load"),   # numpy, but not an array builder
], ids=["os.system", "reduce-open", "inside-object-array", "inside-list", "eval", "numpy.load"])
def test_anything_else_is_refused_before_it_runs(tmp_path, make, name):
    marker = tmp_path / "MARKER"
    data = make(str(marker))
    with pytest.raises(UnsafePickleError) as info:
        restricted_load(io.BytesIO(data))
    assert f"it holds {name}," in str(info.value)
    assert not marker.exists()


def test_load_npy_plain_and_object_arrays(tmp_path):
    plain, objects = tmp_path / "plain.npy", tmp_path / "objects.npy"
    np.save(plain, np.arange(6.0).reshape(2, 3))
    np.save(objects, np.array(["a", "bb"], dtype=object), allow_pickle=True)
    np.testing.assert_array_equal(load_npy(str(plain)), np.arange(6.0).reshape(2, 3))
    got = load_npy(str(objects))
    assert got.dtype == object and got.tolist() == ["a", "bb"]


def test_load_npy_refuses_code_in_an_object_array(tmp_path):
    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.npy"
    np.save(path, np.array([_Payload(str(marker))], dtype=object), allow_pickle=True)
    with pytest.raises(UnsafePickleError, match="io.open"):
        load_npy(str(path))
    assert not marker.exists()


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_read_npy_header_reads_every_version(tmp_path, version):
    """Version 3.0 headers are UTF-8 (field names beyond Latin-1): read as a 2.0 header
    (Latin-1) their names come out garbled."""
    names = ("x", "y") if version != (3, 0) else ("温度", "x")
    dtype = np.dtype([(names[0], "<f4"), (names[1], "<i2")])
    array = np.arange(3).astype(dtype)
    path = tmp_path / "a.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array(f, array, version=version)
    with open(path, "rb") as f:
        assert np.lib.format.read_magic(f) == version
        f.seek(0)
        assert read_npy_header(f) == ((3,), False, dtype)
        np.testing.assert_array_equal(np.fromfile(f, dtype), array)  # left at the data
    np.testing.assert_array_equal(load_npy(str(path)), array)


def test_read_npy_header_refuses_an_unknown_version(tmp_path):
    path = tmp_path / "a.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array(f, np.zeros(2), version=(2, 0))
    data = bytearray(path.read_bytes())
    data[6] = 4  # major version 4
    path.write_bytes(bytes(data))
    with open(path, "rb") as f, pytest.raises(ValueError):
        read_npy_header(f)
