"""Pick the torch device: the one asked for, or the CPU (with one warning) when CUDA is absent."""
import logging

import torch

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """The device of a valid ``device`` option (``utils.config`` checks the name, and the GPU
    index where CUDA exists): the CPU, with one warning, when CUDA is absent."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        log.warning("device=%s but CUDA is not available: running on the CPU", name)
        return torch.device("cpu")
    return device


CPUINFO = "/proc/cpuinfo"
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo's names for native bfloat16


def cpu_flags() -> frozenset:
    """The CPU's feature flags from ``/proc/cpuinfo`` (Linux); empty where there is none."""
    try:
        with open(CPUINFO, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512_BF16 or AMX-BF16) and torch's
    oneDNN, which runs the convolutions, is there to use it.

    torch's own checks are used where this torch has them (``torch._C._cpu``'s
    ``_is_avx512_bf16_supported`` / ``_is_amx_tile_supported``, absent from some versions),
    else the flags in ``/proc/cpuinfo``.  Without native support bfloat16 is emulated, far
    slower than fp32.
    """
    if not torch.backends.mkldnn.is_available():
        return False
    cpu = getattr(torch._C, "_cpu", None)
    checks = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported",
                                                     "_is_amx_tile_supported")]
    checks = [check for check in checks if callable(check)]
    if checks:
        return any(check() for check in checks)
    return any(flag in cpu_flags() for flag in BF16_CPU_FLAGS)
