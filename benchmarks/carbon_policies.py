"""fifo vs carbon-aware on real carbon, job and power traces from the reference data (``--data``; skipped without).

    .venv/bin/python benchmarks/carbon_policies.py [--jobs 5000] [--perf] [--only NAME] [--data PATH]

Scenarios:
- ``DE/FR/GB-2020``: one zone each (Let's Wait Awhile 2020 traces), GAIA's pai-100k arrivals and lengths
  (hours) sampled to ``--jobs`` over 2020, GPUs = min(cpus, 8), 300 W per GPU, deadline = submission + length
  + 24 h, not interruptible, no caps, 100,000 GPUs (never congested).
- ``3-zone-2020``: DE, FR and GB together, home zones in turn, any zone allowed, half the jobs interruptible,
  every job on a power profile from the Zeus V100 sweeps (medians over workloads, per power limit).
- ``tight-3-zone-2020``: the same jobs on 8 GPUs per zone under a cluster power budget of 16 GPUs at full power
  (4.8 kW): congested at peaks (fifo's own peak wants 39 GPUs), so jobs compete for clean slots and power.
  "Best possible" (each job alone) is then a bound, not a reachable target.
- ``caps-<gpu>-DE-2020`` (a40, p100, rtx6000, v100): power capping only. The DE-2020 jobs, each on that GPU's
  Zeus profile, with deadline = submission + length / (slowest speed in the profile): the lowest cap just fits.
  There is no 24 h slack, but a job at full power may still wait length x (1 / slowest speed - 1); the
  "best possible at full power" row is that time shifting alone, without caps.
- ``alibaba-DE-2020`` and ``alibaba-3-zone-2020``: the GPU pods of Alibaba's openb trace (cluster-trace-gpu-v2023,
  about 149 days; t = 0 mapped to 2020-01-01), pods with GPUs and a scheduled time (about 6,200, all phases;
  32 still running at the trace's end count until then), at most ``--jobs`` of them sampled (seeded).
  Submission = creation, length = deletion - scheduling (at least 60 s), GPUs = num_gpu, 300 W per GPU, scaled
  by gpu_milli / 1000 for a shared GPU (num_gpu 1, gpu_milli < 1000, counted as one whole GPU), deadline =
  submission + length + 24 h, not interruptible, no caps, 100,000 GPUs per zone. The 3-zone variant puts
  home zones DE, FR, GB in turn and allows any zone.
- ``--perf``: the full pai-100k year (about 100,000 jobs) on five zones (Electricity Maps DE, FR, GB, ES, NO-NO1,
  Oct 2021 - Sep 2022; the last weeks hold the last value, as the contract says) with 200 GPUs each; then
  ``perf-other-5-zone-year``: the same jobs and year on five other zones (SE, very clean, IT-NO, IE,
  US-CAL-CISO, JP-KN; ``--other-zones`` picks others) with 200 GPUs each, half the jobs interruptible; then
  ``perf-2023-4-zone-year``: the same jobs over another year, 2023 from 1 January, on the four zones of the
  Electricity Maps hourly exports of that year (BR, ES, NO, US-CAL-CISO: LCA values) with 250 GPUs each, half
  the jobs interruptible (skipped when those files are absent).

Each run is checked by ``scheduler.simulation.checker``. "Best possible" is computed here, independently of
the policies' code: each job alone at its cheapest feasible placement (zone, start or pieces of time, cap).
Share of best = (fifo - policy) / (fifo - best). ``naive`` is carbon-aware planning on the persistence
forecast as given ("same time yesterday"), without its own history model.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from policies.snapshot import CapStep, PowerProfile  # noqa: E402
from policies.units import J_PER_KWH  # noqa: E402
from scheduler.carbon.trace_file import load_carbon_trace  # noqa: E402
from scheduler.simulation.checker import check_result  # noqa: E402
from scheduler.simulation.driver import simulate  # noqa: E402
from scheduler.simulation.inputs import Cluster, Job, Zone, sweep_profile  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data"
START_2020 = 1577836800.0  # 2020-01-01T00:00:00Z
START_2021_10 = 1633651200.0  # 2021-10-08T00:00:00Z
SLACK_S = 24 * 3600.0
POWER_W = 300.0
# tight-3-zone-2020: 8 GPUs per zone (the largest job fits one zone) and power for 16 of the 24 at full power
TIGHT_GPUS = 8
TIGHT_BUDGET_W = 16 * POWER_W
# perf-other-5-zone-year: a very clean zone (SE) among four others, none of them in --perf's mix
OTHER_ZONES = ("SE", "IT-NO", "IE", "US-CAL-CISO", "JP-KN")
# perf-2023-4-zone-year: another year, from its first day
START_2023 = 1672531200.0  # 2023-01-01T00:00:00Z
ZONES_2023 = ("BR", "ES", "NO", "US-CAL-CISO")
RUNS = (("fifo", "fifo", "perfect", {}), ("carbon-aware perfect", "carbon-aware", "perfect", {}),
        ("carbon-aware persistence", "carbon-aware", "persistence", {}),
        ("naive same-time-yesterday", "carbon-aware", "persistence", {"history_model": False}))


def zone(path: Path, name: str, gpus: int, start_unix_s: float) -> Zone:
    unix_s, values = load_carbon_trace(path)
    return Zone(name, gpus, unix_s - start_unix_s, values)


def gaia_jobs(path: Path, n: int | None, zones: tuple[str, ...], any_zone: bool, interruptible_share: float,
              profile: str, seed: int = 0) -> list[Job]:
    data = np.loadtxt(path, delimiter=",", skiprows=1)
    rng = np.random.default_rng(seed)
    data = data[_sample(len(data), n, rng)]
    jobs = []
    for i, (arrival_h, length_h, cpus) in enumerate(data):
        submit, duration = arrival_h * 3600.0, max(length_h * 3600.0, 60.0)
        jobs.append(Job(f"j{i}", submit, duration, int(min(max(cpus, 1), 8)), POWER_W, submit + duration + SLACK_S,
                        bool(rng.random() < interruptible_share), _allowed(zones, i, any_zone), profile, "train",
                        i + 2))
    return jobs


def alibaba_jobs(path: Path, n: int | None, zones: tuple[str, ...], seed: int = 0) -> list[Job]:
    """openb pods with GPUs and a scheduled time; a shared GPU (gpu_milli < 1000) is one GPU drawing that share."""
    with path.open(newline="") as handle:
        pods = [(line, r) for line, r in enumerate(csv.DictReader(handle), start=2)
                if int(r["num_gpu"]) >= 1 and r["scheduled_time"] and r["deletion_time"]]
    jobs = []
    for i, k in enumerate(_sample(len(pods), n, np.random.default_rng(seed))):
        line, r = pods[k]
        submit = float(r["creation_time"])
        duration = max(float(r["deletion_time"]) - float(r["scheduled_time"]), 60.0)
        share = min(int(r["gpu_milli"]), 1000) / 1000 if int(r["num_gpu"]) == 1 else 1.0
        jobs.append(Job(r["name"], submit, duration, int(r["num_gpu"]), POWER_W * share, submit + duration + SLACK_S,
                        False, _allowed(zones, i, True), "", "pod", line))
    return jobs


def _sample(total: int, n: int | None, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``n`` of ``total`` rows drawn without replacement, in file order (all when n is None or more)."""
    return np.sort(rng.choice(total, n, replace=False)) if n is not None and n < total else np.arange(total)


def _allowed(zones: tuple[str, ...], i: int, any_zone: bool) -> tuple[str, ...]:
    home = zones[i % len(zones)]
    return (home,) + tuple(z for z in zones if z != home) if any_zone else (home,)


def caps_only(jobs: list[Job], profile: PowerProfile) -> list[Job]:
    """The jobs on ``profile`` with just the time to finish at its slowest cap (from submission)."""
    slowest = min(step.speed for step in profile.steps)
    return [dataclasses.replace(j, profile=profile.name, deadline_s=j.submit_s + j.duration_s / slowest)
            for j in jobs]


def best_possible_kg(jobs: list[Job], cluster: Cluster, profiles: dict[str, PowerProfile]) -> float:
    """Sum over jobs of each job alone at its cheapest feasible placement (independent of policies/)."""
    pad = 1e9
    knots, cums, vals = {}, {}, {}
    for z in cluster.zones:
        t = np.concatenate(([z.times_s[0] - pad], z.times_s[1:], [z.times_s[-1] + pad]))
        knots[z.name], vals[z.name] = t, z.g_per_kwh
        cums[z.name] = np.concatenate(([0.0], np.cumsum(z.g_per_kwh * np.diff(t))))
    total = 0.0
    for job in jobs:
        steps = profiles[job.profile].steps if job.profile else (CapStep(1.0, 1.0, 1.0),)
        zones = job.zones or tuple(knots)
        best = np.inf
        for step in steps:
            run = job.duration_s / step.speed
            lo, hi = job.submit_s, job.effective_deadline_s - run
            if hi < lo - 1e-6:
                continue
            hi = max(hi, lo)
            watts = job.gpus * job.power_w * step.power_fraction
            if job.interruptible:
                cost = _cheapest_pieces(knots, vals, zones, lo, job.effective_deadline_s, run)
            else:
                cost = np.inf
                for z in zones:
                    k = knots[z]
                    starts = np.concatenate(([lo, hi], k[(k > lo) & (k < hi)], (k - run)[(k - run > lo) & (k - run < hi)]))
                    cost = min(cost, float(np.min(np.interp(starts + run, k, cums[z]) - np.interp(starts, k, cums[z]))))
            best = min(best, watts * cost / J_PER_KWH / 1000.0)
        total += best
    return total


def _cheapest_pieces(knots, vals, zones, start, end, need_s) -> float:
    edges = np.unique(np.concatenate([[start, end]] + [k[(k > start) & (k < end)] for k in (knots[z] for z in zones)]))
    mids = (edges[:-1] + edges[1:]) / 2
    cheapest = np.min([vals[z][np.clip(np.searchsorted(knots[z], mids, "right") - 1, 0, len(vals[z]) - 1)]
                       for z in zones], axis=0)
    order = np.argsort(cheapest)
    widths = np.diff(edges)[order]
    taken = np.minimum(widths, np.maximum(need_s - (np.cumsum(widths) - widths), 0.0))
    return float(taken @ cheapest[order])


def run_scenario(name: str, cluster: Cluster, jobs: list[Job], profiles: dict[str, PowerProfile], runs=RUNS,
                 check: bool = True, references: tuple[tuple[str, dict[str, PowerProfile]], ...] = ()) -> list[dict]:
    """Prints a table row per run, then the best possible and, per ``references``, the best possible with
    other profiles (e.g. full power only) as a share of the best possible. A run that raises is a row that says
    so (``crashed``), and the other runs go on."""
    feasible = {j.job_id for j in jobs if j.feasible}
    best = best_possible_kg(jobs, cluster, profiles) if runs is RUNS else None
    rows, fifo_kg = [], None
    for label, policy, forecast, config in runs:
        began = time.perf_counter()
        try:
            result = simulate(cluster, jobs, policy, forecast, 0, profiles, **config)
        except Exception as exc:  # a policy bug is a finding to show, not a reason to lose the other runs
            rows.append({"scenario": name, "run": label, "jobs": len(jobs), "crashed": repr(exc)})
            print(f"| {name} | {label} | {len(jobs)} | | | | | | | crashed: {exc!r} |", flush=True)
            continue
        wall = time.perf_counter() - began
        by_id = {j.job_id: j for j in jobs}
        misses = sum(1 for e in result["jobs"] if e["job_id"] in feasible and e["completed_s"] is not None
                     and e["completed_s"] > by_id[e["job_id"]].effective_deadline_s + 1e-6)
        problems = check_result(result, cluster, jobs, profiles) if check else []
        s = result["summary"]
        fifo_kg = s["emissions_kg"] if policy == "fifo" else fifo_kg
        row = {"scenario": name, "run": label, "jobs": s["jobs"], "emissions_kg": s["emissions_kg"],
               "energy_kwh": s["energy_kwh"], "misses_feasible": misses, "completed": s["completed"],
               "wall_s": wall, "checker": "ok" if not problems else f"{len(problems)} problems: {problems[0]}"}
        if fifo_kg:
            row["reduction"] = 1 - s["emissions_kg"] / fifo_kg
            if best is not None and fifo_kg > best:
                row["share_of_best"] = (fifo_kg - s["emissions_kg"]) / (fifo_kg - best)
        rows.append(row)
        print(_format(row), flush=True)
    if best is not None and fifo_kg:
        _print_best(name, "best possible (each job alone)", best, fifo_kg, "100%")
        for label, other in references:
            kg = best_possible_kg(jobs, cluster, other)
            _print_best(name, label, kg, fifo_kg, f"{(fifo_kg - kg) / (fifo_kg - best):.1%}" if fifo_kg > best else "")
    return rows


def _print_best(name: str, label: str, kg: float, fifo_kg: float, share: str) -> None:
    print(f"| {name} | {label} | | {kg:.1f} | | {1 - kg / fifo_kg:.1%} | {share} | | | |", flush=True)


HEADER = ("| scenario | run | jobs | emissions kg | energy kWh | reduction vs fifo | share of best | "
          "missed (feasible) | wall s | checker |\n|---|---|---|---|---|---|---|---|---|---|")


def _format(r: dict) -> str:
    red = f"{r['reduction']:.1%}" if "reduction" in r else ""
    share = f"{r['share_of_best']:.1%}" if "share_of_best" in r else ""
    return (f"| {r['scenario']} | {r['run']} | {r['jobs']} | {r['emissions_kg']:.1f} | {r['energy_kwh']:.1f} | "
            f"{red} | {share} | {r['misses_feasible']} | {r['wall_s']:.1f} | {r['checker']} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--jobs", type=int, default=5000,
                        help="jobs sampled per 2020 scenario (Alibaba: at most this many pods)")
    parser.add_argument("--perf", action="store_true", help="also run the 100k-job, five-zone year")
    parser.add_argument("--only", help="run only scenarios whose name contains this")
    parser.add_argument("--other-zones", default=",".join(OTHER_ZONES),
                        help="the five Electricity Maps zones of perf-other-5-zone-year, comma-separated")
    args = parser.parse_args(argv)
    lww, gaia, zeus = (args.data / "carbon/lets-wait-awhile-2020", args.data / "jobs/gaia",
                       args.data / "power/zeus-power-limit-sweeps")
    if not (lww.is_dir() and gaia.is_dir() and zeus.is_dir()):
        print(f"skipped: the reference data is not at {args.data} (pass --data)")
        return 0
    alibaba = args.data / "jobs/alibaba-gpu/openb_pod_list_default.csv"
    if not alibaba.is_file():
        print(f"skipped: alibaba-* (no Alibaba pod trace at {alibaba})")
    files = {"DE": "ger_ci.csv", "FR": "fr_ci.csv", "GB": "gb_ci.csv"}

    def wanted(scenario: str) -> bool:
        return not args.only or args.only in scenario

    def zones_2020(names, gpus: int = 100_000, budget_w: float | None = None) -> Cluster:
        return Cluster(START_2020, tuple(zone(lww / files[n], n, gpus, START_2020) for n in names), budget_w)

    rows = []
    print(HEADER)
    for name in files:
        if wanted(f"{name}-2020"):
            jobs = gaia_jobs(gaia / "pai-100k.csv", args.jobs, (name,), False, 0.0, "")
            rows += run_scenario(f"{name}-2020", zones_2020((name,)), jobs, {})
    if wanted("3-zone-2020"):
        profiles = {"v100": sweep_profile(zeus / "v100.csv", "v100")}
        jobs = gaia_jobs(gaia / "pai-100k.csv", args.jobs, tuple(files), True, 0.5, "v100")
        rows += run_scenario("3-zone-2020", zones_2020(files), jobs, profiles)
    if wanted("tight-3-zone-2020"):
        profiles = {"v100": sweep_profile(zeus / "v100.csv", "v100")}
        jobs = gaia_jobs(gaia / "pai-100k.csv", args.jobs, tuple(files), True, 0.5, "v100")
        rows += run_scenario("tight-3-zone-2020", zones_2020(files, TIGHT_GPUS, TIGHT_BUDGET_W), jobs, profiles)
    for gpu in ("a40", "p100", "rtx6000", "v100"):
        if wanted(f"caps-{gpu}-DE-2020"):
            profile = sweep_profile(zeus / f"{gpu}.csv", gpu)
            jobs = caps_only(gaia_jobs(gaia / "pai-100k.csv", args.jobs, ("DE",), False, 0.0, ""), profile)
            full_power = {gpu: PowerProfile(gpu, (CapStep(1.0, 1.0, 1.0),))}
            rows += run_scenario(f"caps-{gpu}-DE-2020", zones_2020(("DE",)), jobs, {gpu: profile},
                                 references=(("best possible at full power (shift only)", full_power),))
    for names, scenario in ((("DE",), "alibaba-DE-2020"), (tuple(files), "alibaba-3-zone-2020")):
        if alibaba.is_file() and wanted(scenario):
            rows += run_scenario(scenario, zones_2020(names), alibaba_jobs(alibaba, args.jobs, names), {})
    if args.perf:
        em = args.data / "carbon/electricitymaps-47-zones-2021-2022"
        zones = tuple(zone(em / f"{z}.csv", z, 200, START_2021_10) for z in ("DE", "FR", "GB", "ES", "NO-NO1"))
        cluster = Cluster(START_2021_10, zones)
        profiles = {"v100": sweep_profile(zeus / "v100.csv", "v100")}
        jobs = gaia_jobs(gaia / "pai-100k.csv", None, tuple(z.name for z in zones), True, 0.3, "v100")
        perf_runs = (("fifo", "fifo", "perfect", {}), ("carbon-aware perfect", "carbon-aware", "perfect", {}),
                     ("carbon-aware persistence", "carbon-aware", "persistence", {}))
        if wanted("perf-5-zone-year"):
            rows += run_scenario("perf-5-zone-year", cluster, jobs, profiles, runs=perf_runs, check=True)
        if wanted("perf-other-5-zone-year"):
            names = tuple(args.other_zones.split(","))
            zones = tuple(zone(em / f"{z}.csv", z, 200, START_2021_10) for z in names)
            jobs = gaia_jobs(gaia / "pai-100k.csv", None, names, True, 0.5, "v100")
            rows += run_scenario("perf-other-5-zone-year", Cluster(START_2021_10, zones), jobs, profiles,
                                 runs=perf_runs, check=True)
        hourly = args.data / "carbon/electricitymaps-hourly-2021-2023"
        if wanted("perf-2023-4-zone-year"):
            files = [hourly / f"{z}_2023_hourly.csv" for z in ZONES_2023]
            if all(f.is_file() for f in files):
                zones = tuple(zone(f, z, 250, START_2023) for f, z in zip(files, ZONES_2023))
                jobs = gaia_jobs(gaia / "pai-100k.csv", None, ZONES_2023, True, 0.5, "v100")
                rows += run_scenario("perf-2023-4-zone-year", Cluster(START_2023, zones), jobs, profiles,
                                     runs=perf_runs, check=True)
            else:
                print(f"skipped: perf-2023-4-zone-year (no 2023 hourly exports at {hourly})")
    return 1 if any("crashed" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
