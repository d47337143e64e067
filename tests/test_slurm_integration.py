"""Issue 21, point 1: the docs' SLURM command on a real one-node SLURM (tests/slurm/one_node.sh).

Not in the default run (``-m "not slurm"`` in pyproject.toml): it needs root, Debian's
slurm-wlm, slurmdbd, munge and mariadb-server (installed by the script when missing), and
about two minutes.  Run it with ``python -m pytest -q -m slurm tests/test_slurm_integration.py``.
Where the machine cannot stand a SLURM up (not root, no packages), the module is skipped with
the script's one line.

The time limit is forced rather than waited for: SLURM checks limits only every 30 s, so the
tests send the task the signal that submitit asks SLURM to send before the limit
(``scancel --signal=USR2``).  With ``timeout_min`` of 10 or less submitit counts any such
signal as a timeout (its "guaranteed" walltime, 0.8 x the limit or the limit less 10 minutes,
is then not positive): the task takes the same path as at a real time limit, and a real limit
of 5 minutes is never reached.
"""
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from batch_helpers import KEYS, MAIN, STACK, cli_args, read_jsonl, wait_for_state
from conftest import REPO
from videos import clip_maker

pytestmark = pytest.mark.slurm

SCRIPT = os.path.join(REPO, "tests", "slurm", "one_node.sh")
INSTALL_TIMEOUT_S = 900  # a fresh machine downloads and installs the packages
RUN_TIMEOUT_S = 420
# Clips a..d: shard 0 of 2 takes a and c, shard 1 takes b and d.  c is longer, so that shard 0
# is still extracting it when the tests signal the task after a.
CLIPS = {"a.mp4": 1.5, "b.mp4": 1.5, "c.mp4": 6.0, "d.mp4": 1.5}
# the slurm_cpu preset, shrunk to this node: both tasks at once on 2 cores
RESOURCES = ["hydra/launcher=slurm_cpu", "hydra.launcher.cpus_per_task=1",
             "hydra.launcher.mem_gb=2"]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A one-node SLURM for the module: the environment that points its commands at it."""
    folder = tmp_path_factory.mktemp("slurm")
    try:  # stopped whatever happens: `stop` ends the PIDs that `start` recorded
        started = subprocess.run(["bash", SCRIPT, "start", str(folder)], capture_output=True,
                                 text=True, timeout=INSTALL_TIMEOUT_S, check=False)
        if (folder / "skip").exists():
            pytest.skip((folder / "skip").read_text().strip())
        assert started.returncode == 0, started.stdout + started.stderr
        conf = str(folder / "etc" / "slurm.conf")
        yield {"SLURM_CONF": conf, "folder": str(folder)}
    finally:
        stopped = subprocess.run(["bash", SCRIPT, "stop", str(folder)], capture_output=True,
                                 text=True, timeout=120, check=False)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("slurm_clips")
    make = clip_maker(folder, size="160x120")
    paths = [make(name, seconds=seconds) for name, seconds in CLIPS.items()]
    (folder / "videos.txt").write_text("\n".join(paths) + "\n")
    return {"paths": paths, "list": str(folder / "videos.txt")}


def env_for(slurm):
    env = dict(os.environ, SLURM_CONF=slurm["SLURM_CONF"], PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def docs_command(clips, weights, out, *extra):
    """The docs' SLURM command (docs/scaling-out.md), CPU preset, 2 shards."""
    return [sys.executable, MAIN, "-m", *RESOURCES, "shard=range(2)", "num_shards=2",
            f"file_with_video_paths={clips['list']}",
            *cli_args(weights, str(out), stack_size=STACK), *extra]


def submit(slurm, cwd, args):
    return subprocess.Popen(args, cwd=cwd, env=env_for(slurm), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc):
    try:
        out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"the submitting command did not end in {RUN_TIMEOUT_S}s:\n{out}\n{err}")
    return proc.returncode, out, err


def summary(slurm, out):
    done = subprocess.run([sys.executable, "-m", "utils.manifests", str(out), "--json"],
                          cwd=REPO, env=env_for(slurm), capture_output=True, text=True,
                          timeout=120, check=False)
    return done.returncode, (json.loads(done.stdout) if done.stdout.strip() else {}), done


def task_logs(out):
    """Every submitit log of the run, for failure messages."""
    text = []
    for root, _, files in os.walk(out / "multirun" / ".submitit"):
        for name in sorted(files):
            if name.endswith((".out", ".err")):
                with open(os.path.join(root, name), errors="replace") as f:
                    text.append(f"--- {name}\n{f.read()[-3000:]}")
    return "\n".join(text)


def features(out):
    folder = out / "s3d"
    return {n: np.load(folder / n) for n in sorted(os.listdir(folder)) if n.endswith(".npy")}


def expected_files():
    return sorted(f"{os.path.splitext(n)[0]}_{k}.npy" for n in CLIPS for k in KEYS)


def array_job(out, timeout=120):
    """The array job id, once submitit has made its folder for task 0."""
    folder = out / "multirun" / ".submitit"
    found = []

    def submitted():
        if folder.is_dir():
            found[:] = [m.group(1) for n in os.listdir(folder) if (m := re.fullmatch(r"(\d+)_0", n))]
        return bool(found)

    assert wait_for_state(submitted, timeout=timeout, interval=0.2), "no array job submitted"
    return found[0]


def signal_task_after_first_video(slurm, proc, out, task=0):
    """Wait for shard ``task``'s first finished video, then send its task USR2 (what SLURM
    sends ``signal_delay_s`` before the time limit)."""
    job = array_job(out)
    manifest = out / "s3d" / f"manifest-{task}-of-2.jsonl"

    def one_done():
        return manifest.exists() and any(r.get("status") == "done" for r in read_jsonl(str(manifest)))

    assert wait_for_state(one_done, proc, timeout=RUN_TIMEOUT_S, interval=0.1), \
        f"shard {task} finished no video:\n{task_logs(out)}"
    done_before = [r["path"] for r in read_jsonl(str(manifest)) if r.get("status") == "done"]
    subprocess.run(["scancel", "--signal=USR2", f"{job}_{task}"], env=env_for(slurm),
                   check=True, timeout=60)
    return job, done_before


@pytest.fixture(scope="module")
def plain_run(slurm, clips, random_checkpoint, tmp_path_factory):
    """(a) the docs' command, uninterrupted: also the reference for (b)."""
    cwd = tmp_path_factory.mktemp("slurm_plain")
    out = cwd / "out"
    started = time.monotonic()
    code, stdout, stderr = finish(submit(slurm, cwd, docs_command(clips, random_checkpoint, out)))
    return {"out": out, "code": code, "stdout": stdout, "stderr": stderr,
            "seconds": time.monotonic() - started}


def test_docs_command_two_shards_every_clip_complete(slurm, plain_run):
    out = plain_run["out"]
    assert plain_run["code"] == 0, plain_run["stderr"] + task_logs(out)
    assert "Traceback" not in plain_run["stderr"]
    assert sorted(features(out)) == expected_files()
    for shard in range(2):
        records = read_jsonl(str(out / "s3d" / f"manifest-{shard}-of-2.jsonl"))
        assert sorted(r["status"] for r in records) == ["done", "done"], records
    code, merged, done = summary(slurm, out)
    assert code == 0, done.stdout + done.stderr
    assert (merged["done"], merged["failed"], merged["complete"]) == (4, 0, True), merged
    # one array task per shard, both finished: what sacct says (submitit relies on it)
    # (the command ends once both results are written, a moment before SLURM ends the tasks)
    job = array_job(out)
    states = []

    def completed():
        states[:] = sorted(subprocess.run(
            ["sacct", "-n", "-X", "-P", "-j", job, "-o", "JobID,State"], env=env_for(slurm),
            capture_output=True, text=True, check=True, timeout=60).stdout.split())
        return states == [f"{job}_0|COMPLETED", f"{job}_1|COMPLETED"]

    assert wait_for_state(completed, timeout=60, interval=1), states


def test_requeue_at_the_time_limit_resumes_with_identical_features(slurm, plain_run, clips,
                                                                   random_checkpoint, tmp_path):
    assert plain_run["code"] == 0, plain_run["stderr"]
    out = tmp_path / "out"
    proc = submit(slurm, tmp_path, docs_command(clips, random_checkpoint, out,
                                                "hydra.launcher.timeout_min=5"))
    job, done_before = signal_task_after_first_video(slurm, proc, out)
    code, stdout, stderr = finish(proc)
    logs = task_logs(out)
    assert code == 0, stderr + logs
    assert "this job is timed-out" in logs and f"Requeued job {job}_0" in logs, logs
    # the requeued attempt skipped what the first one had finished, and ended the shard
    records = read_jsonl(str(out / "s3d" / "manifest-0-of-2.jsonl"))
    status = {os.path.basename(r["path"]): r["status"] for r in records}
    assert done_before and all(status[os.path.basename(p)] == "skipped" for p in done_before), records
    assert sorted(status) == ["a.mp4", "c.mp4"] and "failed" not in status.values(), records
    got, want = features(out), features(plain_run["out"])
    assert sorted(got) == sorted(want) == expected_files()
    for name in want:
        assert np.array_equal(got[name], want[name]), name
    assert not [n for n in os.listdir(out / "s3d") if not n.endswith((".npy", ".jsonl"))
                and not os.path.isdir(out / "s3d" / n)], os.listdir(out / "s3d")
    code, merged, done = summary(slurm, out)
    assert code == 0 and (merged["done"], merged["failed"]) == (4, 0), done.stdout + done.stderr


@pytest.fixture(scope="module")
def no_requeue_run(slurm, plain_run, clips, random_checkpoint, tmp_path_factory):
    """(c) max_num_timeout=0 and the time-limit signal on shard 0 after its first video."""
    cwd = tmp_path_factory.mktemp("slurm_no_requeue")
    out = cwd / "out"
    proc = submit(slurm, cwd, docs_command(clips, random_checkpoint, out,
                                           "hydra.launcher.timeout_min=5",
                                           "hydra.launcher.max_num_timeout=0"))
    job, done_before = signal_task_after_first_video(slurm, proc, out)
    code, stdout, stderr = finish(proc)
    return {"out": out, "job": job, "done_before": done_before, "code": code, "stderr": stderr}


def test_no_requeue_left_ends_the_command_in_one_line(no_requeue_run):
    run = no_requeue_run
    out, stderr = run["out"], run["stderr"]
    assert run["code"] == 1, stderr + task_logs(out)
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    shard_lines = [line for line in lines if re.match(r"shard \d+ \(job ", line)]
    assert len(shard_lines) == 1 and shard_lines[0].startswith(f"shard 0 (job {run['job']}_0): "), stderr
    assert lines[-2:] == [shard_lines[0], f"summary: python -m utils.manifests {out}"], stderr
    # shard 1 was not signalled: both its videos are done
    records = read_jsonl(str(out / "s3d" / "manifest-1-of-2.jsonl"))
    assert [r["status"] for r in records] == ["done", "done"], records


def test_no_requeue_left_blames_no_video(slurm, no_requeue_run):
    run = no_requeue_run
    out, stderr = run["out"], run["stderr"]
    assert "timed-out too many times" in stderr.strip().splitlines()[-2], stderr
    # no video blamed: the finished one is done, the one in progress has no record
    records = read_jsonl(str(out / "s3d" / "manifest-0-of-2.jsonl"))
    assert [r["status"] for r in records] == ["done"] * len(run["done_before"]), records
    failed = out / "s3d" / "failed-0-of-2.jsonl"
    assert not failed.exists() or not read_jsonl(str(failed)), read_jsonl(str(failed))
    code, merged, done = summary(slurm, out)
    assert merged["failed"] == 0 and not merged["failures"], done.stdout
    assert merged["done"] == 2 + len(run["done_before"]), done.stdout
