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
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from datetime import datetime, timezone
from pathlib import Path

from carbon_policies import DEFAULT_DATA, HEADER, START_2020, gaia_jobs, run_scenario

from scheduler.carbon.trace_file import load_carbon_trace
from scheduler.simulation.inputs import Cluster, Job, Zone

DAY_S = 86400.0
FILES = {"DE": "ger_ci.csv", "FR": "fr_ci.csv"}


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
    args = parser.parse_args(argv)
    lww, gaia = args.data / "carbon/lets-wait-awhile-2020", args.data / "jobs/gaia"
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
        rows += run_scenario(f"cold-{name}", Cluster(start, (zone,)), jobs, {})
    return 1 if any("crashed" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
