"""CPU energy: Intel/AMD RAPL package counters where readable, else an estimate from the job's CPU time.

RAPL measures whole packages, every process on them included; the estimate covers only the job's process
tree. Their method labels (``rapl``, ``estimate``) keep the two apart wherever the numbers go.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil

from workers.errors import MeterError
from workers.meters.base import METHOD_ESTIMATE, METHOD_RAPL, EnergyMeter, EnergyReading

logger = logging.getLogger(__name__)

#: Where Linux exposes RAPL zones.
DEFAULT_RAPL_ROOT = "/sys/class/powercap"

# Package zones only: /sys/class/powercap lists nested zones (intel-rapl:0:0 = cores, :0:1 = uncore/dram) flat
# beside their package, and they are already included in the package's counter. The intel-rapl-mmio zones
# are a second view of the same packages and are not matched either.
_PACKAGE_ZONE = re.compile(r"intel-rapl:\d+")

# An upper bound on one package's draw, used only to choose how often a counter must be read to see each wrap.
_MAX_PACKAGE_POWER_W = 500.0


def _read_uj(path: Path) -> int:
    """Read one sysfs counter. Units: uJ."""
    return int(path.read_text().strip())


def _package_zones(root: Path) -> list[Path]:
    """The top-level package zones under a powercap root, sorted by index.

    Top-level platform zones named ``psys`` are left out too: they cover the packages plus more, so adding
    them would count the packages twice.
    """
    zones = []
    for zone in sorted(root.glob("intel-rapl:*"), key=lambda p: int(p.name.split(":")[1])):
        if not _PACKAGE_ZONE.fullmatch(zone.name):
            continue
        name_file = zone / "name"
        name = name_file.read_text().strip() if name_file.exists() else "package"
        if not name.startswith("package"):
            logger.debug("RAPL zone %s (%s) is not a CPU package; not summed", zone, name)
            continue
        zones.append(zone)
    return zones


@functools.lru_cache(maxsize=None)
def rapl_available(root: str = DEFAULT_RAPL_ROOT) -> tuple[bool, str]:
    """Whether RAPL package counters can be read under ``root``, and why not when they cannot.

    Cached per root for the life of the process; ``rapl_available.cache_clear()`` forgets.
    """
    zones = _package_zones(Path(root))
    if not zones:
        return False, f"no RAPL package zones under {root} (not Linux, no powercap driver, or a VM without RAPL)"
    try:
        for zone in zones:
            _read_uj(zone / "energy_uj")
            _read_uj(zone / "max_energy_range_uj")
    except PermissionError:
        return False, (
            f"{zone}/energy_uj is readable by root only (Linux 5.10 and later): run the worker as root, "
            "or grant read access to the energy_uj files, or accept the CPU-time estimate"
        )
    except (OSError, ValueError) as err:
        return False, f"cannot read RAPL counter in {zone}: {err}"
    return True, f"{len(zones)} RAPL package zone(s) under {root}"


class RaplCpuMeter(EnergyMeter):
    """Energy of every CPU package of this machine, from the RAPL counters (all processes on them)."""

    method = METHOD_RAPL

    def __init__(self, root: str = DEFAULT_RAPL_ROOT, clock: Callable[[], float] = time.time) -> None:
        ok, reason = rapl_available(root)
        if not ok:
            raise MeterError(reason)
        self._clock = clock
        self._root = root
        self._zones = _package_zones(Path(root))
        self._ranges_uj = [_read_uj(zone / "max_energy_range_uj") for zone in self._zones]
        self._last_uj = [_read_uj(zone / "energy_uj") for zone in self._zones]
        self._energy_j = 0.0
        self._last_s = clock()
        # A wrap is only detectable if a counter wraps at most once between two reads; a factor 2 to spare.
        self.max_poll_interval_s = min(self._ranges_uj) / 1e6 / _MAX_PACKAGE_POWER_W / 2

    def read(self) -> EnergyReading:
        """Read the package energy since open (J) and the mean draw since the previous read (W)."""
        now = self._clock()
        try:
            values_uj = [_read_uj(zone / "energy_uj") for zone in self._zones]
        except (OSError, ValueError) as err:
            raise MeterError(f"cannot read a RAPL counter ({err}): check that this user can read {self._root}") from err
        added_j = 0.0
        for i, value_uj in enumerate(values_uj):
            delta_uj = value_uj - self._last_uj[i]
            if delta_uj < 0:  # the counter wrapped past max_energy_range_uj and restarted from zero
                delta_uj += self._ranges_uj[i]
            self._last_uj[i] = value_uj
            added_j += delta_uj / 1e6
        self._energy_j += added_j
        power_w = added_j / (now - self._last_s) if now > self._last_s else 0.0
        self._last_s = now
        return EnergyReading(timestamp_s=now, energy_j=self._energy_j, power_w=power_w)


def process_tree_cpu_seconds(pid: int | Sequence[int]) -> float | None:
    """CPU time used so far by a process and all its descendants, or None once the process is gone. Units: s.

    pid: one process, or several (a job's processes on a node, one per rank): their trees' sum, None once every
    one of them is gone. Each process's reaped children are counted through its ``children_*`` times, so a child
    that exits moves its time to its parent rather than dropping it from the sum.
    """
    total, roots_read = 0.0, 0
    for root_pid in ([pid] if isinstance(pid, int) else pid):
        try:
            root = psutil.Process(root_pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for process in processes:
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue  # a descendant that exited between listing and reading; its parent will count it
            roots_read += process is root
            total += times.user + times.system + times.children_user + times.children_system
    return total if roots_read else None


class EstimatedCpuMeter(EnergyMeter):
    """An estimate of the CPU energy of one process tree: its CPU time times a nominal draw per busy core."""

    method = METHOD_ESTIMATE

    def __init__(self, pid: int | Sequence[int], watts_per_core: float = 10.0,
                 clock: Callable[[], float] = time.time) -> None:
        """pid: the job's process, or its processes; watts_per_core: the assumed draw of one busy core. Units: W."""
        start = process_tree_cpu_seconds(pid)
        if start is None:
            raise MeterError(f"process {pid} does not exist: open the meter after starting the job")
        self._pid = pid
        self._watts_per_core = watts_per_core
        self._clock = clock
        self._last_tree_cpu_s = start
        self._used_cpu_s = 0.0
        self._last_s = clock()

    def read(self) -> EnergyReading:
        """Estimate the energy since open (J) and the mean draw since the previous read (W).

        Once the process has exited the figure stays at its last value.
        """
        now = self._clock()
        tree_cpu_s = process_tree_cpu_seconds(self._pid)
        added_cpu_s = 0.0
        if tree_cpu_s is not None:
            # The sum dips when a descendant is re-parented outside the tree; that is not negative energy.
            added_cpu_s = max(0.0, tree_cpu_s - self._last_tree_cpu_s)
            self._last_tree_cpu_s = tree_cpu_s
        self._used_cpu_s += added_cpu_s
        power_w = added_cpu_s * self._watts_per_core / (now - self._last_s) if now > self._last_s else 0.0
        self._last_s = now
        return EnergyReading(timestamp_s=now, energy_j=self._used_cpu_s * self._watts_per_core, power_w=power_w)
