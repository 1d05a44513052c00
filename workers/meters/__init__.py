"""Energy meters for GPU jobs: what a job's GPUs and CPU used, and how each figure was obtained.

``factory.open_gpu_meter`` and ``factory.open_cpu_meter`` choose a backend; ``EnergyRecorder`` polls a job's two
meters while it runs. The NVML backend (``workers.meters.nvml``) and its test double
(``workers.meters.fake_nvml``) need nvidia-ml-py, an optional dependency, so they are imported from their
modules rather than re-exported here.
"""

from workers.meters.base import (
    METHOD_ESTIMATE,
    METHOD_NVML_COUNTER,
    METHOD_NVML_POWER_POLL,
    METHOD_RAPL,
    METHOD_SIMULATED,
    METHODS,
    EnergyMeter,
    EnergyReading,
    EnergyWindow,
)
from workers.meters.cpu import EstimatedCpuMeter, RaplCpuMeter, rapl_available
from workers.meters.factory import nvml_available, open_cpu_meter, open_gpu_meter, physical_gpu_count
from workers.meters.gpu_types import DEFAULT_GPU_TYPE, GPU_TYPES, GpuType, lookup_gpu_type
from workers.meters.recorder import EnergyRecorder, EnergyTotals, PowerSample, downsample
from workers.meters.simulated import ProcessUtilization, SimulatedGpuMeter

__all__ = [
    "DEFAULT_GPU_TYPE",
    "GPU_TYPES",
    "METHODS",
    "METHOD_ESTIMATE",
    "METHOD_NVML_COUNTER",
    "METHOD_NVML_POWER_POLL",
    "METHOD_RAPL",
    "METHOD_SIMULATED",
    "EnergyMeter",
    "EnergyReading",
    "EnergyRecorder",
    "EnergyTotals",
    "EnergyWindow",
    "EstimatedCpuMeter",
    "GpuType",
    "PowerSample",
    "ProcessUtilization",
    "RaplCpuMeter",
    "SimulatedGpuMeter",
    "downsample",
    "lookup_gpu_type",
    "nvml_available",
    "open_cpu_meter",
    "open_gpu_meter",
    "physical_gpu_count",
    "rapl_available",
]
