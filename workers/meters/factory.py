"""Pick a job's meters: measure where the hardware allows, else simulate (GPU) or estimate (CPU), and log why.

Probes are cached for the life of the process (``nvml_available.cache_clear()`` and
``rapl_available.cache_clear()`` forget them); a backend that is passed over is logged at INFO with the reason.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Any

from workers.errors import MeterError
from workers.meters.base import EnergyMeter
from workers.meters.cpu import DEFAULT_RAPL_ROOT, EstimatedCpuMeter, RaplCpuMeter, rapl_available
from workers.meters.gpu_types import DEFAULT_GPU_TYPE, lookup_gpu_type
from workers.meters.simulated import ProcessUtilization, SimulatedGpuMeter

logger = logging.getLogger(__name__)

#: auto: NVML where it starts and has the GPUs, else simulated. nvml: NVML or an error. simulated: always.
GPU_MODES = ("auto", "nvml", "simulated")
#: auto: RAPL where readable, else the CPU-time estimate. rapl: RAPL or an error. estimate: always.
CPU_MODES = ("auto", "rapl", "estimate")


def _check_mode(mode: str, valid: Sequence[str]) -> None:
    if mode not in valid:
        raise MeterError(f"unknown meter mode {mode!r}: use one of {', '.join(valid)}")


def _nvml_backend() -> Any:
    """The NVML meter module; imported on demand because nvidia-ml-py is an optional dependency."""
    from workers.meters import nvml

    return nvml


@functools.lru_cache(maxsize=None)
def nvml_available(nvml: Any = None) -> tuple[bool, str]:
    """Whether NVML starts and sees at least one GPU, and why not when it does not.

    nvml: the pynvml module or a stand-in (``FakeNvml``); None means the real pynvml.
    """
    try:
        backend = _nvml_backend()
    except ImportError:
        reason = "nvidia-ml-py is not installed (pip install 'wattsched[worker]')"
    else:
        try:
            count = backend.device_count(nvml or backend.pynvml)
        except MeterError as err:
            reason = str(err)
        else:
            if count > 0:
                return True, f"NVML sees {count} GPU(s)"
            reason = "NVML sees no GPUs on this node"
    logger.info("NVML is unavailable: %s", reason)
    return False, reason


def physical_gpu_count(nvml: Any = None) -> int:
    """How many physical NVIDIA GPUs this node has: 0 where NVML is missing."""
    if not nvml_available(nvml)[0]:
        return 0
    backend = _nvml_backend()
    return backend.device_count(nvml or backend.pynvml)


def _nvml_reason_against(gpu_indices: list[int], nvml: Any) -> str | None:
    """Why the NVML meter cannot measure these GPUs, or None when it can."""
    ok, reason = nvml_available(nvml)
    if not ok:
        return reason
    count = physical_gpu_count(nvml)
    missing = [i for i in gpu_indices if not 0 <= i < count]
    if missing:
        return f"GPU indices {missing} do not exist (NVML sees {count} GPU(s), indices 0 to {count - 1})"
    return None


def open_gpu_meter(
    gpu_indices: Sequence[int],
    *,
    pid: int | Sequence[int],
    gpu_type: str = DEFAULT_GPU_TYPE,
    mode: str = "auto",
    nvml: Any = None,
    power_cap_w: float | None = None,
    cores: float | None = None,
) -> EnergyMeter:
    """Open the meter for a job's GPUs.

    pid: the job's process (or its processes, one per rank), whose CPU activity drives a simulated meter's
        utilisation.
    gpu_type: the model a simulated meter stands in for (see gpu_types.GPU_TYPES).
    power_cap_w: the per-GPU cap a simulated meter applies; real GPUs enforce their own. Units: W.
    cores: busy cores that count as a fully busy simulated GPU (default: the cores this process may use).
    """
    _check_mode(mode, GPU_MODES)
    # Checked even where NVML will be used, so a misconfigured type fails on every node, not only on simulated ones.
    simulated_type = lookup_gpu_type(gpu_type)
    indices = list(gpu_indices)
    if not indices:
        raise MeterError("a GPU meter needs at least one GPU index; a job without GPUs needs only a CPU meter")
    if mode != "simulated":
        reason = _nvml_reason_against(indices, nvml)
        if reason is None:
            backend = _nvml_backend()
            return backend.NvmlGpuMeter(indices, nvml=nvml or backend.pynvml)
        if mode == "nvml":
            raise MeterError(f"the NVML meter was required but cannot be used: {reason}")
        logger.info("GPUs %s get the simulated meter: %s", indices, reason)
    return SimulatedGpuMeter(simulated_type, len(indices), ProcessUtilization(pid, cores), power_cap_w)


def open_cpu_meter(
    pid: int | Sequence[int], *, mode: str = "auto", rapl_root: str = DEFAULT_RAPL_ROOT,
    watts_per_core: float = 10.0,
) -> EnergyMeter:
    """Open the meter for a job's CPU: RAPL package counters (whole packages) or the job's CPU-time estimate.

    watts_per_core: the draw of one busy core that the estimate assumes. Units: W.
    """
    _check_mode(mode, CPU_MODES)
    if mode != "estimate":
        ok, reason = rapl_available(rapl_root)
        if ok:
            return RaplCpuMeter(rapl_root)
        if mode == "rapl":
            raise MeterError(f"the RAPL meter was required but cannot be used: {reason}")
        logger.info("CPU energy of process %d is estimated from CPU time: %s", pid, reason)
    return EstimatedCpuMeter(pid, watts_per_core)
