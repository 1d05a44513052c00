"""GPU models the simulated meter can stand in for, with their nominal power figures."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from workers.errors import MeterError


@dataclass(frozen=True)
class GpuType:
    """A GPU model as the simulated meter sees it.

    idle_w: draw when the GPU is idle. Units: W.
    max_w: draw when fully busy (the board's TDP, also its default power limit). Units: W.
    memory_gb: memory of one GPU. Units: GB.
    """

    name: str
    idle_w: float
    max_w: float
    memory_gb: float

    def __post_init__(self) -> None:
        if not 0 <= self.idle_w < self.max_w:
            raise MeterError(f"GPU type {self.name}: need 0 <= idle_w < max_w, got {self.idle_w} and {self.max_w}")


# Nominal board figures (vendor TDP, typical idle draw reported by nvidia-smi), not measurements: a figure
# computed from them is labelled "simulated" wherever it appears.
GPU_TYPES = MappingProxyType(
    {
        t.name: t
        for t in (
            GpuType("A100-SXM4-40GB", idle_w=60, max_w=400, memory_gb=40),
            GpuType("A100-SXM4-80GB", idle_w=60, max_w=400, memory_gb=80),
            GpuType("A100-PCIe-40GB", idle_w=35, max_w=250, memory_gb=40),
            GpuType("H100-SXM", idle_w=70, max_w=700, memory_gb=80),
            GpuType("H100-PCIe", idle_w=50, max_w=350, memory_gb=80),
            GpuType("V100", idle_w=40, max_w=300, memory_gb=32),
            GpuType("A40", idle_w=30, max_w=300, memory_gb=48),
            GpuType("L40S", idle_w=35, max_w=350, memory_gb=48),
            GpuType("RTX6000", idle_w=25, max_w=260, memory_gb=24),
            GpuType("T4", idle_w=10, max_w=70, memory_gb=16),
            GpuType("L4", idle_w=16, max_w=72, memory_gb=24),
        )
    }
)

#: The model the embedded default's logical GPUs pretend to be.
DEFAULT_GPU_TYPE = "A100-SXM4-40GB"


def lookup_gpu_type(name: str) -> GpuType:
    """Look a GPU model up by name (case-insensitive); an unknown name lists the valid ones."""
    for known, entry in GPU_TYPES.items():
        if known.lower() == name.lower():
            return entry
    raise MeterError(f"unknown GPU type {name!r}: use one of {', '.join(GPU_TYPES)}")
