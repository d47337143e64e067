"""What the benchmarks measure a process with (Linux), shared by bench_s3d.py and bench_memory.py."""
from typing import Optional


def vm_hwm(pid: int) -> Optional[int]:
    """Peak resident set size of a live process (Linux ``VmHWM``), in bytes."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
