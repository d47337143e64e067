"""Scaling out with Hydra's launchers: real multiruns of 2 shards equal one process, file by file.

Every run here is a real ``python main.py`` in a fresh working directory with a relative
``output_path``, so the tests also see that the sweep folders land under ``output_path`` and
nothing in the working directory.  Clips are tiny (one stack of 16 frames at 12 fps): each
job is a fresh process that imports torch, and the CPU is shared.
"""
import importlib.util
import os
import signal
import stat
import subprocess
import sys

import numpy as np
import pytest
import torch

from batch_helpers import MAIN, read_jsonl, rel_err, wait_for_state
from conftest import REPO, SAMPLE
from utils.run.cli import compose_config
from utils.records.manifests import merge_manifests
from utils.records.manifests import main as merge_main
from batch_helpers import KEYS
from videos import ffmpeg

FAST = ["stack_size=16", "step_size=16", "extraction_fps=12", "on_extraction=save_numpy"]
# name, start (s), duration (s): one stack each. Shard 0 of 2 takes a and c, shard 1 takes b.
CLIPS = [("a", 0.0, 1.5), ("b", 3.0, 1.5), ("c", 6.0, 1.5)]
TIMEOUT = 300

# A plain run with the launchers made unimportable, as in a base install (no `cluster` extra).
# Hydra's plugin scan tries `hydra_plugins` and copes; nothing else may try them.
BASE_INSTALL = r"""
import importlib.abc, os, runpy, sys
BLOCKED = ("hydra_plugins", "joblib", "submitit")
tried = set()
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            tried.add(name)
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Block())
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(sys.argv[0]))
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    print("TRIED_IMPORTS=" + ",".join(sorted(tried)), file=sys.stderr)
"""


def launcher_installed(name: str) -> bool:
    return importlib.util.find_spec(f"hydra_plugins.{name}") is not None


needs_joblib = pytest.mark.skipif(not launcher_installed("hydra_joblib_launcher"),
                                  reason="pip install .[cluster] (hydra-joblib-launcher)")
needs_submitit = pytest.mark.skipif(not launcher_installed("hydra_submitit_launcher"),
                                    reason="pip install .[cluster] (hydra-submitit-launcher)")


def run_main(cwd, *args, base_install=False, env=None):
    env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
    env.pop("HYDRA_FULL_ERROR", None)
    prefix = [sys.executable, "-c", BASE_INSTALL] if base_install else [sys.executable]
    return subprocess.run([*prefix, MAIN, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT, check=False)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Three short clips cut from the sample with the ffmpeg CLI; their list; the list plus a broken file."""
    folder = tmp_path_factory.mktemp("clips")
    paths = []
    for name, start, seconds in CLIPS:
        path = str(folder / f"{name}.mp4")
        ffmpeg("-ss", str(start), "-t", str(seconds), "-i", SAMPLE, "-an", "-c:v", "libx264",
               "-pix_fmt", "yuv420p", path)
        paths.append(path)
    (folder / "list.txt").write_text("\n".join(paths) + "\n")
    (folder / "broken.mp4").write_bytes(b"this is not a video\n")
    # a, b, c, broken: shard 0 of 2 takes a and c, shard 1 takes b and the broken file
    (folder / "with_broken.txt").write_text("\n".join(paths + [str(folder / "broken.mp4")]) + "\n")
    return {"paths": paths, "list": str(folder / "list.txt"),
            "with_broken": str(folder / "with_broken.txt")}


@pytest.fixture(scope="module")
def single_run(tmp_path_factory, clips, random_checkpoint):
    """The reference: one plain process over all clips, on a base install (no launchers)."""
    cwd = tmp_path_factory.mktemp("single")
    proc = run_main(cwd, f"file_with_video_paths={clips['list']}", f"weights_path={random_checkpoint}",
                    "device=cpu", *FAST, "output_path=out", base_install=True)
    assert proc.returncode == 0, proc.stderr
    tried = proc.stderr.rsplit("TRIED_IMPORTS=", 1)[1].splitlines()[0].split(",")
    assert not [m for m in tried if m and m != "hydra_plugins"], tried  # no joblib, no submitit
    assert sorted(os.listdir(cwd)) == ["out"]
    return cwd / "out"


def feature_files(out):
    folder = out / "s3d"
    return sorted(n for n in os.listdir(folder) if n.endswith(".npy"))


def assert_same_outputs(out, reference):
    names = feature_files(reference)
    assert names == sorted(f"{n}_{k}.npy" for n, _, _ in CLIPS for k in KEYS)
    assert feature_files(out) == names
    for name in names:
        got, want = np.load(out / "s3d" / name), np.load(reference / "s3d" / name)
        assert got.shape == want.shape and got.dtype == want.dtype, name
        if name.endswith("_s3d.npy"):
            # another process (thread count) moves features by ~3e-7 relative; bugs by >= 1e-3
            assert rel_err(got, want) < 1e-5, name
        else:
            np.testing.assert_array_equal(got, want, err_msg=name)


def read_manifest(out, shard, num_shards):
    records = read_jsonl(str(out / "s3d" / f"manifest-{shard}-of-{num_shards}.jsonl"))
    return {os.path.basename(r["path"])[:-4]: r for r in records}


def assert_sweep_under_output_path(cwd, num_jobs):
    assert sorted(os.listdir(cwd)) == ["out"]  # nothing else in the working directory
    sweep = cwd / "out" / "multirun"
    assert (sweep / "multirun.yaml").is_file()
    for job in range(num_jobs):
        assert (sweep / str(job)).is_dir()


@needs_joblib
@pytest.mark.slow
def test_joblib_multirun_of_two_shards_equals_one_process_and_fails_with_its_bad_video(
        tmp_path, clips, single_run, random_checkpoint, capsys):
    cwd = tmp_path / "work"
    cwd.mkdir()
    per_shard_gpu = not torch.cuda.is_available()  # without CUDA: cuda:i falls back to cpu
    device = "device=cuda:${shard}" if per_shard_gpu else "device=cpu"
    proc = run_main(cwd, "-m", "hydra/launcher=joblib", "shard=range(2)", "num_shards=2", device,
                    f"file_with_video_paths={clips['with_broken']}", f"weights_path={random_checkpoint}",
                    *FAST, "output_path=out")
    # shard 1's broken file fails that job, so the multirun's exit status is 1 ...
    assert proc.returncode == 1, proc.stderr
    broken = os.path.join(os.path.dirname(clips["list"]), "broken.mp4")
    failed_line = f"FAILED {broken}: open: not a readable video"
    assert [ln for ln in proc.stderr.splitlines() if ln.startswith("FAILED ")] == [
        ln for ln in proc.stderr.splitlines() if ln.startswith(failed_line)], proc.stderr
    assert failed_line in proc.stderr
    failed_list = cwd / "out" / "s3d" / "failed-1-of-2.jsonl"
    assert f"1 video(s) failed; listed in {failed_list}" in proc.stderr
    assert "Traceback" not in proc.stderr  # one line per failure, not a page
    if per_shard_gpu:  # each job resolved its own device from its shard
        assert "device=cuda:0 but CUDA is not available" in proc.stderr
        assert "device=cuda:1 but CUDA is not available" in proc.stderr
    # ... and every other video is extracted, as by one process
    assert_same_outputs(cwd / "out", single_run)
    shard0, shard1 = read_manifest(cwd / "out", 0, 2), read_manifest(cwd / "out", 1, 2)
    assert sorted(shard0) == ["a", "c"] and sorted(shard1) == ["b", "broken"]
    assert shard1["broken"]["status"] == "failed"
    for name in "abc":
        record = {**shard0, **shard1}[name]
        assert record["status"] == "done" and record["Tv"] == 1
    assert_sweep_under_output_path(cwd, 2)
    # the merged summary lists the failure and exits 1
    assert merge_main([str(cwd / "out")]) == 1
    assert failed_line in capsys.readouterr().out


@needs_submitit
@pytest.mark.slow
def test_submitit_local_multirun_resumes_a_killed_shard_and_equals_one_process(
        tmp_path, clips, single_run, random_checkpoint):
    cwd = tmp_path / "work"
    cwd.mkdir()
    out = cwd / "out"
    common = [f"file_with_video_paths={clips['list']}", f"weights_path={random_checkpoint}",
              "device=cpu", *FAST, "output_path=out"]

    # 1. shard 0 of 2 (videos a, c) starts alone and is killed once it has written a
    log_path = tmp_path / "killed.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, MAIN, "shard=0", "num_shards=2", *common],
                                cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        first = [out / "s3d" / f"a_{k}.npy" for k in KEYS]
        wait_for_state(lambda: all(p.exists() for p in first), proc, timeout=TIMEOUT)
        still_running = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert still_running, f"shard 0 ended before it could be killed: {log_path.read_text()}"
    assert all(p.exists() for p in first), log_path.read_text()
    assert not (out / "s3d" / "c_s3d.npy").exists()

    # 2. the whole sweep again through submitit (what a requeue does): shard 0 resumes
    proc = run_main(cwd, "-m", "hydra/launcher=submitit_local", "shard=range(2)", "num_shards=2", *common)
    assert proc.returncode == 0, proc.stderr
    shard0, shard1 = read_manifest(out, 0, 2), read_manifest(out, 1, 2)
    assert shard0["a"]["status"] == "skipped"  # finished before the kill: not redone
    assert shard0["c"]["status"] == "done" and shard0["c"]["Tv"] == 1
    assert shard1["b"]["status"] == "done" and shard1["b"]["Tv"] == 1
    assert_same_outputs(out, single_run)
    assert_sweep_under_output_path(cwd, 2)
    assert (out / "multirun" / ".submitit").is_dir()  # submitit's logs and pickles, under out

    # 3. one summary from both manifests
    summary = merge_manifests(str(out), clips["list"])
    assert (summary.done, summary.skipped, summary.failed) == (2, 1, 0)
    assert summary.stacks == 3 and summary.complete
    assert merge_main([str(out)]) == 0


@needs_submitit
@pytest.mark.slow
def test_slurm_preset_submits_one_job_array_with_one_gpu_per_task(tmp_path, clips):
    """Up to ``sbatch``: fake ``srun``/``sbatch`` capture the job array script submitit writes."""
    cwd = tmp_path / "work"
    cwd.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    captured = tmp_path / "job.sbatch"
    scripts = {"srun": "#!/bin/sh\nexit 0\n",
               "sbatch": f"#!/bin/sh\ncp \"$1\" '{captured}'\necho 'sbatch: error: no cluster in tests' >&2\nexit 1\n"}
    for name, text in scripts.items():
        path = bin_dir / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = run_main(cwd, "-m", "hydra/launcher=slurm", "shard=range(3)", "num_shards=3",
                    "hydra.launcher.partition=gpu", f"file_with_video_paths={clips['list']}",
                    *FAST, "output_path=out", env=env)
    assert proc.returncode != 0  # our fake sbatch refused
    script = captured.read_text()
    for line in ["#SBATCH --array=0-2%3", "#SBATCH --gpus-per-task=1", "#SBATCH --ntasks-per-node=1",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --mem=32GB", "#SBATCH --time=240",
                 "#SBATCH --signal=USR2@120", "#SBATCH --job-name=s3d_features",
                 "#SBATCH --partition=gpu", "#SBATCH --open-mode=append"]:
        assert line in script.splitlines(), (line, script)
    assert f"--output={cwd / 'out' / 'multirun' / '.submitit'}/%A_%a/" in script
    assert "-m submitit.core._submit" in script
    assert sorted(os.listdir(cwd)) == ["out"]


@needs_joblib
def test_joblib_shards_preset_runs_every_shard_at_once():
    cfg = compose_config(["hydra/launcher=joblib_shards", "video_paths=a.mp4", "num_shards=3"],
                         return_hydra_config=True)
    assert cfg.hydra.launcher.n_jobs == 3
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher")


@needs_submitit
def test_slurm_preset_defaults():
    cfg = compose_config(["hydra/launcher=slurm", "video_paths=a.mp4"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    # the plugin's SlurmLauncher, checked against sinfo and reporting one line per failed shard
    assert launcher._target_ == "hydra_plugins.s3d_launchers.slurm_shards.SlurmShards"
    assert (launcher.gpus_per_task, launcher.tasks_per_node, launcher.nodes) == (1, 1, 1)
    assert launcher.max_num_timeout > 0  # timed-out tasks are requeued and resume
    assert launcher.timeout_min > launcher.signal_delay_s / 60
    assert cfg.device == "cuda:0"  # SLURM shows each task its own GPU as cuda:0


def test_plain_cli_imports_no_launcher_engine(tmp_path):
    """With the extras installed, Hydra's plugin scan reads their small config modules; the
    engines (joblib, submitit) load only in a multirun that uses them."""
    code = ("import runpy, sys\n"
            f"sys.argv = [{MAIN!r}, 'video_paths=a.mp4', '--cfg', 'job']\n"
            f"sys.path.insert(0, {REPO!r})\n"
            "try:\n"
            "    runpy.run_path(sys.argv[0], run_name='__main__')\n"
            "finally:\n"
            "    print('LOADED=' + ','.join(sorted(m for m in ('joblib', 'submitit', 'hydra_plugins') "
            "if m in sys.modules)), file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          timeout=TIMEOUT, check=False)
    assert proc.returncode == 0, proc.stderr
    loaded = proc.stderr.rsplit("LOADED=", 1)[1].splitlines()[0].split(",")
    assert "joblib" not in loaded and "submitit" not in loaded, loaded
    assert os.listdir(tmp_path) == []
