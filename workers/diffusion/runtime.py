"""How a diffusion job sets up torch on the machine it runs on: threads, device, precision."""

from __future__ import annotations

import contextlib
import logging
import os

import torch
from diffusers.utils import logging as diffusers_logging

from workers.errors import JobFailed

log = logging.getLogger(__name__)

#: Environment variable: torch CPU threads per job. Default 1, because several jobs may share a few cores.
TORCH_THREADS_ENV = "WATTSCHED_TORCH_THREADS"


def prepare_torch(local_rank: int = 0) -> torch.device:
    """Set torch's thread count from the environment, quiet diffusers, and return the device to run on.

    The device is a CUDA GPU when there is one (the ``local_rank``-th of a node's processes takes its own), else
    the CPU: a Ray logical GPU on a machine without CUDA runs on the CPU.
    """
    raw = os.environ.get(TORCH_THREADS_ENV, "1")
    try:
        threads = int(raw)
        if threads < 1:
            raise ValueError
    except ValueError:
        raise JobFailed(
            f"{TORCH_THREADS_ENV}={raw!r} is not a positive integer; set it to the CPU threads one job may use"
        ) from None
    torch.set_num_threads(threads)
    # Progress bars write to the terminal; progress goes through report() instead.
    diffusers_logging.disable_progress_bar()
    if torch.cuda.is_available():
        # A launcher may show each process all of its node's GPUs (torchrun's habit: take LOCAL_RANK's) or
        # only its own (then there is one, and the modulo picks it).
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
    else:
        device = torch.device("cpu")
    log.info("running on %s with %d torch threads", device, threads)
    return device


#: The autocast dtype of each mixed_precision a spec may name ("no": none, full precision).
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, mixed_precision: str) -> contextlib.AbstractContextManager:
    """The forward-pass precision context: bf16 or fp16 autocast when asked for (CPU and CUDA), else full
    precision. fp16 training also needs ``grad_scaler``."""
    dtype = _AUTOCAST_DTYPES.get(mixed_precision)
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def grad_scaler(device: torch.device, mixed_precision: str) -> torch.amp.GradScaler:
    """The loss scaler of a training job: active under fp16 (whose gradients would otherwise underflow), a
    pass-through otherwise (then ``scale`` returns the loss and ``step`` just steps the optimizer)."""
    return torch.amp.GradScaler(device.type, enabled=mixed_precision == "fp16")


def reset_peak_memory(device: torch.device) -> None:
    """Start counting a CUDA device's peak allocated memory from now (the CPU's peak RSS cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict[str, object]:
    """The job's peak memory and how it was read: torch's peak allocated bytes on a CUDA device since
    ``reset_peak_memory``; on the CPU, the process's peak resident set (which includes the libraries, so levers
    differ by less there than on a GPU)."""
    if device.type == "cuda":
        return {"peak_memory_bytes": int(torch.cuda.max_memory_allocated(device)),
                "peak_memory_method": "cuda-max-allocated"}
    import resource

    # Linux reports ru_maxrss in KiB.
    return {"peak_memory_bytes": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024,
            "peak_memory_method": "process-peak-rss"}
