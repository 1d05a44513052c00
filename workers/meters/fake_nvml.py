"""A stand-in for ``pynvml`` driven by a scripted power trace and a manual clock, for tests and demos.

It implements the part of the pynvml API that ``NvmlGpuMeter`` and ``gpu_info`` use and raises pynvml's own
error classes, so the real error translation runs against it. It can play a GPU without an energy counter
(pre-Volta), a driver reload (``reset_counter``) and a node where NVML cannot start (``init_error``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pynvml


class ManualClock:
    """A clock that moves only when told to. Call it for the time (Unix seconds)."""

    def __init__(self, start_s: float = 1_700_000_000.0) -> None:
        self.now_s = start_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        """Move the clock forward. Units: s."""
        self.now_s += seconds


@dataclass(frozen=True)
class FakeGpu:
    """One scripted GPU.

    power_steps_w: ``(offset_s, power_w)`` pairs, sorted: from ``offset_s`` seconds after the FakeNvml was made
    the GPU draws ``power_w`` until the next step; before the first step it draws the first step's power.
    """

    power_steps_w: Sequence[tuple[float, float]] = ((0.0, 100.0),)
    name: str = "NVIDIA A100-SXM4-40GB"
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    has_energy_counter: bool = True
    #: The counter's value when the FakeNvml is made, as if the driver had been up for a while. Units: mJ.
    counter_at_start_mj: int = 987_654_321
    #: (min, max) power limit, or None where the GPU does not report constraints. Units: mW.
    power_limit_constraints_mw: tuple[int, int] | None = (100_000, 400_000)
    default_power_limit_mw: int = 400_000
    memory_total_bytes: int = 40 * 2**30

    def power_w(self, offset_s: float) -> float:
        """The draw at ``offset_s`` seconds after start. Units: W."""
        current_w = self.power_steps_w[0][1]
        for step_s, step_w in self.power_steps_w:
            if step_s <= offset_s:
                current_w = step_w
        return current_w

    def energy_j(self, from_s: float, to_s: float) -> float:
        """The exact integral of the step trace between two offsets. Units: J."""
        total_j = 0.0
        for i, (step_s, step_w) in enumerate(self.power_steps_w):
            start_s = step_s if i > 0 else -math.inf
            end_s = self.power_steps_w[i + 1][0] if i + 1 < len(self.power_steps_w) else math.inf
            overlap_s = min(to_s, end_s) - max(from_s, start_s)
            if overlap_s > 0:
                total_j += step_w * overlap_s
        return total_j


class _Device:
    """A handle: one GPU's script plus its counter state (the counter restarts on a driver reload)."""

    def __init__(self, gpu: FakeGpu, counter_base_mj: float, counter_base_offset_s: float) -> None:
        self.gpu = gpu
        self.counter_base_mj = counter_base_mj
        self.counter_base_offset_s = counter_base_offset_s
        self.power_limit_mw = gpu.default_power_limit_mw


class FakeNvml:
    """A module-like fake of pynvml. Pass it wherever a meter takes ``nvml=``.

    init_error: an NVML error code (e.g. ``pynvml.NVML_ERROR_LIBRARY_NOT_FOUND``) that ``nvmlInit`` raises.
    """

    def __init__(self, gpus: Sequence[FakeGpu], clock: ManualClock, *, init_error: int | None = None) -> None:
        self._clock = clock
        self._start_s = clock()
        self._init_error = init_error
        self._devices = [_Device(gpu, gpu.counter_at_start_mj, 0.0) for gpu in gpus]
        self.initialised = False
        self.init_calls = 0
        self.root = True  # whether power limits may be set
        self.set_calls: list[tuple[int, int]] = []  # (gpu index, mW) of every limit set, for tests

    def __getattr__(self, name: str) -> Any:
        # Error classes and constants are pynvml's own, so code written against pynvml works unchanged.
        if name.startswith(("NVMLError", "NVML_")):
            return getattr(pynvml, name)
        raise AttributeError(name)

    def _offset_s(self) -> float:
        return self._clock() - self._start_s

    def _check_initialised(self) -> None:
        if not self.initialised:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)

    def reset_counter(self, index: int) -> None:
        """Play a driver reload: GPU ``index``'s energy counter restarts from zero now."""
        self._devices[index].counter_base_mj = 0.0
        self._devices[index].counter_base_offset_s = self._offset_s()

    def nvmlInit(self) -> None:
        self.init_calls += 1
        if self._init_error is not None:
            raise pynvml.NVMLError(self._init_error)
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self._check_initialised()
        self.initialised = False

    def nvmlDeviceGetCount(self) -> int:
        self._check_initialised()
        return len(self._devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Device:
        self._check_initialised()
        if not 0 <= index < len(self._devices):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return self._devices[index]

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: _Device) -> int:
        """Units: mJ since the (fake) driver loaded."""
        self._check_initialised()
        if not handle.gpu.has_energy_counter:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        used_j = handle.gpu.energy_j(handle.counter_base_offset_s, self._offset_s())
        return int(handle.counter_base_mj + used_j * 1000)

    def nvmlDeviceGetPowerUsage(self, handle: _Device) -> int:
        """Units: mW."""
        self._check_initialised()
        return int(handle.gpu.power_w(self._offset_s()) * 1000)

    def nvmlDeviceGetName(self, handle: _Device) -> str:
        self._check_initialised()
        return handle.gpu.name

    def nvmlDeviceGetUUID(self, handle: _Device) -> str:
        self._check_initialised()
        return handle.gpu.uuid

    def nvmlDeviceGetPowerManagementLimitConstraints(self, handle: _Device) -> list[int]:
        """Units: mW."""
        self._check_initialised()
        if handle.gpu.power_limit_constraints_mw is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return list(handle.gpu.power_limit_constraints_mw)

    def nvmlDeviceGetPowerManagementDefaultLimit(self, handle: _Device) -> int:
        """Units: mW."""
        self._check_initialised()
        return handle.gpu.default_power_limit_mw

    def nvmlDeviceSetPowerManagementLimit(self, handle: _Device, limit_mw: int) -> None:
        """Units: mW. Like the real call: refused outside the constraints, and (here) without root."""
        self._check_initialised()
        if not self.root:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NO_PERMISSION)
        low, high = handle.gpu.power_limit_constraints_mw or (0, handle.gpu.default_power_limit_mw)
        if not low <= limit_mw <= high:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        self.set_calls.append((self._devices.index(handle), limit_mw))
        handle.power_limit_mw = limit_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: _Device) -> int:
        """Units: mW. The real one can differ from the limit set (other limits apply); here it is the same."""
        self._check_initialised()
        return handle.power_limit_mw

    def nvmlDeviceGetMemoryInfo(self, handle: _Device) -> SimpleNamespace:
        """Units: bytes (``total``, ``free``, ``used``)."""
        self._check_initialised()
        return SimpleNamespace(total=handle.gpu.memory_total_bytes, free=handle.gpu.memory_total_bytes, used=0)
