"""GPU power caps through NVML, behind a dry-run switch that is on by default.

Setting a limit needs root, must lie within the GPU's constraints and does not survive a driver reload, and
the enforced limit may differ from the one set. So the capper clamps the request to the constraints, sets it,
reads the enforced limit back (that is the figure recorded), and restores each GPU's default limit when the job
ends. In dry-run mode — the default, and the only mode on machines whose settings must not change — it reads
the constraints, works out and logs what it would set, and changes nothing.

``cap_run`` is what the worker calls: it says how a run's cap was applied (``workers.events.PowerCap``), which
decides whether the run's saving against full power may be credited to the cap. A dry run's is not.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

from workers.errors import MeterError
from workers.events import CapMode, PowerCap

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CapResult:
    """What one GPU's cap came to. Units: W.

    applied_w: the enforced limit read back after setting it, or (dry run) the clamped limit that would be set.
    """

    gpu_index: int
    requested_w: float
    applied_w: float
    dry_run: bool


class PowerCapper:
    """Caps a job's GPUs for the length of the job, then restores their default limits."""

    def __init__(self, gpu_indices: Sequence[int], nvml: Any = None, dry_run: bool = True):
        if nvml is None:
            import pynvml as nvml
        self._nvml = nvml
        self._indices = list(gpu_indices)
        self.dry_run = dry_run
        self._capped: list[Any] = []  # handles whose limit was changed, to restore

    def apply(self, cap_w: float) -> list[CapResult]:
        """Cap every GPU at ``cap_w`` (clamped to its constraints). Raises MeterError when NVML refuses."""
        nvml = self._nvml
        results = []
        try:
            nvml.nvmlInit()
            for index in self._indices:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                low_mw, high_mw = nvml.nvmlDeviceGetPowerManagementLimitConstraints(handle)
                target_mw = int(min(max(cap_w * 1000.0, low_mw), high_mw))
                if self.dry_run:
                    log.info("dry run: would cap GPU %d at %.0f W (asked %.0f W, allowed %.0f-%.0f W)",
                             index, target_mw / 1000, cap_w, low_mw / 1000, high_mw / 1000)
                    results.append(CapResult(index, cap_w, target_mw / 1000.0, True))
                    continue
                nvml.nvmlDeviceSetPowerManagementLimit(handle, target_mw)
                self._capped.append(handle)
                enforced_mw = nvml.nvmlDeviceGetEnforcedPowerLimit(handle)
                results.append(CapResult(index, cap_w, enforced_mw / 1000.0, False))
        except nvml.NVMLError as err:
            self.restore()
            raise MeterError(f"could not cap GPU power at {cap_w:.0f} W: {err}; setting power limits needs root "
                             "(or run with the power cap dry run on)") from err
        return results

    def restore(self) -> None:
        """Put back each capped GPU's default limit; idempotent, and never raises (it runs on the way out)."""
        nvml = self._nvml
        while self._capped:
            handle = self._capped.pop()
            try:
                nvml.nvmlDeviceSetPowerManagementLimit(handle, nvml.nvmlDeviceGetPowerManagementDefaultLimit(handle))
            except nvml.NVMLError as err:  # logged loudly: the GPU keeps a lower limit until the driver reloads
                log.error("could not restore a GPU's default power limit: %s", err)


def cap_run(gpu_indices: Sequence[int], cap_w: float | None, *, logical: bool, dry_run: bool,
            nvml: Any = None) -> tuple[PowerCap | None, PowerCapper | None]:
    """Cap a run's GPUs at ``cap_w`` (W) and say how: ``(PowerCap, capper to restore when the run ends)``.

    No cap asked: ``(None, None)``. Logical GPUs have nothing to set: their simulated meter clips the draw, so the
    cap is ``simulated`` and there is no capper. Physical GPUs are capped through NVML (``applied``), or only
    worked out in a dry run (``dry-run``: the GPU keeps its default limit). Raises MeterError when NVML refuses.
    """
    if cap_w is None:
        return None, None
    if logical:
        return PowerCap(requested_w=cap_w, limit_w=cap_w, mode=CapMode.SIMULATED), None
    capper = PowerCapper(gpu_indices, nvml=nvml, dry_run=dry_run)
    results = capper.apply(cap_w)
    mode = CapMode.DRY_RUN if any(r.dry_run for r in results) else CapMode.APPLIED
    return PowerCap(requested_w=cap_w, limit_w=min(r.applied_w for r in results), mode=mode), capper
