"""Deadlines under load: fifo vs carbon-aware on a small five-zone cluster as the queue grows (skipped without data).

    .venv/bin/python benchmarks/overload.py [--loads 1000,2000,4000,6000,8000] [--gpus 8] [--out PLOT.png]
                                            [--data PATH]

The cluster: five Electricity Maps zones (DE, FR, GB, ES, NO-NO1; hourly, from 2022-08-01) with ``--gpus`` GPUs
each (one pool per zone), no power budget. The jobs: GAIA's pai_1k trace (one week of arrivals, in seconds)
repeated over four weeks: for a load of N jobs, N rows drawn with replacement (seeded), each put in one of the
four weeks at its own time of the week, so the daily and weekly arrival pattern is kept and only the rate grows.
Each job: GPUs = the trace's CPUs (1-4), 300 W per GPU, deadline = submission + length + ``--slack-h`` (12 h), a
third interruptible (seeded), any zone allowed (home zones in turn), no power caps.

Per load: fifo, carbon-aware with perfect forecasts and with the persistence forecast; each run checked by the
independent checker; missed deadlines, kg CO2e and the run's wall time. ``--out`` writes a plot (missed deadlines
and kg against load, every run) as PNG; it needs matplotlib (the ``plot`` extra).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.carbon_policies import POWER_W, zone  # noqa: E402
from scheduler.simulation.checker import check_result  # noqa: E402
from scheduler.simulation.driver import simulate  # noqa: E402
from scheduler.simulation.inputs import Cluster, Job  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data"
START_2022_08 = 1659312000.0  # 2022-08-01T00:00:00Z
WEEK_S = 7 * 24 * 3600.0
WEEKS = 4
ZONES = ("DE", "FR", "GB", "ES", "NO-NO1")
RUNS = (("fifo", "fifo", "perfect"), ("carbon-aware perfect", "carbon-aware", "perfect"),
        ("carbon-aware persistence", "carbon-aware", "persistence"))


def overload_jobs(path: Path, n: int, zones: tuple[str, ...], slack_s: float, seed: int = 0) -> list[Job]:
    """``n`` jobs drawn from pai_1k's week (with replacement), each in one of four weeks, in arrival order."""
    data = np.loadtxt(path, delimiter=",", skiprows=1)
    rng = np.random.default_rng(seed)
    rows = data[rng.integers(0, len(data), n)]
    submit = rows[:, 0] + WEEK_S * rng.integers(0, WEEKS, n)
    interruptible = rng.random(n) < 1 / 3
    order = np.argsort(submit, kind="stable")
    jobs = []
    for i, k in enumerate(order):
        duration = float(rows[k, 1])
        home = zones[i % len(zones)]
        jobs.append(Job(f"j{i}", float(submit[k]), duration, int(rows[k, 2]), POWER_W,
                        float(submit[k]) + duration + slack_s, bool(interruptible[k]),
                        (home,) + tuple(z for z in zones if z != home), "", "train", i + 2))
    return jobs


def run_load(cluster: Cluster, jobs: list[Job], runs=RUNS, check: bool = True) -> list[dict]:
    rows = []
    for label, policy, forecast in runs:
        began = time.perf_counter()
        result = simulate(cluster, jobs, policy, forecast)
        wall = time.perf_counter() - began
        problems = check_result(result, cluster, jobs, {}) if check else []
        s = result["summary"]
        rows.append({"jobs": len(jobs), "run": label, "misses": s["deadline_misses"], "kg": s["emissions_kg"],
                     "completed": s["completed"], "wall_s": wall, "rounds": s["decision_rounds"],
                     "checker": "ok" if not problems else f"{len(problems)} problems: {problems[0]}"})
    return rows


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_miss, ax_kg) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=80)
    for label, _, _ in RUNS:
        mine = [r for r in rows if r["run"] == label]
        loads = [r["jobs"] for r in mine]
        ax_miss.plot(loads, [r["misses"] for r in mine], marker="o", label=label)
        ax_kg.plot(loads, [r["kg"] for r in mine], marker="o", label=label)
    ax_miss.set(xlabel="jobs over four weeks", ylabel="missed deadlines")
    ax_kg.set(xlabel="jobs over four weeks", ylabel="kg CO2e (simulated)")
    ax_kg.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--loads", default="1000,2000,4000,6000,8000", help="jobs over four weeks, comma-separated")
    parser.add_argument("--gpus", type=int, default=8, help="GPUs per zone")
    parser.add_argument("--slack-h", type=float, default=12.0, help="deadline = submission + length + this")
    parser.add_argument("--only", help="run only runs whose label contains this")
    parser.add_argument("--out", type=Path, help="write a PNG plot of misses and kg against load here")
    args = parser.parse_args(argv)
    em, trace = args.data / "carbon/electricitymaps-47-zones-2021-2022", args.data / "jobs/gaia/pai_1k.csv"
    if not (em.is_dir() and trace.is_file()):
        print(f"skipped: the reference data is not at {args.data} (pass --data)")
        return 0
    cluster = Cluster(START_2022_08, tuple(zone(em / f"{z}.csv", z, args.gpus, START_2022_08) for z in ZONES))
    runs = tuple(r for r in RUNS if not args.only or args.only in r[0])
    print("| jobs | run | missed deadlines | kg CO2e | completed | decision rounds | wall s | checker |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for n in (int(x) for x in args.loads.split(",")):
        for r in run_load(cluster, overload_jobs(trace, n, ZONES, args.slack_h * 3600.0), runs):
            rows.append(r)
            print(f"| {r['jobs']} | {r['run']} | {r['misses']} | {r['kg']:.1f} | {r['completed']} | {r['rounds']} | "
                  f"{r['wall_s']:.1f} | {r['checker']} |", flush=True)
    if args.out is not None:
        plot(rows, args.out, f"five zones x {args.gpus} GPUs, pai_1k over four weeks, {args.slack_h:g} h slack")
        print(f"plot: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
