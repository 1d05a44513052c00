"""NVIDIA GPU energy through NVML: the energy counter where the GPU has one, else integrated power polls.

The ``nvml`` module is injected (the real ``pynvml`` by default, ``fake_nvml.FakeNvml`` in tests). Every NVML
error is translated once, here, into a ``MeterError`` whose message says what to do.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any

import pynvml

from workers.errors import MeterError
from workers.meters.base import METHOD_NVML_COUNTER, METHOD_NVML_POWER_POLL, EnergyMeter, EnergyReading

logger = logging.getLogger(__name__)

# What to do about each NVML error; the codes are NVML's own (nvml.h), shared by the fake.
_ADVICE = {
    pynvml.NVML_ERROR_LIBRARY_NOT_FOUND: "libnvidia-ml.so is missing: install the NVIDIA driver, "
    "or use the simulated meter (mode='simulated')",
    pynvml.NVML_ERROR_DRIVER_NOT_LOADED: "the NVIDIA kernel driver is not loaded: check `nvidia-smi` and load it, "
    "or use the simulated meter (mode='simulated')",
    pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH: "the NVML library and the kernel driver differ in version: "
    "reload the driver or reboot the node",
    pynvml.NVML_ERROR_NO_PERMISSION: "no permission: run the worker as a user that can open /dev/nvidia*",
    pynvml.NVML_ERROR_INVALID_ARGUMENT: "no such GPU: compare the GPU indices with `nvidia-smi -L` "
    "(indices are NVML's, not CUDA_VISIBLE_DEVICES positions)",
    pynvml.NVML_ERROR_NOT_SUPPORTED: "this GPU does not support the query (MIG instances have no power "
    "readings): meter whole GPUs, or use the simulated meter",
    pynvml.NVML_ERROR_UNINITIALIZED: "NVML is not initialised or was shut down: "
    "open meters with workers.meters.factory.open_gpu_meter",
    pynvml.NVML_ERROR_GPU_IS_LOST: "the GPU fell off the bus: drain the node and check `nvidia-smi` and dmesg",
    pynvml.NVML_ERROR_RESET_REQUIRED: "the GPU needs a reset: drain the node and reset it (`nvidia-smi -r`)",
    pynvml.NVML_ERROR_TIMEOUT: "NVML timed out: retry; if it persists, check the node with `nvidia-smi`",
}
_DEFAULT_ADVICE = "unexpected NVML error: check the node with `nvidia-smi`"


def _translating_nvml_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn an NVML error raised by ``func`` into a MeterError that names the call and what to do."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except pynvml.NVMLError as err:
            advice = _ADVICE.get(err.value, _DEFAULT_ADVICE)
            raise MeterError(f"NVML error in {func.__qualname__}: {err}; {advice}") from err

    return wrapper


@functools.lru_cache(maxsize=None)
@_translating_nvml_errors
def init_nvml(nvml: Any = pynvml) -> None:
    """Initialise NVML once per process (per injected module); a failure is not cached, so a later call retries."""
    nvml.nvmlInit()


@_translating_nvml_errors
def device_count(nvml: Any = pynvml) -> int:
    """How many GPUs NVML sees on this node."""
    init_nvml(nvml)
    return nvml.nvmlDeviceGetCount()


@_translating_nvml_errors
def gpu_info(index: int, nvml: Any = pynvml) -> dict[str, Any]:
    """Name, UUID, maximum power limit (W) and memory (bytes) of one GPU."""
    init_nvml(nvml)
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    try:
        max_power_mw = nvml.nvmlDeviceGetPowerManagementLimitConstraints(handle)[1]
    except pynvml.NVMLError_NotSupported:
        max_power_mw = nvml.nvmlDeviceGetPowerManagementDefaultLimit(handle)
    return {
        "name": nvml.nvmlDeviceGetName(handle),
        "uuid": nvml.nvmlDeviceGetUUID(handle),
        "max_power_w": max_power_mw / 1000,
        "memory_total_bytes": nvml.nvmlDeviceGetMemoryInfo(handle).total,
    }


class NvmlGpuMeter(EnergyMeter):
    """Energy of a set of NVIDIA GPUs, summed, from NVML.

    Uses the energy counter (Volta and newer) when every GPU has one: ``method = "nvml-counter"``. Otherwise
    integrates power polls with the trapezoid rule between reads: ``method = "nvml-power-poll"``, which misses
    what happens between polls, so read it often.
    """

    @_translating_nvml_errors
    def __init__(
        self, gpu_indices: list[int], nvml: Any = pynvml, clock: Callable[[], float] = time.time
    ) -> None:
        if not gpu_indices:
            raise MeterError("an NVML meter needs at least one GPU index")
        init_nvml(nvml)
        self.gpu_indices = list(gpu_indices)
        self._nvml = nvml
        self._clock = clock
        self._handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in self.gpu_indices]
        self._energy_j = 0.0
        self._last_s = clock()
        self._last_power_w = self._power_w()
        try:
            self._last_counters_mj: list[int] | None = self._counters_mj()
            self.method = METHOD_NVML_COUNTER
            # The counter is 64-bit and keeps counting between reads; only a driver reload loses what was used since
            # the previous read, so reads need not be frequent, only regular.
            self.max_poll_interval_s = 5.0
        except pynvml.NVMLError_NotSupported:
            logger.info("GPUs %s have no energy counter (pre-Volta); integrating power polls", self.gpu_indices)
            self._last_counters_mj = None
            self.method = METHOD_NVML_POWER_POLL
            self.max_poll_interval_s = 0.5

    def _power_w(self) -> float:
        """The summed draw of the GPUs now (a 1-second average on H100 and newer). Units: W."""
        return sum(self._nvml.nvmlDeviceGetPowerUsage(h) for h in self._handles) / 1000

    def _counters_mj(self) -> list[int]:
        """Each GPU's energy counter (since the driver loaded). Units: mJ."""
        return [self._nvml.nvmlDeviceGetTotalEnergyConsumption(h) for h in self._handles]

    @_translating_nvml_errors
    def read(self) -> EnergyReading:
        """Energy since open, summed over the GPUs (J), and their summed draw now (W)."""
        if self._handles is None:
            raise MeterError("the NVML meter is closed: open a new one")
        now = self._clock()
        power_w = self._power_w()
        if self._last_counters_mj is None:
            self._energy_j += (self._last_power_w + power_w) / 2 * (now - self._last_s)
        else:
            counters_mj = self._counters_mj()
            for index, before_mj, after_mj in zip(self.gpu_indices, self._last_counters_mj, counters_mj):
                if after_mj < before_mj:
                    # The driver reloaded and restarted the counter from zero: what it holds now is the energy
                    # since the reload. What was used between the previous read and the reload is lost.
                    logger.warning("GPU %d energy counter went backwards (driver reload?); rebaselined", index)
                    before_mj = 0
                self._energy_j += (after_mj - before_mj) / 1000
            self._last_counters_mj = counters_mj
        self._last_s, self._last_power_w = now, power_w
        return EnergyReading(timestamp_s=now, energy_j=self._energy_j, power_w=power_w)

    def close(self) -> None:
        """Drop the GPU handles. NVML itself stays initialised for the rest of the process."""
        self._handles = None
