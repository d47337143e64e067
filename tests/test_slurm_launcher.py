"""Issue 21, points 3 and 4: the SLURM presets' launcher (utils/run/launchers.py) refuses in one
line a request no node can run (checked against ``sinfo``), and ends a sweep with one line per
failed shard plus the command that summarises the folder."""
import os
import stat

import pytest
from hydra.core.utils import JobReturn, JobStatus

from test_multirun import FAST, needs_submitit, run_main
from utils.run.cli import RunFailed, compose_config

launchers = pytest.importorskip("utils.run.launchers")
submitit_utils = pytest.importorskip("submitit.core.utils")

# one node, 2 CPUs, 3.8 GB, no GPU, in the default partition "debug"
SMALL = "node1|debug*|2|3900|(null)\n"
GPU_NODES = "g1|gpu|32|256000|gpu:a100:4(S:0-1)\ng2|gpu|32|256000|gpu:a100:4(S:0-1)\nc1|cpu*|64|512000|(null)\n"


def request(overrides):
    cfg = compose_config(["video_paths=a.mp4", *overrides], return_hydra_config=True)
    from omegaconf import OmegaConf
    return launchers.task_request(OmegaConf.to_container(cfg.hydra.launcher, resolve=False))


@needs_submitit
def test_gpu_preset_on_a_cpu_node_is_refused_in_one_line_and_slurm_cpu_fits():
    nodes = launchers.read_sinfo(SMALL)
    refusal = launchers.check_fits(request(["hydra/launcher=slurm"]), nodes)
    assert refusal == ("slurm: no node of the default partition can ever run a task with 8 CPUs, "
                       "32 GB, 1 GPU(s) (the largest has 2 CPUs, 3.81 GB, no GPU(s)); use "
                       "hydra/launcher=slurm_cpu for CPU-only nodes, or smaller "
                       "hydra.launcher.cpus_per_task / mem_gb")
    cpu = request(["hydra/launcher=slurm_cpu"])
    assert (cpu["cpus"], cpu["mem_mb"], cpu["gpus"]) == (4, 8192, 0)
    assert "4 CPUs, 8 GB" in launchers.check_fits(cpu, nodes)  # still too big for 2 cores
    small = request(["hydra/launcher=slurm_cpu", "hydra.launcher.cpus_per_task=2",
                     "hydra.launcher.mem_gb=2"])
    assert launchers.check_fits(small, nodes) is None


def test_partitions_gres_and_gpus_are_read_from_sinfo():
    nodes = launchers.read_sinfo(GPU_NODES)
    assert [(n.name, n.partitions, n.cpus, n.mem_mb, n.gpus) for n in nodes] == [
        ("g1", ["gpu"], 32, 256000, 4), ("g2", ["gpu"], 32, 256000, 4), ("c1", ["cpu"], 64, 512000, 0)]
    ask = {"cpus": 8, "mem_mb": 32768, "gpus": 1, "partition": "gpu"}
    assert launchers.check_fits(ask, nodes) is None
    assert launchers.check_fits(dict(ask, gpus=5), nodes).startswith(
        "slurm: no node of partition gpu can ever run a task with 8 CPUs, 32 GB, 5 GPU(s)")
    assert launchers.check_fits(dict(ask, partition=None), nodes).startswith(
        "slurm: no node of the default partition")  # c1 (cpu*) has no GPU
    assert launchers.check_fits(dict(ask, partition="big"), nodes) == (
        "slurm: no partition 'big' (sinfo lists cpu, gpu); set hydra.launcher.partition")
    assert launchers.parse_gpus("gpu:1,shard:8") == 1 and launchers.parse_gpus("(null)") == 0
    assert launchers.task_request({"gres": "gpu:2", "cpus_per_task": 4, "mem_gb": 16,
                                   "tasks_per_node": 1})["gpus"] == 2


class Job:
    def __init__(self, job_id, result=None, error=None):
        self.job_id, self.result, self.error = job_id, result, error

    def results(self):
        if self.error:
            raise self.error
        return [self.result]


def job_return(status, value):
    ret = JobReturn()
    ret.status, ret.return_value = status, value
    ret._return_value = value
    return ret


def test_every_failed_shard_gets_one_line_and_the_summary_command_ends_it():
    tail = ("Job 12_1 (task: 0) with path /o/.submitit/12_1/12_1_0_result.pkl\nhas not produced "
            "any output (state: TIMEOUT)\nError stream produced:\n----\nTraceback (most recent ...")
    jobs = [Job("12_0", job_return(JobStatus.COMPLETED, 0)),
            Job("12_1", error=submitit_utils.UncompletedJobError(tail)),
            Job("12_2", job_return(JobStatus.FAILED, RunFailed("2 video(s) failed; listed in x"))),
            Job("12_3", job_return(JobStatus.FAILED, submitit_utils.UncompletedJobError(
                "Job not requeued because: timed-out too many times.")))]
    overrides = [["shard=0", "num_shards=4"], ["shard=1", "num_shards=4"],
                 ["shard=2", "num_shards=4"], ["shard=3", "num_shards=4"]]
    with pytest.raises(launchers.LauncherFailed) as failed:
        launchers.collect_results(jobs, overrides, "python -m utils.manifests out",
                                  (submitit_utils.UncompletedJobError,))
    assert str(failed.value).splitlines() == [
        "shard 1 (job 12_1): Job 12_1 (task: 0) with path /o/.submitit/12_1/12_1_0_result.pkl",
        "shard 2 (job 12_2): 2 video(s) failed; listed in x",
        "shard 3 (job 12_3): UncompletedJobError: Job not requeued because: timed-out too many times.",
        "summary: python -m utils.manifests out"]
    ok = launchers.collect_results(jobs[:1], overrides[:1], "unused")
    assert [r.return_value for r in ok] == [0]


def _fake_commands(tmp_path, sinfo_text):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    called = tmp_path / "sbatch_called"
    scripts = {"sinfo": f"#!/bin/sh\nprintf '{sinfo_text}'\n",
               "sbatch": f"#!/bin/sh\ntouch '{called}'\necho 'sbatch: error: x' >&2\nexit 1\n",
               "srun": "#!/bin/sh\nexit 0\n"}
    for name, text in scripts.items():
        path = bin_dir / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"), called


@needs_submitit
@pytest.mark.slow
def test_a_request_no_node_can_run_is_refused_before_sbatch_in_one_line(tmp_path):
    env, called = _fake_commands(tmp_path, SMALL.replace("\n", "\\n"))
    cwd = tmp_path / "work"
    cwd.mkdir()
    proc = run_main(cwd, "-m", "hydra/launcher=slurm", "shard=range(2)", "num_shards=2",
                    "video_paths=[a.mp4,b.mp4]", *FAST, "output_path=out", env=env)
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("slurm: no node of the default partition can ever run a task "
                                "with 8 CPUs, 32 GB, 1 GPU(s)"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not called.exists()  # nothing submitted
