"""JSON shapes of jobs, runs, energy and history, as the REST API serves them (the client parses these).

Every figure says how it was obtained: energy by ``methods`` (``nvml-counter``, ``simulated``, ...), emissions
by ``carbon_source``/``carbon_basis``, and the fifo counterfactual and the saving against it are labelled
``modelled`` (``counterfactual_basis``, ``saving_basis``) with the model that made them (``counterfactual_model``):
they are what the run would have emitted elsewhere or at another time, never a measurement.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any, Iterable

from policies.status import Code
from policies.units import J_PER_KWH
from scheduler.store.launch import Launch
from scheduler.store.models import Job, Run
from scheduler.store.exports import MODELLED, aggregate, totals
from scheduler.store.jobs import cap_in_force


def iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def run_view(run: Run) -> dict[str, Any]:
    return {
        "id": run.id, "attempt": run.attempt, "node_id": run.node_id, "zone": run.zone,
        "gpu_ids": list(run.gpu_ids), "power_cap_w": run.power_cap_w,
        # how the worker applied the cap: applied, dry-run (never set: the GPU ran at its default limit) or
        # simulated (a logical GPU's meter); None when no cap was asked or the run ended before saying
        "power_cap_mode": run.power_cap_mode, "power_cap_limit_w": run.power_cap_limit_w,
        "started_at": iso(run.started_at), "ended_at": iso(run.ended_at), "exit_status": run.status,
        "exit_code": run.exit_code, "message": run.message, "energy": energy_view([run]),
        # a gang's per-node breakdown at the run's end, whatever the end (None: one node, or stored before)
        "nodes": run.nodes,
    }


def energy_view(runs: Iterable[Run]) -> dict[str, Any] | None:
    """Energy and emissions summed over the runs that recorded energy (None when none did); ``methods`` lists how
    each figure was obtained. Emissions are None unless every such run has them: an unknown is never a zero."""
    runs = [r for r in runs if r.energy is not None]
    if not runs:
        return None
    energies = [r.energy for r in runs]
    gpu_j = sum(e.gpu_energy_j for e in energies)
    cpu_j = sum(e.cpu_energy_j for e in energies)
    total_j = gpu_j + cpu_j
    duration_s = sum(e.duration_s for e in energies)
    emissions = [e.emissions_g for e in energies]
    emissions_g = None if any(v is None for v in emissions) else sum(emissions)
    kwh = total_j / J_PER_KWH
    counterfactual_g = _counterfactual(runs)
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
        "counterfactual_emissions_g": counterfactual_g,
        "counterfactual_basis": None if counterfactual_g is None else MODELLED,
        "counterfactual_model": None if counterfactual_g is None else counterfactual_model(runs),
        "power_cap_modes": sorted({r.power_cap_mode for r in runs if r.power_cap_mode}),
    }


def _counterfactual(runs: list[Run]) -> float | None:
    """The fifo counterfactual's emissions over these runs, or None unless every run has one."""
    values = [r.energy.counterfactual_emissions_g for r in runs]
    if not values or any(v is None for v in values):
        return None
    return sum(values)


def counterfactual_model(runs: Iterable[Run]) -> str:
    """How the runs' fifo counterfactual was modelled: ``time-shift`` (each run's own energy profile moved to
    where and when fifo would have run it), ``+power-profile`` where a cap in force was undone (GPU energy
    rescaled to full power by the job kind's power profile)."""
    scaled = any(cap_in_force(r.power_cap_mode) and (r.cap_speed, r.cap_power_fraction) != (1.0, 1.0)
                 for r in runs)
    return "time-shift+power-profile" if scaled else "time-shift"


def _user_name(job: Job) -> str | None:
    user = job.__dict__.get("user")  # loaded with the job, or not at all: never a lazy load
    return None if user is None else user.name


#: What a server path in a job's view reads as to a user who may not see it.
HIDDEN_PATH = "(a path on the server)"


def shows_paths(job: Job, user_id: int | None, is_admin: bool) -> bool:
    """Whether a viewer sees the job's absolute server paths: its submitter and admins do."""
    return is_admin or (user_id is not None and job.user_id == user_id)


def _hide_paths(value: Any) -> Any:
    """``value`` (a spec or result) with every absolute path in its top-level values or lists replaced."""
    if not isinstance(value, dict):
        return value

    def hide(item: Any) -> Any:
        if isinstance(item, str) and os.path.isabs(os.path.expanduser(item)):
            return HIDDEN_PATH
        return [hide(i) for i in item] if isinstance(item, list) else item

    return {key: hide(item) for key, item in value.items()}


def job_view(job: Job, paths: bool = True) -> dict[str, Any]:
    """A job as the API shows it; ``paths``: with its absolute server paths (its workdir, the paths of its spec
    and result), for its submitter and admins only (``shows_paths``)."""
    runs = list(job.runs)
    spec, result = (job.spec, job.result) if paths else (_hide_paths(job.spec), _hide_paths(job.result))
    return {
        "id": job.id, "kind": job.kind, "spec": spec, "gpus": job.gpus, "state": job.state,
        "reason": job.reason, "wait_code": job.wait_code, "wait_plugin": job.wait_plugin,
        "unschedulable": job.wait_code == Code.UNRESOLVABLE.value,  # no node of its zones can ever take it
        "zones": list(job.zones or []), "deadline": iso(job.deadline_at),
        "interruptible": job.interruptible, "cancel_requested": job.cancel_requested,
        "submitted_at": iso(job.submitted_at), "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at), "progress": job.progress, "result": result, "error": job.error,
        "workdir": job.workdir if paths else None, "user": _user_name(job), "priority": job.priority,
        "not_before": iso(job.not_before_at), "time_limit_s": job.time_limit_s, "hold": bool(job.held),
        "depends_on": list(job.depends_on or []), "idempotency_key": job.idempotency_key,
        **Launch.of(job).to_dict(),
        "energy": energy_view(runs),
        "runs": [run_view(r) for r in runs],
    }


def history_row(job: Job) -> dict[str, Any]:
    runs = list(job.runs)
    energy = energy_view(runs) or {}
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
    for key in ("counterfactual_emissions_g", "counterfactual_basis", "counterfactual_model"):
        row[key] = energy.get(key)
    counterfactual = energy.get("counterfactual_emissions_g")
    row["saving_g"] = (counterfactual - energy["emissions_g"]
                       if counterfactual is not None and energy.get("emissions_g") is not None else None)
    row["saving_basis"] = None if row["saving_g"] is None else MODELLED
    row["power_cap_modes"] = energy.get("power_cap_modes", [])
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
