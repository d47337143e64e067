"""Pick the torch device: the one asked for, or the CPU (with one warning) when CUDA is absent."""
import logging

import torch

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device: {name!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            log.warning("device=%s but CUDA is not available: running on the CPU", name)
            return torch.device("cpu")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"device: {name} does not exist; this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
    return device
