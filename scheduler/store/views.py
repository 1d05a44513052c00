"""JSON shapes of jobs, runs, energy and history, as the REST API serves them (the client parses these)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable

from policies.status import Code
from policies.units import J_PER_KWH
from scheduler.store.models import Job, Run, RunEnergy
from scheduler.store.exports import aggregate, totals


def iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def run_view(run: Run) -> dict[str, Any]:
    return {
        "id": run.id, "attempt": run.attempt, "node_id": run.node_id, "zone": run.zone,
        "gpu_ids": list(run.gpu_ids), "power_cap_w": run.power_cap_w, "started_at": iso(run.started_at),
        "ended_at": iso(run.ended_at), "exit_status": run.status, "exit_code": run.exit_code,
        "message": run.message,
        "energy": None if run.energy is None else energy_view([run.energy]),
    }


def energy_view(energies: Iterable[RunEnergy]) -> dict[str, Any] | None:
    """Energy and emissions summed over runs; ``methods`` lists how each figure was obtained."""
    energies = list(energies)
    if not energies:
        return None
    gpu_j = sum(e.gpu_energy_j for e in energies)
    cpu_j = sum(e.cpu_energy_j for e in energies)
    total_j = gpu_j + cpu_j
    duration_s = sum(e.duration_s for e in energies)
    emissions = [e.emissions_g for e in energies if e.emissions_g is not None]
    emissions_g = sum(emissions) if emissions else None
    kwh = total_j / J_PER_KWH
    return {
        "gpu_energy_j": gpu_j, "cpu_energy_j": cpu_j, "energy_j": total_j, "energy_kwh": kwh,
        "methods": sorted({e.gpu_method for e in energies} | {e.cpu_method for e in energies}),
        "gpu_method": "+".join(sorted({e.gpu_method for e in energies})),
        "cpu_method": "+".join(sorted({e.cpu_method for e in energies})),
        "avg_power_w": total_j / duration_s if duration_s > 0 else 0.0,
        "peak_power_w": max(e.peak_power_w for e in energies),
        "duration_s": duration_s,
        "emissions_g": emissions_g,
        "intensity_g_per_kwh": (emissions_g / kwh) if emissions_g is not None and kwh > 0 else None,
        "carbon_source": "+".join(sorted({e.carbon_source for e in energies if e.carbon_source})) or None,
        "counterfactual_emissions_g": _counterfactual(energies),
    }


def _counterfactual(energies: list[RunEnergy]) -> float | None:
    """The fifo counterfactual's emissions over these runs, or None unless every run has one."""
    values = [getattr(e, "counterfactual_emissions_g", None) for e in energies]
    if not values or any(v is None for v in values):
        return None
    return sum(values)


def _user_name(job: Job) -> str | None:
    user = job.__dict__.get("user")  # loaded with the job, or not at all: never a lazy load
    return None if user is None else user.name


def job_view(job: Job) -> dict[str, Any]:
    runs = list(job.runs)
    return {
        "id": job.id, "kind": job.kind, "spec": job.spec, "gpus": job.gpus, "state": job.state,
        "reason": job.reason, "wait_code": job.wait_code, "wait_plugin": job.wait_plugin,
        "unschedulable": job.wait_code == Code.UNRESOLVABLE.value,  # no node of its zones can ever take it
        "zones": list(job.zones or []), "deadline": iso(job.deadline_at),
        "interruptible": job.interruptible, "cancel_requested": job.cancel_requested,
        "submitted_at": iso(job.submitted_at), "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at), "progress": job.progress, "result": job.result, "error": job.error,
        "workdir": job.workdir, "user": _user_name(job), "priority": job.priority,
        "not_before": iso(job.not_before_at), "time_limit_s": job.time_limit_s, "hold": bool(job.held),
        "depends_on": list(job.depends_on or []), "idempotency_key": job.idempotency_key,
        "energy": energy_view(r.energy for r in runs if r.energy is not None),
        "runs": [run_view(r) for r in runs],
    }


def history_row(job: Job) -> dict[str, Any]:
    runs = list(job.runs)
    energy = energy_view(r.energy for r in runs if r.energy is not None) or {}
    duration_s = None
    if job.started_at is not None and job.finished_at is not None:
        duration_s = (job.finished_at - job.started_at).total_seconds()
    row = {
        "job_id": job.id, "user": _user_name(job), "kind": job.kind, "state": job.state, "gpus": job.gpus,
        "zone": runs[-1].zone if runs else None,
        "submitted_at": iso(job.submitted_at), "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at), "duration_s": duration_s,
    }
    for key in ("gpu_energy_j", "cpu_energy_j", "energy_j", "energy_kwh", "emissions_g",
                "intensity_g_per_kwh", "carbon_source"):
        row[key] = energy.get(key)
    row["methods"] = energy.get("methods", [])
    counterfactual = energy.get("counterfactual_emissions_g")
    row["counterfactual_emissions_g"] = counterfactual
    row["saving_g"] = (counterfactual - energy["emissions_g"]
                       if counterfactual is not None and energy.get("emissions_g") is not None else None)
    images = (job.result or {}).get("num_images")
    row["energy_per_image_j"] = energy["energy_j"] / images if images and energy.get("energy_j") else None
    return row


def history_view(jobs: Iterable[Job], group_by: str | None = None) -> dict[str, Any]:
    """Rows per job and their totals; with ``group_by`` (user, kind, zone, day, state) also per-group sums."""
    rows = [history_row(j) for j in jobs]
    view: dict[str, Any] = {"jobs": rows, "totals": totals(rows)}
    if group_by:
        view["group_by"] = group_by
        view["groups"] = aggregate(rows, group_by)
    return view
