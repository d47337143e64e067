"""Checkpoints: both formats, damaged files, code-carrying pickles, checksums, download, CLI.

No test here reaches the internet: checkpoints are seeded random S3D weights, and the download
path is exercised against an HTTP server on 127.0.0.1 run in a thread by the test itself.
"""
import hashlib
import http.server
import io
import os
import random
import shutil
import socket
import subprocess
import threading
import zipfile
from collections import OrderedDict

import pytest
import torch

from batch_helpers import run_cli
from conftest import SAMPLE
import models.s3d.weights as weights
from models.s3d.network import S3D
from utils.errors import WeightsError
from models.s3d.weights import (download, git_blob_sha1, load_checkpoint, load_into,
                                read_state_dict)



# --------------------------------------------------------------------------- helpers / fixtures

@pytest.fixture(scope="module")
def reference(random_model):
    """The seed-0 weights as a plain state dict (``base.*`` keys), cloned: never modified."""
    return OrderedDict((k, v.detach().clone()) for k, v in random_model.state_dict().items())


@pytest.fixture
def blank_model():
    """A freshly built S3D for each test to load into: its weights differ from the reference's,
    so a load that did nothing, or only part of its work, shows."""
    return S3D().eval()


@pytest.fixture(scope="module")
def checkpoint_bytes(random_checkpoint) -> bytes:
    with open(random_checkpoint, "rb") as f:
        return f.read()



def load_weights(model, weights_path):
    """What ExtractS3D does with ``weights_path``: the file loaded into ``model``, read once."""
    return load_checkpoint(model, weights_path).path

def save(obj, path, legacy: bool = False) -> str:
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return str(path)


def assert_state_equal(state, reference):
    assert list(state.keys()) == list(reference.keys())
    for key, tensor in reference.items():
        got = state[key]
        assert got.dtype == tensor.dtype and got.shape == tensor.shape, key
        assert torch.equal(got, tensor), f"{key} differs"


def error_of(func, *args) -> str:
    """The message of the WeightsError that ``func(*args)`` raises; it must be one line."""
    with pytest.raises(WeightsError) as info:
        func(*args)
    message = str(info.value)
    assert message and "\n" not in message and "\r" not in message, repr(message)
    assert len(message) < 400, message
    return message


def model_snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------- formats

@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("prefix", ["", "module."], ids=["plain", "kylemin-module"])
def test_both_formats_load_to_identical_state(tmp_path, reference, blank_model, legacy, prefix):
    state = OrderedDict((prefix + k, v) for k, v in reference.items())
    path = save(state, tmp_path / "ckpt.pt", legacy=legacy)
    assert zipfile.is_zipfile(path) is not legacy  # really the format this case claims

    loaded = read_state_dict(path)
    assert all(not k.startswith("module.") for k in loaded)
    assert_state_equal(loaded, reference)

    for p in blank_model.parameters():  # so that equality below proves the load happened
        torch.nn.init.zeros_(p)
    assert load_weights(blank_model, path) == path
    assert_state_equal(blank_model.state_dict(), reference)


def test_state_dict_under_a_state_dict_key_is_accepted(tmp_path, reference):
    path = save({"state_dict": reference, "epoch": torch.tensor(3)}, tmp_path / "wrapped.pt")
    assert_state_equal(read_state_dict(path), reference)


def test_module_prefix_is_only_stripped_when_every_key_has_it(tmp_path, reference, blank_model):
    state = OrderedDict(reference)
    state["module.fc.0.bias"] = state.pop("fc.0.bias")
    path = save(state, tmp_path / "mixed.pt")
    message = error_of(load_weights, blank_model, path)
    assert "module.fc.0.bias" in message and "fc.0.bias" in message


# --------------------------------------------------------------------------- damaged files

def _damaged(kind: str, data: bytes, legacy_data: bytes) -> bytes:
    rng = random.Random(kind)
    return {
        "random-bytes": rng.randbytes(4096),
        "random-after-pickle-header": legacy_data[:16] + rng.randbytes(4096),
        "random-after-zip-header": data[:64] + rng.randbytes(4096),
        "truncated-zip": data[:len(data) // 2],
        "truncated-legacy": legacy_data[:len(legacy_data) // 2],
        "empty": b"",
    }[kind]


DAMAGE_CAUSE = {
    "random-bytes": "not a PyTorch checkpoint",
    "random-after-pickle-header": "corrupted or truncated checkpoint",
    "random-after-zip-header": "truncated or damaged checkpoint",
    "truncated-zip": "truncated or damaged checkpoint",
    "truncated-legacy": "corrupted or truncated checkpoint",
    "empty": "empty file (0 bytes)",
}


@pytest.fixture(scope="module")
def legacy_checkpoint_bytes(reference, tmp_path_factory) -> bytes:
    buf = io.BytesIO()
    torch.save(reference, buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


@pytest.mark.parametrize("kind", list(DAMAGE_CAUSE))
def test_damaged_file_gives_one_line_error_naming_file_and_cause(
        tmp_path, kind, checkpoint_bytes, legacy_checkpoint_bytes, blank_model):
    path = str(tmp_path / f"{kind}.pt")
    with open(path, "wb") as f:
        f.write(_damaged(kind, checkpoint_bytes, legacy_checkpoint_bytes))
    before = model_snapshot(blank_model)
    message = error_of(load_weights, blank_model, path)
    assert message.startswith(path + ":"), message
    assert DAMAGE_CAUSE[kind] in message, message
    after = model_snapshot(blank_model)
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing half-loaded


def test_missing_file_and_directory(tmp_path):
    missing = str(tmp_path / "nope.pt")
    assert error_of(read_state_dict, missing) == f"weights_path {missing}: no such file"
    message = error_of(read_state_dict, str(tmp_path))
    assert str(tmp_path) in message and "is a directory" in message


def test_non_tensor_values_are_refused(tmp_path):
    path = save({"fc.0.weight": torch.zeros(2), "note": "hello"}, tmp_path / "mixed.pt")
    message = error_of(read_state_dict, path)
    assert message.startswith(path + ":") and "not tensors: note" in message
    path = save([torch.zeros(2)], tmp_path / "list.pt")
    assert "found a list" in error_of(read_state_dict, path)


# --------------------------------------------------------------------------- wrong keys / shapes

def _renamed(state):
    state["base.0.conv_s.weights"] = state.pop("base.0.conv_s.weight")
    return ["1 missing key(s): base.0.conv_s.weight", "1 unexpected key(s): base.0.conv_s.weights"]


def _removed(state):
    del state["base.15.branch3.1.bn.running_var"]
    return ["1 missing key(s): base.15.branch3.1.bn.running_var"]


def _extra(state):
    state["fc.1.weight"] = torch.zeros(3)
    return ["1 unexpected key(s): fc.1.weight"]


def _classes600(state):
    state["fc.0.weight"] = torch.zeros(600, 1024, 1, 1, 1)
    state["fc.0.bias"] = torch.zeros(600)
    return ["2 wrong shape(s) (file vs model)", "fc.0.bias (600,) vs (400,)",
            "fc.0.weight (600, 1024, 1, 1, 1) vs (400, 1024, 1, 1, 1)"]


def _many_missing(state):
    for key in [k for k in state if k.startswith("base.5.")]:
        del state[key]
    return ["missing key(s): base.5.", "more)"]


@pytest.mark.parametrize("mutate", [_renamed, _removed, _extra, _classes600, _many_missing],
                         ids=["renamed", "removed", "extra", "600-classes", "many-missing"])
def test_wrong_keys_or_shapes_name_them(tmp_path, reference, blank_model, mutate):
    state = OrderedDict(reference)
    expected = mutate(state)
    path = save(state, tmp_path / "wrong.pt")
    before = model_snapshot(blank_model)
    message = error_of(load_weights, blank_model, path)
    assert message.startswith(f"{path}: not an S3D Kinetics-400 checkpoint: "), message
    for part in expected:
        assert part in message, (part, message)
    after = model_snapshot(blank_model)
    assert all(torch.equal(before[k], after[k]) for k in before)  # strict: nothing loaded


def test_load_into_names_the_source(reference, blank_model):
    state = OrderedDict(reference)
    del state["fc.0.bias"]
    message = error_of(load_into, blank_model, state, "somewhere.pt")
    assert message == ("somewhere.pt: not an S3D Kinetics-400 checkpoint: "
                       "1 missing key(s): fc.0.bias")


# --------------------------------------------------------------------------- code in a pickle

class _Payload:
    """Unpickling this calls ``open(marker, "w")``: a file appears if the pickle's code runs."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_checkpoint_carrying_code_is_refused(tmp_path, monkeypatch, legacy):
    marker = tmp_path / "MARKER"
    path = save({"fc.0.bias": torch.zeros(400), "payload": _Payload(str(marker))},
                tmp_path / "evil.pt", legacy=legacy)
    # Even the environment switch that flips torch.load's default must not matter.
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    message = error_of(read_state_dict, path)
    assert message.startswith(path + ": refused to load it"), message
    assert "open" in message and "weights_only=True" in message, message
    assert not marker.exists()

    # Control: the payload is real, loading without weights_only runs it.
    monkeypatch.delenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    obj = torch.load(path, weights_only=False)
    obj["payload"].close()
    assert marker.exists()


# --------------------------------------------------------------------------- checksums

def test_default_checksum_is_the_spec_value():
    assert weights.DEFAULT_SHA1 == "65b27cbb412937b3dd705f4216cb822d679535df"
    assert weights.DEFAULT_URL.endswith("/S3D_kinetics400_torchified.pt")


@pytest.mark.parametrize("content", [b"", b"hello world\n", None], ids=["empty", "text", "ckpt"])
def test_git_blob_sha1_matches_git_hash_object(tmp_path, content, checkpoint_bytes):
    data = checkpoint_bytes if content is None else content
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    expected = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    assert git_blob_sha1(str(path)) == expected
    if content == b"":
        assert expected == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"  # git's empty blob
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed")
    # Outside any repository (cwd=tmp_path) and without filters: only reads the file.
    out = subprocess.run([git, "hash-object", "--no-filters", str(path)], cwd=tmp_path,
                         capture_output=True, text=True, check=True, timeout=30)
    assert out.stdout.strip() == expected


# --------------------------------------------------------------------------- download over loopback

class _Server:
    """An HTTP server on 127.0.0.1 in a thread; ``routes`` maps a path to (mode, bytes)."""

    def __init__(self):
        self.routes = {}
        self.requests = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = 10  # a stuck client cannot hold the handler thread forever

            def do_GET(self):  # noqa: N802  (http.server's naming)
                owner.requests.append(self.path)
                mode, body = owner.routes.get(self.path, ("missing", b""))
                if mode == "missing":
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                if mode == "drop":  # announce more than is sent, then hang up
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[:len(body) // 3])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format, *args):  # noqa: A002  keep test output quiet
                return

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()


@pytest.fixture(scope="module")
def server(checkpoint_bytes):
    srv = _Server()
    srv.routes["/good.pt"] = ("ok", checkpoint_bytes)
    srv.routes["/drop.pt"] = ("drop", checkpoint_bytes)
    yield srv
    srv.close()


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """torch's hub cache redirected into tmp_path (via TORCH_HOME): the checkpoints folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    assert weights.default_checkpoint_path() == str(folder / weights.DEFAULT_FILENAME), \
        "torch.hub.set_dir was called elsewhere: TORCH_HOME is ignored"
    return folder


def leftovers(folder) -> list:
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def test_download_verifies_and_does_not_download_again(server, hub, random_checkpoint):
    sha1 = git_blob_sha1(random_checkpoint)
    dest = str(hub / "ckpt.pt")
    start = len(server.requests)
    assert download(server.base + "/good.pt", dest, sha1, timeout=30) == dest
    assert git_blob_sha1(dest) == sha1
    assert leftovers(hub) == ["ckpt.pt"]  # no .part file beside it
    mtime = os.stat(dest).st_mtime_ns
    assert download(server.base + "/good.pt", dest, sha1, timeout=30) == dest
    assert server.requests[start:] == ["/good.pt"]  # one request for two calls
    assert os.stat(dest).st_mtime_ns == mtime


def test_damaged_cached_file_is_downloaded_again(server, hub, random_checkpoint):
    sha1 = git_blob_sha1(random_checkpoint)
    dest = hub / "ckpt.pt"
    hub.mkdir(parents=True)
    dest.write_bytes(b"half a file")
    start = len(server.requests)
    download(server.base + "/good.pt", str(dest), sha1, timeout=30)
    assert server.requests[start:] == ["/good.pt"]
    assert git_blob_sha1(str(dest)) == sha1 and leftovers(hub) == ["ckpt.pt"]


def test_bad_checksum_names_both_and_leaves_nothing(server, hub, random_checkpoint):
    wrong = "0123456789abcdef0123456789abcdef01234567"
    message = error_of(download, server.base + "/good.pt", str(hub / "ckpt.pt"), wrong, 30)
    assert git_blob_sha1(random_checkpoint) in message and wrong in message
    assert server.base + "/good.pt" in message
    assert leftovers(hub) == []


def test_connection_refused_tells_to_pass_weights_path(hub):
    with socket.socket() as sock:  # bound, never listening: connecting is refused
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/S3D_kinetics400_torchified.pt"
        message = error_of(download, url, str(hub / "ckpt.pt"), weights.DEFAULT_SHA1, 10)
    assert url in message and "refused" in message.lower()
    assert "pass weights_path=" in message
    assert leftovers(hub) == []


def test_unwritable_cache_is_one_error(server, hub):
    hub.mkdir(parents=True)
    blocker = hub / "not_a_folder"
    blocker.write_text("a file where the cache folder should be")
    message = error_of(download, server.base + "/good.pt", str(blocker / "ckpt.pt"),
                       weights.DEFAULT_SHA1, 10)
    assert message.startswith(f"cannot write the default S3D weights to {blocker} (")
    assert "TORCH_HOME" in message and "weights_path=" in message
    assert leftovers(hub) == ["not_a_folder"]


def test_http_error_is_reported(server, hub):
    message = error_of(download, server.base + "/nothing.pt", str(hub / "ckpt.pt"),
                       weights.DEFAULT_SHA1, 10)
    assert "HTTP 404" in message and "pass weights_path=" in message
    assert leftovers(hub) == []


def test_transfer_cut_short_leaves_nothing(server, hub, checkpoint_bytes):
    message = error_of(download, server.base + "/drop.pt", str(hub / "ckpt.pt"),
                       weights.DEFAULT_SHA1, 30)
    assert server.base + "/drop.pt" in message and "pass weights_path=" in message
    assert f"of {len(checkpoint_bytes)} bytes" in message, message
    assert leftovers(hub) == []


def test_default_weights_end_to_end(server, hub, monkeypatch, random_checkpoint, reference,
                                    blank_model):
    """``weights_path=None``: the default URL into the hub cache, verified, loaded into S3D."""
    monkeypatch.setattr(weights, "DEFAULT_URL", server.base + "/good.pt")
    monkeypatch.setattr(weights, "DEFAULT_SHA1", git_blob_sha1(random_checkpoint))
    start = len(server.requests)
    path = load_weights(blank_model, None)
    assert path == weights.default_checkpoint_path() == str(hub / weights.DEFAULT_FILENAME)
    assert_state_equal(blank_model.state_dict(), reference)
    again = S3D()  # the cached, verified file is used from then on: no second download
    assert load_weights(again, None) == path and load_weights(again, "") == path
    assert server.requests[start:] == ["/good.pt"]


def test_default_weights_unreachable_tells_to_pass_weights_path(hub, monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        monkeypatch.setattr(weights, "DEFAULT_URL",
                            f"http://127.0.0.1:{sock.getsockname()[1]}/x.pt")
        message = error_of(load_weights, S3D(), None)
    assert "pass weights_path=" in message and weights.DEFAULT_FILENAME in message
    assert leftovers(hub) == []


# --------------------------------------------------------------------------- command line

def test_cli_bad_weights_is_one_error_line(tmp_path, repo_root):
    bad = tmp_path / "bad weights.pt"
    bad.write_bytes(random.Random(1).randbytes(2048))
    work = tmp_path / "cwd"
    work.mkdir()
    proc = run_cli([f"video_paths={SAMPLE}", f"weights_path='{bad}'", "device=cpu"],
                   cwd=str(work), timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and str(bad) in lines[0], lines[0]
    assert "not a PyTorch checkpoint" in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (work / "outputs").exists() and not (work / ".hydra").exists()
    assert not any(p.name.endswith(".log") for p in work.iterdir())
