"""Issue 4, point 3 and Ctrl-C: atomic outputs, resume after a kill, corrupt outputs redone,
``overwrite=true``, and a clean stop after the write in progress."""
import logging
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from batch_helpers import (KEYS, MAIN, ExtractorDouble, assert_same_outputs, cli_args, load_set, make_cfg,
                           make_extractor, output_files_under, read_jsonl, wait_for_state)
from models.s3d.spec import SPEC as S3D
import utils.files as atomic_files
from utils.outputs import serialization
from utils.run.batch_run import run
from utils.files import find_temporaries, remove_temporaries
from utils.outputs.naming import output_files
from utils.outputs.resume import outputs_complete
from utils.outputs.serialization import write_outputs
from videos import synth

KILL_STACK = 16


def _arrays(value: float, rows: int = 2):
    return {"s3d": np.full((rows, 1024), value, np.float32),
            "timestamps_ms": np.arange(rows * 2, dtype=np.float64).reshape(rows, 2),
            "fps": np.float64(25)}


def _loads_complete(root: str, name: str) -> bool:
    return outputs_complete(output_files(root, name, "save_numpy", S3D.keys), S3D.features)


def _manifest(root: str):
    return {r["path"]: r["status"] for r in read_jsonl(os.path.join(root, "manifest-0-of-1.jsonl"))}


# -- atomic writes, unit level -------------------------------------------------------------

def test_write_failure_keeps_the_old_set(tmp_path, monkeypatch):
    files = output_files(str(tmp_path), "v", "save_numpy", S3D.keys)
    write_outputs(_arrays(1.0), files)
    real_save = np.save
    calls = []

    def failing_save(f, value, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_save(f, value, **kw)

    monkeypatch.setattr(serialization.np, "save", failing_save)
    with pytest.raises(OSError):
        write_outputs(_arrays(2.0), files)
    assert outputs_complete(files, S3D.features)
    assert float(np.load(files["s3d"])[0, 0]) == 1.0  # the old set, untouched
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in files.values())


def test_crash_between_renames_never_leaves_a_complete_mix(tmp_path, monkeypatch):
    """Old outputs are removed before the renames: a crash in between leaves an incomplete set."""
    files = output_files(str(tmp_path), "v", "save_numpy", S3D.keys)
    write_outputs(_arrays(1.0, rows=2), files)
    real_replace = os.replace
    calls = []

    def crashing_replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(5, "Input/output error")
        real_replace(src, dst)

    monkeypatch.setattr(atomic_files.os, "replace", crashing_replace)
    with pytest.raises(OSError):
        write_outputs(_arrays(2.0, rows=2), files)
    assert not outputs_complete(files, S3D.features)  # rows agree, yet old and new never pass as one set
    assert find_temporaries(str(tmp_path)) == {}


def test_outputs_complete_rejects_partial_and_garbled_sets(tmp_path):
    files = output_files(str(tmp_path), "v", "save_numpy", S3D.keys)
    assert not outputs_complete(files, S3D.features)
    write_outputs(_arrays(1.0), files)
    assert outputs_complete(files, S3D.features)
    data = open(files["s3d"], "rb").read()
    with open(files["s3d"], "wb") as f:
        f.write(data[:len(data) // 2])  # truncated
    assert not outputs_complete(files, S3D.features)
    write_outputs(_arrays(1.0), files)
    np.save(files["timestamps_ms"], np.zeros((3, 2)))  # rows disagree with s3d
    assert not outputs_complete(files, S3D.features)
    pkl = output_files(str(tmp_path), "p", "save_pickle", S3D.keys)
    write_outputs(_arrays(1.0), pkl)
    assert outputs_complete(pkl, S3D.features)
    with open(pkl["fps"], "wb") as f:
        f.write(b"\x80\x05garbage")
    assert not outputs_complete(pkl, S3D.features)


def test_written_files_follow_the_umask(tmp_path):
    files = output_files(str(tmp_path), "v", "save_numpy", S3D.keys)
    write_outputs(_arrays(1.0), files)
    umask = os.umask(0o022)
    os.umask(umask)
    assert all(os.stat(p).st_mode & 0o777 == 0o666 & ~umask for p in files.values())


def test_leftover_temporaries_are_found_per_output(tmp_path):
    (tmp_path / "sub").mkdir()
    stale = [tmp_path / ".a_s3d.npy.k2j_x9.tmp", tmp_path / "sub" / ".b c_fps.npy.abc.tmp"]
    for p in stale:
        p.write_bytes(b"half")
    (tmp_path / ".hidden_but_mine").write_bytes(b"x")
    found = find_temporaries(str(tmp_path))
    assert found == {str(tmp_path / "a_s3d.npy"): [str(stale[0])],
                     str(tmp_path / "sub" / "b c_fps.npy"): [str(stale[1])]}
    remove_temporaries(output_files(str(tmp_path / "sub"), "b c", "save_numpy", S3D.keys).values(), found)
    assert not stale[1].exists() and stale[0].exists()


# -- resume, corrupt outputs, overwrite (in-process, real network) --------------------------



@pytest.fixture(scope="module")
def three_videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("three")
    return [synth(str(d / f"{name}.mp4"), seconds=0.6, size="64x48", rate=rate)
            for name, rate in (("a", "25"), ("b", "24"), ("c", "30"))]


def test_rerun_skips_complete_and_redoes_corrupt_outputs(three_videos, extractor, tmp_path):
    out = str(tmp_path / "out")
    root = os.path.join(out, "s3d")
    first = run(make_cfg(three_videos, out), extractor=extractor)
    assert (first.done, first.skipped, first.num_failed) == (3, 0, 0)
    original = {n: load_set(root, n) for n in "abc"}
    # a: truncated features; b: a key missing; c: complete, with a stale temporary beside it
    path = os.path.join(root, "a_s3d.npy")
    data = open(path, "rb").read()
    open(path, "wb").write(data[:len(data) - 100])
    os.remove(os.path.join(root, "b_fps.npy"))
    stale = os.path.join(root, ".c_s3d.npy.abc123.tmp")
    open(stale, "wb").write(b"half a file")
    c_stat = os.stat(os.path.join(root, "c_s3d.npy"))

    second = run(make_cfg(three_videos, out), extractor=extractor)
    assert (second.done, second.skipped, second.num_failed) == (2, 1, 0)
    a, b, c = three_videos
    assert _manifest(root) == {a: "done", b: "done", c: "skipped"}
    # the skipped video's record still carries its Tv and seconds, read from its outputs
    records = {r["path"]: r for r in read_jsonl(os.path.join(root, "manifest-0-of-1.jsonl"))}
    c_stamps = original["c"]["timestamps_ms"]
    assert (records[c]["Tv"], records[c]["seconds"]) == (
        len(c_stamps), round(float(c_stamps[-1, 1]) / 1000, 3))
    assert not os.path.exists(stale)
    assert os.stat(os.path.join(root, "c_s3d.npy")).st_mtime_ns == c_stat.st_mtime_ns
    for n in "abc":
        assert_same_outputs(load_set(root, n), original[n], tol=0)

    third = run(make_cfg([c], out, overwrite=True), extractor=extractor)
    assert (third.done, third.skipped) == (1, 0)
    assert os.stat(os.path.join(root, "c_s3d.npy")).st_mtime_ns != c_stat.st_mtime_ns
    assert_same_outputs(load_set(root, "c"), original["c"], tol=0)
    assert output_files_under(root) == sorted(
        [f"{n}_{k}.npy" for n in "abc" for k in KEYS] + ["failed.jsonl", "manifest-0-of-1.jsonl"])


class _Counting(ExtractorDouble):
    """Wraps an extractor; counts calls and can raise KeyboardInterrupt on a given call."""

    def __init__(self, inner, interrupt_on=None):
        self.inner, self.calls, self.interrupt_on = inner, [], interrupt_on
        self.device, self.labels = inner.device, inner.labels

    def identity(self):
        return self.inner.identity()

    def extract(self, path, with_logits=False):
        self.calls.append(path)
        if len(self.calls) == self.interrupt_on:
            raise KeyboardInterrupt
        return self.inner.extract(path, with_logits=with_logits)


def test_ctrl_c_during_a_write_stops_after_it(three_videos, extractor, tmp_path, monkeypatch):
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    import utils.outputs.file_store as file_store

    real_write = file_store.write_outputs

    def write_with_ctrl_c(arrays, files):
        # raise() delivers SIGINT to this thread before it returns, and Python runs the handler
        # at once (at the latest before the next call): the Ctrl-C arrives in the middle of the
        # write, before its files are written
        signal.raise_signal(signal.SIGINT)
        real_write(arrays, files)

    monkeypatch.setattr(file_store, "write_outputs", write_with_ctrl_c)
    extractor = _Counting(extractor)
    out = str(tmp_path / "out")
    with pytest.raises(KeyboardInterrupt):
        run(make_cfg(three_videos, out), extractor=extractor)
    root = os.path.join(out, "s3d")
    assert extractor.calls == three_videos[:1]  # the batch stopped after the first write
    assert _loads_complete(root, "a") and _manifest(root) == {three_videos[0]: "done"}
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_ctrl_c_during_extraction_writes_nothing_for_that_video(three_videos, extractor,
                                                                 tmp_path, caplog):
    caplog.set_level(logging.INFO)
    extractor = _Counting(extractor, interrupt_on=1)
    out = str(tmp_path / "out")
    with pytest.raises(KeyboardInterrupt):
        run(make_cfg(three_videos, out), extractor=extractor)
    assert output_files_under(os.path.join(out, "s3d")) == ["failed.jsonl", "manifest-0-of-1.jsonl"]
    assert any(r.getMessage().startswith("interrupted; done 0") for r in caplog.records)


# -- the real command line: Ctrl-C, SIGKILL, resume ----------------------------------------

def _complete_names(root, names):
    return [n for n in names if _loads_complete(root, n)]


@pytest.mark.slow
def test_cli_interrupt_kill_and_resume(random_model, random_checkpoint, tmp_path):
    """Ctrl-C (exit 130, no traceback), then SIGKILL mid-run: every file present loads, and
    the rerun finishes with outputs equal to an uninterrupted run's."""
    names = [f"clip {i}" for i in range(5)]
    videos = [synth(str(tmp_path / f"{n}.mp4"), seconds=0.7, size="64x48") for n in names]
    listing = tmp_path / "videos.txt"
    listing.write_text("\n".join(videos) + "\n", encoding="utf-8")
    out = str(tmp_path / "out")
    root = os.path.join(out, "s3d")
    args = [sys.executable, MAIN] + cli_args(random_checkpoint, out, stack_size=KILL_STACK,
                                            file_with_video_paths=str(listing))
    env = dict(os.environ, PYTHONUNBUFFERED="1")

    # 1. Ctrl-C once the first video is written
    proc = subprocess.Popen(args, cwd=str(tmp_path), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert wait_for_state(lambda: _complete_names(root, names), proc), proc.communicate()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    after_ctrl_c = _complete_names(root, names)
    assert 1 <= len(after_ctrl_c) < len(names)

    # 2. SIGKILL as soon as one more video is complete: no chance to clean up
    proc = subprocess.Popen(args, cwd=str(tmp_path), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    assert wait_for_state(lambda: len(_complete_names(root, names)) > len(after_ctrl_c), proc)
    proc.kill()
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    killed_done = _complete_names(root, names)
    assert len(killed_done) < len(names), "the run ended before the kill"
    for rel in output_files_under(root):  # every file under a final name loads
        if rel.endswith(".npy") and not os.path.basename(rel).startswith("."):
            np.load(os.path.join(root, rel), allow_pickle=False)

    # 3. rerun: the complete ones are skipped, the rest done, no temporary left
    proc = subprocess.run(args, cwd=str(tmp_path), env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    statuses = _manifest(root)
    assert [statuses[v] for v in videos] == [
        "skipped" if n in killed_done else "done" for n in names]
    assert output_files_under(root) == sorted(
        [f"{n}_{k}.npy" for n in names for k in KEYS] + ["failed.jsonl", "manifest-0-of-1.jsonl"])

    # 4. equal to an uninterrupted run
    ref_out = str(tmp_path / "reference")
    report = run(make_cfg(videos, ref_out, stack_size=KILL_STACK),
                 extractor=make_extractor(random_model, stack_size=KILL_STACK))
    assert report.done == len(names)
    for n in names:
        assert_same_outputs(load_set(root, n), load_set(os.path.join(ref_out, "s3d"), n))
