"""The MIL-NCE model's files: the checkpoint (strict, weights_only, both sides), the word list
(read without running code), the default downloads (over loopback) and their SHA-256."""
import functools
import hashlib
import http.server
import logging
import os
import random
import socket
import threading
from collections import OrderedDict

import numpy as np
import pytest
import torch

import howto100m_cases as cases
import models.s3d_howto100m.weights as weights
from batch_helpers import run_cli
from conftest import SAMPLE
from models.s3d.random_weights import random_s3d
from models.s3d_howto100m import ExtractS3DHowTo100M
from models.s3d_howto100m.network import S3DG
from models.s3d_howto100m.random_weights import random_state
from models.s3d_howto100m.text import NUM_EMBEDDINGS, SentenceEncoder
from models.s3d_howto100m.words import read_word_list
from utils.errors import WeightsError

HEAD = "not an S3D HowTo100M (MIL-NCE) checkpoint: "


@pytest.fixture(scope="module")
def state():
    return random_state(0)


@pytest.fixture(scope="module")
def files(tmp_path_factory, state):
    folder = tmp_path_factory.mktemp("howto100m_files")
    path = folder / "s3d_howto100m.pth"
    torch.save(state, path)
    return {"weights": str(path), "dict": cases.save_words(str(folder / "s3d_dict.npy"))}


def error_of(func, *args, **kwargs) -> str:
    with pytest.raises(WeightsError) as info:
        func(*args, **kwargs)
    message = str(info.value)
    assert message and "\n" not in message and len(message) < 400, repr(message)
    return message


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def unchanged(before, module) -> bool:
    return all(torch.equal(before[k], v) for k, v in module.state_dict().items())


# --------------------------------------------------------------------------- the checkpoint

def test_checkpoint_loads_both_sides_strictly(files, state):
    video, text = S3DG(), SentenceEncoder()
    weights.load_checkpoint(files["weights"], video=video, text=text)
    for key, value in video.state_dict().items():
        assert torch.equal(value, state[key]), key
    for key, value in text.state_dict().items():
        assert torch.equal(value, state[weights.TEXT_PREFIX + key]), key


def test_checkpoint_without_batchnorm_counters_loads(state):
    # BatchNorm's num_batches_tracked does not take part in inference; PyTorch itself accepts
    # state dicts without it
    video = S3DG()
    weights.load_state(OrderedDict((k, v) for k, v in state.items()
                                   if not k.endswith("num_batches_tracked")), "x.pth", video=video)
    assert torch.equal(video.conv1.bn1.running_var, state["conv1.bn1.running_var"])


def _drop_video_key(state):
    del state["mixed_4d.gating_b2.fc.bias"]
    return ["1 missing key(s): mixed_4d.gating_b2.fc.bias"]


def _drop_text_key(state):
    del state["text_module.fc2.bias"]
    return ["1 missing key(s): text_module.fc2.bias"]


def _extra_key(state):
    state["fc2.weight"] = torch.zeros(3)
    return ["1 unexpected key(s): fc2.weight"]


def _wrong_shape(state):
    state["fc.weight"] = torch.zeros(400, 1024)
    return ["1 wrong shape(s) (file vs model): fc.weight (400, 1024) vs (512, 1024)"]


def _small_word_table(state):
    state["text_module.word_embd.weight"] = torch.zeros(1000, 300)
    return ["text_module.word_embd.weight (1000, 300) vs (66250, 300)"]


@pytest.mark.parametrize("mutate", [_drop_video_key, _drop_text_key, _extra_key, _wrong_shape,
                                    _small_word_table],
                         ids=["video-key", "text-key", "extra", "shape", "word-table"])
def test_wrong_checkpoint_names_what_is_wrong(state, mutate):
    bad = OrderedDict(state)
    expected = mutate(bad)
    path = "/data/bad.pth"  # the state as read from there (reading is models.s3d.weights')
    video = S3DG()
    before = snapshot(video)
    message = error_of(weights.load_state, bad, path, video=video)
    assert message.startswith(f"{path}: {HEAD}"), message
    for part in expected:
        assert part in message, (part, message)
    assert unchanged(before, video)  # strict: nothing half-loaded


def test_the_kinetics_checkpoint_is_refused_in_one_line(tmp_path):
    path = str(tmp_path / "S3D_kinetics400_torchified.pt")
    torch.save(random_s3d(0).state_dict(), path)
    message = error_of(weights.load_checkpoint, path, video=S3DG())
    assert message == (f"{path}: {HEAD}this is the Kinetics-400 S3D's checkpoint (keys base.*); "
                       "use it with feature_type=s3d")


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: a file appears if the pickle's code runs."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_checkpoint_carrying_code_is_refused(tmp_path, state):
    marker = tmp_path / "MARKER"
    path = str(tmp_path / "evil.pth")
    torch.save({"fc.bias": state["fc.bias"], "payload": _Payload(str(marker))}, path)
    message = error_of(weights.load_checkpoint, path, video=S3DG())
    assert message.startswith(f"{path}: refused to load it") and "weights_only=True" in message
    assert not marker.exists()


# --------------------------------------------------------------------------- the word list

def test_word_list_as_unicode_or_object_array(tmp_path):
    plain = cases.save_words(str(tmp_path / "unicode.npy"))
    objects = cases.save_words(str(tmp_path / "objects.npy"), as_objects=True)
    assert np.load(plain, allow_pickle=False).dtype.kind == "U"
    with pytest.raises(ValueError):  # really pickled: numpy refuses it without allow_pickle
        np.load(objects, allow_pickle=False)
    assert read_word_list(plain) == cases.WORDS
    assert read_word_list(objects) == cases.WORDS


def test_word_list_carrying_code_is_refused(tmp_path):
    marker = tmp_path / "MARKER"
    path = str(tmp_path / "evil.npy")
    np.save(path, np.array(["cut", _Payload(str(marker))], dtype=object), allow_pickle=True)
    message = error_of(read_word_list, path)
    assert message == (f"{path}: refused to load it: it holds io.open, which is not a "
                       "numpy array or string and could run code")
    assert not marker.exists()
    # control: the payload is real, numpy's own pickle loading runs it
    np.load(path, allow_pickle=True)
    assert marker.exists()


def _write(path, array, pickle=False):
    np.save(path, array, allow_pickle=pickle)
    return str(path)


@pytest.mark.parametrize("make,cause", [
    (lambda p: _write(p, np.array([["cut", "tomato"]])), "expected a 1-D array of words"),
    (lambda p: _write(p, np.array([], dtype="<U3")), "expected a 1-D array of words"),
    (lambda p: _write(p, np.arange(5)), "expected strings, found dtype int64"),
    (lambda p: _write(p, np.array(["cut", 3], dtype=object), True), "expected strings, found a int"),
    (lambda p: p.write_bytes(random.Random(0).randbytes(300)) and str(p), "not a word list"),
    (lambda p: p.write_bytes(open(_write(p, np.array(cases.WORDS, dtype=object), True),
                                  "rb").read()[:200]) and str(p), "not a word list"),
], ids=["2-D", "empty", "ints", "object-ints", "random-bytes", "truncated-pickle"])
def test_bad_word_list_is_one_line(tmp_path, make, cause):
    path = make(tmp_path / "bad.npy")
    message = error_of(read_word_list, path)
    assert message.startswith(path + ": ") and cause in message, message


def test_missing_word_list_and_folder(tmp_path):
    missing = str(tmp_path / "nope.npy")
    assert error_of(read_word_list, missing) == f"dict_path {missing}: no such file"
    assert "is a directory" in error_of(read_word_list, str(tmp_path))


def test_word_list_longer_than_the_word_table(tmp_path):
    path = _write(tmp_path / "long.npy", np.array([f"w{i}" for i in range(NUM_EMBEDDINGS)]))
    message = error_of(weights.vocabulary_of, path)
    assert message == (f"{path}: not the model's word list: {NUM_EMBEDDINGS} words do not fit "
                       f"the model's word table of {NUM_EMBEDDINGS - 1} words")


# --------------------------------------------------------------------------- default downloads

@pytest.fixture
def server(files):
    """An HTTP server on 127.0.0.1 serving the two files' folder; ``requests`` lists paths."""
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            requests.append(self.path)
            super().do_GET()

        def log_message(self, format, *args):  # noqa: A002 keep test output quiet
            return

    folder = os.path.dirname(files["weights"])
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                            functools.partial(Handler, directory=folder))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.requests = requests
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


def sha256_file(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_default_files_download_once_and_their_sha256_is_recorded(server, hub, monkeypatch,
                                                                   files, caplog):
    monkeypatch.setattr(weights, "WEIGHTS_URL", server.base + "s3d_howto100m.pth")
    monkeypatch.setattr(weights, "DICT_URL", server.base + "s3d_dict.npy")
    with caplog.at_level(logging.INFO, logger=weights.__name__):
        extractor = ExtractS3DHowTo100M(device="cpu", stack_size=2)
    assert sorted(os.listdir(hub)) == ["s3d_dict.npy", "s3d_howto100m.pth"]
    assert extractor.weights_path == str(hub / "s3d_howto100m.pth")
    assert extractor.weights == {
        "source": server.base + "s3d_howto100m.pth", "sha256": sha256_file(files["weights"]),
        "dict_source": server.base + "s3d_dict.npy", "dict_sha256": sha256_file(files["dict"])}
    logged = caplog.text
    assert extractor.weights["sha256"] in logged and extractor.weights["dict_sha256"] in logged
    assert sorted(server.requests) == ["/s3d_dict.npy", "/s3d_howto100m.pth"]
    # the cached files are used from then on; the provenance stays the download's
    again = weights.resolve_weights(None), weights.resolve_dict(None)
    assert len(server.requests) == 2
    assert [(f.sha256, f.source) for f in again] == [
        (extractor.weights["sha256"], extractor.weights["source"]),
        (extractor.weights["dict_sha256"], extractor.weights["dict_source"])]


def test_local_files_are_their_own_source(files):
    extractor = ExtractS3DHowTo100M(device="cpu", stack_size=2, weights_path=files["weights"],
                                    dict_path=files["dict"])
    assert extractor.weights == {
        "source": files["weights"], "sha256": sha256_file(files["weights"]),
        "dict_source": files["dict"], "dict_sha256": sha256_file(files["dict"])}


@pytest.mark.parametrize("which,option,filename", [
    ("WEIGHTS_URL", "weights_path", "s3d_howto100m.pth"),
    ("DICT_URL", "dict_path", "s3d_dict.npy")])
def test_unreachable_default_tells_which_option_to_pass(hub, monkeypatch, files, which, option,
                                                        filename):
    with socket.socket() as sock:  # bound, never listening: connecting is refused
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/{filename}"
        monkeypatch.setattr(weights, which, url)
        given = {"weights_path": files["weights"], "dict_path": files["dict"]}
        del given[option]
        message = error_of(ExtractS3DHowTo100M, device="cpu", stack_size=2, **given)
    assert message.startswith("cannot download the default S3D HowTo100M ")
    assert url in message and f"get {filename} elsewhere and pass {option}=/path/to/it" in message
    assert not hub.exists() or os.listdir(hub) == []


# --------------------------------------------------------------------------- command line

def test_cli_wrong_checkpoint_is_one_error_line(tmp_path, files):
    kinetics = tmp_path / "kinetics.pt"
    torch.save(random_s3d(0).state_dict(), kinetics)
    proc = run_cli(["feature_type=s3d_howto100m", f"video_paths={SAMPLE}", "device=cpu",
                    f"weights_path={kinetics}", f"dict_path={files['dict']}"],
                   cwd=str(tmp_path), timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"error: {kinetics}: {HEAD}this is the Kinetics-400 S3D's checkpoint "
                     "(keys base.*); use it with feature_type=s3d"], proc.stderr
    assert sorted(os.listdir(tmp_path)) == ["kinetics.pt"]


def test_cli_odd_stack_size_is_one_error_line(tmp_path):
    proc = run_cli(["feature_type=s3d_howto100m", f"video_paths={SAMPLE}", "stack_size=31"],
                   cwd=str(tmp_path), timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: stack_size: 31 is odd; s3d_howto100m's space-to-depth stem takes frames in "
        "pairs: expected an even integer >= 2"]
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- options

@pytest.mark.parametrize("overrides,message", [
    (["dict_path=s3d_dict.npy"],
     "dict_path: s3d reads no word list; expected null (dict_path is for s3d_howto100m)"),
    (["feature_type=s3d_howto100m", "show_pred=true"],
     "show_pred: s3d_howto100m has no classes to show; expected false (search its outputs by "
     "text: python -m models.s3d_howto100m.search)"),
    (["feature_type=s3d_howto100m", "preprocess=imagenet"],
     "preprocess: Invalid value 'imagenet', expected one of [kylemin, video_features, howto100m]"),
])
def test_options_that_do_not_fit_the_network_are_one_line(overrides, message):
    from utils.run.cli import preflight

    assert preflight(["video_paths=a.mp4", *overrides]) == message


def test_network_defaults_on_the_command_line():
    from omegaconf import OmegaConf

    from utils.run.cli import compose_config

    cfg = OmegaConf.to_object(compose_config(["feature_type=s3d_howto100m", "video_paths=a.mp4"]))
    assert (cfg.stack_size, cfg.step_size, cfg.extraction_fps) == (32, 32, 10.0)
    assert (cfg.preprocess, cfg.weights_path, cfg.dict_path) == ("howto100m", None, None)
    assert preflight_ok(["feature_type=s3d_howto100m", "video_paths=a.mp4", "stack_size=2"])


def preflight_ok(overrides) -> bool:
    from utils.run.cli import preflight

    return preflight(overrides) is None
