"""RESULT.json (simulation.md): every job's segments, energy and emissions, and the summary.

Optional fields beyond the contract: ``summary.infeasible`` (jobs that could not meet their deadline even alone),
``summary.decision_rounds``, per job ``infeasible: true`` where it applies, and per segment in a zone with nodes
``nodes``, the nodes the job's gang ran on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from policies.units import J_PER_KWH
from scheduler.simulation.engine import JobRun
from scheduler.simulation.forecasts import ZoneSignal
from scheduler.simulation.inputs import Cluster

DEADLINE_TOLERANCE_S = 1e-6


def build_result(runs: list[JobRun], cluster: Cluster, policy: str, forecast: str, seed: int, wall_s: float,
                 decision_rounds: int) -> dict[str, Any]:
    signals = {z.name: ZoneSignal(z.times_s, z.g_per_kwh) for z in cluster.zones}
    jobs, energy_kwh, emissions_kg, waits, misses, infeasible = [], 0.0, 0.0, [], 0, 0
    for run in runs:
        job = run.job
        job_kwh = job_kg = 0.0
        segments = []
        for seg in run.segments:
            watts = job.gpus * job.power_w * seg.step.power_fraction
            job_kwh += watts * (seg.end_s - seg.start_s) / J_PER_KWH
            job_kg += watts * float(signals[seg.zone].curve.integral(seg.start_s, seg.end_s)) / J_PER_KWH / 1000.0
            segment = {"start_s": float(seg.start_s), "end_s": float(seg.end_s), "zone": seg.zone,
                       "cap_fraction": float(seg.step.cap_fraction)}
            if seg.nodes:
                segment["nodes"] = list(seg.nodes)
            segments.append(segment)
        entry: dict[str, Any] = {"job_id": job.job_id, "completed_s": run.completed_s, "energy_kwh": float(job_kwh),
                                 "emissions_kg": float(job_kg), "segments": segments}
        if not job.feasible:
            entry["infeasible"] = True
            infeasible += 1
        if run.completed_s is not None and job.deadline_s is not None \
                and run.completed_s > job.deadline_s + DEADLINE_TOLERANCE_S:
            misses += 1
        if segments:
            waits.append(segments[0]["start_s"] - job.submit_s)
        energy_kwh += job_kwh
        emissions_kg += job_kg
        jobs.append(entry)
    summary = {"jobs": len(runs), "completed": sum(r.completed_s is not None for r in runs),
               "deadline_misses": misses, "energy_kwh": float(energy_kwh), "emissions_kg": float(emissions_kg),
               "mean_wait_s": float(sum(waits) / len(waits)) if waits else 0.0, "wall_s": wall_s,
               "infeasible": infeasible, "decision_rounds": decision_rounds}
    return {"policy": policy, "forecast": forecast, "seed": seed, "summary": summary, "jobs": jobs}


def write_result(result: dict[str, Any], path: Path | str) -> None:
    Path(path).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
