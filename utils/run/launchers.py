"""What the SLURM presets' launcher adds to hydra-submitit-launcher's: one-line refusals and reports.

``configs/hydra/launcher/slurm.yaml`` and ``slurm_cpu.yaml`` name
``hydra_plugins.s3d_launchers.slurm_shards.SlurmShards`` (Hydra takes launchers only from the
``hydra_plugins`` package) as their ``_target_``; this module is what it runs.  It differs
from the plugin's ``SlurmLauncher`` in two places:

- before submitting, the request (CPUs, memory and GPUs per task, the partition) is checked
  against ``sinfo``: a request that no node could ever run is refused in one line, instead of
  a traceback from ``sbatch`` or a job that stays pending for ever (``check_fits``);
- after submitting, it waits for every array task and ends with one line per failed shard
  (a shard whose videos failed, or a task SLURM killed, cancelled or timed out) and the
  command that summarises the folder, not with the first failure's traceback
  (``collect_results``).  ``debug=true`` also logs the launcher's full messages.

Nothing here imports submitit or the plugin.
"""
import logging
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import CompactHydraException

from utils.errors import one_line

log = logging.getLogger(__name__)

SINFO_TIMEOUT_S = 30


class LauncherFailed(CompactHydraException):
    """Hydra prints its text (one line per failed shard, then the summary command) and exits 1."""


# -- before submitting: can any node ever run one task? -------------------------------------

@dataclass
class Node:
    name: str
    partitions: List[str]
    cpus: int
    mem_mb: int
    gpus: int
    default_partition: bool = False


def parse_gpus(gres: Optional[str]) -> int:
    """GPUs in a gres string (``gpu:4``, ``gpu:a100:2(S:0-1)``, ``gpu:1,shard:8``); 0 for none."""
    total = 0
    for part in re.split(r",(?![^(]*\))", gres or ""):
        fields = re.sub(r"\(.*?\)", "", part).strip().split(":")
        if fields and fields[0] == "gpu":
            total += int(fields[-1]) if len(fields) > 1 and fields[-1].isdigit() else 1
    return total


def read_sinfo(text: str) -> List[Node]:
    """Nodes from ``sinfo -h -N -o '%N|%P|%c|%m|%G'`` (one line per node and partition)."""
    nodes = {}
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 5:
            continue
        name, partition, cpus, mem, gres = fields
        node = nodes.setdefault(name, Node(name, [], _number(cpus), _number(mem), parse_gpus(gres)))
        node.partitions.append(partition.rstrip("*"))
        node.default_partition = node.default_partition or partition.endswith("*")
    return list(nodes.values())


def _number(text: str) -> int:
    digits = re.match(r"\d+", text.strip())
    return int(digits.group()) if digits else 0


def task_request(params: dict) -> dict:
    """What one node must hold for one task of the preset: CPUs, memory (MB) and GPUs."""
    tasks = int(params.get("tasks_per_node") or 1)
    gpus = params.get("gpus_per_task")
    gpus = int(gpus) * tasks if gpus else parse_gpus(params.get("gres"))
    gpus = max(gpus, int(params.get("gpus_per_node") or 0))
    mem_gb = params.get("mem_gb")
    return {"cpus": int(params.get("cpus_per_task") or 1) * tasks,
            "mem_mb": int(float(mem_gb) * 1024) if mem_gb else 0,
            "gpus": gpus, "partition": params.get("partition")}


def check_fits(request: dict, nodes: List[Node]) -> Optional[str]:
    """None when some node of the partition can run the task; else the one-line refusal."""
    partition = request["partition"]
    where = (f"partition {partition}" if partition else "the default partition")
    pool = [n for n in nodes if (partition in n.partitions if partition else n.default_partition)]
    if not partition and not pool:
        pool = nodes
    if not pool:
        known = sorted({p for n in nodes for p in n.partitions})
        return (f"slurm: no partition {partition!r} (sinfo lists {', '.join(known) or 'none'}); "
                "set hydra.launcher.partition")
    if any(n.cpus >= request["cpus"] and n.mem_mb >= request["mem_mb"]
           and n.gpus >= request["gpus"] for n in pool):
        return None
    asked = (f"{request['cpus']} CPUs, {request['mem_mb'] / 1024:g} GB"
             + (f", {request['gpus']} GPU(s)" if request["gpus"] else ""))
    best = max(pool, key=lambda n: (n.gpus, n.cpus, n.mem_mb))
    has = f"{best.cpus} CPUs, {best.mem_mb / 1024:.3g} GB, {best.gpus or 'no'} GPU(s)"
    hint = ("hydra/launcher=slurm_cpu for CPU-only nodes, or " if request["gpus"] and not best.gpus
            else "")
    return (f"slurm: no node of {where} can ever run a task with {asked} (the largest has "
            f"{has}); use {hint}smaller hydra.launcher.cpus_per_task / mem_gb")


def sinfo_nodes() -> Optional[List[Node]]:
    """The cluster's nodes, or None when ``sinfo`` cannot say (then nothing is checked)."""
    sinfo = shutil.which("sinfo")
    if not sinfo:
        log.warning("sinfo not found: the request is not checked against the nodes")
        return None
    try:
        done = subprocess.run([sinfo, "-h", "-N", "-o", "%N|%P|%c|%m|%G"], capture_output=True,
                              text=True, timeout=SINFO_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        log.warning("sinfo did not answer (%s): the request is not checked against the nodes", e)
        return None
    if done.returncode != 0:
        log.warning("sinfo failed (%s): the request is not checked against the nodes",
                    one_line(done.stderr) or done.returncode)
        return None
    return read_sinfo(done.stdout)


# -- after submitting: one line per failed shard -------------------------------------------

def shard_label(overrides: Sequence[str], index: int) -> str:
    shard = next((o.split("=", 1)[1] for o in overrides if o.startswith("shard=")), None)
    return f"shard {shard}" if shard is not None else f"job {index}"


def collect_results(jobs: Sequence[Any], job_overrides: Sequence[Sequence[str]],
                    summary_command: str, uncompleted: tuple = (),
                    debug: bool = False) -> List[JobReturn]:
    """Wait for every job; their returns, or ``LauncherFailed`` with one line per failed shard
    and ``summary_command``.  ``uncompleted``: the launcher's exceptions for a task that
    ended without a result (submitit's ``UncompletedJobError``); ``debug``: also log their
    whole messages and tracebacks (the task's log tail)."""
    detail = log.error if debug else log.debug
    returns, lines = [], []
    for index, (job, overrides) in enumerate(zip(jobs, job_overrides)):
        label = f"{shard_label(overrides, index)} (job {getattr(job, 'job_id', '?')})"
        try:
            ret = job.results()[0]
        except uncompleted as e:
            detail("%s: %s", label, e)  # submitit's whole message: the task's log tail
            lines.append(f"{label}: {one_line(e)}")
            continue
        if ret.status == JobStatus.FAILED:
            error = ret._return_value
            detail("%s: %s", label, error, exc_info=error)
            lines.append(f"{label}: {type(error).__name__ + ': ' if not isinstance(error, CompactHydraException) else ''}"
                         f"{one_line(error)}")
        returns.append(ret)
    if lines:
        raise LauncherFailed("\n".join(lines + [f"summary: {summary_command}"]))
    return returns
