"""An independent check of a RESULT.json against its inputs: every invariant simulation.md lists.

It trusts nothing the simulator computed: work, capacity (per zone, and per node where zones have nodes), the
power budget, energy and emissions are recomputed from the segments, the jobs, the profiles and the carbon traces
(integrated here with its own code).

    python -m scheduler.simulation.checker --cluster C.toml --jobs J.csv [--power-profiles P.csv] RESULT.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from typing import Any

import numpy as np

from scheduler.errors import WattschedError
from scheduler.simulation.inputs import Cluster, Job, load_cluster, load_jobs, load_profiles
from policies.snapshot import PowerProfile
from policies.units import J_PER_KWH

WORK_TOLERANCE_S = 1.0
REL_TOLERANCE = 1e-6


def check_result(result: dict[str, Any], cluster: Cluster, jobs: list[Job],
                 profiles: dict[str, PowerProfile]) -> list[str]:
    """Every violation found, as readable lines (empty: the result holds)."""
    problems: list[str] = []
    by_id = {j.job_id: j for j in jobs}
    listed = [e.get("job_id") for e in result.get("jobs", [])]
    if sorted(listed) != sorted(by_id):
        problems.append(f"jobs listed {len(listed)} do not match the {len(by_id)} jobs of the input one for one")
    sizes = {z.name: z.gpus for z in cluster.zones}
    usage: dict[str, list[tuple[float, int]]] = defaultdict(list)
    node_usage: dict[str, list[tuple[float, int]]] = defaultdict(list)
    node_zone = {node: z for z in cluster.zones for node in z.node_ids}
    power: list[tuple[float, float]] = []
    totals = {"energy_kwh": 0.0, "emissions_kg": 0.0, "completed": 0, "deadline_misses": 0}
    for entry in result.get("jobs", []):
        job = by_id.get(entry.get("job_id"))
        if job is None:
            continue
        steps = {1.0: (1.0, 1.0)} | ({s.cap_fraction: (s.speed, s.power_fraction) for s in profiles[job.profile].steps}
                                     if job.profile else {})
        segments = sorted(entry.get("segments", []), key=lambda s: s["start_s"])
        name = f"job {job.job_id}"
        if not job.interruptible and len(segments) != 1:
            problems.append(f"{name}: not interruptible but has {len(segments)} segments")
        work = kwh = kg = 0.0
        for k, seg in enumerate(segments):
            start, end, zone, cap = seg["start_s"], seg["end_s"], seg["zone"], seg["cap_fraction"]
            if start < job.submit_s - 1e-9:
                problems.append(f"{name}: a segment starts at {start} before submission at {job.submit_s}")
            if end < start:
                problems.append(f"{name}: a segment ends before it starts")
            if k and start < segments[k - 1]["end_s"] - 1e-9:
                problems.append(f"{name}: segments overlap at {start}")
            if zone not in sizes or (job.zones and zone not in job.zones):
                problems.append(f"{name}: runs in zone {zone}, which is not allowed")
                continue
            if cap not in steps:
                problems.append(f"{name}: cap {cap} is not in its profile")
                continue
            speed, fraction = steps[cap]
            watts = job.gpus * job.power_w * fraction
            work += (end - start) * speed
            kwh += watts * (end - start) / J_PER_KWH
            kg += watts * _integral(cluster.zone(zone), start, end) / J_PER_KWH / 1000.0
            usage[zone] += [(start, job.gpus), (end, -job.gpus)]
            for node, gpus in _nodes(problems, name, job, seg, cluster.zone(zone), node_zone):
                node_usage[node] += [(start, gpus), (end, -gpus)]
            power += [(start, watts), (end, -watts)]
        if segments and abs(work - job.duration_s) > WORK_TOLERANCE_S:
            problems.append(f"{name}: work done {work:.3f} s differs from duration {job.duration_s} s")
        completed = entry.get("completed_s")
        if segments and completed is not None:
            totals["completed"] += 1
            if abs(completed - segments[-1]["end_s"]) > 1e-6:
                problems.append(f"{name}: completed_s {completed} is not the end of its last segment")
            if job.deadline_s is not None and completed > job.deadline_s + 1e-6:
                totals["deadline_misses"] += 1
        _close(problems, f"{name}: energy_kwh", entry.get("energy_kwh", 0.0), kwh)
        _close(problems, f"{name}: emissions_kg", entry.get("emissions_kg", 0.0), kg)
        totals["energy_kwh"] += kwh
        totals["emissions_kg"] += kg
    for zone, changes in usage.items():
        peak = _peak(changes)
        if peak > sizes[zone]:
            problems.append(f"zone {zone}: {peak} GPUs in use at once, more than its {sizes[zone]}")
    for node, changes in node_usage.items():
        peak = _peak(changes)
        size = node_zone[node].gpus_per_node
        if peak > size:
            problems.append(f"node {node}: {peak:g} GPUs in use at once, more than its {size}")
    if cluster.budget_w is not None and power:
        peak = _peak(power)
        if peak > cluster.budget_w * (1 + REL_TOLERANCE):
            problems.append(f"summed draw reaches {peak:.1f} W, over the {cluster.budget_w:g} W budget")
    summary = result.get("summary", {})
    for key in ("completed", "deadline_misses"):
        if summary.get(key) != totals[key]:
            problems.append(f"summary.{key} is {summary.get(key)}, the segments say {totals[key]}")
    if summary.get("jobs") != len(jobs):
        problems.append(f"summary.jobs is {summary.get('jobs')}, the input has {len(jobs)}")
    for key in ("energy_kwh", "emissions_kg"):
        _close(problems, f"summary.{key}", summary.get(key, 0.0), totals[key])
    return problems


def _nodes(problems: list[str], name: str, job: Job, seg: dict[str, Any], zone,
           node_zone: dict[str, Any]) -> list[tuple[str, int]]:
    """The GPUs a segment holds on each node, checked as a gang: nodes of its zone, listed once, as many GPUs on
    each (its ``gpus_per_node`` where it gave one); empty for a pool without nodes."""
    nodes = seg.get("nodes")
    if zone.gpus_per_node is None:
        if nodes:
            problems.append(f"{name}: a segment names nodes in zone {zone.name}, which has none")
        return []
    if not nodes:
        problems.append(f"{name}: a segment in zone {zone.name}, which has nodes, names none")
        return []
    if len(set(nodes)) != len(nodes) or any(node_zone.get(n) is not zone for n in nodes):
        problems.append(f"{name}: a segment runs on nodes {nodes}, not distinct nodes of zone {zone.name}")
        return []
    if job.gpus % len(nodes) or (job.gpus_per_node is not None and job.gpus // len(nodes) != job.gpus_per_node):
        problems.append(f"{name}: a segment puts its {job.gpus} GPUs on {len(nodes)} node{'s' if len(nodes) > 1 else ''}, "
                        "not in its gang's shape")
        return []
    return [(node, job.gpus // len(nodes)) for node in nodes]


def _integral(zone, start: float, end: float) -> float:
    """Intensity integrated over [start, end] (g/kWh x s) by walking the trace's pieces."""
    times, values = zone.times_s, zone.g_per_kwh
    total, t = 0.0, start
    i = max(int(np.searchsorted(times, start, side="right")) - 1, 0)
    while t < end:
        next_t = times[i + 1] if i + 1 < len(times) else end
        piece_end = min(end, max(next_t, t))
        total += values[i] * (piece_end - t)
        t = piece_end
        i += 1 if i + 1 < len(times) else 0
    return total


def _peak(changes: list[tuple[float, float]]) -> float:
    """The highest running sum, ends before starts at the same instant (back-to-back use is not overlap)."""
    level = peak = 0.0
    for _, delta in sorted(changes, key=lambda c: (c[0], c[1])):
        level += delta
        peak = max(peak, level)
    return peak


def _close(problems: list[str], what: str, claimed: float, recomputed: float) -> None:
    if abs(claimed - recomputed) > REL_TOLERANCE * max(abs(recomputed), 1e-9) + 1e-12:
        problems.append(f"{what} is {claimed}, recomputed {recomputed}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scheduler.simulation.checker", description=__doc__.split("\n")[0])
    parser.add_argument("--cluster", required=True)
    parser.add_argument("--jobs", required=True)
    parser.add_argument("--power-profiles")
    parser.add_argument("result")
    args = parser.parse_args(argv)
    try:
        cluster = load_cluster(args.cluster)
        profiles = load_profiles(args.power_profiles)
        problems = check_result(json.loads(open(args.result, encoding="utf-8").read()), cluster,
                                load_jobs(args.jobs, cluster, profiles), profiles)
    except (WattschedError, OSError, ValueError) as exc:
        print(f"checker: error: {exc}", file=sys.stderr)
        return 1
    for line in problems:
        print(line)
    print("ok" if not problems else f"{len(problems)} problems")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
