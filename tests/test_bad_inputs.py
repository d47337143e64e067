"""Issue 4, point 2: every kind of bad or unusual input, each in a file made here.

One batch (in-process, ``utils.run.batch_run.run``) holds them all, between good videos: each
test asserts its input's exact stage (or, for inputs that must work, features equal to
those computed from the FFmpeg CLI's own frames) and that the good videos of the same batch
still give correct outputs.  Paths with spaces, quotes and non-ASCII characters also go
through the real command line with ``file_with_video_paths``.
"""
import logging
import os
import random
import shutil
from dataclasses import dataclass, field
from typing import Dict, List

import av
import numpy as np
import pytest

from batch_helpers import (KEYS, STACK, assert_same_outputs, cli_args, cli_reference, load_set,
                           make_cfg, make_extractor, read_jsonl, rel_err, run_cli)
from models.s3d.spec import SPEC as S3D
from utils.run.batch_run import run
from utils.files import find_temporaries
from utils.outputs.naming import output_names
from videos import ffmpeg, synth

WEIRD = "it's a \"quoted\" vidéo — 日本 (1).mp4"


def _randomise(path: str, out: str, lo: float, hi: float, seed: int = 1) -> str:
    """Copy ``path`` with the bytes of [lo, hi) of its ``mdat`` payload replaced by noise."""
    data = bytearray(open(path, "rb").read())
    start = data.find(b"mdat") + 4
    size = len(data) - start
    rng = random.Random(seed)
    for k in range(start + int(size * lo), start + int(size * hi)):
        data[k] = rng.randrange(256)
    with open(out, "wb") as f:
        f.write(bytes(data))
    return out


def _truncate(path: str, out: str, fraction: float = 0.5, after: bytes = b"") -> str:
    """Copy the first ``fraction`` of ``path`` (of what follows the first ``after``, if given)."""
    data = open(path, "rb").read()
    start = data.find(after) + len(after) if after else 0
    with open(out, "wb") as f:
        f.write(data[:start + int((len(data) - start) * fraction)])
    return out


def make_inputs(d: str) -> Dict[str, str]:
    """Every input kind, by name -> path (0.6 s, 64x48 unless the kind needs otherwise)."""
    j = lambda name: os.path.join(d, name)  # noqa: E731
    p: Dict[str, str] = {}
    p["good"] = synth(j("good.mp4"), seconds=0.6, size="64x48")
    # inputs that must fail, with their stage
    p["missing"] = j("missing.mp4")
    p["directory"] = j("folder.mp4")
    os.mkdir(p["directory"])
    p["empty"] = j("empty.mp4")
    open(p["empty"], "wb").close()
    p["text"] = j("notes.mp4")
    with open(p["text"], "w") as f:
        f.write("this is a text file, not a video\n" * 20)
    full = synth(j("src_moov_at_end.mp4.src"), seconds=2.0, size="64x48", extra=["-f", "mp4"])
    p["truncated_moov_at_end"] = _truncate(full, j("truncated_moov_at_end.mp4"))
    p["audio_only"] = j("audio_only.mp4")
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac", p["audio_only"])
    p["shorter_than_stack"] = synth(j("short.mp4"), seconds=0.4, size="64x48")  # 10 frames
    p["one_frame"] = synth(j("one_frame.mp4"), seconds=0.6, size="64x48", extra=["-frames:v", "1"])
    gop = synth(j("src_gop5.mp4.src"), seconds=1.2, size="64x48",
                extra=["-g", "5", "-bf", "0", "-movflags", "+faststart", "-f", "mp4"])
    p["noise_most"] = _randomise(gop, j("noise_most.mp4"), 0.2, 0.95)
    # inputs that must work
    p["noise_middle"] = _randomise(gop, j("noise_middle.mp4"), 0.75, 0.85)
    fast = synth(j("src_faststart.mp4.src"), seconds=2.4, size="64x48",
                 extra=["-movflags", "+faststart", "-f", "mp4"])
    p["truncated_faststart"] = _truncate(fast, j("truncated_faststart.mp4"), 0.7, after=b"mdat")
    p["odd_size"] = synth(j("odd_97x223.mkv"), seconds=0.6, size="97x223", codec="ffv1",
                          source="testsrc")
    p["extreme_aspect"] = synth(j("wide_2000x100.mp4"), seconds=0.6, size="2000x100")
    p["rotated"] = j("rotated_phone.mp4")  # the good video's packets, shown turned by 90 degrees
    ffmpeg("-display_rotation", "90", "-i", p["good"], "-c", "copy", p["rotated"])
    p["variable_frame_rate"] = j("vfr.mp4")
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=50:duration=0.8",
           "-vf", r"select='not(mod(n\,3))+between(n\,15\,24)'", "-fps_mode", "vfr",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", p["variable_frame_rate"])
    p["10bit"] = synth(j("yuv420p10le.mp4"), seconds=0.6, size="64x48", pix_fmt="yuv420p10le")
    p["gray"] = synth(j("gray.mkv"), seconds=0.6, size="64x48", codec="ffv1", pix_fmt="gray")
    p["mkv"] = synth(j("container_mkv.mkv"), seconds=0.6, size="64x48")
    p["webm"] = synth(j("container_webm.webm"), seconds=0.6, size="64x48", codec="libvpx-vp9")
    p["avi"] = synth(j("container_avi.avi"), seconds=0.6, size="64x48", codec="mpeg4")
    p["mov"] = synth(j("container_mov.mov"), seconds=0.6, size="64x48")
    os.mkdir(j("dir with spaces"))
    p["odd_path_name"] = synth(os.path.join(d, "dir with spaces", WEIRD), seconds=0.6,
                               size="48x64", extra=["-f", "mp4"])
    return p


# name -> (stage, words the message must contain)
FAILING = {
    "missing": ("open", ["no such file"]),
    "directory": ("open", ["directory"]),
    "empty": ("open", ["empty", "0 bytes"]),
    "text": ("open", ["not a readable video (Invalid data found when processing input)"]),
    "truncated_moov_at_end": ("open", ["not a readable video"]),
    "audio_only": ("open", ["no video stream"]),
    "shorter_than_stack": ("too_short", ["10 frames", f"stack_size={STACK}"]),
    "one_frame": ("too_short", ["1 frame at", f"stack_size={STACK}"]),
    "noise_most": ("decode", ["corrupt"]),
}
# name -> upright (displayed) size, for the FFmpeg CLI reference
WORKING = {
    "odd_size": (97, 223), "extreme_aspect": (2000, 100), "rotated": (48, 64),
    "variable_frame_rate": (64, 48), "10bit": (64, 48), "gray": (64, 48), "mkv": (64, 48),
    "webm": (64, 48), "avi": (64, 48), "mov": (64, 48), "odd_path_name": (48, 64),
}


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: List[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@dataclass
class Batch:
    inputs: Dict[str, str]
    root: str
    report: object
    failed: Dict[str, dict]
    manifest: Dict[str, List[dict]]
    records: List[logging.LogRecord] = field(default_factory=list)

    def lines(self, level=logging.WARNING) -> List[str]:
        return [r.getMessage() for r in self.records if r.levelno >= level]




@pytest.fixture(scope="module")
def batch(tmp_path_factory, extractor) -> Batch:
    d = str(tmp_path_factory.mktemp("inputs"))
    inputs = make_inputs(d)
    order = ["good"] + [k for k in inputs if k != "good"]
    listed = [inputs[k] for k in order]
    # the good video twice more: as is, and through a detour that names the same file
    listed += [inputs["good"], os.path.join(d, "dir with spaces", "..", "good.mp4")]
    out = str(tmp_path_factory.mktemp("out"))
    handler = _Lines()
    root_logger = logging.getLogger()
    root_logger.addHandler(handler)
    try:
        report = run(make_cfg(listed, out), extractor=extractor)
    finally:
        root_logger.removeHandler(handler)
    root = os.path.join(out, "s3d")
    failed = {r["path"]: r for r in read_jsonl(os.path.join(root, "failed.jsonl"))}
    manifest: Dict[str, List[dict]] = {}
    for r in read_jsonl(os.path.join(root, "manifest-0-of-1.jsonl")):
        manifest.setdefault(r["path"], []).append(r)
    return Batch(inputs, root, report, failed, manifest, handler.records)


@pytest.fixture(scope="module")
def good_direct(batch, random_model):
    """The good video extracted directly, outside any batch."""
    return make_extractor(random_model).extract(batch.inputs["good"])


def _stem(path: str) -> str:
    """The output name the run gives ``path`` (flat layout)."""
    return output_names([path], S3D.keys)[0]


def check_good_video(batch: Batch, good_direct) -> None:
    """The good video of the batch has complete outputs equal to a direct extraction."""
    good = batch.inputs["good"]
    assert [r["status"] for r in batch.manifest[good]] == ["done"]
    assert_same_outputs(load_set(batch.root, "good"), good_direct)


@pytest.mark.parametrize("kind", list(FAILING))
def test_bad_input_fails_with_its_stage(batch, good_direct, kind):
    path = batch.inputs[kind]
    stage, words = FAILING[kind]
    record = batch.failed[path]
    assert record["stage"] == stage, record
    for word in words:
        assert word in record["message"], record
    # exactly one FAILED line for it, in the documented form, without a traceback
    lines = [r for r in batch.records if r.getMessage().startswith(f"FAILED {path}: ")]
    assert len(lines) == 1
    assert lines[0].getMessage() == f"FAILED {path}: {stage}: {record['message']}"
    assert "\n" not in lines[0].getMessage() and lines[0].exc_info is None
    assert not any(os.path.exists(os.path.join(batch.root, f"{_stem(path)}_{k}.npy"))
                   for k in KEYS)
    check_good_video(batch, good_direct)


@pytest.mark.parametrize("kind", list(WORKING))
def test_unusual_input_works(batch, good_direct, random_model, kind):
    """Features equal those computed from the FFmpeg CLI's frames (rotation, fps=25 included)."""
    path = batch.inputs[kind]
    assert path not in batch.failed, batch.failed.get(path)
    assert [r["status"] for r in batch.manifest[path]] == ["done"]
    got = load_set(batch.root, _stem(path))
    width, height = WORKING[kind]
    want = cli_reference(path, random_model, width, height)
    assert got["s3d"].shape == want.shape and got["s3d"].shape[0] >= 1
    assert rel_err(got["s3d"], want) < 1e-4
    assert float(got["fps"]) == 25.0
    n = len(want)
    np.testing.assert_allclose(got["timestamps_ms"],
                               np.stack([np.arange(n) * STACK * 40.0,
                                         (np.arange(n) + 1) * STACK * 40.0], axis=1))
    check_good_video(batch, good_direct)


def test_rotated_video_is_upright(batch, good_direct):
    """Same packets as the good video, turned: features differ, so rotation was applied."""
    got = load_set(batch.root, "rotated_phone")["s3d"]
    assert got.shape == good_direct["s3d"].shape
    assert rel_err(got, good_direct["s3d"]) > 1e-2


def test_variable_frame_rate_input_is_variable(batch):
    """The file really has irregular frame intervals (else the test proves nothing)."""
    with av.open(batch.inputs["variable_frame_rate"]) as c:
        pts = [f.pts for f in c.decode(video=0)]
    assert len(set(np.diff(pts))) > 1


def test_corrupt_middle_decodes_what_decodes(batch, good_direct, random_model):
    """Noise in the middle: outputs, a warning, and the stack before the damage is the clean one."""
    path = batch.inputs["noise_middle"]
    assert path not in batch.failed, batch.failed.get(path)
    [record] = batch.manifest[path]
    assert record["status"] == "done" and record["Tv"] == 2  # 30 frames at 25 fps
    assert any("corrupt packets" in w for w in record.get("warnings", [])), record
    clean = os.path.join(os.path.dirname(path), "src_gop5.mp4.src")
    want = cli_reference(clean, random_model, 64, 48, max_stacks=1)
    got = load_set(batch.root, "noise_middle")["s3d"]
    assert rel_err(got[:1], want) < 1e-4
    check_good_video(batch, good_direct)


def test_truncated_faststart_mp4_keeps_the_decoded_part(batch, good_direct, random_model):
    """A cut file with its index first: features of the part that is there, and a warning.

    Its stacks equal the first stacks of the intact file; the log and the manifest say it
    stops early, so the user can tell it from a complete video.
    """
    path = batch.inputs["truncated_faststart"]
    assert path not in batch.failed, batch.failed.get(path)
    [record] = batch.manifest[path]
    assert any("truncated" in w for w in record.get("warnings", [])), record
    assert any(path in line and "truncated" in line for line in batch.lines())
    got = load_set(batch.root, "truncated_faststart")
    full = os.path.join(os.path.dirname(path), "src_faststart.mp4.src")
    want = cli_reference(full, random_model, 64, 48, max_stacks=len(got["s3d"]))
    assert 1 <= len(got["s3d"]) < (60 - STACK) // STACK + 1  # the intact file: 60 frames
    assert rel_err(got["s3d"], want) < 1e-4
    assert got["timestamps_ms"][0].tolist() == [0.0, STACK * 40.0]
    check_good_video(batch, good_direct)


def test_path_listed_twice_is_extracted_once(batch, good_direct):
    good = batch.inputs["good"]
    assert len(batch.manifest[good]) == 1
    assert any("listed more than once" in line and good in line for line in batch.lines())
    check_good_video(batch, good_direct)


def test_batch_report_counts(batch):
    r = batch.report
    assert r.done == 1 + len(WORKING) + 2 and r.skipped == 0  # + noise_middle, truncated_faststart
    assert dict(r.failed) == {"open": 6, "too_short": 2, "decode": 1}
    assert len(batch.failed) == len(FAILING)


def test_cli_paths_with_spaces_quotes_and_non_ascii(batch, random_checkpoint, tmp_path):
    """The real command line, the odd name in a list file, twice (once by another spelling)."""
    odd = batch.inputs["odd_path_name"]
    detour = os.path.join(os.path.dirname(odd), "..", "dir with spaces", os.path.basename(odd))
    listing = tmp_path / "list of videos.txt"
    listing.write_text(f"{odd}\n\n{detour}\n", encoding="utf-8")
    out = tmp_path / "out dir é"
    proc = run_cli(cli_args(random_checkpoint, str(out), file_with_video_paths=str(listing)),
                   cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "listed more than once" in proc.stderr
    root = os.path.join(str(out), "s3d")
    assert sorted(os.listdir(root)) == sorted(
        [f"{_stem(odd)}_{k}.npy" for k in KEYS]
        + ["failed.jsonl", "manifest-0-of-1.jsonl", "runs"])
    assert_same_outputs(load_set(root, _stem(odd)), load_set(batch.root, _stem(odd)))
    [record] = read_jsonl(os.path.join(root, "manifest-0-of-1.jsonl"))
    assert record["path"] == odd and record["status"] == "done"


def test_unwritable_output_fails_at_write_stage(batch, extractor, tmp_path):
    """Something in the way of an output file: stage ``write``, and the run goes on."""
    root = tmp_path / "out" / "s3d"
    blocker = root / "good_s3d.npy"
    blocker.mkdir(parents=True)  # a directory where the features file should go
    for key in KEYS:  # a second video, already done: skipped
        shutil.copy(os.path.join(batch.root, f"container_mov_{key}.npy"), root)
    report = run(make_cfg([batch.inputs["good"], batch.inputs["mov"]], str(tmp_path / "out")),
                 extractor=extractor)
    failed = read_jsonl(str(root / "failed.jsonl"))
    assert [(r["path"], r["stage"]) for r in failed] == [(batch.inputs["good"], "write")]
    assert str(blocker) in failed[0]["message"]
    assert (report.skipped, report.done, dict(report.failed)) == (1, 0, {"write": 1})
    assert find_temporaries(str(root)) == {}
    assert not os.path.exists(root / "good_timestamps_ms.npy")
