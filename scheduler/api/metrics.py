"""Prometheus metrics of a daemon, computed when scraped (``GET /metrics``) from the database and the GPU
inventory, so the scheduling and event code need no hooks.

Naming (field-notes.md): counters in joules (``*_energy_joules_total``), gauges in watts (``*_power_watts``),
emissions in grams (``*_emissions_grams_total``). Labels are small and bounded (worker, zone, method, state);
per-job history belongs in the database, never in label values. ``method`` says how a figure was obtained
(``simulated`` on logical GPUs: never read it as a measurement).

- ``wattsched_gpu_power_watts{worker,zone,method}``: each busy GPU's draw at its run's latest stored sample
  (a run on several GPUs is split evenly between them). Idle GPUs have no sample and no value.
- ``wattsched_gpu_energy_joules_total{worker,zone,method}``: GPU energy of finished runs, plus running runs'
  energy so far.
- ``wattsched_jobs{state}``: jobs in each state.
- ``wattsched_emissions_grams_total{zone,method}``: emissions of finished runs, by how their energy was obtained
  (``method``: the GPU and CPU methods joined with ``+``, e.g. ``estimate+simulated``), so a simulated figure is
  never summed with a measured one. Runs whose emissions are unknown are left out, not counted as zero. It can
  step down slightly when emissions charged at a forecast are finalised with actual intensities.
"""

from __future__ import annotations

import threading
from collections import defaultdict

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import func, select

from scheduler.api.service import SchedulerService
from scheduler.store.models import Job, PowerSample, Run, RunEnergy
from scheduler.store.job_state import JobState, RunStatus

CONTENT_TYPE = CONTENT_TYPE_LATEST


class DaemonMetrics:
    """One daemon's metrics. Finished runs' GPU energy is summed incrementally (it never changes once stored)."""

    def __init__(self, daemon: SchedulerService):
        self.daemon = daemon
        self._lock = threading.Lock()
        self._last_energy_id = 0
        self._finished_j: dict[tuple[str, str, str], float] = defaultdict(float)
        self._last_method: dict[str, str] = {}
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self._registry)

    def _fold_finished(self, session) -> None:
        rows = session.execute(
            select(RunEnergy.id, RunEnergy.gpu_energy_j, RunEnergy.gpu_method, Run.gpu_ids, Run.zone)
            .join(Run, Run.id == RunEnergy.run_id).where(RunEnergy.id > self._last_energy_id)
            .order_by(RunEnergy.id)).all()
        for energy_id, gpu_j, method, gpu_ids, zone in rows:
            workers = [str(w) for w in (gpu_ids or [])] or ["unknown"]
            for worker in workers:
                self._finished_j[(worker, zone, method)] += (gpu_j or 0.0) / len(workers)
                self._last_method[worker] = method
            self._last_energy_id = energy_id

    def _method_of(self, worker: str, logical: bool) -> str:
        return self._last_method.get(worker) or ("simulated" if logical else "unknown")

    def collect(self):
        daemon = self.daemon
        inventory = {g.worker_id: g for g in daemon.inventory()}
        power = GaugeMetricFamily("wattsched_gpu_power_watts", "GPU power draw at the latest sample of its run (W)",
                                  labels=["worker", "zone", "method"])
        energy = CounterMetricFamily("wattsched_gpu_energy_joules", "GPU energy of runs on this GPU (J)",
                                     labels=["worker", "zone", "method"])
        jobs = GaugeMetricFamily("wattsched_jobs", "Jobs in each state", labels=["state"])
        emissions = CounterMetricFamily("wattsched_emissions_grams", "Emissions of finished runs (g CO2e)",
                                        labels=["zone", "method"])
        gpus = GaugeMetricFamily("wattsched_gpus", "GPUs known to the daemon, and how many run a job",
                                 labels=["zone", "busy"])
        with self._lock, daemon.store.sessions() as session:
            self._fold_finished(session)
            totals = dict(self._finished_j)
            running = session.execute(select(Run.id, Run.gpu_ids, Run.zone).where(
                Run.status == RunStatus.RUNNING.value)).all()
            for run_id, gpu_ids, zone in running:
                latest = session.execute(
                    select(PowerSample.gpu_power_w, PowerSample.gpu_energy_j).where(PowerSample.run_id == run_id)
                    .order_by(PowerSample.at.desc()).limit(1)).first()
                if latest is None:
                    continue
                workers = [str(w) for w in (gpu_ids or [])] or ["unknown"]
                for worker in workers:
                    info = inventory.get(worker)
                    method = self._method_of(worker, bool(info and info.raw.get("logical")))
                    power.add_metric([worker, zone, method], latest.gpu_power_w / len(workers))
                    key = (worker, zone, method)
                    totals[key] = totals.get(key, 0.0) + latest.gpu_energy_j / len(workers)
            states = dict(session.execute(select(Job.state, func.count()).group_by(Job.state)).all())
            by_zone = session.execute(
                select(Run.zone, RunEnergy.gpu_method, RunEnergy.cpu_method, func.sum(RunEnergy.emissions_g))
                .join(RunEnergy, RunEnergy.run_id == Run.id).where(RunEnergy.emissions_g.is_not(None))
                .group_by(Run.zone, RunEnergy.gpu_method, RunEnergy.cpu_method)).all()
        for (worker, zone, method), joules in sorted(totals.items()):
            energy.add_metric([worker, zone, method], joules)
        for state in JobState:
            jobs.add_metric([state.value], float(states.get(state.value, 0)))
        grams_by: dict[tuple[str, str], float] = defaultdict(float)
        for zone, gpu_method, cpu_method, grams in by_zone:
            grams_by[(zone, "+".join(sorted({gpu_method, cpu_method})))] += float(grams)
        for (zone, method), grams in sorted(grams_by.items()):
            emissions.add_metric([zone, method], grams)
        counts: dict[tuple[str, str], int] = defaultdict(int)
        for g in inventory.values():
            counts[(g.zone, "true" if g.busy_job else "false")] += 1
        for (zone, busy), n in sorted(counts.items()):
            gpus.add_metric([zone, busy], float(n))
        return [power, energy, jobs, emissions, gpus]
