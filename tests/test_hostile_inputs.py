"""Issue 14, "Hostile inputs": each attack made here, run through the real command line.

Files are crafted with the FFmpeg CLI (tests/videos.py) or remuxed with PyAV; features are
checked against features computed from the FFmpeg CLI's own frames (batch_helpers.cli_reference).
"""
import os
import re
import resource
import shutil
import signal
import stat
import subprocess
import sys

import av
import numpy as np
import pytest

from batch_helpers import (KEYS, MAIN, STACK, cli_args, cli_reference, load_set,
                           output_files_under, read_jsonl, rel_err, run_cli)
from models.s3d.spec import SPEC as S3D
from utils.files import find_temporaries, fit_name, temporary_name
from utils.outputs.naming import output_files
from utils.video.preprocess import KyleminFrames
from videos import ffmpeg, synth

GiB = 2**30


def _manifest(out: str):
    return {r["path"]: r for r in read_jsonl(os.path.join(out, "s3d", "manifest-0-of-1.jsonl"))}


def _failed(out: str):
    return {r["path"]: r for r in read_jsonl(os.path.join(out, "s3d", "failed.jsonl"))}


def _error_lines(proc: subprocess.CompletedProcess):
    return [ln for ln in proc.stderr.splitlines() if ln.strip()]


def _stacks_ms(n: int, fps: float, stack: int = STACK) -> np.ndarray:
    """``[start, end)`` of ``n`` stacks cut at ``fps``, one frame every 1000 / fps ms."""
    i = np.arange(n, dtype=np.float64)
    return np.stack([i * stack * 1000 / fps, (i + 1) * stack * 1000 / fps], axis=1)


# -- 1. memory that depends on frame shape ----------------------------------------------------
def _memory_cap(limit: int):
    """For preexec_fn: cap the child's data (heap and anonymous mappings) at ``limit`` bytes."""
    def cap():
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    return cap


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    d = tmp_path_factory.mktemp("shapes")
    found = {
        # 15 frames each: one stack of 13
        "wide": synth(str(d / "wide_16384x16.mp4"), seconds=0.6, size="16384x16"),
        "too_wide": synth(str(d / "too_wide_16384x2.mp4"), seconds=0.6, size="16384x2"),
        "too_big": synth(str(d / "too_big_8200x8200.mp4"), seconds=0.04, size="8200x8200",
                         source="color", extra=["-preset", "ultrafast"]),
        "good": synth(str(d / "good.mp4"), seconds=0.6, size="64x48"),
    }
    # raw H.264 joined with cat: its header (the first SPS) says 64x48, the second 8200x8200
    small = synth(str(d / "small.h264"), seconds=0.6, size="64x48", extra=["-f", "h264"])
    understated = d / "understated_64x48_then_8200x8200.h264"
    with open(small, "rb") as f:
        understated.write_bytes(f.read() + ffmpeg("-i", found["too_big"], "-c", "copy",
                                                  "-f", "h264", "-"))
    found["understated"] = str(understated)
    return found


def test_cropped_frames_own_their_memory(shapes):
    """A 16384x16 frame is resized to 229376x224 before its crop: the crop handed on must not
    keep that whole resized frame alive (a stack of them: stack_size x 154 MB)."""
    preset = KyleminFrames()
    with av.open(shapes["wide"]) as c:
        frame = next(c.decode(video=0))
        pixels = preset(frame)
    assert pixels.shape == (224, 224, 3) and pixels.flags["C_CONTIGUOUS"]
    assert pixels.base is None or pixels.base.nbytes == pixels.nbytes


def test_frame_shape_does_not_decide_memory(shapes, random_checkpoint, random_model, tmp_path):
    """Under a 2 GiB cap on the process's data: the 16384x16 video gives its features (the
    FFmpeg CLI's), the 16384x2 one (1.2 GB a resized frame), the 8200x8200 one and the one
    whose header says 64x48 but whose stream goes on at 8200x8200 fail at decode naming the
    size limit, and the good video decoded meanwhile is not harmed.

    Before the fix the 16384x16 video held 13 resized frames per stack (2 GB) and failed
    with "Cannot allocate memory" under this cap.
    """
    out = str(tmp_path / "out")
    order = [shapes[k] for k in ("wide", "too_wide", "too_big", "understated", "good")]
    proc = run_cli(cli_args(random_checkpoint, out, video_paths=order), cwd=str(tmp_path),
                   preexec_fn=_memory_cap(2 * GiB), env={"OMP_NUM_THREADS": "2"})
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    failed = _failed(out)
    assert sorted(failed) == sorted([shapes[k] for k in ("too_wide", "too_big", "understated")])
    for kind, size in (("too_wide", "16384x2 resized to 1835008x224"), ("too_big", "8200x8200"),
                       ("understated", "8200x8200 (67.2 Mpixel)")):
        record = failed[shapes[kind]]
        assert record["stage"] == "decode", record
        assert size in record["message"] and "8192x8192" in record["message"], record
        assert "size limit" in record["message"], record
    # its header said 64x48: the decoder's frame threads refuse the big picture silently
    assert failed[shapes["understated"]]["message"].endswith("(the container announced 64x48)")
    root = os.path.join(out, "s3d")
    for kind, (width, height) in (("wide", (16384, 16)), ("good", (64, 48))):
        got = load_set(root, os.path.splitext(os.path.basename(shapes[kind]))[0])
        want = cli_reference(shapes[kind], random_model, width, height)
        assert got["s3d"].shape == want.shape == (1, 1024)
        assert rel_err(got["s3d"], want) < 1e-4


# -- 2. time that a tiny file can demand ------------------------------------------------------
def _with_gap(src: str, out: str, at: int, gap_s: float) -> str:
    """``src`` remuxed to Matroska, every packet from the ``at``-th on ``gap_s`` seconds later."""
    with av.open(src) as i, av.open(out, "w", format="matroska") as o:
        si = i.streams.video[0]
        so = o.add_stream_from_template(si)
        shift = round(gap_s / si.time_base)
        n = 0
        for packet in i.demux(si):
            if packet.dts is None:
                continue
            if n >= at:
                packet.pts += shift
                packet.dts += shift
            packet.stream = so
            o.mux(packet)
            n += 1
    return out


@pytest.fixture(scope="module")
def gaps(tmp_path_factory):
    d = tmp_path_factory.mktemp("gaps")
    src = synth(str(d / "src40.mp4"), seconds=1.6, size="64x48", extra=["-bf", "0"])  # 40 frames
    return {"huge": _with_gap(src, str(d / "gap_100000s.mkv"), 20, 100_000),
            "ordinary": _with_gap(src, str(d / "gap_2s.mkv"), 20, 2)}


def test_a_huge_timestamp_gap_fails_at_decode_at_once(gaps, random_checkpoint, random_model,
                                                       tmp_path):
    """40 frames with a 100,000 s gap: the fps filter would invent 2.5 million frames (hours).
    The video fails at decode naming the gap, before any is made; an ordinary 2 s gap is
    filled as the FFmpeg CLI fills it."""
    out = str(tmp_path / "out")
    proc = run_cli(cli_args(random_checkpoint, out, video_paths=[gaps["huge"], gaps["ordinary"]]),
                   cwd=str(tmp_path), timeout=120)
    assert proc.returncode == 1, proc.stderr
    [record] = _failed(out).values()
    assert record["path"] == gaps["huge"] and record["stage"] == "decode", record
    assert "100000.04 s gap in the timestamps (from 0.76 s to 100000.80 s)" in record["message"]
    assert "2500020 frames from 21 decoded" in record["message"]
    assert "max_resample_ratio=100" in record["message"]
    got = load_set(os.path.join(out, "s3d"), "gap_2s")
    want = cli_reference(gaps["ordinary"], random_model, 64, 48)  # 90 frames: 6 stacks
    assert got["s3d"].shape == want.shape == (6, 1024)
    assert rel_err(got["s3d"], want) < 1e-4
    np.testing.assert_array_equal(got["timestamps_ms"], _stacks_ms(6, 25))


def test_max_resample_ratio_bounds_ordinary_gaps_too(gaps, random_checkpoint, tmp_path):
    """The option is the bound: at 1.5 frames per decoded frame the 2 s gap is too much."""
    out = str(tmp_path / "out")
    proc = run_cli(cli_args(random_checkpoint, out, video_paths=gaps["ordinary"],
                            max_resample_ratio=1.5), cwd=str(tmp_path))
    assert proc.returncode == 1, proc.stderr
    [record] = _failed(out).values()
    assert record["stage"] == "decode"
    assert "2.04 s gap" in record["message"] and "max_resample_ratio=1.5" in record["message"]


# -- 5. MPEG-TS joined with cat: timestamps restart --------------------------------------------
@pytest.fixture(scope="module")
def joined_ts(tmp_path_factory):
    d = tmp_path_factory.mktemp("ts")
    first = synth(str(d / "a.ts"), seconds=2, size="64x48")
    second = synth(str(d / "b.ts"), seconds=2, size="64x48", source="testsrc")
    joined = str(d / "joined.ts")
    with open(joined, "wb") as f:
        for part in (first, second):
            with open(part, "rb") as p:
                f.write(p.read())
    return joined


def test_joined_mpegts_keeps_the_frames_the_cli_keeps(joined_ts, random_checkpoint,
                                                      random_model, tmp_path):
    """``ffmpeg -filter:v fps=12`` keeps 48 frames of the two 2 s files (it corrects the
    restart); so must we, with the same pixels, and say that the timestamps jumped."""
    out = str(tmp_path / "out")
    proc = run_cli(cli_args(random_checkpoint, out, video_paths=joined_ts, extraction_fps=12),
                   cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    got = load_set(os.path.join(out, "s3d"), "joined")
    want = cli_reference(joined_ts, random_model, 64, 48, fps=12)  # 48 frames: 3 stacks
    assert got["s3d"].shape == want.shape == (3, 1024)
    assert rel_err(got["s3d"], want) < 1e-4
    np.testing.assert_allclose(got["timestamps_ms"], _stacks_ms(3, 12), rtol=0, atol=1e-9)
    assert "timestamps jump by -2.00 s" in proc.stderr
    [record] = _manifest(out).values()
    assert any("timestamps jump" in w for w in record["warnings"]), record


def test_joined_mpegts_without_resampling_never_goes_back(joined_ts, random_checkpoint,
                                                          random_model, tmp_path):
    """``extraction_fps=null``: every decoded frame (100), times going on past the restart."""
    out = str(tmp_path / "out")
    proc = run_cli(cli_args(random_checkpoint, out, video_paths=joined_ts, extraction_fps="null"),
                   cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    got = load_set(os.path.join(out, "s3d"), "joined")
    want = cli_reference(joined_ts, random_model, 64, 48, fps=None)  # 100 frames: 7 stacks
    assert got["s3d"].shape == want.shape == (7, 1024)
    assert rel_err(got["s3d"], want) < 1e-4
    np.testing.assert_allclose(got["timestamps_ms"], _stacks_ms(7, 25), rtol=0, atol=1e-6)


def _going_back(path: str) -> str:
    """A 40-frame Matroska file whose second cluster (frames 20-39) starts at 0.3 s instead of
    0.8 s: its timestamps go back (muxers refuse to write that, so the bytes are patched)."""
    synth(path, seconds=1.6, size="64x48",
          extra=["-bf", "0", "-g", "20", "-cluster_time_limit", "790", "-f", "matroska"])
    with open(path, "rb") as f:
        data = bytearray(f.read())
    cluster = b"\x1f\x43\xb6\x75"
    second = data.index(cluster, data.index(cluster) + 4)
    at = data.index(b"\xe7\x82\x03\x20", second)  # the cluster's Timestamp: 800 ms
    data[at:at + 4] = b"\xe7\x82\x01\x2c"            # now 300 ms
    with open(path, "wb") as f:
        f.write(data)
    return path


def test_times_going_back_in_other_containers_never_go_back(tmp_path, random_checkpoint,
                                                             random_model):
    """A Matroska file whose timestamps go back 0.5 s after frame 20 (no correction there, as
    in the CLI): without resampling, every frame is kept and frame times still go forward."""
    back = _going_back(str(tmp_path / "back.mkv"))
    with av.open(back) as c:
        assert [f.pts for f in c.decode(video=0)][18:22] == [720, 760, 300, 340]
    out = str(tmp_path / "out")
    proc = run_cli(cli_args(random_checkpoint, out, video_paths=back, extraction_fps="null"),
                   cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    got = load_set(os.path.join(out, "s3d"), "back")
    want = cli_reference(back, random_model, 64, 48, fps=None)  # all 40 frames: 3 stacks
    assert got["s3d"].shape == want.shape == (3, 1024)
    assert rel_err(got["s3d"], want) < 1e-4
    np.testing.assert_allclose(got["timestamps_ms"], _stacks_ms(3, 25), rtol=0, atol=1e-6)
    assert "frame times go back at 0.760 s (to 0.300 s)" in proc.stderr


# -- 6. list files: line length and total size -------------------------------------------------
def test_dev_zero_as_list_file_is_one_error_line(random_checkpoint, tmp_path):
    proc = run_cli(cli_args(random_checkpoint, str(tmp_path / "out"),
                            file_with_video_paths="/dev/zero"), cwd=str(tmp_path), timeout=60)
    assert proc.returncode == 2
    assert _error_lines(proc) == ["error: file_with_video_paths: line 1 of /dev/zero is longer "
                                  "than 65536 bytes; expected one path a line"]


def test_huge_list_file_is_one_error_line(random_checkpoint, tmp_path):
    huge = tmp_path / "huge.txt"
    with open(huge, "wb") as f:
        f.write(b"a.mp4\n")
        f.truncate(600 * 2**20)  # sparse: costs no disk
    proc = run_cli(cli_args(random_checkpoint, str(tmp_path / "out"),
                            file_with_video_paths=str(huge)), cwd=str(tmp_path), timeout=60)
    assert proc.returncode == 2
    assert _error_lines(proc) == [f"error: file_with_video_paths: {huge} is larger than 512 MiB "
                                  f"({600 * 2**20} bytes); expected a list of paths, one a line "
                                  "(split a longer list into several)"]


def test_list_file_lines_keep_their_spaces(random_checkpoint, tmp_path):
    """Only the line ending goes: ``clip.mp4 `` (with its space) is the file listed; blank
    lines (also of spaces, or CR LF) are ignored."""
    clip = synth(str(tmp_path / "clip.mp4 "), seconds=0.6, size="64x48", extra=["-f", "mp4"])
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"\r\n   \n" + os.fsencode(clip) + b"\r\n\n")
    out = str(tmp_path / "out")
    proc = run_cli(cli_args(random_checkpoint, out, file_with_video_paths=str(listing)),
                   cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert not os.path.exists(clip.rstrip())
    assert list(_manifest(out)) == [clip]
    assert sorted(os.listdir(os.path.join(out, "s3d"))) == sorted(  # ".mp4 " is the extension
        [f"clip_{k}.npy" for k in KEYS] + ["failed.jsonl", "manifest-0-of-1.jsonl", "runs"])


# -- 7. long names, tmp_path, kept videos ----------------------------------------------------
def test_long_stems_are_saved_and_their_leftovers_found(random_checkpoint, tmp_path):
    """Stems of 230 bytes (its output names fit, its temporaries did not) and of 251 bytes
    (the longest legal with ``.mp4``: its output names are shortened with a hash) are saved;
    a killed run's temporaries of them are removed by the next run."""
    stems = {"fits": "v" * 230, "shortened": "é" * 125 + "x"}  # 230 and 251 bytes
    paths = {k: synth(str(tmp_path / f"{s}.mp4"), seconds=0.6, size="64x48")
             for k, s in stems.items()}
    listing = tmp_path / "list.txt"  # a list file: these names need no override quoting
    listing.write_text("".join(f"{p}\n" for p in paths.values()), encoding="utf-8")
    out = str(tmp_path / "out")
    root = os.path.join(out, "s3d")
    args = cli_args(random_checkpoint, out, file_with_video_paths=str(listing))
    proc = run_cli(args, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    names = {"fits": stems["fits"], "shortened": fit_name(stems["shortened"], 255 - 18)}
    assert re.fullmatch("é{114}~[0-9a-f]{8}", names["shortened"])  # 228 + 1 + 8 bytes
    manifest = _manifest(out)
    for kind, name in names.items():
        files = output_files(root, name, "save_numpy", S3D.keys)
        assert manifest[paths[kind]]["status"] == "done"
        assert all(os.path.exists(p) for p in files.values())
        assert len(os.fsencode(os.path.basename(files["timestamps_ms"]))) <= 255
        for p in files.values():  # what a killed run leaves behind
            with open(temporary_name(p), "wb") as f:
                f.write(b"half")
    assert len(find_temporaries(root)) == 6
    proc = run_cli(args, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "skipped 2 (already present)" in proc.stderr
    assert find_temporaries(root) == {}


@pytest.mark.parametrize("tmp", ["tmp/kept", "tmp"])
def test_tmp_path_that_is_a_file_stops_the_run(random_checkpoint, random_model, tmp_path,
                                               monkeypatch, tmp):
    """A tmp_path under a file, or a file itself (as root, the one unwritable tmp_path)."""
    blocker = tmp_path / "tmp"
    blocker.write_text("not a folder")
    clip = synth(str(tmp_path / "clip.mp4"), seconds=0.6, size="64x48")
    proc = run_cli(cli_args(random_checkpoint, str(tmp_path / "out"), video_paths=clip,
                            keep_tmp_files="true", tmp_path=tmp), cwd=str(tmp_path))
    assert proc.returncode == 2
    what = "is a file" if tmp == "tmp" else f"is under a file ({blocker})"
    message = (f"tmp_path: {tmp} {what}, not a folder; expected a folder the resampled videos "
               "can be written to (keep_tmp_files=true)")
    assert _error_lines(proc) == [f"error: {message}"]
    assert not (tmp_path / "out").exists()
    from models.s3d import ExtractS3D  # the API says the same

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as info:
        ExtractS3D(model=random_model, device="cpu", keep_tmp_files=True, tmp_path=tmp)
    assert str(info.value) == message


def test_tmp_path_replaced_by_a_file_during_the_run_costs_the_kept_video_only(
        random_checkpoint, random_model, tmp_path):
    """tmp_path passes the check at start, then, while the run is stopped (SIGSTOP) as it
    starts its video, is removed and replaced by a file: the features are saved, the
    manifest's warning names the video, and no temporary is left anywhere."""
    clip = synth(str(tmp_path / "clip.mp4"), seconds=0.6, size="64x48")
    out = tmp_path / "out"
    kept = tmp_path / "kept"
    kept.mkdir()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("HYDRA_FULL_ERROR", None)
    args = cli_args(random_checkpoint, str(out), video_paths=clip, keep_tmp_files="true",
                    tmp_path=str(kept))
    proc = subprocess.Popen([sys.executable, MAIN, *args], cwd=str(tmp_path), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        seen = ""
        while "in this shard" not in seen:  # logged just before the video starts
            line = proc.stderr.readline()
            assert line, seen
            seen += line
        os.kill(proc.pid, signal.SIGSTOP)
        shutil.rmtree(kept)  # with the temporary of the kept video, if it is started
        kept.write_text("now a file")
        os.kill(proc.pid, signal.SIGCONT)
        seen += proc.stderr.read()
        assert proc.wait(timeout=240) == 0, seen
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert kept.read_text() == "now a file"
    [record] = _manifest(str(out)).values()
    assert record["status"] == "done"
    [warning] = [w for w in record["warnings"] if "cannot be kept" in w]
    assert warning.startswith(f"{clip}: the resampled video cannot be kept at {kept}/clip_25fps_")
    assert warning in seen, seen  # also on the console
    got = load_set(str(out / "s3d"), "clip")
    want = cli_reference(clip, random_model, 64, 48)
    assert got["s3d"].shape == want.shape == (1, 1024)
    assert rel_err(got["s3d"], want) < 1e-4
    assert not [n for n in output_files_under(str(tmp_path)) if n.endswith(".tmp")]


def _file_size_cap(limit: int):
    """For preexec_fn: no file the child writes may pass ``limit`` bytes (as a full disk)."""
    def cap():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return cap


@pytest.fixture(scope="module")
def kept_clip(tmp_path_factory, random_model):
    """A 4 s clip and the size of its kept video (x264 emits packets from frame 41 on)."""
    from models.s3d import ExtractS3D

    d = tmp_path_factory.mktemp("kept")
    clip = synth(str(d / "clip.mp4"), seconds=4, size="320x240")
    ExtractS3D(model=random_model, device="cpu", stack_size=50, step_size=50,
               keep_tmp_files=True, tmp_path=str(d / "kept")).extract(clip)
    [kept] = os.listdir(d / "kept")
    return clip, os.path.getsize(d / "kept" / kept)


@pytest.mark.parametrize("when", ["while_encoding", "at_the_end"])
def test_a_full_tmp_path_costs_the_kept_video_only(kept_clip, random_checkpoint, random_model,
                                                   tmp_path, when):
    """The kept video cannot be written, as on a full disk: no file may pass 16 KiB (writing
    frames fails) or its whole size less 8 KiB (finishing it fails: its size varies by tens
    of bytes from one process to another, so one byte less would not always be hit).  The features (two
    stacks of 50 frames, 8 KB) are still saved, the manifest says what happened, and
    nothing is left in tmp_path."""
    clip, size = kept_clip
    cap = 16 * 2**10 if when == "while_encoding" else size - 8 * 2**10
    assert size > 64 * 2**10
    out = str(tmp_path / "out")
    kept = tmp_path / "kept"
    proc = run_cli(cli_args(random_checkpoint, out, stack_size=50, video_paths=clip,
                            keep_tmp_files="true", tmp_path=str(kept)), cwd=str(tmp_path),
                   preexec_fn=_file_size_cap(cap))
    assert proc.returncode == 0, proc.stderr
    [record] = _manifest(out).values()
    assert record["status"] == "done"
    assert any("cannot be kept" in w and "File too large" in w for w in record["warnings"]), record
    got = load_set(os.path.join(out, "s3d"), "clip")
    want = cli_reference(clip, random_model, 320, 240, stack_size=50)
    assert got["s3d"].shape == want.shape == (2, 1024)
    assert rel_err(got["s3d"], want) < 1e-4
    assert os.listdir(kept) == []


def test_kept_videos_of_the_same_stem_are_both_kept_with_the_umask(random_checkpoint, tmp_path):
    """``day1/clip.mp4`` and ``day2/clip.mp4`` (output_layout=mirror): two kept videos, each
    of its own input; kept videos get the features' mode (0666 less the umask)."""
    clips = {}
    for day, size in (("day1", "64x48"), ("day2", "96x64")):
        (tmp_path / day).mkdir()
        clips[day] = synth(str(tmp_path / day / "clip.mp4"), seconds=0.6, size=size)
    out = str(tmp_path / "out")
    kept = tmp_path / "kept"
    proc = run_cli(cli_args(random_checkpoint, out, video_paths=list(clips.values()),
                            output_layout="mirror", input_root=str(tmp_path),
                            keep_tmp_files="true", tmp_path=str(kept)),
                   cwd=str(tmp_path), preexec_fn=lambda: os.umask(0o027))
    assert proc.returncode == 0, proc.stderr
    names = sorted(os.listdir(kept))
    assert len(names) == 2 and all(re.fullmatch(r"clip_25fps_[0-9a-f]{8}\.mp4", n) for n in names)
    sizes = set()
    for name in names:
        with av.open(str(kept / name)) as c:
            stream = c.streams.video[0]
            sizes.add((stream.width, stream.height))
            assert sum(1 for _ in c.decode(stream)) == 15
        assert stat.S_IMODE(os.stat(kept / name).st_mode) == 0o640
    assert sizes == {(64, 48), (96, 64)}
    features = os.path.join(out, "s3d", "day1", "clip_s3d.npy")
    assert stat.S_IMODE(os.stat(features).st_mode) == 0o640
