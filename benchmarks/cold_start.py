"""The cold start: carbon-aware planning on a history-only forecast in a zone's first weeks of history.

    .venv/bin/python benchmarks/cold_start.py [--start 2020-01-06] [--days 28] [--jobs N] [--only DE] [--data PATH]

Scenario ``cold-<zone>``: one zone (the Let's Wait Awhile 2020 traces, DE and FR) whose trace is cut at the
window's start, so the forecast has no history before it (a new zone, a daemon just installed); t = 0 is the
window's start. The jobs are those of ``carbon_policies.py``'s DE-2020 scenario (GAIA's pai-100k arrivals and
lengths, GPUs = min(cpus, 8), 300 W per GPU, deadline = submission + length + 24 h, not interruptible, no caps,
room for every job) submitted within the window: all of them by default, or, with ``--jobs N``, those of the N
that ``carbon_policies.py --jobs N`` samples over the year.

The runs, the checker, "best possible" and "share of best" are ``carbon_policies.py``'s (see its docstring):
fifo, carbon-aware on the perfect forecast, on the persistence forecast (carbon-aware's own history model, whose
cold start is what this measures) and ``naive`` (planning on "same time yesterday" as given).

One more run, ``carbon-aware persistence + shape prior``, is the persistence run with a *shape prior* given to the
history model (``policies.history_forecast.ShapePrior``): the usual relative intensity by hour of the week (UTC,
from Monday 00:00), learned from OTHER zones' histories, none of them the cold zone nor from 2020. What is given:
the mean over zones of each zone's mean relative intensity (each hour over its week's mean, weeks with at least
150 of their 168 hours) by hour of the week, over the Electricity Maps hourly traces of October 2021 to September
2022 (``carbon/electricitymaps-47-zones-2021-2022``) of the European zones with about a year of data there (DE,
FR, GB, IE, IS, IT-NO, SE), less the cold zone. Nothing of the cold zone's own data is in it; the blend weighs
it by the errors it made on the zone's own days so far, as the other forecasts it blends. ``--no-prior`` skips
this run.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from carbon_policies import DEFAULT_DATA, HEADER, START_2020, _format, best_possible_kg, gaia_jobs, run_scenario

from policies.builtin import create_policy
from policies.history_forecast import ShapePrior, relative_week
from scheduler.carbon.history import MIN_WEEK_HOURS, MONDAY_UNIX_S  # the daemon's prior is built alike
from scheduler.carbon.trace_file import load_carbon_trace
from scheduler.simulation.checker import check_result
from scheduler.simulation.engine import Simulation
from scheduler.simulation.forecasts import PersistenceForecast, ZoneSignal
from scheduler.simulation.inputs import Cluster, Job, Zone
from scheduler.simulation.result import build_result

DAY_S = 86400.0
HOUR_S = 3600.0
FILES = {"DE": "ger_ci.csv", "FR": "fr_ci.csv"}
# the European zones with about a year (October 2021 to September 2022) of hourly data in that set
PRIOR_ZONES = ("DE", "FR", "GB", "IE", "IS", "IT-NO", "SE")


def other_zones_prior(em_dir: Path, cold_zone: str, clock_start_unix_s: float) -> ShapePrior:
    """The mean relative week of ``PRIOR_ZONES`` other than ``cold_zone``, on a clock starting at
    ``clock_start_unix_s``."""
    relative = np.mean([relative_week(*load_carbon_trace(em_dir / f"{z}.csv"), MONDAY_UNIX_S, MIN_WEEK_HOURS)
                        for z in PRIOR_ZONES if z != cold_zone], axis=0)
    return ShapePrior(MONDAY_UNIX_S - clock_start_unix_s, HOUR_S, relative)


class PriorPersistence(PersistenceForecast):
    """The persistence forecast whose source also gives each zone a shape prior."""

    def __init__(self, signals: dict[str, ZoneSignal], priors: dict[str, ShapePrior]):
        super().__init__(signals)
        self._priors = priors

    def shape_prior(self, zone: str) -> ShapePrior | None:
        return self._priors.get(zone)


def run_with_prior(name: str, cluster: Cluster, jobs: list[Job], priors: dict[str, ShapePrior],
                   fifo_kg: float) -> dict:
    """Carbon-aware on ``PriorPersistence``, as a ``run_scenario`` row (checked; share of the best possible)."""
    began = time.perf_counter()
    signals = {z.name: ZoneSignal(z.times_s, z.g_per_kwh) for z in cluster.zones}
    sim = Simulation(cluster, jobs, {}, create_policy("carbon-aware"), PriorPersistence(signals, priors))
    result = build_result(sim.run(), cluster, "carbon-aware", "persistence", 0, 0.0, sim.decision_rounds)
    wall = time.perf_counter() - began
    by_id = {j.job_id: j for j in jobs}
    s, problems = result["summary"], check_result(result, cluster, jobs, {})
    best = best_possible_kg(jobs, cluster, {})
    row = {"scenario": name, "run": "carbon-aware persistence + shape prior", "jobs": s["jobs"],
           "emissions_kg": s["emissions_kg"], "energy_kwh": s["energy_kwh"], "completed": s["completed"],
           "misses_feasible": sum(1 for e in result["jobs"] if by_id[e["job_id"]].feasible
                                  and e["completed_s"] is not None
                                  and e["completed_s"] > by_id[e["job_id"]].effective_deadline_s + 1e-6),
           "wall_s": wall, "checker": "ok" if not problems else f"{len(problems)} problems: {problems[0]}",
           "reduction": 1 - s["emissions_kg"] / fifo_kg}
    if fifo_kg > best:
        row["share_of_best"] = (fifo_kg - s["emissions_kg"]) / (fifo_kg - best)
    print(_format(row), flush=True)
    return row


def cold_zone(path: Path, name: str, window_start_unix_s: float) -> Zone:
    """The zone's trace from the window's start on (nothing earlier), on a clock starting there."""
    unix_s, values = load_carbon_trace(path)
    keep = unix_s >= window_start_unix_s
    return Zone(name, 100_000, unix_s[keep] - window_start_unix_s, values[keep])


def window_jobs(jobs: list[Job], window_start_unix_s: float, days: float) -> list[Job]:
    """The jobs (on the 2020 clock) submitted within the window, moved onto the window's clock."""
    offset_s = window_start_unix_s - START_2020
    return [dataclasses.replace(j, submit_s=j.submit_s - offset_s, deadline_s=j.deadline_s - offset_s)
            for j in jobs if offset_s <= j.submit_s < offset_s + days * DAY_S]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--start", default="2020-01-06", help="the window's first day (UTC), in 2020")
    parser.add_argument("--days", type=float, default=28.0)
    parser.add_argument("--jobs", type=int, default=None,
                        help="sample this many jobs over 2020 first, as carbon_policies.py does (default: all)")
    parser.add_argument("--only", help="run only zones whose name contains this")
    parser.add_argument("--no-prior", action="store_true", help="skip the run with a shape prior")
    args = parser.parse_args(argv)
    lww, gaia = args.data / "carbon/lets-wait-awhile-2020", args.data / "jobs/gaia"
    em = args.data / "carbon/electricitymaps-47-zones-2021-2022"
    if not (lww.is_dir() and gaia.is_dir()):
        print(f"skipped: the reference data is not at {args.data} (pass --data)")
        return 0
    start = datetime.strptime(args.start, "%Y-%m-%d").replace(tzinfo=timezone.utc).timestamp()
    rows = []
    print(HEADER)
    for name, file in FILES.items():
        if args.only and args.only not in name:
            continue
        zone = cold_zone(lww / file, name, start)
        jobs = window_jobs(gaia_jobs(gaia / "pai-100k.csv", args.jobs, (name,), False, 0.0, ""), start, args.days)
        cluster = Cluster(start, (zone,))
        scenario = run_scenario(f"cold-{name}", cluster, jobs, {})
        rows += scenario
        fifo_kg = next((r["emissions_kg"] for r in scenario if r["run"] == "fifo" and "emissions_kg" in r), None)
        if not args.no_prior and em.is_dir() and fifo_kg:
            rows.append(run_with_prior(f"cold-{name}", cluster, jobs, {name: other_zones_prior(em, name, start)},
                                       fifo_kg))
    return 1 if any("crashed" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
