"""The scheduling levers, from the simulator on reference traces: carbon saved by time shifting, space shifting,
suspend/resume and power caps, each alone and all together, on one workload.

The workload: jobs sampled from the GAIA pai-100k trace (arrivals and lengths), three zones (DE, FR, GB) on the
Let's Wait Awhile 2020 carbon traces, 300 W per GPU, and the Zeus V100 power-limit sweeps as the power profile
where caps are allowed. Every lever runs the carbon-aware policy (perfect forecast) against fifo on the same
jobs; what a lever allows is what its jobs may do:

- time shifting: home zone, 24 h of slack, not interruptible, full power;
- space shifting: any zone (home first), no slack, not interruptible, full power;
- suspend/resume: home zone, 24 h of slack, interruptible (suspending needs slack, so time shifting comes with it);
- power caps: home zone, only the slack a job at its lowest cap needs, not interruptible, the V100 profile;
- all together: any zone, 24 h of slack, interruptible, the V100 profile.

The figures are simulated (real traces, modelled jobs), and labelled so.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

#: The traces under the reference data folder.
CARBON_DIR = "carbon/lets-wait-awhile-2020"
ZONE_FILES = {"DE": "ger_ci.csv", "FR": "fr_ci.csv", "GB": "gb_ci.csv"}
GAIA_FILE = "jobs/gaia/pai-100k.csv"
ZEUS_FILE = "power/zeus-power-limit-sweeps/v100.csv"
START_2020_S = 1577836800.0  # 2020-01-01T00:00:00Z
SLACK_S = 24 * 3600.0
POWER_W = 300.0
#: GPUs per zone: never congested, so each lever's saving is its own and not a queue's.
ZONE_GPUS = 100_000
METHOD = "simulated (Let's Wait Awhile 2020 carbon traces DE/FR/GB, GAIA pai-100k jobs, Zeus V100 profile)"
LEVERS = ("time shifting", "space shifting", "suspend/resume", "power caps", "all together")


def missing(data: Path) -> list[str]:
    """The reference files not found under ``data`` (empty when the study can run)."""
    needed = [Path(CARBON_DIR) / name for name in ZONE_FILES.values()] + [Path(GAIA_FILE), Path(ZEUS_FILE)]
    return [str(path) for path in needed if not (data / path).is_file()]


def _workload(data: Path, jobs: int, seed: int):
    """The cluster and the base jobs (home zone, no slack, full power)."""
    import numpy as np

    from scheduler.carbon.trace_file import load_carbon_trace
    from scheduler.simulation.inputs import Cluster, Job, Zone

    zones = []
    for name, file in ZONE_FILES.items():
        unix_s, values = load_carbon_trace(data / CARBON_DIR / file)
        zones.append(Zone(name, ZONE_GPUS, unix_s - START_2020_S, values))
    rows = np.loadtxt(data / GAIA_FILE, delimiter=",", skiprows=1)
    rows = rows[np.sort(np.random.default_rng(seed).choice(len(rows), min(jobs, len(rows)), replace=False))]
    names = tuple(ZONE_FILES)
    base = []
    for i, (arrival_h, length_h, cpus) in enumerate(rows):
        submit_s, duration_s = arrival_h * 3600.0, max(length_h * 3600.0, 60.0)
        base.append(Job(f"j{i}", submit_s, duration_s, int(min(max(cpus, 1), 8)), POWER_W, None, False,
                        (names[i % len(names)],), "", "train", i + 2))
    return Cluster(START_2020_S, tuple(zones)), base


def _variant(jobs, lever: str, profile) -> list:
    """The jobs as ``lever`` lets them be scheduled."""
    slowest = min(step.speed for step in profile.steps)
    all_zones = tuple(ZONE_FILES)
    out = []
    for job in jobs:
        anywhere = (job.zones[0],) + tuple(z for z in all_zones if z != job.zones[0])
        slack = job.submit_s + job.duration_s + SLACK_S
        change = {
            "time shifting": {"deadline_s": slack},
            "space shifting": {"zones": anywhere, "deadline_s": job.submit_s + job.duration_s},
            "suspend/resume": {"deadline_s": slack, "interruptible": True},
            "power caps": {"profile": profile.name, "deadline_s": job.submit_s + job.duration_s / slowest},
            "all together": {"zones": anywhere, "deadline_s": slack, "interruptible": True, "profile": profile.name},
        }[lever]
        out.append(dataclasses.replace(job, **change))
    return out


def scheduling_rows(data: Path, jobs: int = 300, seed: int = 0) -> list[dict[str, Any]]:
    """One row per lever: emissions under fifo and under the carbon-aware policy (kg), energy (kWh), saving."""
    from scheduler.simulation.driver import simulate
    from scheduler.simulation.inputs import sweep_profile

    cluster, base = _workload(data, jobs, seed)
    profile = sweep_profile(data / ZEUS_FILE, "v100")
    profiles = {profile.name: profile}
    rows = []
    for lever in LEVERS:
        variant = _variant(base, lever, profile)
        fifo = simulate(cluster, variant, "fifo", "perfect", seed, profiles)["summary"]
        aware = simulate(cluster, variant, "carbon-aware", "perfect", seed, profiles)["summary"]
        saving = 1 - aware["emissions_kg"] / fifo["emissions_kg"] if fifo["emissions_kg"] else None
        rows.append({"lever": lever, "jobs": len(variant), "fifo_kg": fifo["emissions_kg"],
                     "aware_kg": aware["emissions_kg"], "fifo_kwh": fifo["energy_kwh"],
                     "aware_kwh": aware["energy_kwh"], "saving": saving, "method": METHOD})
    return rows
