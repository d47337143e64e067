"""Issue 14, points 3 and 4, through the real command line: one run per (output folder,
shard) at a time; nothing read or written through links or special files in the output
folder."""
import os
import shutil
import subprocess
import sys

import numpy as np

from batch_helpers import KEYS, MAIN, cli_args, read_jsonl, run_cli
from videos import synth


def _wait_for_line(proc, text, timeout_lines=200) -> str:
    """Read the process's stderr line by line until one holds ``text`` (or it ends)."""
    seen = ""
    for _ in range(timeout_lines):
        line = proc.stderr.readline()
        if not line:
            break
        seen += line
        if text in line:
            return seen
    raise AssertionError(f"never saw {text!r}; stderr so far:\n{seen}")


def test_a_second_run_on_the_same_shard_is_refused_until_the_first_dies(random_checkpoint,
                                                                         tmp_path):
    videos = [synth(str(tmp_path / f"v{i}.mp4"), seconds=1.2, size="64x48") for i in range(6)]
    out = tmp_path / "out"
    args = cli_args(random_checkpoint, str(out), video_paths=videos)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    first = subprocess.Popen([sys.executable, MAIN, *args], cwd=str(tmp_path), env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_line(first, "in this shard")  # logged once the lock is held
        second = run_cli(args, cwd=str(tmp_path))
        assert second.returncode == 2, second.stderr
        [line] = [ln for ln in second.stderr.splitlines() if ln.startswith("error:")]
        assert f"in use by another run (pid {first.pid} on " in line and "shard 0 of 1" in line
        # another shard of the same folder is not blocked by it
        other = run_cli(args + ["shard=1", "num_shards=2"], cwd=str(tmp_path))
        assert other.returncode == 0, other.stderr
    finally:
        first.kill()  # SIGKILL: the kernel releases the lock, no stale lock is left
        first.wait(timeout=60)
    again = run_cli(args, cwd=str(tmp_path))
    assert again.returncode == 0, again.stderr


def test_links_and_special_files_in_the_output_folder_are_never_followed(random_checkpoint,
                                                                         tmp_path):
    clips = tmp_path / "clips"
    (clips / "sub").mkdir(parents=True)
    a = synth(str(clips / "a.mp4"), seconds=0.8, size="64x48")
    b = shutil.copy(a, clips / "sub" / "b.mp4")
    out = tmp_path / "out"
    root = out / "s3d"
    root.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = elsewhere / "precious.txt"
    victim.write_text("keep me\n")
    os.mkfifo(root / "manifest-0-of-1.jsonl")           # reading it would hang the run
    os.symlink(victim, root / "failed.jsonl")           # would be truncated and overwritten
    os.mkfifo(root / "a_s3d.npy")                       # would hang the completeness check
    np.save(root / "a_timestamps_ms.npy", np.zeros((1, 2)))  # (the rest of the set is there)
    np.save(root / "a_fps.npy", np.float64(25))
    os.symlink(elsewhere, root / "sub")                 # mirror layout: outputs sent outside
    proc = run_cli(cli_args(random_checkpoint, str(out), video_paths=[a, str(b)],
                            output_layout="mirror", input_root=str(clips)),
                   cwd=str(tmp_path), timeout=180)
    assert proc.returncode == 1, proc.stderr
    assert victim.read_text() == "keep me\n" and sorted(os.listdir(elsewhere)) == ["precious.txt"]
    [failed] = [ln for ln in proc.stderr.splitlines() if ln.startswith("FAILED ")]
    assert failed.startswith(f"FAILED {b}: write: {root / 'sub'} leads out of output_path")
    for name in ("manifest-0-of-1.jsonl", "failed.jsonl", *(f"a_{k}.npy" for k in KEYS)):
        assert os.path.isfile(root / name) and not os.path.islink(root / name), name
    statuses = {r["path"]: r["status"] for r in read_jsonl(root / "manifest-0-of-1.jsonl")}
    assert statuses == {a: "done", str(b): "failed"}
